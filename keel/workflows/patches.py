"""Keel's engine patches, decided once at the start of each run.

The engine changes what its workflows do under ``workflow.patched`` so that runs recorded
before a change replay as they ran. Decided lazily, where each change applies, such a check
can come right after a local activity (the reviewer-trust snapshot as a gate opens, then
signing its head); a query that reaches the worker during that workflow task splits it, and
the SDK then replays the local activity's result one task early, so the check comes out the
other way on replay and the run fails with a nondeterminism error on every worker that
replays it (a restart, a deploy, a cache eviction; sdk-python issue 1881 is the family).

So every run since ``ENGINE_PATCHES`` decides them all first, before any activity: one
marker, recorded in the run's first workflow task, stands for every engine patch introduced
before it (``engine_patched`` answers True for them without a marker of their own). A run
recorded before has no such marker and keeps deciding each patch where it applies, as it
was recorded. A patch added to the engine later is decided with ``workflow.patched`` again
(its own marker) until the next ``ENGINE_PATCHES`` includes it. Each version covers what
``COVERED_BY`` says, and a run keeps the version it started with: one marked
``keel-engine-patches-1`` (or started with it in its memo) decides the patches added since
on their own.

A run started by Keel's client needs no marker at all: the client puts ``ENGINE_PATCHES`` in
the run's memo (``ENGINE_MEMO``, recorded in its start event, carried over by
continue-as-new), which says as surely as a marker that the run was started for this engine
and costs no history event (a marker costs two: the marker, and the ``TemporalChangeVersion``
search attribute the SDK upserts with it, a visibility write on the server). A run whose memo
says so was recorded by a worker of this engine, or, during a deploy, by one from before the
memo that recorded the marker; on replay the marker is read if it is there, so both replay.
Workers must be deployed before clients (a worker from before ``ENGINE_PATCHES`` would decide
each patch lazily, which a run whose memo says otherwise does not replay); docs/deploys.md.
"""

from __future__ import annotations

from temporalio import workflow

ENGINE_PATCHES = "keel-engine-patches-2"
"""The marker a run records first; it covers ``COVERED``."""

ENGINE_MEMO = "keel-engine"
"""The memo key whose value ``ENGINE_PATCHES`` decides them without a marker."""

_FIRST = frozenset(
    {
        "keel-ledger-signed-heads",
        "keel-signed-reviews",
        "keel-gate-notifications",
        "keel-ledger-signed-failures",
        "keel-agent-node-system-failures",
        "keel-ledger-node-input",
        "keel-tool-task-seal",
    }
)
COVERED_BY: dict[str, frozenset[str]] = {
    "keel-engine-patches-1": _FIRST,
    "keel-engine-patches-2": _FIRST | {"keel-guardrail-needles-2"},
}
"""What each version of the early decision covers: a run keeps the version it started
with (its marker or its memo), so a patch added later is decided on its own for it."""

COVERED = COVERED_BY[ENGINE_PATCHES]
"""Every engine patch ``ENGINE_PATCHES`` decides at once."""

_DECIDED = "_keel_engine_patches"


def decide_engine_patches(instance: object | None = None) -> None:
    """Decide the engine's patches for this run, now (call it before the run's first
    activity; a second call changes nothing). ``instance``: the run's workflow object, for a
    call from its ``__init__`` (``workflow.instance()`` is not set yet); outside a workflow
    (a unit test building the object) nothing is decided."""
    if not workflow.in_workflow():
        return
    instance = instance if instance is not None else workflow.instance()
    if getattr(instance, _DECIDED, None) is not None:
        return
    version = started_for_this_engine()
    replaying = workflow.unsafe.is_replaying()
    if version is not None:
        decided = version
        if replaying:
            # A worker from before the memo, or from before this version, marked the
            # version it decided: the run replays with that one.
            decided = next((v for v in _NEWEST_FIRST if workflow.patched(v)), version)
    elif workflow.patched(ENGINE_PATCHES):
        decided = ENGINE_PATCHES
    else:
        # On replay: a run recorded with an earlier version's marker, or before the early
        # decision ("": each patch decided where it applies, as it was recorded).
        older = (v for v in _NEWEST_FIRST[1:] if replaying and workflow.patched(v))
        decided = next(older, "")
    setattr(instance, _DECIDED, decided)


_NEWEST_FIRST = tuple(reversed(COVERED_BY))


def started_for_this_engine() -> str | None:
    """The version of the early decision the run's memo names as it started, if it names
    one this engine knows (call it in the first workflow task: later, an upserted memo
    could say otherwise)."""
    try:
        version = workflow.memo_value(ENGINE_MEMO, None, type_hint=str)
    except Exception:  # a memo this converter cannot read: not Keel's client's
        return None
    return version if version in COVERED_BY else None


def engine_patched(patch: str) -> bool:
    """``workflow.patched(patch)`` for an engine patch, answered by the run's early decision
    when it made one that covers it."""
    decided = getattr(workflow.instance(), _DECIDED, None)
    if decided and patch in COVERED_BY[decided]:
        return True
    return workflow.patched(patch)

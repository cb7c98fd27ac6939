"""Which apps a process serves: ``--app MODULE[:ATTR]``, ``KEEL_APPS``, or every app in the
``keel.apps`` entry-point group (Keel registers its built-in apps there)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from importlib.metadata import entry_points

from keel.errors import KeelUserError
from keel.workers.app import App, Entry, workflow_type_of

ENTRY_POINT_GROUP = "keel.apps"
APPS_ENV = "KEEL_APPS"


def load_app(spec: str) -> App:
    """The app named by ``MODULE[:ATTR]`` (``ATTR`` defaults to ``APP``)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise KeelUserError(
            f"cannot import app module {module_name!r} ({err}); is it installed, or on PYTHONPATH?"
        ) from err
    app = getattr(module, attr or "APP", None)
    if not isinstance(app, App):
        raise KeelUserError(
            f"{module_name} has no App named {attr or 'APP'!r}: declare "
            f"`{attr or 'APP'} = keel.App(...)` or pass MODULE:ATTR"
        )
    return app


def installed_app_specs() -> list[str]:
    """``MODULE:ATTR`` of every app in the ``keel.apps`` entry-point group."""
    return sorted(ep.value for ep in entry_points(group=ENTRY_POINT_GROUP))


def app_specs(specs: Sequence[str] = ()) -> list[str]:
    """``MODULE[:ATTR]`` of the apps of this process: ``specs`` if given, else ``KEEL_APPS``
    (comma-separated), else every installed app."""
    chosen = list(specs) or [s.strip() for s in os.environ.get(APPS_ENV, "").split(",")]
    return [s for s in chosen if s] or installed_app_specs()


def resolve_apps(specs: Sequence[str] = ()) -> list[App]:
    """The apps of this process: ``specs`` if given, else ``KEEL_APPS`` (comma-separated),
    else every installed app. Duplicate names are refused."""
    apps = [load_app(spec) for spec in app_specs(specs)]
    names = [app.name for app in apps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KeelUserError(f"apps loaded twice or with the same name: {duplicates}")
    return apps


def find_entry(apps: Sequence[App], name: str) -> tuple[App, Entry] | None:
    """The app and entry that ``keel start NAME`` means."""
    for app in apps:
        entry = app.entry(name)
        if entry is not None:
            return app, entry
    return None


def workflows_of(apps: Sequence[App], *, extra: Sequence[type] = ()) -> list[type]:
    """Every workflow class of ``apps`` and ``extra``, and the engine's own, once each."""
    from keel.workflows.tool_task import ToolTaskWorkflow

    seen: dict[str, type] = {}
    for workflow_class in [ToolTaskWorkflow, *(w for app in apps for w in app.workflows), *extra]:
        seen.setdefault(workflow_type_of(workflow_class), workflow_class)
    return list(seen.values())

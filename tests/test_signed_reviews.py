"""Only signed decisions count: forged, unsigned, replayed and wrong-key decisions are refused
and change nothing; governance (roles, n-of-m, separation of duties, delegation, reassign,
"not now") and idempotent repeats, on the time-skipping server.

The contract-review scenario's gates: ``standard-review`` (medium risk; legal.priya,
legal.sam or role ``legal``) and ``general-counsel`` (high risk; two distinct approvers of
gc.morgan, deputy-gc.alex or role ``general-counsel``; requested by supply.okafor).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from keel.contracts.gates import GateState, GateView
from keel.contracts.ledger import (
    GateApproved,
    GateDecided,
    GateDeferred,
    GateReassigned,
    ReviewRefused,
    verify_chain,
)
from keel.contracts.reviews import ReviewerTrust, sign_fields, trusted_key_entry
from keel.contracts.signing import SigningKey
from keel.testing import keel_worker as kit_worker
from keel.testing import (
    kit_review_trust,
    ledger_of,
    offline_settings,
    review_payload,
    signed_review,
)
from tests.conftest import keel_worker
from tests.helpers import start_review, types_of, wait_for_gate

MEDIUM, HIGH = "standard-review", "general-counsel"


async def sign(
    handle: WorkflowHandle[Any, Any], gate: str, decision: str, reviewer: str, **extra: Any
) -> dict[str, Any]:
    """A decision signed by the test kit (a trusted review service); ``extra`` goes into the
    payload, except ``roles``, ``key`` and ``nonce``, which go to the signer."""
    signer = {k: extra.pop(k) for k in ("roles", "key", "nonce", "run_id") if k in extra}
    payload = review_payload(gate, decision, reviewer, **extra)
    return await signed_review(handle, payload, **signer)


async def refusal(handle: WorkflowHandle[Any, Any], payload: Any) -> str:
    """The reason the ``review`` update refuses ``payload`` (it must refuse it)."""
    with pytest.raises(WorkflowUpdateFailedError) as caught:
        await handle.execute_update("review", payload)
    return str(getattr(caught.value.cause, "message", caught.value.cause))


async def unchanged(handle: WorkflowHandle[Any, Any]) -> tuple[Any, ...]:
    ledger = await ledger_of(handle)
    gates = await handle.query("gates", result_type=list[GateView])
    return tuple(e.hash for e in ledger), tuple(g.model_dump_json() for g in gates)


async def test_unsigned_forged_wrong_key_and_replayed_decisions_change_nothing(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="signed")
        other = await start_review(ts_env.client, tq, "medium", prefix="signed-other")
        await wait_for_gate(handle, MEDIUM)
        await wait_for_gate(other, MEDIUM)
        before = await unchanged(handle)

        unsigned = review_payload(MEDIUM, "approve", "legal.priya")
        assert "the review is not signed" in await refusal(handle, unsigned)

        good = await sign(handle, MEDIUM, "approve", "legal.priya")
        forged = {**good, "reviewer": "legal.sam"}  # altered after signing
        assert "does not match the decision" in await refusal(handle, forged)
        moved = {**good, "gate": "general-counsel"}
        assert "unknown gate" in await refusal(handle, moved)

        stranger = SigningKey.generate()
        wrong_key = await sign(handle, MEDIUM, "approve", "legal.priya", key=stranger)
        reason = await refusal(handle, wrong_key)
        assert f"signed by {stranger.key_id}, which is not trusted" in reason

        # A decision signed for another execution (or another run of this one) is refused.
        for_other = await sign(other, MEDIUM, "approve", "legal.priya")
        assert "not this one" in await refusal(handle, for_other)
        old_run = await sign(handle, MEDIUM, "approve", "legal.priya", run_id="an-earlier-run")
        assert "not this one" in await refusal(handle, old_run)

        # An hour ahead of the server's clock (the session's time-skipping clock runs ahead of
        # the wall clock by however much earlier tests skipped).
        ahead = await ts_env.get_current_time() + timedelta(hours=1)
        future = {**good, "issued_at": ahead.isoformat()}
        future = sign_fields(kit_key(), future)
        assert "in the future" in await refusal(handle, future)

        no_signature = {k: v for k, v in good.items() if k != "signature"}
        assert "the review is not signed" in await refusal(handle, no_signature)
        garbage = {**good, "signature": {**good["signature"], "signature": "AAAA"}}
        assert "does not match the decision" in await refusal(handle, garbage)
        assert await unchanged(handle) == before

        # The same forgeries by signal are recorded as refused, and decide nothing.
        for payload in (unsigned, forged, wrong_key, for_other):
            await handle.signal("review", payload)
        events = await until(handle, lambda ev: types_of(ev).count("ReviewRefused") == 4)
        refused = [e for e in events if isinstance(e, ReviewRefused)]
        assert [r.reviewer for r in refused] == ["legal.priya", "legal.sam", *["legal.priya"] * 2]
        assert "not signed" in refused[0].reasons[0] and "does not match" in refused[1].reasons[0]
        assert "GateDecided" not in types_of(events)

        # The genuine decision still counts.
        receipt = await handle.execute_update("review", good, result_type=None)
        assert receipt["state"] == "approved"
        result = await handle.result()
        await other.execute_update("review", for_other)  # signed for it: it counts there
        await other.result()
    [decided] = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert (decided.reviewer, decided.key_id) == ("legal.priya", kit_key().key_id)
    assert decided.signed == {k: v for k, v in good.items() if k != "signature"}
    assert verify_chain(result.ledger).ok


async def test_a_repeated_decision_is_the_same_decision(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "high", prefix="repeat")
        await wait_for_gate(handle, HIGH)
        first = await sign(handle, HIGH, "approve", "gc.morgan")
        one = await handle.execute_update("review", first, result_type=None)
        again = await handle.execute_update("review", first, result_type=None)  # double click
        await handle.signal("review", first)  # and a retried signal
        assert (one["approvals"], again["approvals"]) == (1, 1)
        assert (one["repeated"], again["repeated"]) == (False, True)
        assert again["ledger_seq"] == one["ledger_seq"]
        # The same nonce with other content is not a repeat: it is refused.
        reused = await sign(handle, HIGH, "approve", "deputy-gc.alex", nonce=first["nonce"])
        assert "was used for another decision" in await refusal(handle, reused)
        second = await sign(handle, HIGH, "approve", "deputy-gc.alex")
        done = await handle.execute_update("review", second, result_type=None)
        assert (done["state"], done["repeated"]) == ("approved", False)
        result = await handle.result()
    assert len([e for e in result.ledger if isinstance(e, GateApproved)]) == 1
    assert len([e for e in result.ledger if isinstance(e, GateDecided)]) == 1
    assert "ReviewRefused" not in types_of(result.ledger)


async def test_two_distinct_approvers_and_separation_of_duties(
    ts_env: WorkflowEnvironment,
) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "high", prefix="n-of-m")
        gate = await wait_for_gate(handle, HIGH)
        assert (gate.approvals_needed, gate.requesters) == (2, ["supply.okafor"])
        # The requester may not approve, whatever roles they hold.
        own = await sign(handle, HIGH, "approve", "supply.okafor", roles=["general-counsel"])
        assert "separation of duties" in await refusal(handle, own)
        # Nor may a delegate decide on the requester's behalf.
        proxy = await sign(
            handle, HIGH, "approve", "assistant.lee", on_behalf_of="supply.okafor",
            roles=["general-counsel"],
        )  # fmt: skip
        assert "separation of duties" in await refusal(handle, proxy)
        await handle.execute_update("review", await sign(handle, HIGH, "approve", "gc.morgan"))
        twice = await sign(handle, HIGH, "approve", "gc.morgan", comment="really")
        assert "has already approved" in await refusal(handle, twice)
        # A holder of the role counts as the second, distinct approver.
        counsel = await sign(handle, HIGH, "approve", "counsel.kai", roles=["general-counsel"])
        receipt = await handle.execute_update("review", counsel, result_type=None)
        assert (receipt["state"], receipt["approvals"]) == ("approved", 2)
        result = await handle.result()
    [decided] = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert decided.approvers == ["gc.morgan", "counsel.kai"]
    assert decided.roles == ["general-counsel"]


async def test_one_rejection_rejects_an_n_of_m_gate(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "high", prefix="n-of-m-reject")
        await wait_for_gate(handle, HIGH)
        await handle.execute_update("review", await sign(handle, HIGH, "approve", "gc.morgan"))
        no = await sign(handle, HIGH, "reject", "deputy-gc.alex", comment="clause 2 stands")
        receipt = await handle.execute_update("review", no, result_type=None)
        assert receipt["state"] == "rejected"
        gates = await handle.query("gates", result_type=list[GateView])
        await wait_for_gate(handle, f"{HIGH}-2")  # reassessed; a second rejection is final
        final = await sign(handle, f"{HIGH}-2", "reject", "gc.morgan", comment="still no")
        await handle.execute_update("review", final)
        result = await handle.result()
    assert gates[0].state is GateState.REJECTED and gates[0].decided_by == "deputy-gc.alex"
    assert result.outcome == "rejected"


async def test_delegation_reassign_and_not_now(ts_env: WorkflowEnvironment) -> None:
    async with keel_worker(ts_env.client) as tq:
        handle = await start_review(ts_env.client, tq, "medium", prefix="governance")
        await wait_for_gate(handle, MEDIUM)
        # Someone outside the gate may not decide, even claiming a delegation they lack
        # the delegator's roles for.
        outsider = await sign(handle, MEDIUM, "approve", "sales.vic", roles=["sales"])
        assert "may not review gate" in await refusal(handle, outsider)

        [view] = await handle.query("gates", result_type=list[GateView])
        assert view.modify_schema is not None  # what the inbox's form checks before sending
        conditions = view.modify_schema["properties"]["conditions"]
        assert (conditions["type"], conditions["items"]["type"]) == ("array", "string")

        later = await sign(handle, MEDIUM, "defer", "legal.sam", comment="on leave today")
        await handle.execute_update("review", later)
        [gate] = await handle.query("gates", result_type=list[GateView])
        assert (gate.state, gate.deferred_by) == (GateState.AWAITING_APPROVAL, ["legal.sam"])

        bare = await sign(handle, MEDIUM, "reassign", "legal.priya", comment="conflict")
        assert "names the reviewers or roles" in await refusal(handle, bare)
        handover = await sign(
            handle, MEDIUM, "reassign", "legal.priya", comment="I negotiated it",
            reassign_to={"reviewers": ["legal.lead.jordan"], "roles": []},
        )  # fmt: skip
        await handle.execute_update("review", handover)
        mine = await sign(handle, MEDIUM, "approve", "legal.priya")
        assert "may not review gate" in await refusal(handle, mine)

        # The lead is away: an assistant decides on their behalf (the service asserts it).
        for_lead = await sign(
            handle, MEDIUM, "approve", "assistant.lee", on_behalf_of="legal.lead.jordan",
            roles=["legal-lead"], comment="for Jordan",
        )  # fmt: skip
        receipt = await handle.execute_update("review", for_lead, result_type=None)
        assert receipt["state"] == "approved"
        result = await handle.result()
    assert (result.outcome, result.decided_by) == ("approved", "assistant.lee")
    [deferred] = [e for e in result.ledger if isinstance(e, GateDeferred)]
    [moved] = [e for e in result.ledger if isinstance(e, GateReassigned)]
    [decided] = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert (deferred.reviewer, deferred.comment) == ("legal.sam", "on leave today")
    assert (moved.reviewer, moved.to_reviewers, moved.comment) == (
        "legal.priya",
        ["legal.lead.jordan"],
        "I negotiated it",
    )
    assert (decided.reviewer, decided.on_behalf_of) == ("assistant.lee", "legal.lead.jordan")


async def test_a_reviewers_own_key_signs_only_for_them(
    keel_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    priya = SigningKey.generate()
    retired = SigningKey.generate()
    trust = kit_review_trust().merged(
        ReviewerTrust(
            keys=[
                trusted_key_entry(priya, "reviewer", subject="legal.priya", roles=["legal"]),
                trusted_key_entry(retired, "reviewer", subject="legal.sam").model_copy(
                    update={"not_after": datetime.now(UTC) - timedelta(days=1)}
                ),
            ]
        )
    )
    keys_file = tmp_path / "reviewer-keys.json"
    keys_file.write_text(trust.model_dump_json())
    settings = offline_settings(reviewer_keys_file=keys_file, data_dir=tmp_path)
    async with kit_worker(keel_env.client, settings=settings) as tq:
        handle = await start_review(keel_env.client, tq, "medium", prefix="own-key")
        await wait_for_gate(handle, MEDIUM)
        as_sam = await sign(handle, MEDIUM, "approve", "legal.sam", key=priya)
        assert "signs for 'legal.priya' only" in await refusal(handle, as_sam)
        more_roles = await sign(
            handle, MEDIUM, "approve", "legal.priya", key=priya, roles=["general-counsel"]
        )
        assert "does not grant the roles ['general-counsel']" in await refusal(handle, more_roles)
        proxy = await sign(
            handle, MEDIUM, "approve", "legal.priya", key=priya, on_behalf_of="legal.sam"
        )
        assert "cannot decide on behalf" in await refusal(handle, proxy)
        old = await sign(handle, MEDIUM, "approve", "legal.sam", key=retired)
        assert "was retired" in await refusal(handle, old)
        mine = await sign(handle, MEDIUM, "approve", "legal.priya", key=priya)
        await handle.execute_update("review", mine)
        result = await handle.result()
    [decided] = [e for e in result.ledger if isinstance(e, GateDecided)]
    assert (decided.key_id, decided.roles) == (priya.key_id, ["legal"])


async def test_keys_are_read_again_when_a_gate_opens(
    keel_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A key added to the trust file counts at the next gate, without a worker restart; the
    gate already open keeps the keys it opened with (replays check against them)."""
    newcomer = SigningKey.generate()
    keys_file = tmp_path / "reviewer-keys.json"
    keys_file.write_text(kit_review_trust().model_dump_json())
    settings = offline_settings(reviewer_keys_file=keys_file, data_dir=tmp_path)
    async with kit_worker(keel_env.client, settings=settings) as tq:
        handle = await start_review(keel_env.client, tq, "high", prefix="rotation")
        await wait_for_gate(handle, HIGH)
        keys_file.write_text(
            kit_review_trust()
            .merged(ReviewerTrust(keys=[trusted_key_entry(newcomer, "service", name="new")]))
            .model_dump_json()
        )
        early = await sign(handle, HIGH, "approve", "gc.morgan", key=newcomer)
        assert "not trusted" in await refusal(handle, early)
        no = await sign(handle, HIGH, "reject", "gc.morgan", comment="reassess clause 4")
        await handle.execute_update("review", no)
        await wait_for_gate(handle, f"{HIGH}-2")  # the agent re-assessed; a new gate opened
        for who in ("gc.morgan", "deputy-gc.alex"):
            await handle.execute_update(
                "review", await sign(handle, f"{HIGH}-2", "approve", who, key=newcomer)
            )
        result = await handle.result()
    assert result.outcome == "approved"


def kit_key() -> SigningKey:
    from keel.testing import kit_review_key

    return kit_review_key()


async def until(handle: WorkflowHandle[Any, Any], done: Any, timeout: float = 30) -> list[Any]:
    async with asyncio.timeout(timeout):
        while not done(events := await ledger_of(handle)):
            await asyncio.sleep(0.05)
    return events

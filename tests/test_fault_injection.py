"""Fault injection: Keel's guarantees under the failures production will throw at it.

What each test proves (sizes chosen to fit ~90 s a test on 2 cores; the file takes ~1 min):

1. ``test_dev_server_restart_mid_batch``: the Temporal dev server, persisted in a SQLite file,
   is killed and started again (same port, same file) while a batch of 30 order-status
   emails and 3 refunds is in flight; the server goes down as the batch's first reply goes
   out. One ``keel worker`` process serves throughout: it survives the restart and
   reconnects on its own. One refund is approved through ``approve-refund`` before the
   restart, two after it. Every workflow completes ``replied``, each workflow id has exactly
   one run (visibility), the SMTP sink received exactly one message per workflow (by
   Message-ID) and the side-effect record has one ``performed`` row per send. A task the
   dying server had handed out is lost and retried after its timeout, so a run usually
   takes ~10 s but up to ~95 s when a draft-reply model call (90 s budget) was in flight.
2. ``test_provider_429_and_500_then_recovery``: the model API (the local OpenAI wire fake)
   fails the first 20 requests of a burst of 10 emails, alternately 429 (Retry-After: 1)
   and 500, then recovers. A 500 without Retry-After is retried inside the activity
   (``provider_calls``), a 429 by Temporal after the Retry-After (``activity_attempt``): all
   workflows reply, every triage answer shows the retry, each failed request is accounted
   for (requests = failures + answers in the ledgers), no ``AgentCallFailed``, one send each.
3. ``test_malformed_model_output_is_retried_repaired_or_escalated``: property-based
   (hypothesis, 100 examples plus explicit ones): the risk classifier answers each attempt
   with arbitrary text, JSON of the wrong types, missing and extra fields, out-of-range,
   non-finite or enormous confidence, huge strings, nested junk, deep nesting, truncated or
   non-object JSON, or a valid answer. Whatever it says, the workflow neither fails nor
   hangs and the model call never breaks: an answer is accepted exactly when it is valid
   (an oracle re-checks it), each rejected answer is a ``ValidationFailed`` then an
   ``AgentRetried`` (repair), three bad answers escalate to the ``risk-classification`` gate
   (rejected here through the ``review`` update), and the ledger's hash chain verifies.
4. ``test_three_workers_share_postgres_under_a_burst``: three ``keel worker`` processes on
   one task queue share the PostgreSQL side-effect record and one SMTP sink; a burst of
   ``KEEL_TEST_BURST`` (default 500) order-status emails all reply, and every side effect
   happened exactly once: one message per workflow in the sink, one ``performed`` row per
   key in ``keel_effects``, ``attempts > 1`` only where Temporal really retried the send,
   and all three workers sent some of them. It prints the measured rate.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import keel
from keel.activities.agent_node import MAX_RAW_RESPONSE_CHARS, _clean
from keel.activities.providers.base import ModelReply, ModelRequest
from keel.activities.tools.email import FAULT_EXIT_AFTER_EFFECT_ENV
from keel.contracts.email import message_id_for
from keel.contracts.gates import GateView
from keel.contracts.ledger import (
    AgentCallFailed,
    AgentDecided,
    AgentRetried,
    Escalated,
    ValidationFailed,
    verify_chain,
)
from keel.contracts.tools import tool_activity_name
from keel.scenarios.contract_review import ContractReviewWorkflow
from keel.scenarios.contract_review.contracts import (
    RISK_CLASSIFIER,
    ContractReviewResult,
    RiskAssessment,
)
from keel.scenarios.support_email import SupportEmailWorkflow
from keel.scenarios.support_email.contracts import SUPPORT_REPLY, SUPPORT_TRIAGE, SupportResult
from keel.settings import KeelSettings
from keel.workers.apps import resolve_apps
from keel.workers.devstack import DEV_SERVER_STARTUP
from keel.workers.runtime import running_worker
from keel.workers.smtp_sink import SmtpSink, read_mailbox
from tests.conftest import BIN, REVIEW_ENV, free_port, keel_worker
from tests.fake_model_server import FakeModelServer, Reply
from tests.helpers import decide, review, wait_for_gate
from tests.samples import load_sample
from tests.test_effects import PG_URL

ORDER = "AB-104871"  # Tom's order in support-world.json: in transit, no refund
REFUND_REVIEWER = "support.lead.chen"


# --- emails ----------------------------------------------------------------------------------


def order_status_email(tag: str, n: int) -> dict[str, Any]:
    """A low-risk order-status email (support-injection.json without the injection)."""
    return {
        "message_id": f"<status-{tag}-{n}@mail.example.com>",
        "from_address": "tom.okafor@example.com",
        "subject": f"where is my order {ORDER}?",
        "body": (
            f"Hello,\n\nwhere is my order {ORDER}? I ordered two desk lamps last week "
            f"(note {n}).\n\nThanks,\nTom"
        ),
        "received_at": "2026-03-14T09:50:00Z",
    }


def refund_email(tag: str, n: int) -> dict[str, Any]:
    """The refund sample (its reply offers $89 and waits for the support lead)."""
    return {**load_sample("support-refund"), "message_id": f"<refund-{tag}-{n}@mail.example.com>"}


async def start_support(
    client: Client, task_queue: str, workflow_id: str, email: dict[str, Any]
) -> WorkflowHandle[Any, SupportResult]:
    return await client.start_workflow(
        SupportEmailWorkflow.run,
        email,
        id=workflow_id,
        task_queue=task_queue,
        execution_timeout=timedelta(minutes=10),
    )


async def results_of(
    client: Client, ids: Iterable[str], timeout: float
) -> dict[str, SupportResult]:
    """Every workflow's result, bounded by ``timeout`` seconds in all."""
    ids = list(ids)

    async def one(workflow_id: str) -> SupportResult:
        handle = client.get_workflow_handle(workflow_id, result_type=SupportResult)
        result: SupportResult = await handle.result()
        return result

    async with asyncio.timeout(timeout):
        done = await asyncio.gather(*(one(i) for i in ids))
    return dict(zip(ids, done, strict=True))


def assert_one_mail_per_workflow(mailbox: Path, ids: Iterable[str]) -> None:
    """The sink's mailbox holds exactly one message per workflow, and nothing else."""
    counts = Counter(m.message_id for m in read_mailbox(mailbox))
    expected = {message_id_for(f"{i}/send-reply") for i in ids}
    duplicated = {mid: n for mid, n in counts.items() if n > 1}
    assert not duplicated, f"messages received more than once: {duplicated}"
    assert set(counts) == expected, (
        f"missing {len(expected - set(counts))}, unexpected {len(set(counts) - expected)}"
    )


async def assert_one_completed_run_each(client: Client, task_queue: str, ids: set[str]) -> None:
    """Visibility lists exactly one run per workflow id on ``task_queue``, each completed."""
    runs: Counter[str] = Counter()
    async with asyncio.timeout(30):
        while True:  # visibility is eventually consistent
            runs.clear()
            statuses: dict[str, WorkflowExecutionStatus | None] = {}
            async for execution in client.list_workflows(f"TaskQueue = '{task_queue}'"):
                runs[execution.id] += 1
                statuses[execution.id] = execution.status
            if set(runs) == ids and all(
                s is WorkflowExecutionStatus.COMPLETED for s in statuses.values()
            ):
                break
            await asyncio.sleep(0.5)
    assert all(n == 1 for n in runs.values()), {i: n for i, n in runs.items() if n != 1}


async def retries_in(client: Client, ids: Iterable[str]) -> Counter[str]:
    """Activity retries (by activity type) and workflow-task timeouts in the histories."""
    kinds: Counter[str] = Counter()
    for workflow_id in ids:
        scheduled: dict[int, str] = {}
        async for item in client.get_workflow_handle(workflow_id).fetch_history_events():
            if item.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                name = item.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[item.event_id] = name
            elif item.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = item.activity_task_started_event_attributes
                if started.attempt > 1:
                    kinds[f"{scheduled[started.scheduled_event_id]} retried"] += 1
            elif item.event_type in (
                EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
                EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
            ):
                kinds[EventType.Name(item.event_type).removeprefix("EVENT_TYPE_")] += 1
    return kinds


# --- processes ------------------------------------------------------------------------------


def worker_env(
    address: str, task_queue: str, data_dir: Path, smtp_port: int, **extra: str
) -> dict[str, str]:
    """The environment of a ``keel worker``: offline model, this test's queue and sink."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KEEL_", "TEMPORAL_", "OPENAI_", "ANTHROPIC_"))
        and key != FAULT_EXIT_AFTER_EFFECT_ENV
    }
    return env | {
        "TEMPORAL_ADDRESS": address,
        "KEEL_TASK_QUEUE": task_queue,
        **REVIEW_ENV,  # the test kit signs the reviews these processes take
        "KEEL_DATA_DIR": str(data_dir),
        "KEEL_MODEL": "offline",
        "KEEL_SMTP_HOST": "127.0.0.1",
        "KEEL_SMTP_PORT": str(smtp_port),
        # The test's own clients read history raw (encryption: test_history_encrypted).
        "KEEL_CODEC": "off",
        **extra,
    }


class KeelWorker:
    """A ``keel worker`` process; its output is drained (and kept) while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path) -> KeelWorker:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "keel"),
            "worker",
            cwd=cwd,  # no stray .env file
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        worker = cls(proc)
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                while "keel worker:" not in (line := (await proc.stdout.readline()).decode()):
                    assert line, f"keel worker exited before it was ready:\n{worker.output}"
                    worker.lines.append(line)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise
        worker._drain = asyncio.create_task(worker._read())
        return worker

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            await self._drain


@asynccontextmanager
async def keel_workers(
    count: int, env: dict[str, str], cwd: Path
) -> AsyncIterator[list[KeelWorker]]:
    workers: list[KeelWorker] = []
    try:
        for _ in range(count):
            workers.append(await KeelWorker.start(env, cwd))
        yield workers
    finally:
        await asyncio.gather(*(w.stop() for w in workers))


async def start_dev_server(port: int, database: Path) -> WorkflowEnvironment:
    return await WorkflowEnvironment.start_local(
        dev_server_startup_timeout=DEV_SERVER_STARTUP,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_database_filename=str(database),
        dev_server_log_level="error",
        port=port,
        search_attributes=keel.SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
    )


# --- 1. the dev server restarts mid-batch ----------------------------------------------------

RESTART_STATUS_EMAILS = 30
RESTART_REFUNDS = 3


@pytest.mark.integration  # its own dev server, stopped and started again
async def test_dev_server_restart_mid_batch(tmp_path: Path) -> None:
    began = time.monotonic()
    port, database, mailbox = free_port(), tmp_path / "temporal.db", tmp_path / "mailbox.jsonl"
    task_queue, tag = f"fi-restart-{uuid.uuid4()}", uuid.uuid4().hex[:8]
    status_ids = [f"fi-restart-{tag}-status-{n}" for n in range(RESTART_STATUS_EMAILS)]
    refund_ids = [f"fi-restart-{tag}-refund-{n}" for n in range(RESTART_REFUNDS)]
    env = await start_dev_server(port, database)
    try:
        with SmtpSink(mailbox=mailbox) as sink:
            wenv = worker_env(f"127.0.0.1:{port}", task_queue, tmp_path / "data", sink.port)
            async with keel_workers(1, wenv, tmp_path) as (worker,):
                client = env.client
                # The refunds first: one is approved before the restart, the others after it.
                for n, workflow_id in enumerate(refund_ids):
                    await start_support(client, task_queue, workflow_id, refund_email(tag, n))
                first = client.get_workflow_handle(refund_ids[0])
                await wait_for_gate(first, "approve-refund", timeout=60)
                await decide(first, review("approve-refund", "approve", REFUND_REVIEWER))
                # Then the batch; the server goes down as its first reply goes out.
                await asyncio.gather(
                    *(
                        start_support(client, task_queue, i, order_status_email(tag, n))
                        for n, i in enumerate(status_ids)
                    )
                )
                status_mail = {message_id_for(f"{i}/send-reply") for i in status_ids}
                async with asyncio.timeout(60):
                    while not (
                        sent_before := sum(m.message_id in status_mail for m in sink.messages)
                    ):
                        await asyncio.sleep(0.005)
                assert sent_before < len(status_ids), "the batch was over before the restart"

                await env.shutdown()
                await asyncio.sleep(1.0)  # the server is down for a while
                env = await start_dev_server(port, database)
                client = env.client
                restarted_at = time.monotonic()

                for workflow_id in refund_ids[1:]:
                    handle = client.get_workflow_handle(workflow_id)
                    await wait_for_gate(handle, "approve-refund", timeout=60)
                    await decide(handle, review("approve-refund", "approve", REFUND_REVIEWER))
                results = await results_of(client, [*status_ids, *refund_ids], timeout=150)
                finished_after = time.monotonic() - restarted_at
                assert worker.alive, f"the worker died with the server:\n{worker.output}"
                await assert_one_completed_run_each(client, task_queue, {*status_ids, *refund_ids})
                retried = await retries_in(client, [*status_ids, *refund_ids])
    finally:
        await env.shutdown()

    assert {r.outcome for r in results.values()} == {"replied"}, {
        i: (r.outcome, r.reason) for i, r in results.items() if r.outcome != "replied"
    }
    assert all(results[i].refund_usd == 89.0 for i in refund_ids)
    for workflow_id, result in results.items():
        assert result.reply_message_id == message_id_for(f"{workflow_id}/send-reply")
        assert verify_chain(result.ledger).ok
    assert_one_mail_per_workflow(mailbox, results)
    with closing(sqlite3.connect(tmp_path / "data" / "effects.sqlite3")) as db:
        rows = db.execute("SELECT idempotency_key, status FROM keel_effects").fetchall()
    assert sorted(rows) == sorted((f"{i}/send-reply", "performed") for i in results)
    print(
        f"\nrestart: {len(results)} workflows, {sent_before} of {len(status_ids)} order-status "
        "replies sent before the restart, "
        f"the rest {finished_after:.1f}s after it (retries and timeouts: {dict(retried)}); "
        f"{time.monotonic() - began:.1f}s in all"
    )


# --- 2. the model provider fails for a while, then recovers ----------------------------------

FLAKY_EMAILS = 10
FLAKY_FAILURES = 20
"""The first requests fail, alternately 429 (Retry-After: 1) and 500: more than one per
workflow, so some triage calls fail twice."""


class FlakyModel:
    """A responder for ``FakeModelServer``: the first ``failures`` requests fail, then it
    answers the support contracts by the schema name the request asks for."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Any:
        with self.lock:
            self.requests += 1
            number = self.requests
        if number <= self.failures:
            return Reply.error(429, retry_after=1) if number % 2 else Reply.error(500)
        schema = body["response_format"]["json_schema"]["name"]
        found = re.search(r"\b[A-Z]{2}-\d{6}\b", body["messages"][-1]["content"])
        order = found.group(0) if found else None
        if schema == SUPPORT_TRIAGE.schema_name:
            return {
                "intent": "order_status",
                "risk": "low",
                "order_number": order,
                "summary": "The customer asks where the order is.",
                "confidence": 0.93,
            }
        if schema == SUPPORT_REPLY.schema_name:
            return {
                "subject": f"Re: your order {order}",
                "body": f"Hello Tom,\n\nyour order {order} is in transit and arrives soon.",
                "order_number": order,
                "refund_usd": None,
                "confidence": 0.9,
            }
        raise ValueError(f"unexpected schema {schema!r}")


@pytest.mark.allow_model_requests  # the real OpenAI client, against a local fake server
async def test_provider_429_and_500_then_recovery(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    began = time.monotonic()
    task_queue, tag = f"fi-flaky-{uuid.uuid4()}", uuid.uuid4().hex[:8]
    ids = [f"fi-flaky-{tag}-{n}" for n in range(FLAKY_EMAILS)]
    model = FlakyModel(FLAKY_FAILURES)
    with FakeModelServer(responder=model) as server, SmtpSink() as sink:
        fake = server.env("openai:gpt-4o-mini")
        settings = KeelSettings(
            _env_file=None,
            model=fake["KEEL_MODEL"],
            openai_base_url=fake["OPENAI_BASE_URL"],
            openai_api_key=fake["OPENAI_API_KEY"],
            smtp_port=sink.port,
            data_dir=tmp_path / "data",
            task_queue=task_queue,
        )
        # The whole burst is queued before the worker polls: the first requests it sends are
        # the first triage attempt of every workflow.
        await asyncio.gather(
            *(
                start_support(ts_env.client, task_queue, i, order_status_email(tag, n))
                for n, i in enumerate(ids)
            )
        )
        async with running_worker(ts_env.client, settings, apps=resolve_apps()):
            results = await results_of(ts_env.client, ids, timeout=60)
        calls, received = server.calls, sink.messages

    assert {r.outcome for r in results.values()} == {"replied"}, {
        i: (r.outcome, r.reason) for i, r in results.items()
    }
    decided = {i: [e for e in r.ledger if isinstance(e, AgentDecided)] for i, r in results.items()}
    for workflow_id, events in decided.items():
        triage, draft = events  # one answer each: the failures never reached the ledger
        assert (triage.node, triage.attempt, draft.node) == ("triage", 1, "draft-reply")
        assert (triage.provider, triage.model) == ("openai", "gpt-4o-mini")
        # Its first call was one of the failed requests: retried in the activity (a 500, no
        # Retry-After: provider_calls) or by Temporal (a 429 or a persisting 500).
        assert triage.activity_attempt > 1 or triage.provider_calls > 1, workflow_id
    everything = [e for events in decided.values() for e in events]
    assert any(e.activity_attempt > 1 for e in everything)  # Retry-After went to Temporal
    assert any(e.provider_calls > 1 for e in everything)  # a 500 was retried in place
    # Each answer in the ledger is one successful request; nothing else was called, and no
    # attempt ran out of provider attempts.
    assert calls == FLAKY_FAILURES + len(everything) == FLAKY_FAILURES + 2 * FLAKY_EMAILS
    assert not [e for r in results.values() for e in r.ledger if isinstance(e, AgentCallFailed)]
    assert Counter(m.message_id for m in received) == Counter(
        message_id_for(f"{i}/send-reply") for i in ids
    )
    for result in results.values():
        assert verify_chain(result.ledger).ok
    attempts = Counter((e.activity_attempt, e.provider_calls) for e in everything)
    print(
        f"\nflaky provider: {FLAKY_EMAILS} workflows, {FLAKY_FAILURES} failed requests; "
        f"answers by (activity attempt, provider calls): {dict(sorted(attempts.items()))}; "
        f"{time.monotonic() - began:.1f}s"
    )


# --- 3. malformed model output, in every shape ------------------------------------------------

CLAUSE_IDS = ["1", "2", "3", "4"]  # the clauses of contract-low-risk.json
GATE_ANSWERS = {  # how the test answers each gate that may open
    "risk-classification": ("reject", "legal.priya"),
    "standard-review": ("approve", "legal.priya"),
    "general-counsel": ("approve", "gc.morgan"),  # and a second approver (two needed)
}
MALFORMED_EXAMPLES = 100


class ScriptedAnswers:
    """A model provider answering each workflow from its script: agent attempt ``n`` gets the
    ``n``-th text (the last one once the script runs out)."""

    name = "hypothesis"
    model = "malformed-1"

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.calls: Counter[str] = Counter()

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.calls[request.workflow_id] += 1
        script = self.scripts[request.workflow_id]
        text = script[min(request.agent_attempt, len(script)) - 1]
        return ModelReply(text=text, provider=self.name, model=self.model)


def accepted(text: str) -> bool:
    """The oracle: is this answer one the risk classifier must accept?"""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if not isinstance(value, dict):
        return False
    try:
        risk = RiskAssessment.model_validate(value)
    except ValidationError:
        return False
    return set(risk.clause_refs) <= set(CLAUSE_IDS) and risk.confidence >= 0.7


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
nested_junk = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
valid = st.fixed_dictionaries(
    {
        "risk_level": st.sampled_from(["low", "medium", "high"]),
        "clause_refs": st.lists(st.sampled_from(CLAUSE_IDS), max_size=4),
        "rationale": st.text(min_size=10, max_size=200),
        "confidence": st.floats(0.0, 1.0),
    }
)
FIELDS = ["risk_level", "clause_refs", "rationale", "confidence"]


@st.composite
def malformed_object(draw: st.DrawFn) -> dict[str, Any]:
    """A mostly valid answer broken in one or more ways."""
    answer = dict(draw(valid))
    for fault in draw(st.lists(st.sampled_from(list(range(7))), min_size=1, max_size=3)):
        field = draw(st.sampled_from(FIELDS))
        if fault == 0:  # a field of the wrong type
            answer[field] = draw(nested_junk)
        elif fault == 1:  # a missing field
            answer.pop(field, None)
        elif fault == 2:  # an extra field
            answer[draw(st.text(min_size=1, max_size=12))] = draw(nested_junk)
        elif fault == 3:  # confidence out of range, not finite, or absurdly large
            answer["confidence"] = draw(
                st.floats(min_value=1.0, exclude_min=True)
                | st.floats(max_value=0.0, exclude_max=True)
                | st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400)])
            )
        elif fault == 4:  # a huge string
            answer[field] = "x" * draw(st.integers(4_001, 60_000))
        elif fault == 5:  # clause references the contract does not have
            answer["clause_refs"] = draw(st.lists(st.text(max_size=25), min_size=1, max_size=60))
        else:  # an unknown risk level
            answer["risk_level"] = draw(st.text(max_size=10))
    return answer


answer_text = st.one_of(
    st.text(max_size=300),  # arbitrary text
    (json_leaf | st.lists(nested_junk, max_size=4)).map(json.dumps),  # non-object JSON
    st.dictionaries(st.text(max_size=10), nested_junk, max_size=6).map(json.dumps),  # junk
    malformed_object().map(json.dumps),
    malformed_object().map(lambda answer: json.dumps(answer)[:-1]),  # truncated
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1, 100_000)),  # deeply nested
    valid.map(json.dumps),  # a valid answer (accepted unless its confidence is too low)
)
good_answer = st.builds(
    lambda answer, confidence: json.dumps({**answer, "confidence": confidence}),
    valid,
    st.floats(0.7, 1.0),
)
scripts = st.tuples(st.lists(answer_text, max_size=2), good_answer | answer_text).map(
    lambda drawn: [*drawn[0], drawn[1]]
)
"""Up to three answers, one per agent attempt; half of them end on a good answer, so the
repair path (bad answers, then a good one) is exercised as much as escalation."""


@pytest.fixture
async def malformed_worker(
    ts_env: WorkflowEnvironment,
) -> AsyncIterator[tuple[WorkflowEnvironment, str, ScriptedAnswers]]:
    model = ScriptedAnswers()
    async with keel_worker(ts_env.client, provider=model) as task_queue:
        yield ts_env, task_queue, model


async def settle_review(
    env: WorkflowEnvironment, handle: WorkflowHandle[Any, ContractReviewResult], timeout: float
) -> ContractReviewResult:
    """Answer each gate the review opens until it completes; a hang (a failing workflow task,
    a gate nobody expects) fails after ``timeout`` seconds. Workflow time moves on by half a
    second a poll (activity retry backoffs pass quickly), never far enough to reach a gate's
    SLA."""
    answered: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                status = (await handle.describe()).status
                if status is WorkflowExecutionStatus.COMPLETED:
                    with env.auto_time_skipping_disabled():  # done: no reason to skip time
                        return await handle.result()
                assert status is WorkflowExecutionStatus.RUNNING, f"the workflow is {status}"
                for gate in await handle.query("gates", result_type=list[GateView]):
                    if gate.state.open and gate.gate not in answered:
                        decision, reviewer = GATE_ANSWERS[gate.gate]
                        # An n-of-m gate: the named approver, then others of its reviewers.
                        others = [r for r in gate.reviewers if r != reviewer]
                        needed = gate.approvals_needed if decision == "approve" else 1
                        for who in [reviewer, *others][:needed]:
                            await decide(
                                handle, review(gate.gate, decision, who, comment="fault injection")
                            )
                        answered.append(gate.gate)
                await env.sleep(timedelta(seconds=0.5))
    except TimeoutError:
        failures = [
            item.workflow_task_failed_event_attributes.failure.message
            async for item in handle.fetch_history_events()
            if item.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        raise AssertionError(
            f"{handle.id} did not finish in {timeout}s (gates answered: {answered}); "
            f"workflow task failures: {failures[:2]}"
        ) from None


@settings(
    max_examples=MALFORMED_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # each example is a workflow run
)
@given(script=scripts)
@example(
    script=[
        '{"risk_level": "low", "clause_refs": [], "rationale": "0123456789", '
        '"confidence": 1' + "0" * 400 + "}"
    ]
)
@example(script=["[" * 50_000 + "]" * 50_000])  # nesting deeper than the JSON parser's stack
@example(script=['{"confidence": 1' + "0" * 5_000 + "}"])  # beyond int-from-string's limit
@example(script=['{"rationale": "lone surrogate \ud800"}'])  # the SDKs decode "\\ud800"
@example(script=["NaN", '{"risk_level": "low"}', '{"confidence": NaN}'])
async def test_malformed_model_output_is_retried_repaired_or_escalated(
    malformed_worker: tuple[WorkflowEnvironment, str, ScriptedAnswers], script: list[str]
) -> None:
    env, task_queue, model = malformed_worker
    client = env.client
    workflow_id = f"fi-malformed-{uuid.uuid4()}"
    model.scripts[workflow_id] = script
    handle = await client.start_workflow(
        ContractReviewWorkflow.run,
        load_sample("contract-low-risk"),
        id=workflow_id,
        task_queue=task_queue,
    )
    result = await settle_review(env, handle, timeout=30)

    texts = [script[min(n, len(script)) - 1] for n in (1, 2, 3)]
    good = [accepted(text) for text in texts]
    attempts = good.index(True) + 1 if True in good else 3
    events = result.ledger
    decided = [e for e in events if isinstance(e, AgentDecided)]
    failed = [e for e in events if isinstance(e, ValidationFailed)]
    retried = [e for e in events if isinstance(e, AgentRetried)]
    escalated = [e for e in events if isinstance(e, Escalated)]
    broken = [(e.error_type, e.message[:200]) for e in events if isinstance(e, AgentCallFailed)]
    assert not broken, f"the answer broke the model call instead of failing validation: {broken}"
    assert [(d.attempt, d.activity_attempt) for d in decided] == [
        (n, 1) for n in range(1, attempts + 1)
    ]
    # Recorded as received, except lone surrogates, which cannot be stored and are replaced.
    assert [d.raw_response for d in decided] == [_clean(t)[:MAX_RAW_RESPONSE_CHARS] for t in texts][
        :attempts
    ]
    assert model.calls[workflow_id] == attempts
    assert verify_chain(events).ok
    if True in good:  # accepted on the first valid answer, after one repair per bad answer
        assert [f.attempt for f in failed] == list(range(1, attempts))
        assert [r.next_attempt for r in retried] == list(range(2, attempts + 1))
        assert not escalated and result.outcome == "approved" and result.risk is not None
        assert result.risk == RiskAssessment.model_validate(json.loads(texts[attempts - 1]))
    else:  # three bad answers: two repairs, then a human
        assert [f.attempt for f in failed] == [1, 2, 3]
        assert [r.next_attempt for r in retried] == [2, 3]
        assert len(escalated) == 1 and escalated[0].to == list(
            RISK_CLASSIFIER.on_exhausted.gate.reviewers  # type: ignore[union-attr]
        )
        assert (result.outcome, result.decided_by) == ("rejected", "escalation")
    event(f"accepted at attempt {attempts}" if True in good else "escalated")
    for failure in failed:
        assert failure.reasons and all(len(reason) < 2_000 for reason in failure.reasons)


# --- 4. three workers share PostgreSQL under a burst -----------------------------------------

BURST = int(os.environ.get("KEEL_TEST_BURST", "500"))
BURST_WORKERS = 3


async def send_attempts(client: Client, workflow_id: str) -> list[tuple[int, str]]:
    """(attempt, worker identity) of each started ``send_email`` activity in the history (a
    retried activity shows its last attempt only)."""
    scheduled: set[int] = set()
    started: list[tuple[int, str]] = []
    async for item in client.get_workflow_handle(workflow_id).fetch_history_events():
        if item.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = item.activity_task_scheduled_event_attributes.activity_type.name
            if name == tool_activity_name("send_email"):
                scheduled.add(item.event_id)
        elif item.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attributes = item.activity_task_started_event_attributes
            if attributes.scheduled_event_id in scheduled:
                started.append((attributes.attempt, attributes.identity))
    return started


async def test_three_workers_share_postgres_under_a_burst(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    began = time.monotonic()
    client, mailbox = dev_env.client, tmp_path / "mailbox.jsonl"
    task_queue, tag = f"fi-burst-{uuid.uuid4()}", uuid.uuid4().hex[:8]
    ids = [f"fi-burst-{tag}-{n}" for n in range(BURST)]
    with SmtpSink(mailbox=mailbox) as sink:
        env = worker_env(
            client.service_client.config.target_host,
            task_queue,
            tmp_path / "data",
            sink.port,
            KEEL_DATABASE_URL=PG_URL,
        )
        async with keel_workers(BURST_WORKERS, env, tmp_path) as workers:
            ready = time.monotonic()
            starting = asyncio.Semaphore(50)

            async def start(n: int, workflow_id: str) -> None:
                async with starting:
                    await start_support(client, task_queue, workflow_id, order_status_email(tag, n))

            await asyncio.gather(*(start(n, i) for n, i in enumerate(ids)))
            started = time.monotonic()
            results = await results_of(client, ids, timeout=120)
            finished = time.monotonic()
            assert all(w.alive for w in workers), "\n".join(w.output for w in workers)

    assert {r.outcome for r in results.values()} == {"replied"}, Counter(
        (r.outcome, r.reason) for r in results.values()
    )
    assert_one_mail_per_workflow(mailbox, ids)
    with psycopg.connect(PG_URL) as db:
        rows = db.execute(
            "SELECT idempotency_key, tool, status, attempts, provider_id FROM keel_effects "
            "WHERE idempotency_key LIKE %s",
            (f"fi-burst-{tag}-%",),
        ).fetchall()
    keys = Counter(row[0] for row in rows)
    assert keys == Counter(f"{i}/send-reply" for i in ids)  # one row per key, no strays
    assert {(tool, status) for _, tool, status, _, _ in rows} == {("send_email", "performed")}
    assert all(provider == message_id_for(key) for key, _, _, _, provider in rows)
    # attempts counts entries into perform_once that found an unfinished intent: only an
    # activity Temporal retried can do that.
    retried = {key.removesuffix("/send-reply"): n for key, _, _, n, _ in rows if n > 1}
    for workflow_id, attempts in retried.items():
        ((attempt, _),) = await send_attempts(client, workflow_id)
        assert attempt >= attempts, f"{workflow_id}: {attempts} entries, attempt {attempt}"
    # Every worker process sent some of the replies (a sample of the histories).
    sample = await asyncio.gather(*(send_attempts(client, i) for i in ids[::5]))
    senders = {identity.split("@")[0] for sends in sample for _, identity in sends}
    assert senders == {str(w.proc.pid) for w in workers}, senders
    rate = BURST / (finished - ready)
    print(
        f"\nburst: {BURST} workflows on {BURST_WORKERS} workers, started in "
        f"{started - ready:.1f}s, all replied {finished - ready:.1f}s after the first start "
        f"({rate:.1f} workflows/s); {len(retried)} sends retried; "
        f"{time.monotonic() - began:.1f}s in all"
    )

"""The side-effect record on SQLite and on the machine's PostgreSQL: each effect happens once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keel.activities.effects import (
    EffectConflictError,
    EffectRecord,
    PostgresEffectRecord,
    SqliteEffectRecord,
    open_effect_record,
)
from keel.errors import KeelUserError
from keel.scenarios.incident.world import IncidentWorld
from keel.settings import KeelSettings

PG_URL = os.environ.get("KEEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


def _open(backend: str, tmp_path: Path) -> EffectRecord:
    if backend == "postgres":
        return PostgresEffectRecord(PG_URL)
    return SqliteEffectRecord(tmp_path / "effects.sqlite3")


def _url(backend: str, tmp_path: Path) -> str:
    """What a subprocess needs to open the same record."""
    return PG_URL if backend == "postgres" else str(tmp_path / "effects.sqlite3")


@pytest.fixture(params=BACKENDS)
async def record(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EffectRecord]:
    effects = _open(request.param, tmp_path)
    yield effects
    await effects.aclose()


@pytest.fixture
def prefix() -> str:
    """Keys unique to the test: the PostgreSQL table is shared by every run."""
    return f"test-{uuid.uuid4().hex}"


class CountingProvider:
    """A provider without its own deduplication, so repeated actions would show."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay = delay

    async def act(self, key: str) -> tuple[str, dict[str, Any]]:
        self.calls.append(key)
        await asyncio.sleep(self.delay)
        provider_id = f"p-{len(self.calls)}"
        return provider_id, {"id": provider_id, "key": key}


async def test_first_call_acts_and_the_second_replays(record: EffectRecord, prefix: str) -> None:
    provider = CountingProvider()
    key = f"{prefix}:wf-1:step-a"
    request = {"service": "checkout-api", "to": "1.41.3"}

    first, result = await record.perform_once(key, "rollback_deploy", request, provider.act)
    assert (first.replayed, first.provider_id, first.idempotency_key) == (False, "p-1", key)
    assert result == {"id": "p-1", "key": key}

    second, again = await record.perform_once(
        key, "rollback_deploy", {"to": "1.41.3", "service": "checkout-api"}, provider.act
    )
    assert (second.replayed, second.provider_id) == (True, "p-1")
    assert again == result
    assert provider.calls == [key]  # acted once, with the key as the provider's key

    entry = await record.get(key)
    assert entry is not None
    assert (entry.status, entry.provider_id, entry.attempts) == ("performed", "p-1", 1)
    assert entry.performed_at is not None and entry.performed_at >= entry.intent_at
    assert await record.get(f"{prefix}:never") is None


async def test_concurrent_calls_with_one_key_act_once(record: EffectRecord, prefix: str) -> None:
    provider = CountingProvider(delay=0.05)
    key = f"{prefix}:concurrent"
    results = await asyncio.gather(
        *(record.perform_once(key, "update_incident", {"n": 1}, provider.act) for _ in range(20))
    )
    assert provider.calls == [key]
    assert sorted(receipt.replayed for receipt, _ in results) == [False] + [True] * 19
    assert {receipt.provider_id for receipt, _ in results} == {"p-1"}


async def test_different_keys_do_not_wait_for_each_other(record: EffectRecord, prefix: str) -> None:
    provider = CountingProvider(delay=0.2)
    started = time.perf_counter()
    await asyncio.gather(
        *(record.perform_once(f"{prefix}:{i}", "t", {}, provider.act) for i in range(5))
    )
    assert len(provider.calls) == 5
    if isinstance(record, PostgresEffectRecord):  # SQLite keys may share a lock stripe
        assert time.perf_counter() - started < 0.9


async def test_same_key_with_another_request_is_refused(record: EffectRecord, prefix: str) -> None:
    provider = CountingProvider()
    key = f"{prefix}:reused"
    await record.perform_once(key, "rollback_deploy", {"to": "1.41.3"}, provider.act)
    with pytest.raises(EffectConflictError, match=r"already used for rollback_deploy") as info:
        await record.perform_once(key, "rollback_deploy", {"to": "1.40.0"}, provider.act)
    assert isinstance(info.value, KeelUserError)
    assert key in str(info.value)
    with pytest.raises(EffectConflictError, match="this call is update_incident"):
        await record.perform_once(key, "update_incident", {"to": "1.41.3"}, provider.act)
    assert len(provider.calls) == 1
    with pytest.raises(ValueError, match="non-empty"):
        await record.perform_once("", "t", {}, provider.act)


async def test_a_crash_after_the_provider_acted_is_deduplicated_by_the_provider(
    record: EffectRecord, prefix: str
) -> None:
    world = IncidentWorld(record.store, namespace=prefix)
    key = f"{prefix}:note"
    acts = 0

    async def act(idempotency_key: str) -> tuple[str, dict[str, Any]]:
        nonlocal acts
        acts += 1
        out = await world.add_note(idempotency_key, "INC-1", "mitigating", "rolled back")
        if acts == 1:
            raise ConnectionResetError("worker lost before reporting")
        return out.note_id, out.model_dump(mode="json")

    request = {"incident_id": "INC-1", "note": "rolled back"}
    with pytest.raises(ConnectionResetError):
        await record.perform_once(key, "update_incident", request, act)
    entry = await record.get(key)
    assert entry is not None and entry.status == "intent" and entry.provider_id is None

    # The outcome is unknown; under policy resend the retry acts again with the same key.
    receipt, result = await record.perform_once(
        key, "update_incident", request, act, policy="resend"
    )
    notes = await world.notes("INC-1")
    assert acts == 2
    assert len(notes) == 1  # the provider deduplicated the second action on the key
    assert receipt.replayed is False and receipt.provider_id == notes[0]["note_id"]
    assert receipt.unknown_resolved_by == "resend"
    assert result["note_id"] == notes[0]["note_id"]
    entry = await record.get(key)
    assert entry is not None and (entry.status, entry.attempts) == ("performed", 2)

    third, _ = await record.perform_once(key, "update_incident", request, act)
    assert third.replayed is True and acts == 2


WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from pathlib import Path
    from keel.activities.effects import PostgresEffectRecord, SqliteEffectRecord
    from keel.scenarios.incident.world import IncidentWorld

    url, key, namespace, log, go, mode = sys.argv[1:7]

    async def main():
        record = (PostgresEffectRecord if url.startswith("postgresql") else SqliteEffectRecord)(url)
        world = IncidentWorld(record.store, namespace=namespace)

        async def act(k):
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\\n")
            out = await world.add_note(k, "INC-9", "mitigating", "from a worker")
            if mode == "die":
                os._exit(17)  # killed between acting and recording
            await asyncio.sleep(0.2)
            return out.note_id, out.model_dump(mode="json")

        while not Path(go).exists():
            time.sleep(0.005)
        results = await asyncio.gather(
            *(record.perform_once(key, "update_incident", {"n": 9}, act) for _ in range(4))
        )
        print(json.dumps([[r.provider_id, r.replayed] for r, _ in results]))
        await record.aclose()

    asyncio.run(main())
    """
)


def _spawn(
    tmp_path: Path, backend: str, key: str, namespace: str, mode: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            _url(backend, tmp_path),
            key,
            namespace,
            str(tmp_path / "acts.log"),
            str(tmp_path / "go"),
            mode,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_three_processes_sharing_the_database_act_once(
    backend: str, tmp_path: Path, prefix: str
) -> None:
    key = f"{prefix}:processes"
    workers = [_spawn(tmp_path, backend, key, prefix, "ok") for _ in range(3)]
    await asyncio.sleep(1.0)  # let every interpreter start before the gate opens
    (tmp_path / "go").touch()
    outputs = [await asyncio.to_thread(worker.communicate, timeout=60) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], [err for _, err in outputs]

    receipts = [receipt for out, _ in outputs for receipt in json.loads(out)]
    assert len(receipts) == 12
    assert sum(1 for _, replayed in receipts if not replayed) == 1
    assert len({provider_id for provider_id, _ in receipts}) == 1
    assert len((tmp_path / "acts.log").read_text().split()) == 1

    record = _open(backend, tmp_path)
    try:
        notes = await IncidentWorld(record.store, namespace=prefix).notes("INC-9")
        assert [n["note_id"] for n in notes] == [receipts[0][0]]
    finally:
        await record.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_worker_killed_after_acting_leaves_a_retry_that_does_not_repeat(
    backend: str, tmp_path: Path, prefix: str
) -> None:
    key = f"{prefix}:killed"
    (tmp_path / "go").touch()
    worker = _spawn(tmp_path, backend, key, prefix, "die")
    _, err = await asyncio.to_thread(worker.communicate, timeout=60)
    assert worker.returncode == 17, err

    record = _open(backend, tmp_path)
    try:
        world = IncidentWorld(record.store, namespace=prefix)
        entry = await record.get(key)
        assert entry is not None and entry.status == "intent"

        async def act(k: str) -> tuple[str, dict[str, Any]]:
            out = await world.add_note(k, "INC-9", "mitigating", "from the retry")
            return out.note_id, out.model_dump(mode="json")

        # The dead worker's lock went with its process: the retry does not wait for it.
        receipt, result = await asyncio.wait_for(
            record.perform_once(key, "update_incident", {"n": 9}, act, policy="resend"),
            timeout=10,
        )
        notes = await world.notes("INC-9")
        assert len(notes) == 1 and notes[0]["note"] == "from a worker"
        assert receipt.provider_id == notes[0]["note_id"] == result["note_id"]
        assert not receipt.replayed
    finally:
        await record.aclose()


def test_open_effect_record_picks_the_backend(tmp_path: Path) -> None:
    def settings(**values: Any) -> KeelSettings:
        return KeelSettings(_env_file=None, data_dir=tmp_path / "data", **values)

    for url in (PG_URL, "postgres://keel:secret@db:5432/keel"):
        chosen = open_effect_record(settings(database_url=url))
        assert isinstance(chosen, PostgresEffectRecord)
        assert "secret" not in repr(chosen)

    default = open_effect_record(settings(database_url=None))
    assert isinstance(default, SqliteEffectRecord)
    assert default.store.path == tmp_path / "data" / "effects.sqlite3"  # type: ignore[attr-defined]
    assert (tmp_path / "data").is_dir()

    explicit = open_effect_record(settings(database_url=f"sqlite:///{tmp_path}/x.sqlite3"))
    assert isinstance(explicit, SqliteEffectRecord)

    with pytest.raises(KeelUserError, match="KEEL_DATABASE_URL"):
        open_effect_record(settings(database_url="mysql://db/keel"))


async def test_sqlite_record_uses_wal(tmp_path: Path, prefix: str) -> None:
    record = SqliteEffectRecord(tmp_path / "nested" / "effects.sqlite3")
    try:
        await record.perform_once(f"{prefix}:wal", "t", {}, CountingProvider().act)
        mode = await record.store.transaction(lambda tx: tx.fetchone("PRAGMA journal_mode"))
        assert mode == ("wal",)
    finally:
        await record.aclose()

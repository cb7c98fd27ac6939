"""The incident sample world: scenario data and local fakes of the systems on-call touches.

Read-only data (metrics, deploys, alerts) comes from ``samples/incident-world.json``,
which has a fixed "now". The fake deploy API and incident tracker keep their state in a
``SqlStore`` (the side-effect record's database), so several workers share it, and they
honour the idempotency key passed to them as real providers do: a second call with the
same key returns the first action and changes nothing, and they can be asked whether the
action of a key happened (``find_change``, ``find_note``: how the tools resolve an unknown
outcome before acting again). State is scoped by ``namespace``,
so separate demos or tests sharing one database do not see each other's rollbacks.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from keel.activities.sqlstore import SqlStore, Tx
from keel.errors import KeelUserError
from keel.scenarios.incident.contracts import (
    Alert,
    AlertCorrelationOutput,
    Deploy,
    DeployChangeOutput,
    DeployHistoryOutput,
    Metric,
    MetricsLookupOutput,
    UpdateIncidentOutput,
)
from keel.workers.app import load_json

WORLD_SAMPLE = "incident-world"
SAMPLES = Path(__file__).parent / "samples"
CORRELATION_WINDOW = timedelta(minutes=15)
"""Alerts on other services this close to one of the service's alerts are correlated."""
ANOMALY_FACTOR = 3.0
FAKES_DDL = (
    """CREATE TABLE IF NOT EXISTS keel_fake_deploys (
        namespace TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        action_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        service TEXT NOT NULL,
        deploy_id TEXT,
        from_version TEXT NOT NULL,
        to_version TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (namespace, idempotency_key)
    )""",
    """CREATE TABLE IF NOT EXISTS keel_fake_service_versions (
        namespace TEXT NOT NULL,
        service TEXT NOT NULL,
        version TEXT NOT NULL,
        action_id TEXT NOT NULL,
        PRIMARY KEY (namespace, service)
    )""",
    """CREATE TABLE IF NOT EXISTS keel_fake_incident_notes (
        namespace TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        note_id TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        status TEXT NOT NULL,
        note TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (namespace, idempotency_key)
    )""",
)
_VERSION_SQL = "SELECT version FROM keel_fake_service_versions WHERE namespace = ? AND service = ?"


class WorldError(KeelUserError):
    """A request the world refuses; ``error_type`` names it in the ApplicationError."""

    error_type = "WorldError"


class UnknownServiceError(WorldError):
    """The service is not in the world."""

    error_type = "UnknownService"


class UnknownDeployError(WorldError):
    """The deploy is not in the service's history."""

    error_type = "UnknownDeploy"


class DeployConflictError(WorldError):
    """The deploy change conflicts with the service's current version."""

    error_type = "DeployConflict"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _stamp() -> str:
    """Now, as text that sorts in time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class IncidentWorld:
    """Scenario data plus the fake deploy API and incident tracker over ``store``."""

    def __init__(
        self, store: SqlStore, *, namespace: str = "default", data: dict[str, Any] | None = None
    ) -> None:
        self.store = store
        self.namespace = namespace
        data = data if data is not None else load_json(SAMPLES / f"{WORLD_SAMPLE}.json")
        self.now = _ts(data["now"])
        self.services: dict[str, dict[str, Any]] = data["services"]
        self.alerts = sorted(
            (Alert.model_validate(alert) for alert in data["alerts"]), key=lambda a: a.at
        )

    def _service(self, name: str) -> dict[str, Any]:
        service = self.services.get(name)
        if service is None:
            raise UnknownServiceError(
                f"unknown service {name!r}; this world has {', '.join(sorted(self.services))}"
            )
        return service

    def deploys(self, service: str) -> list[Deploy]:
        """Every deploy of ``service``, newest first."""
        deploys = [Deploy.model_validate(d) for d in self._service(service)["deploys"]]
        return sorted(deploys, key=lambda d: d.at, reverse=True)

    # --- read-only tools ---------------------------------------------------------------------

    def metrics(self, service: str, metric: Metric, window_minutes: int) -> MetricsLookupOutput:
        """Baseline: median before the window (or of its first half when nothing precedes it)."""
        points = [(_ts(t), float(v)) for t, v in self._service(service)["metrics"][metric]]
        start = self.now - timedelta(minutes=window_minutes)
        window = [(t, v) for t, v in points if start < t <= self.now]
        before = [v for t, v in points if t <= start]
        if not window:
            raise WorldError(f"no {metric} data for {service} in the last {window_minutes} min")
        if len(before) < 3:
            before = [v for _, v in window[: max(1, len(window) // 2)]]
        baseline = median(before)
        anomaly = next((t for t, v in window if v > ANOMALY_FACTOR * baseline), None)
        return MetricsLookupOutput(
            service=service,
            metric=metric,
            baseline=round(baseline, 3),
            current=window[-1][1],
            peak=max(v for _, v in window),
            anomaly_started_at=anomaly,
        )

    def correlate(self, service: str, window_minutes: int) -> AlertCorrelationOutput:
        """The alerts of ``service`` within ``window_minutes`` of now."""
        self._service(service)
        start = self.now - timedelta(minutes=window_minutes)
        in_window = [a for a in self.alerts if start < a.at <= self.now]
        own = [a for a in in_window if a.service == service]
        others = [
            a
            for a in in_window
            if a.service != service and any(abs(a.at - o.at) <= CORRELATION_WINDOW for o in own)
        ]
        return AlertCorrelationOutput(
            service=service,
            alerts=sorted(own + others, key=lambda a: a.at),
            correlated_services=sorted({a.service for a in others}),
        )

    async def history(self, service: str, since_hours: int) -> DeployHistoryOutput:
        """The deploys of ``service`` in the last ``since_hours``, newest first."""
        since = self.now - timedelta(hours=since_hours)
        deploys = [d for d in self.deploys(service) if d.at >= since]
        return DeployHistoryOutput(
            service=service,
            current_version=await self.current_version(service),
            deploys=deploys,
        )

    # --- the fake deploy API -----------------------------------------------------------------

    async def current_version(self, service: str) -> str:
        """The version ``service`` runs now (after any rollbacks)."""
        static = str(self._service(service)["current_version"])
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)
        row = await self.store.transaction(
            lambda tx: tx.fetchone(
                _VERSION_SQL,
                self.namespace,
                service,
            )
        )
        return str(row[0]) if row else static

    async def rollback(
        self, key: str, service: str, deploy_id: str, to_version: str
    ) -> DeployChangeOutput:
        """Roll ``service`` back from ``deploy_id``'s version to its previous version."""
        deploy = next((d for d in self.deploys(service) if d.deploy_id == deploy_id), None)
        if deploy is None:
            raise UnknownDeployError(f"{service} has no deploy {deploy_id!r}")
        if to_version != deploy.previous_version:
            raise DeployConflictError(
                f"deploy {deploy_id} of {service} replaced {deploy.previous_version}, "
                f"so rolling it back goes to {deploy.previous_version}, not {to_version}"
            )
        return await self._change(key, "rollback", service, to_version, deploy)

    async def roll_forward(self, key: str, service: str, to_version: str) -> DeployChangeOutput:
        """Deploy ``to_version`` of ``service`` again (any version it has run)."""
        known = {v for d in self.deploys(service) for v in (d.version, d.previous_version)}
        if to_version not in known:
            raise DeployConflictError(
                f"{service} has never run {to_version!r}; "
                f"known versions: {', '.join(sorted(known))}"
            )
        return await self._change(key, "roll_forward", service, to_version, None)

    async def _change(
        self, key: str, kind: str, service: str, to_version: str, deploy: Deploy | None
    ) -> DeployChangeOutput:
        static = str(self._service(service)["current_version"])
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)

        async def change(tx: Tx) -> DeployChangeOutput:
            done = await tx.fetchone(
                "SELECT action_id, from_version, to_version, service FROM keel_fake_deploys "
                "WHERE namespace = ? AND idempotency_key = ?",
                self.namespace,
                key,
            )
            if done is not None:  # the provider deduplicates: same key, same action
                action_id, from_version, done_to, done_service = done
                return DeployChangeOutput(
                    service=done_service,
                    from_version=from_version,
                    to_version=done_to,
                    action_id=action_id,
                )
            row = await tx.fetchone(
                _VERSION_SQL,
                self.namespace,
                service,
            )
            current = str(row[0]) if row else static
            if deploy is not None and current != deploy.version:
                raise DeployConflictError(
                    f"{service} runs {current}, not {deploy.version}: deploy {deploy.deploy_id} "
                    "is not live, so there is nothing to roll back"
                )
            action_id = f"{'rb' if kind == 'rollback' else 'rf'}-{secrets.token_hex(6)}"
            await tx.execute(
                "INSERT INTO keel_fake_deploys (namespace, idempotency_key, action_id, kind, "
                "service, deploy_id, from_version, to_version, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                self.namespace,
                key,
                action_id,
                kind,
                service,
                deploy.deploy_id if deploy else None,
                current,
                to_version,
                _stamp(),
            )
            await tx.execute(
                "INSERT INTO keel_fake_service_versions (namespace, service, version, action_id) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (namespace, service) DO UPDATE SET "
                "version = excluded.version, action_id = excluded.action_id",
                self.namespace,
                service,
                to_version,
                action_id,
            )
            return DeployChangeOutput(
                service=service, from_version=current, to_version=to_version, action_id=action_id
            )

        return await self.store.transaction(
            change, lock=f"keel-fake-deploy:{self.namespace}:{service}"
        )

    async def find_change(self, key: str) -> DeployChangeOutput | None:
        """The rollback or roll-forward done with idempotency key ``key``, if any."""
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)
        row = await self.store.transaction(
            lambda tx: tx.fetchone(
                "SELECT action_id, from_version, to_version, service FROM keel_fake_deploys "
                "WHERE namespace = ? AND idempotency_key = ?",
                self.namespace,
                key,
            )
        )
        if row is None:
            return None
        action_id, from_version, to_version, service = row
        return DeployChangeOutput(
            service=service, from_version=from_version, to_version=to_version, action_id=action_id
        )

    # --- the fake incident tracker -----------------------------------------------------------

    async def find_note(self, key: str) -> UpdateIncidentOutput | None:
        """The note added with idempotency key ``key``, if any."""
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)
        row = await self.store.transaction(
            lambda tx: tx.fetchone(
                "SELECT note_id, incident_id, status FROM keel_fake_incident_notes "
                "WHERE namespace = ? AND idempotency_key = ?",
                self.namespace,
                key,
            )
        )
        return (
            None
            if row is None
            else UpdateIncidentOutput(incident_id=row[1], status=row[2], note_id=row[0])
        )

    async def add_note(
        self, key: str, incident_id: str, status: str, note: str
    ) -> UpdateIncidentOutput:
        """Set the incident's status and append ``note`` to its timeline, once per key."""
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)

        async def add(tx: Tx) -> UpdateIncidentOutput:
            done = await tx.fetchone(
                "SELECT note_id, incident_id, status FROM keel_fake_incident_notes "
                "WHERE namespace = ? AND idempotency_key = ?",
                self.namespace,
                key,
            )
            if done is not None:
                return UpdateIncidentOutput(incident_id=done[1], status=done[2], note_id=done[0])
            note_id = f"note-{secrets.token_hex(6)}"
            await tx.execute(
                "INSERT INTO keel_fake_incident_notes (namespace, idempotency_key, note_id, "
                "incident_id, status, note, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                self.namespace,
                key,
                note_id,
                incident_id,
                status,
                note,
                _stamp(),
            )
            return UpdateIncidentOutput(incident_id=incident_id, status=status, note_id=note_id)

        return await self.store.transaction(add, lock=f"keel-fake-incident:{self.namespace}")

    async def notes(self, incident_id: str) -> list[dict[str, str]]:
        """The incident's timeline, oldest first (status is the last note's)."""
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)
        rows = await self.store.transaction(
            lambda tx: tx.fetchall(
                "SELECT note_id, status, note, at FROM keel_fake_incident_notes "
                "WHERE namespace = ? AND incident_id = ? ORDER BY at, note_id",
                self.namespace,
                incident_id,
            )
        )
        return [dict(zip(("note_id", "status", "note", "at"), row, strict=True)) for row in rows]

    async def deploy_actions(self, service: str) -> list[dict[str, str]]:
        """Rollbacks and roll-forwards performed on ``service``, oldest first."""
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)
        columns = ("action_id", "kind", "deploy_id", "from_version", "to_version", "at")
        rows = await self.store.transaction(
            lambda tx: tx.fetchall(
                f"SELECT {', '.join(columns)} FROM keel_fake_deploys "
                "WHERE namespace = ? AND service = ? ORDER BY at, action_id",
                self.namespace,
                service,
            )
        )
        return [dict(zip(columns, row, strict=True)) for row in rows]

    async def reset(self) -> None:
        """Forget this namespace's rollbacks and notes (the scenario starts over)."""
        await self.store.ensure_schema("keel_fake_systems", FAKES_DDL)

        async def wipe(tx: Tx) -> None:
            for table in ("keel_fake_deploys", "keel_fake_service_versions"):
                await tx.execute(f"DELETE FROM {table} WHERE namespace = ?", self.namespace)
            await tx.execute(
                "DELETE FROM keel_fake_incident_notes WHERE namespace = ?", self.namespace
            )

        await self.store.transaction(wipe)

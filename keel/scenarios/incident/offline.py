"""The offline planner for the ``incident-planner`` contract. Deterministic; not an LLM.

It reads the tool outputs in the findings (never hard-coded versions or ids) and answers:

1. no findings yet: three independent reads (metrics, deploys, alerts);
2. an anomaly with a deploy shortly before it: a gated, compensated rollback of that deploy;
3. after the rollback: a note on the incident, status ``mitigated``, and done;
4. no anomaly, or no deploy that explains it: a note on the incident, status
   ``investigating`` (a human takes over), and done.

Its plans are always valid; plan faults (``keel.scenarios.incident.plan_faults``) are how
demos and tests get an invalid one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from keel.scenarios.incident.contracts import (
    Alert,
    AlertCorrelationOutput,
    Deploy,
    DeployChangeOutput,
    DeployHistoryOutput,
    Finding,
    MetricsLookupOutput,
)

SUSPECT_WINDOW = timedelta(minutes=60)
"""A deploy at most this long before the anomaly started is a rollback candidate."""
READ_WINDOW_MINUTES = 120
DEPLOY_LOOKBACK_HOURS = 24
PRIMARY_METRIC = "p99_latency_ms"
_WHO = "Offline rule-based planner (not an LLM)"
_MAX_LISTED = 5

_Out = TypeVar("_Out", bound=BaseModel)


def plan_incident(node_input: Mapping[str, Any], feedback: Sequence[str]) -> dict[str, Any]:
    """The next plan for an incident, from the findings and actions so far."""
    incident = node_input.get("incident") or {}
    service = str(incident.get("service", ""))
    incident_id = str(incident.get("incident_id", ""))
    findings = _parse_findings(node_input.get("findings") or [])
    actions = [str(a) for a in node_input.get("actions") or []]

    if not findings and not actions:
        plan = _fan_out(service)
    else:
        evidence = _Evidence.gather(findings, service)
        rollbacks = _rollbacks(findings, actions)
        if rollbacks:
            plan = _mitigated(incident_id, evidence, rollbacks)
        elif evidence.anomaly is None:
            plan = _no_anomaly(incident_id, evidence)
        elif evidence.suspect is None:
            plan = _unexplained_anomaly(incident_id, evidence)
        else:
            plan = _rollback(service, evidence)
    if feedback:
        plan["summary"] += (
            f" (Re-planned with {len(feedback)} rejection reason(s) fed back; the rules "
            "answer the same plan they always do.)"
        )
    plan["summary"] = plan["summary"][:4_000]
    return plan


# --- the plans -------------------------------------------------------------------------------


def _fan_out(service: str) -> dict[str, Any]:
    window = READ_WINDOW_MINUTES
    return {
        "done": False,
        "summary": (
            f"{_WHO}: no findings yet. Reading {PRIMARY_METRIC} of {service} over the last "
            f"{window} minutes, its deploys of the last {DEPLOY_LOOKBACK_HOURS} hours and "
            f"the alerts around it, in parallel."
        ),
        "tasks": [
            {
                "ref": "metrics",
                "tool": "metrics_lookup",
                "input": {"service": service, "metric": PRIMARY_METRIC, "window_minutes": window},
                "purpose": f"Did {PRIMARY_METRIC} of {service} leave its baseline, and when?",
            },
            {
                "ref": "deploys",
                "tool": "deploy_history",
                "input": {"service": service, "since_hours": DEPLOY_LOOKBACK_HOURS},
                "purpose": f"What was deployed to {service} recently?",
            },
            {
                "ref": "alerts",
                "tool": "alert_correlation",
                "input": {"service": service, "window_minutes": window},
                "purpose": f"Which alerts fired around {service}, and on which services?",
            },
        ],
        "confidence": 0.9,
    }


def _rollback(service: str, ev: _Evidence) -> dict[str, Any]:
    deploy = ev.suspect
    assert deploy is not None and ev.anomaly is not None
    title = f"Roll back {service} from {deploy.version} to {deploy.previous_version}"
    return {
        "done": False,
        "summary": (
            f"{_WHO}: {ev.describe()} Proposing to roll back deploy {deploy.deploy_id} "
            f"({deploy.version} -> {deploy.previous_version}) behind a human gate; "
            f"rolling forward to {deploy.version} undoes it."
        ),
        "tasks": [
            {
                "ref": "rollback",
                "tool": "rollback_deploy",
                "input": {
                    "service": service,
                    "deploy_id": deploy.deploy_id,
                    "to_version": deploy.previous_version,
                },
                "gate": {"title": title},
                "compensation": {
                    "tool": "roll_forward_deploy",
                    "input": {"service": service, "to_version": deploy.version},
                },
                "purpose": (
                    f"Undo deploy {deploy.deploy_id}, the most likely cause of the "
                    f"{ev.anomaly.metric} anomaly."
                ),
            }
        ],
        "confidence": ev.rollback_confidence(),
    }


def _mitigated(incident_id: str, ev: _Evidence, rollbacks: list[str]) -> dict[str, Any]:
    note = f"Mitigated by {'; '.join(rollbacks)}. Evidence: {ev.describe()}"
    return _update(
        incident_id,
        status="mitigated",
        note=note,
        summary=f"{_WHO}: the rollback is done ({'; '.join(rollbacks)}); recording it on the "
        "incident timeline and finishing.",
        # A confirmed tool output is stronger evidence than an action line.
        confidence=0.9 if ev.rollback_outputs else 0.8,
        purpose="Record the mitigation on the incident timeline.",
    )


def _no_anomaly(incident_id: str, ev: _Evidence) -> dict[str, Any]:
    if ev.metrics:
        m = ev.metrics[0]
        seen = (
            f"No anomaly found: {m.metric} of {m.service} is at {m.current:g} against a "
            f"baseline of {m.baseline:g} (peak {m.peak:g})"
        )
        elevated = m.current > 1.2 * m.baseline
        confidence = 0.6 if elevated or ev.alerts else 0.8
    else:
        seen = "No anomaly found: no metrics could be read"
        confidence = 0.5
    note = (
        f"{seen}, so no suspect deploy either. {ev.describe_alerts()}"
        " Nothing was changed; handing over to on-call for a manual look."
    )
    return _update(
        incident_id,
        status="investigating",
        note=note,
        summary=f"{_WHO}: {seen[0].lower()}{seen[1:]}; no suspect deploy. Noting it on the "
        "incident and stopping.",
        confidence=confidence,
        purpose="Tell on-call what was checked and that nothing explains the page yet.",
    )


def _unexplained_anomaly(incident_id: str, ev: _Evidence) -> dict[str, Any]:
    if ev.deploys_read:
        why = "no deploy in the 60 minutes before it explains it"
        nearest = ev.nearest_earlier_deploy()
        if nearest is not None and ev.anomaly is not None:
            lead = _minutes(ev.anomaly_at - _utc(nearest.at))
            why += (
                f" (the nearest earlier deploy, {nearest.deploy_id} {nearest.version}, "
                f"landed {lead} minutes before)"
            )
        confidence = 0.65 if ev.upstream_candidates() else 0.75
    else:
        why = "the deploy history could not be read, so no deploy can be blamed"
        confidence = 0.5
    note = (
        f"{ev.describe()} No rollback proposed: {why}. Nothing was changed; handing over "
        "to on-call."
    )
    return _update(
        incident_id,
        status="investigating",
        note=note,
        summary=f"{_WHO}: an anomaly, but {why}. Noting it on the incident and stopping.",
        confidence=confidence,
        purpose="Tell on-call about the anomaly and that no recent deploy explains it.",
    )


def _update(
    incident_id: str, *, status: str, note: str, summary: str, confidence: float, purpose: str
) -> dict[str, Any]:
    return {
        "done": True,
        # Only an update that reports mitigation concludes the incident; the rest hand over.
        "conclusion": "mitigated" if status in ("mitigated", "resolved") else "unresolved",
        "summary": summary,
        "tasks": [
            {
                "ref": "update-incident",
                "tool": "update_incident",
                "input": {"incident_id": incident_id, "status": status, "note": note[:8_000]},
                "purpose": purpose,
            }
        ],
        "confidence": confidence,
    }


# --- evidence --------------------------------------------------------------------------------


@dataclass
class _Evidence:
    service: str
    metrics: list[MetricsLookupOutput] = field(default_factory=list)
    deploys: list[Deploy] = field(default_factory=list)
    deploys_read: bool = False
    alerts: list[Alert] = field(default_factory=list)
    other_services: list[str] = field(default_factory=list)
    rollback_outputs: list[DeployChangeOutput] = field(default_factory=list)

    @classmethod
    def gather(cls, findings: Iterable[Finding], service: str) -> _Evidence:
        ev = cls(service=service)
        seen_deploys: set[str] = set()
        seen_alerts: set[tuple[str, str, datetime]] = set()
        for f in findings:
            if f.tool == "metrics_lookup" and (m := _as(MetricsLookupOutput, f.output)):
                if m.service == service:
                    ev.metrics.append(m)
            elif f.tool == "deploy_history" and (d := _as(DeployHistoryOutput, f.output)):
                if d.service == service:
                    ev.deploys_read = True
                    for deploy in d.deploys:
                        if deploy.deploy_id not in seen_deploys:
                            seen_deploys.add(deploy.deploy_id)
                            ev.deploys.append(deploy)
            elif f.tool == "alert_correlation" and (a := _as(AlertCorrelationOutput, f.output)):
                for alert in a.alerts:
                    key = (alert.name, alert.service, _utc(alert.at))
                    if key not in seen_alerts:
                        seen_alerts.add(key)
                        ev.alerts.append(alert)
                for other in a.correlated_services:
                    if other != service and other not in ev.other_services:
                        ev.other_services.append(other)
            elif f.tool == "rollback_deploy" and (r := _as(DeployChangeOutput, f.output)):
                ev.rollback_outputs.append(r)
        ev.deploys.sort(key=lambda d: (_utc(d.at), d.deploy_id), reverse=True)
        ev.alerts.sort(key=lambda a: (_utc(a.at), a.name))
        return ev

    @property
    def anomaly(self) -> MetricsLookupOutput | None:
        """The metric whose anomaly started first."""
        anomalous = [m for m in self.metrics if m.anomaly_started_at is not None]
        return min(anomalous, key=lambda m: _utc(m.anomaly_started_at), default=None)

    @property
    def anomaly_at(self) -> datetime:
        anomaly = self.anomaly
        assert anomaly is not None and anomaly.anomaly_started_at is not None
        return _utc(anomaly.anomaly_started_at)

    @property
    def candidates(self) -> list[Deploy]:
        """Deploys in the window before the anomaly start, newest first."""
        if self.anomaly is None:
            return []
        start = self.anomaly_at
        return [d for d in self.deploys if start - SUSPECT_WINDOW <= _utc(d.at) <= start]

    @property
    def suspect(self) -> Deploy | None:
        candidates = self.candidates
        return candidates[0] if candidates else None

    def nearest_earlier_deploy(self) -> Deploy | None:
        earlier = [d for d in self.deploys if _utc(d.at) <= self.anomaly_at]
        return earlier[0] if earlier else None

    def related_alerts(self) -> list[Alert]:
        """Alerts on the service since the suspect deploy (or shortly before the anomaly)."""
        if self.anomaly is None:
            return [a for a in self.alerts if a.service == self.service]
        suspect = self.suspect
        since = _utc(suspect.at) if suspect else self.anomaly_at - timedelta(minutes=15)
        return [a for a in self.alerts if a.service == self.service and _utc(a.at) >= since]

    def rollback_confidence(self) -> float:
        suspect = self.suspect
        assert suspect is not None
        lead = _minutes(self.anomaly_at - _utc(suspect.at))
        score = 0.55
        score += 0.2 if lead <= 10 else 0.12 if lead <= 30 else 0.05
        if self.related_alerts():
            score += 0.1
        if len(self.candidates) == 1:
            score += 0.05
        if self.upstream_candidates():
            score -= 0.1  # another service alerted first: maybe the cause is elsewhere
        return round(min(0.95, max(0.5, score)), 2)

    def describe(self) -> str:
        """The evidence in a few sentences."""
        parts: list[str] = []
        anomaly = self.anomaly
        if anomaly is None:
            parts.append("No metric anomaly was found.")
        else:
            parts.append(
                f"{anomaly.metric} of {anomaly.service} left its baseline of "
                f"{anomaly.baseline:g} at {_fmt(self.anomaly_at)} (peak {anomaly.peak:g}, "
                f"{anomaly.current:g} when read)."
            )
        suspect = self.suspect
        if suspect is not None:
            lead = _minutes(self.anomaly_at - _utc(suspect.at))
            parts.append(
                f"Deploy {suspect.deploy_id} ({suspect.previous_version} -> "
                f"{suspect.version}, by {suspect.author}: {suspect.summary!r}) landed at "
                f"{_fmt(_utc(suspect.at))}, {lead} minutes before."
            )
            others = len(self.candidates) - 1
            if others:
                parts.append(f"{others} earlier deploy(s) also fall in the 60-minute window.")
        parts.append(self.describe_alerts())
        return " ".join(parts)

    def describe_alerts(self) -> str:
        related = self.related_alerts()
        if not related:
            text = f"No alerts on {self.service} correlate."
        else:
            names = ", ".join(f"{a.name} at {_fmt(_utc(a.at))}" for a in related[:_MAX_LISTED])
            more = f" and {len(related) - _MAX_LISTED} more" if len(related) > _MAX_LISTED else ""
            text = f"{len(related)} correlated alert(s) on {self.service}: {names}{more}."
        upstream = self.upstream_candidates()
        downstream = [s for s in self.other_services if s not in upstream]
        if upstream:
            text += (
                f" Also alerting, no later than {self.service}: "
                f"{', '.join(upstream[:_MAX_LISTED])} (a cause elsewhere is possible)."
            )
        if downstream:
            text += (
                f" Alerting after {self.service}: {', '.join(downstream[:_MAX_LISTED])} "
                "(likely downstream)."
            )
        return text

    def upstream_candidates(self) -> list[str]:
        """Other correlated services that alerted no later than this one's first alert (or
        whose alert times are unknown): the cause may be there rather than here."""
        own = [_utc(a.at) for a in self.alerts if a.service == self.service]
        first_own = min(own, default=None)
        out: list[str] = []
        for other in self.other_services:
            times = [_utc(a.at) for a in self.alerts if a.service == other]
            if first_own is None or not times or min(times) <= first_own:
                out.append(other)
        return out


def _rollbacks(findings: Iterable[Finding], actions: Iterable[str]) -> list[str]:
    """Descriptions of rollbacks already performed."""
    done = [a for a in actions if "rollback_deploy" in a]
    if done:
        return done
    out: list[str] = []
    for f in findings:
        if f.tool == "rollback_deploy":
            r = _as(DeployChangeOutput, f.output)
            out.append(
                f"rollback_deploy: {r.service} {r.from_version} -> {r.to_version} "
                f"(action {r.action_id})"
                if r
                else f"rollback_deploy (task {f.ref!r}, round {f.round})"
            )
    return out


# --- helpers ---------------------------------------------------------------------------------


def _parse_findings(raw: Iterable[Any]) -> list[Finding]:
    findings: list[Finding] = []
    for item in raw:
        try:
            findings.append(Finding.model_validate(item))
        except ValidationError:
            continue  # a malformed finding is no evidence
    return findings


def _as(model: type[_Out], value: Mapping[str, Any]) -> _Out | None:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _utc(at: datetime | None) -> datetime:
    assert at is not None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _minutes(delta: timedelta) -> int:
    return round(delta.total_seconds() / 60)


def _fmt(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")

"""The incident tools as Temporal activities (``keel.tool.<name>``), over the sample world.

Each activity takes a ``ToolCall``, validates its input into the tool's input model and
returns a ``ToolResult`` whose ``output`` is the tool's output model dumped as JSON.
Side-effecting tools run through the side-effect record with the call's idempotency key,
which is also passed to the fake provider, and return the ``EffectReceipt``. Their unknown
outcomes resolve by lookup (``unknown_outcome="lookup"``): an attempt that finds an earlier
one ended without recording asks the fake system for the action of the key, records it if
found, and acts only if it is not there. A refusal of the fake system is ``not_performed``.

Non-retryable ``ApplicationError`` types: ``InvalidToolInput``, ``UnknownService``,
``UnknownDeploy``, ``DeployConflict``, ``IdempotencyKeyConflict``. Retryable:
``EffectStoreUnavailable`` (the database is down; Keel's workflows retry it without limit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from keel.activities.effects import EffectRecord, NotPerformed, open_effect_record
from keel.activities.tools.base import effect_activities, effect_errors, tool_input
from keel.contracts.tools import ToolCall, ToolResult, ToolSpec, tool_activity_name
from keel.scenarios.incident.contracts import (
    ALERT_CORRELATION,
    DEPLOY_HISTORY,
    METRICS_LOOKUP,
    ROLL_FORWARD,
    ROLLBACK_DEPLOY,
    UPDATE_INCIDENT,
    AlertCorrelationInput,
    DeployHistoryInput,
    MetricsLookupInput,
    RollbackDeployInput,
    RollForwardInput,
    UpdateIncidentInput,
)
from keel.scenarios.incident.world import IncidentWorld, WorldError
from keel.settings import KeelSettings

INCIDENT_TOOLS = (
    METRICS_LOOKUP,
    DEPLOY_HISTORY,
    ALERT_CORRELATION,
    ROLLBACK_DEPLOY,
    ROLL_FORWARD,
    UPDATE_INCIDENT,
)


@contextmanager
def _refusals() -> Iterator[None]:
    """The world's refusals and the record's errors as Temporal errors; anything else retries."""
    with effect_errors():
        try:
            yield
        except WorldError as err:
            raise ApplicationError(str(err), type=err.error_type, non_retryable=True) from err


class IncidentTools:
    """The six incident tools; register ``activities()`` on a worker, ``aclose()`` at the end."""

    def __init__(self, world: IncidentWorld, effects: EffectRecord) -> None:
        self.world = world
        self.effects = effects

    @classmethod
    def open(cls, settings: KeelSettings, *, namespace: str = "default") -> IncidentTools:
        """The tools over the side-effect record of ``settings``, the fakes in the same database."""
        effects = open_effect_record(settings)
        return cls(IncidentWorld(effects.store, namespace=namespace), effects)

    def activities(self) -> list[Callable[..., Any]]:
        """The six tool activities, and the record/resolve activities of the side-effecting
        ones, to register on a worker."""
        records = [
            fn
            for spec in INCIDENT_TOOLS
            if spec.side_effects
            for fn in effect_activities(spec.name, self.effects)
        ]
        return [
            self.metrics_lookup,
            self.deploy_history,
            self.alert_correlation,
            self.rollback_deploy,
            self.roll_forward_deploy,
            self.update_incident,
            *records,
        ]

    async def aclose(self) -> None:
        """Close the side-effect record."""
        await self.effects.aclose()

    async def _effect(
        self,
        spec: ToolSpec,
        call: ToolCall,
        args: BaseModel,
        act: Callable[[str], Awaitable[BaseModel]],
        find: Callable[[str], Awaitable[BaseModel | None]],
        provider_id_field: str,
    ) -> ToolResult:
        async def perform(key: str) -> tuple[str, dict[str, Any]]:
            try:
                result = (await act(key)).model_dump(mode="json")
            except WorldError as err:  # refused inside a rolled-back transaction: nothing done
                raise NotPerformed(err) from err
            return str(result[provider_id_field]), result

        async def lookup(key: str) -> tuple[str, dict[str, Any]] | None:
            found = await find(key)
            if found is None:
                return None
            result = found.model_dump(mode="json")
            return str(result[provider_id_field]), result

        with _refusals():
            receipt, output = await self.effects.perform_once(
                call.idempotency_key,
                spec.name,
                args.model_dump(mode="json"),
                perform,
                policy=spec.unknown_outcome,
                lookup=lookup,
            )
        return ToolResult(tool=spec.name, output=output, effect=receipt)

    # --- read-only ---------------------------------------------------------------------------

    @activity.defn(name=tool_activity_name(METRICS_LOOKUP.name))
    async def metrics_lookup(self, call: ToolCall) -> ToolResult:
        """Tool ``metrics_lookup`` (read only)."""
        args = tool_input(METRICS_LOOKUP, MetricsLookupInput, call)
        with _refusals():
            output = self.world.metrics(args.service, args.metric, args.window_minutes)
        return ToolResult(tool=METRICS_LOOKUP.name, output=output.model_dump(mode="json"))

    @activity.defn(name=tool_activity_name(DEPLOY_HISTORY.name))
    async def deploy_history(self, call: ToolCall) -> ToolResult:
        """Tool ``deploy_history`` (read only)."""
        args = tool_input(DEPLOY_HISTORY, DeployHistoryInput, call)
        with _refusals():
            output = await self.world.history(args.service, args.since_hours)
        return ToolResult(tool=DEPLOY_HISTORY.name, output=output.model_dump(mode="json"))

    @activity.defn(name=tool_activity_name(ALERT_CORRELATION.name))
    async def alert_correlation(self, call: ToolCall) -> ToolResult:
        """Tool ``alert_correlation`` (read only)."""
        args = tool_input(ALERT_CORRELATION, AlertCorrelationInput, call)
        with _refusals():
            output = self.world.correlate(args.service, args.window_minutes)
        return ToolResult(tool=ALERT_CORRELATION.name, output=output.model_dump(mode="json"))

    # --- side-effecting ----------------------------------------------------------------------

    @activity.defn(name=tool_activity_name(ROLLBACK_DEPLOY.name))
    async def rollback_deploy(self, call: ToolCall) -> ToolResult:
        """Tool ``rollback_deploy``: a side effect, once per idempotency key."""
        args = tool_input(ROLLBACK_DEPLOY, RollbackDeployInput, call)
        return await self._effect(
            ROLLBACK_DEPLOY,
            call,
            args,
            lambda key: self.world.rollback(key, args.service, args.deploy_id, args.to_version),
            self.world.find_change,
            "action_id",
        )

    @activity.defn(name=tool_activity_name(ROLL_FORWARD.name))
    async def roll_forward_deploy(self, call: ToolCall) -> ToolResult:
        """Tool ``roll_forward_deploy``: a side effect, once per idempotency key."""
        args = tool_input(ROLL_FORWARD, RollForwardInput, call)
        return await self._effect(
            ROLL_FORWARD,
            call,
            args,
            lambda key: self.world.roll_forward(key, args.service, args.to_version),
            self.world.find_change,
            "action_id",
        )

    @activity.defn(name=tool_activity_name(UPDATE_INCIDENT.name))
    async def update_incident(self, call: ToolCall) -> ToolResult:
        """Tool ``update_incident``: a side effect, once per idempotency key."""
        args = tool_input(UPDATE_INCIDENT, UpdateIncidentInput, call)
        return await self._effect(
            UPDATE_INCIDENT,
            call,
            args,
            lambda key: self.world.add_note(key, args.incident_id, args.status, args.note),
            self.world.find_note,
            "note_id",
        )

"""The incident tools as activities over the sample world, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from keel.activities.effects import PostgresEffectRecord, SqliteEffectRecord
from keel.contracts.tools import ToolCall, ToolResult, tool_activity_name
from keel.scenarios.incident import APP
from keel.scenarios.incident.contracts import (
    AlertCorrelationOutput,
    DeployChangeOutput,
    DeployHistoryOutput,
    MetricsLookupOutput,
    UpdateIncidentOutput,
)
from keel.scenarios.incident.tools import INCIDENT_TOOLS, IncidentTools
from keel.scenarios.incident.world import IncidentWorld
from keel.settings import KeelSettings
from keel.workers.app import AppContext
from tests.test_effects import PG_URL

BAD_DEPLOY = "dep-7f3a91"  # checkout-api 1.42.0, replacing 1.41.3
ROLLBACK = {"service": "checkout-api", "deploy_id": BAD_DEPLOY, "to_version": "1.41.3"}


@pytest.fixture(params=["sqlite", "postgres"])
async def tools(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[IncidentTools]:
    if request.param == "postgres":
        effects: Any = PostgresEffectRecord(PG_URL)
    else:
        effects = SqliteEffectRecord(tmp_path / "effects.sqlite3")
    world = IncidentWorld(effects.store, namespace=f"test-{uuid.uuid4().hex}")
    tools = IncidentTools(world, effects)
    yield tools
    await tools.aclose()


async def run(tools: IncidentTools, tool: str, key: str = "", **args: Any) -> ToolResult:
    method = getattr(tools, tool)
    call = ToolCall(tool=tool, input=args, idempotency_key=key)
    result: ToolResult = await ActivityEnvironment().run(method, call)
    assert result.tool == tool
    return result


def new_key(step: str) -> str:
    return f"test-{uuid.uuid4().hex}/{step}"


async def test_every_tool_is_an_activity_named_after_it(tmp_path: Path) -> None:
    settings = KeelSettings(_env_file=None, data_dir=tmp_path, database_url=None)
    async with APP.open_activities(AppContext(settings)) as activities:
        names = [activity._Definition.must_from_callable(fn).name for fn in activities]
    tools = [tool_activity_name(spec.name) for spec in INCIDENT_TOOLS]
    effects = [
        f"{tool_activity_name(spec.name)}.{step}_outcome"
        for spec in INCIDENT_TOOLS
        if spec.side_effects
        for step in ("record", "resolve")
    ]
    assert names == tools + effects
    assert "keel.tool.metrics_lookup" in names


async def test_metrics_show_the_checkout_regression(tools: IncidentTools) -> None:
    deploy_at = tools.world.deploys("checkout-api")[0].at
    latency = MetricsLookupOutput.model_validate(
        (await run(tools, "metrics_lookup", service="checkout-api", metric="p99_latency_ms")).output
    )
    assert 160 < latency.baseline < 200
    assert latency.current > 2000 and latency.peak >= latency.current
    assert latency.anomaly_started_at is not None and latency.anomaly_started_at > deploy_at
    assert latency.anomaly_started_at == datetime.fromisoformat("2026-03-14T09:07:00Z")

    errors = (
        await run(tools, "metrics_lookup", service="checkout-api", metric="error_rate")
    ).output
    assert errors["anomaly_started_at"] == "2026-03-14T09:07:00Z"
    cpu = (await run(tools, "metrics_lookup", service="checkout-api", metric="cpu_percent")).output
    assert cpu["anomaly_started_at"] is None


@pytest.mark.parametrize("service", ["search-api", "payments-gateway"])
@pytest.mark.parametrize("window", [5, 60, 1440])
async def test_healthy_services_have_no_anomaly(
    tools: IncidentTools, service: str, window: int
) -> None:
    for metric in ("p99_latency_ms", "error_rate", "cpu_percent"):
        output = (
            await run(
                tools, "metrics_lookup", service=service, metric=metric, window_minutes=window
            )
        ).output
        assert output["anomaly_started_at"] is None, (service, metric, window)
        assert output["baseline"] > 0


async def test_deploy_history_is_newest_first_within_the_window(tools: IncidentTools) -> None:
    day = DeployHistoryOutput.model_validate(
        (await run(tools, "deploy_history", service="checkout-api")).output
    )
    assert day.current_version == "1.42.0"
    assert [d.version for d in day.deploys] == ["1.42.0", "1.41.3"]
    assert day.deploys[0].deploy_id == BAD_DEPLOY and day.deploys[0].previous_version == "1.41.3"
    week = (await run(tools, "deploy_history", service="checkout-api", since_hours=168)).output
    assert [d["version"] for d in week["deploys"]] == ["1.42.0", "1.41.3", "1.41.2"]
    search = (await run(tools, "deploy_history", service="search-api", since_hours=1)).output
    assert search == {"service": "search-api", "current_version": "2.19.0", "deploys": []}


async def test_alert_correlation_links_payments_gateway(tools: IncidentTools) -> None:
    checkout = AlertCorrelationOutput.model_validate(
        (await run(tools, "alert_correlation", service="checkout-api")).output
    )
    assert checkout.correlated_services == ["payments-gateway"]
    assert [a.service for a in checkout.alerts] == [
        "checkout-api",
        "checkout-api",
        "payments-gateway",
    ]
    assert checkout.alerts == sorted(checkout.alerts, key=lambda a: a.at)

    search = (await run(tools, "alert_correlation", service="search-api")).output
    assert search == {"service": "search-api", "alerts": [], "correlated_services": []}
    earlier = (
        await run(tools, "alert_correlation", service="search-api", window_minutes=180)
    ).output
    assert [a["name"] for a in earlier["alerts"]] == ["SearchApiIndexLag"]
    assert earlier["correlated_services"] == []


async def test_rollback_then_roll_forward(tools: IncidentTools) -> None:
    key = new_key("rollback")
    first = await run(tools, "rollback_deploy", key, **ROLLBACK)
    change = DeployChangeOutput.model_validate(first.output)
    assert (change.from_version, change.to_version) == ("1.42.0", "1.41.3")
    assert change.action_id.startswith("rb-")
    assert first.effect is not None
    assert (first.effect.replayed, first.effect.provider_id) == (False, change.action_id)
    assert first.effect.idempotency_key == key
    history = (await run(tools, "deploy_history", service="checkout-api")).output
    assert history["current_version"] == "1.41.3"

    again = await run(tools, "rollback_deploy", key, **ROLLBACK)
    assert again.effect is not None and again.effect.replayed is True
    assert again.output == first.output
    assert len(await tools.world.deploy_actions("checkout-api")) == 1

    forward = await run(
        tools,
        "roll_forward_deploy",
        new_key("forward"),
        service="checkout-api",
        to_version="1.42.0",
    )
    assert forward.output["action_id"].startswith("rf-")
    assert (forward.output["from_version"], forward.output["to_version"]) == ("1.41.3", "1.42.0")
    history = (await run(tools, "deploy_history", service="checkout-api")).output
    assert history["current_version"] == "1.42.0"
    actions = await tools.world.deploy_actions("checkout-api")
    assert [a["kind"] for a in actions] == ["rollback", "roll_forward"]


async def expect_error(error_type: str, tools: IncidentTools, tool: str, **args: Any) -> str:
    with pytest.raises(ApplicationError) as info:
        await run(tools, tool, new_key(tool), **args)
    assert info.value.type == error_type
    assert info.value.non_retryable
    return str(info.value)


async def test_rollback_conflicts_are_not_retried(tools: IncidentTools) -> None:
    message = await expect_error(
        "DeployConflict", tools, "rollback_deploy", **{**ROLLBACK, "to_version": "1.41.2"}
    )
    assert "1.41.3" in message and "1.41.2" in message
    message = await expect_error(
        "DeployConflict",
        tools,
        "rollback_deploy",
        **{**ROLLBACK, "deploy_id": "dep-6c12e0", "to_version": "1.41.2"},
    )
    assert "runs 1.42.0" in message  # that deploy is not live
    await run(tools, "rollback_deploy", new_key("rb"), **ROLLBACK)
    await expect_error("DeployConflict", tools, "rollback_deploy", **ROLLBACK)
    await expect_error(
        "DeployConflict", tools, "roll_forward_deploy", service="checkout-api", to_version="9.9.9"
    )
    await expect_error(
        "UnknownDeploy", tools, "rollback_deploy", **{**ROLLBACK, "deploy_id": "dep-nope"}
    )
    assert (await tools.world.current_version("checkout-api")) == "1.41.3"


async def test_invalid_input_and_unknown_services_are_not_retried(tools: IncidentTools) -> None:
    message = await expect_error(
        "InvalidToolInput", tools, "metrics_lookup", service="checkout-api", metric="memory"
    )
    assert "metric" in message
    with pytest.raises(ApplicationError) as info:
        await run(tools, "metrics_lookup", service="checkout-api", window_minutes=1, extra=True)
    assert info.value.type == "InvalidToolInput" and info.value.non_retryable
    reasons = {reason["loc"] for reason in info.value.details[0]}
    assert reasons == {"metric", "window_minutes", "extra"}
    await expect_error("InvalidToolInput", tools, "update_incident", incident_id="INC-1")
    with pytest.raises(ApplicationError) as info:  # a side effect without a key
        await run(tools, "update_incident", "", incident_id="I", status="mitigated", note="x")
    assert info.value.type == "InvalidToolInput"
    with pytest.raises(ApplicationError) as info:  # the call names another tool
        call = ToolCall(tool="deploy_history", input={"service": "x"}, idempotency_key="k")
        await ActivityEnvironment().run(tools.metrics_lookup, call)
    assert info.value.type == "InvalidToolInput"

    for tool, args in [
        ("metrics_lookup", {"metric": "error_rate"}),
        ("deploy_history", {}),
        ("alert_correlation", {}),
        ("rollback_deploy", {"deploy_id": BAD_DEPLOY, "to_version": "1.41.3"}),
        ("roll_forward_deploy", {"to_version": "1.42.0"}),
    ]:
        message = await expect_error("UnknownService", tools, tool, service="billing", **args)
        assert "billing" in message and "checkout-api" in message


async def test_update_incident_appends_one_note_per_key(tools: IncidentTools) -> None:
    first_key, second_key = new_key("note-1"), new_key("note-2")
    args = {"incident_id": "INC-42", "status": "mitigating", "note": "Rolled back 1.42.0."}
    first = await run(tools, "update_incident", first_key, **args)
    repeat = await run(tools, "update_incident", first_key, **args)
    output = UpdateIncidentOutput.model_validate(first.output)
    assert output.note_id.startswith("note-") and output.status == "mitigating"
    assert repeat.output == first.output
    assert first.effect is not None and repeat.effect is not None
    assert (first.effect.replayed, repeat.effect.replayed) == (False, True)
    second = await run(
        tools, "update_incident", second_key, incident_id="INC-42", status="mitigated", note="OK"
    )
    notes = await tools.world.notes("INC-42")
    assert [n["note_id"] for n in notes] == [output.note_id, second.output["note_id"]]
    assert [n["status"] for n in notes] == ["mitigating", "mitigated"]

    with pytest.raises(ApplicationError) as info:  # the key of another request
        await run(
            tools, "update_incident", first_key, incident_id="INC-42", status="resolved", note="x"
        )
    assert info.value.type == "IdempotencyKeyConflict" and info.value.non_retryable
    assert len(await tools.world.notes("INC-42")) == 2


async def test_the_world_is_shared_by_tools_on_the_same_database(tmp_path: Path) -> None:
    settings = KeelSettings(_env_file=None, data_dir=tmp_path, database_url=PG_URL)
    namespace = f"test-{uuid.uuid4().hex}"
    one = IncidentTools.open(settings, namespace=namespace)
    two = IncidentTools.open(settings, namespace=namespace)
    other = IncidentTools.open(settings, namespace=f"{namespace}-other")
    try:
        await run(one, "rollback_deploy", new_key("rb"), **ROLLBACK)
        assert (await two.world.current_version("checkout-api")) == "1.41.3"
        assert (await other.world.current_version("checkout-api")) == "1.42.0"
        await two.world.reset()
        assert (await one.world.current_version("checkout-api")) == "1.42.0"
    finally:
        for tools in (one, two, other):
            await tools.aclose()

"""``App``: what a team declares to run its agent workflows on Keel.

An app names its workflows, the entries ``keel start`` can start, its agent contracts, its
tools (catalog entries and the activities that implement them), its offline rules and
faults, its sample inputs and demo runs, its own ledger event types and how its outcome is
summarised. Declaring an app registers its contracts, tools, rules, faults and event types;
``keel worker --app MODULE`` serves it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keel.contracts.agent import AgentContract
from keel.contracts.ledger import EventBase, register_event_type
from keel.contracts.registry import REGISTRY
from keel.contracts.tools import CATALOG, ToolSpec
from keel.offline.faults import FaultFunction, OfflineFault, register_fault
from keel.offline.rules import OfflineRule, register_rule
from keel.settings import KeelSettings

DEFAULT_MAX_INPUT_BYTES = 64 * 1024


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (sample inputs, scenario data)."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def workflow_type_of(workflow_class: type) -> str:
    """The Temporal workflow type name of a ``@workflow.defn`` class.

    Raises:
        TypeError: ``workflow_class`` is not a workflow definition.
    """
    defn = getattr(workflow_class, "__temporal_workflow_definition", None)
    if defn is None:
        raise TypeError(f"{workflow_class!r} is not a @workflow.defn")
    return str(defn.name)


@dataclass(frozen=True)
class Entry:
    """A workflow ``keel start NAME`` can start, with what its input must be.

    Attributes:
        name: what the user types (``keel start NAME``), e.g. ``expense-approval``.
        workflow: the ``@workflow.defn`` class.
        input_model: the model the input file must satisfy (checked before starting).
        max_input_bytes: larger inputs are refused before anything starts.
        wrap: turns the user's input into the workflow's argument.
        title_field: input field shown as the execution's summary in the Temporal UI.
    """

    name: str
    workflow: type
    input_model: type[BaseModel]
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    wrap: Callable[[dict[str, Any]], Any] = lambda payload: payload
    title_field: str = "title"

    @property
    def workflow_type(self) -> str:
        """The Temporal workflow type name of ``workflow``."""
        return workflow_type_of(self.workflow)


@dataclass(frozen=True)
class DemoReview:
    """What ``keel demo``'s scripted reviewer does at one gate."""

    reviewer: str
    decision: str
    comment: str
    modifications: dict[str, Any] | None = None


@dataclass(frozen=True)
class DemoRun:
    """One execution ``keel demo`` runs: an entry on a sample, with faults and reviews.

    ``faults`` apply to this run alone (the demo scopes them to its workflow id).
    """

    label: str
    entry: str
    sample: str
    faults: Sequence[OfflineFault] = ()
    reviews: Mapping[str, DemoReview] = field(default_factory=dict)


@dataclass(frozen=True)
class AppContext:
    """What an app's activity factory gets: the settings, and a scope name that keeps one
    demo run's fake systems apart from another's."""

    settings: KeelSettings
    scope: str = "default"


ActivityFactory = Callable[[AppContext], AbstractAsyncContextManager[Sequence[Callable[..., Any]]]]
"""Opens what an app's activities need (databases, clients) and yields the activities;
closes it all on exit."""


@dataclass(frozen=True)
class App:
    """A set of Keel workflows and everything they need, served by ``keel worker --app``.

    Attributes:
        name: short name (``keel worker`` prints it).
        workflows: ``@workflow.defn`` classes (subclasses of ``KeelWorkflow``).
        entries: what ``keel start`` can start.
        contracts: agent contracts the workflows use (registered on declaration).
        tools: tool specs for the catalog (planners pick from it).
        activities: activity functions, or an ``ActivityFactory`` for activities that hold
            resources.
        offline_rules: contract name -> offline rule (``keel.offline``).
        offline_faults: fault kind -> what it does to an answer (repairable faults).
        samples: folder of sample inputs (``NAME.json``).
        demo: what ``keel demo`` runs for this app.
        summarize: one line about a result (a model or its JSON dict) for the demo summary.
        event_types: the app's own ledger event types.
    """

    name: str
    workflows: Sequence[type]
    entries: Sequence[Entry] = ()
    contracts: Sequence[AgentContract[Any, Any]] = ()
    tools: Sequence[ToolSpec] = ()
    activities: Sequence[Callable[..., Any]] | ActivityFactory = ()
    offline_rules: Mapping[str, OfflineRule] = field(default_factory=dict)
    offline_faults: Mapping[str, FaultFunction] = field(default_factory=dict)
    samples: Path | None = None
    demo: Sequence[DemoRun] = ()
    summarize: Callable[[Any], str] | None = None
    event_types: Sequence[type[EventBase]] = ()

    def __post_init__(self) -> None:
        for contract in self.contracts:
            REGISTRY.register(contract)
        for tool in self.tools:
            CATALOG.register(tool)
        for contract_name, rule in self.offline_rules.items():
            register_rule(contract_name, rule)
        for kind, bend in self.offline_faults.items():
            register_fault(kind, bend)
        for event_type in self.event_types:
            register_event_type(event_type)
        for workflow_class in self.workflows:
            try:
                workflow_type_of(workflow_class)
            except TypeError as err:
                raise TypeError(f"app {self.name}: {err}") from None

    def sample(self, name: str) -> dict[str, Any]:
        """The sample input ``name`` (file stem in ``samples``)."""
        if self.samples is None:
            raise KeyError(f"app {self.name} has no samples")
        return load_json(self.samples / f"{name}.json")

    def entry(self, name: str) -> Entry | None:
        """The entry called ``name``, if this app has one."""
        return next((e for e in self.entries if e.name == name), None)

    @asynccontextmanager
    async def open_activities(self, context: AppContext) -> AsyncIterator[list[Callable[..., Any]]]:
        """The app's activities for one worker, open for the duration of the block."""
        if callable(self.activities):
            async with self.activities(context) as opened:
                yield list(opened)
        else:
            yield list(self.activities)

"""Clients and workers: the one place that wires settings, converter, tracing and code."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client, Interceptor
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import (
    PydanticJSONPlainPayloadConverter,
    PydanticPayloadConverter,
    pydantic_data_converter,
)
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import ApplicationError, FailureError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from keel.activities import AgentNodeActivities
from keel.activities.archive import ArchiveActivities
from keel.activities.guardrail_classifier import (
    GuardrailClassifierActivities,
    classifier_activities,
)
from keel.activities.notify import GateNotifications
from keel.activities.providers import ModelProvider, build_provider, close_provider
from keel.activities.signing import SigningActivities
from keel.contracts.names import SEARCH_ATTRIBUTES, model_queue
from keel.contracts.signing import WorkerKeys
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.app import App, AppContext
from keel.workers.apps import workflows_of
from keel.workers.codec import REFUSED_ENCODING, CodecKeyring, EncryptionCodec, codec_keyring
from keel.workers.deploys import deployment_config, shutdown_grace
from keel.workers.engine_memo import EngineMemo
from keel.workers.keys import load_worker_keys
from keel.workers.link_key import load_link_key
from keel.workers.model_calls import ModelCalls, separate_model_queue
from keel.workers.sandbox import KeelSandboxedWorkflowRunner
from keel.workers.scrubbing import ScrubbingInterceptor, configured_secrets
from keel.workers.telemetry import tracing_interceptors
from keel.workflows.archiver import ArchiverWorkflow

log = logging.getLogger(__name__)


async def connect(
    settings: KeelSettings,
    *,
    address: str | None = None,
    namespace: str | None = None,
    profile: str | None = None,
    interceptors: Sequence[Interceptor] | None = None,
    embedded: bool = False,
    runtime: Runtime | None = None,
) -> Client:
    """A client with Keel's pydantic data converter, history encryption and tracing,
    connected as ``connect_config`` says (Temporal CLI profiles, TLS, API key,
    ``TEMPORAL_*``).

    Args:
        settings: the process's settings (their ``codec*`` fields choose the keys).
        address: the Temporal frontend, overriding the configuration.
        namespace: the namespace, overriding the configuration.
        profile: the Temporal CLI profile to read.
        interceptors: default: Keel's tracing (``EngineMemo`` is added either way).
        embedded: the server is the embedded dev server of ``keel dev`` / ``keel demo``
            (a missing dev codec key is generated; see ``keel.workers.codec.codec_keyring``).
        runtime: the SDK runtime to connect on (default: the SDK's default runtime).

    Raises:
        KeelUserError: the Temporal client configuration cannot be read, or history
            encryption is on and no codec key is configured for this server.
        RuntimeError: the server cannot be reached.
    """
    config = connect_config(settings, address=address, namespace=namespace, profile=profile)
    keyring = codec_keyring(settings, target=config["target_host"], embedded=embedded)
    return await Client.connect(
        **config,
        data_converter=keel_data_converter(keyring),
        interceptors=[
            *(interceptors if interceptors is not None else tracing_interceptors(settings)),
            EngineMemo(),
        ],
        runtime=runtime,
    )


def connect_config(
    settings: KeelSettings,
    *,
    address: str | None = None,
    namespace: str | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``Client.connect``, from the first source that sets each one:
    ``address`` and ``namespace``; ``TEMPORAL_ADDRESS`` / ``TEMPORAL_NAMESPACE`` (or their
    ``KEEL_`` forms); the Temporal CLI's configuration (``temporalio.envconfig``: the
    profile ``profile``, else ``TEMPORAL_PROFILE``, else ``default``, of the file
    ``TEMPORAL_CONFIG_FILE`` or the CLI's default file, with the other ``TEMPORAL_*``
    variables such as ``TEMPORAL_API_KEY`` and ``TEMPORAL_TLS*`` applied); else the
    defaults (``localhost:7233``, ``default``).

    Raises:
        KeelUserError: the configuration file is malformed or has no such profile.
    """
    try:
        config: dict[str, Any] = dict(ClientConfig.load_client_connect_config(profile=profile))
    except Exception as err:  # the SDK's ConfigError: unreadable file, unknown profile
        raise KeelUserError(f"Temporal client configuration: {err}") from err
    explicit = settings.model_fields_set
    for key, field, given in (
        ("target_host", "temporal_address", address),
        ("namespace", "temporal_namespace", namespace),
    ):
        if given:
            config[key] = given
        elif field in explicit or key not in config:
            config[key] = getattr(settings, field)
    return config


class KeelWorker:
    """The two Temporal workers of one Keel worker process: workflows, tools and (unless a
    rate limit is set) model calls on the task queue; the model queue
    (``keel.model_queue``), rate-limited or only draining (``keel.workers.model_calls``)."""

    def __init__(self, main: Worker, models: Worker, calls: ModelCalls) -> None:
        self.main = main
        self.models = models
        self.calls = calls
        """The routing of, and the bound on, this worker's model calls."""
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> KeelWorker:
        await self._stack.enter_async_context(self.main)
        await self._stack.enter_async_context(self.models)
        _freeze_startup_heap()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Both stop polling at once and drain side by side, so a stop takes one grace
        # period (KEEL_SHUTDOWN_GRACE_SECONDS), not one per worker.
        try:
            await asyncio.gather(self.main.shutdown(), self.models.shutdown())
            await self._stack.aclose()
        finally:
            _unfreeze_startup_heap()


_running_workers = 0
"""Keel workers running in this process (``_freeze_startup_heap``)."""


def _freeze_startup_heap() -> None:
    """Move what the process holds once its worker has started (modules, contracts, the
    workers) out of the garbage collector's generations (``gc.freeze``), so a full
    collection walks only what workflow runs allocated: with the modules a Keel worker
    imports it took 60 to 80 ms, about once per 200 agent-node runs under load. Undone
    when the last worker of the process stops (``gc.unfreeze``), so what was frozen can be
    collected again."""
    global _running_workers
    _running_workers += 1
    gc.freeze()


def _unfreeze_startup_heap() -> None:
    global _running_workers
    _running_workers -= 1
    if _running_workers == 0:
        gc.unfreeze()


def build_worker(
    client: Client,
    settings: KeelSettings,
    *,
    apps: Sequence[App] = (),
    task_queue: str | None = None,
    provider: ModelProvider | None = None,
    nodes: AgentNodeActivities | None = None,
    activities: Sequence[Callable[..., Any]] = (),
    workflows: Sequence[type] = (),
    keys: WorkerKeys | None = None,
    classifiers: GuardrailClassifierActivities | None = None,
) -> KeelWorker:
    """A worker for ``apps``' workflows (plus ``workflows`` and the engine's own) and
    ``activities`` on ``task_queue``, and the model calls (agent node, classifier) where
    ``keel.workers.model_calls`` says: on the task queue, eagerly dispatched, or under
    ``settings.model_calls_per_second`` on the model queue; at most
    ``settings.max_concurrent_model_calls`` at once either way.

    ``running_worker`` also opens the apps' activities; this one registers only
    ``activities`` (and the engine's signing activities, over ``keys``, default: the keys
    ``settings`` name), so tests can put stand-ins under the real names.
    """
    queue = task_queue or settings.task_queue
    nodes = nodes or agent_node_activities(settings, provider)
    worker_keys = keys or load_worker_keys(settings)
    # The prompt-injection classifier (I/O like a model call): ``classifiers``, default the
    # ones ``settings`` configure.
    model_activities: list[Callable[..., Any]] = [
        nodes.run_agent_node,
        (classifiers or classifier_activities(settings)).classify,
    ]
    scrubbing = ScrubbingInterceptor(configured_secrets(settings))
    separate = separate_model_queue(settings)
    # The model queue's worker joins the same build, so a pinned run's model calls run the
    # code of its own build too; both drain for the same grace on stop (keel.workers.deploys).
    deployment = deployment_config(settings)
    grace = shutdown_grace(settings)
    calls = ModelCalls(separate_queue=separate, max_concurrent=settings.max_concurrent_model_calls)
    main = Worker(
        refusing_undecodable(client),
        task_queue=queue,
        workflows=workflows_of(apps, extra=[ArchiverWorkflow, *workflows]),
        activities=[
            *engine_activities(worker_keys),
            *GateNotifications(settings, link_key=lambda: load_link_key(settings)).activities(),
            *ArchiveActivities(settings, keyring=lambda: worker_keys.keyring).activities(),
            *activities,
            *model_activities,
        ],
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        workflow_runner=workflow_runner(),
        interceptors=[scrubbing, calls],
        deployment_config=deployment,
        graceful_shutdown_timeout=grace,
    )
    models = Worker(
        client,
        task_queue=model_queue(queue),
        activities=model_activities,
        max_concurrent_activities=settings.max_concurrent_model_calls,
        interceptors=[scrubbing, calls],
        max_task_queue_activities_per_second=settings.model_calls_per_second,
        # Without a rate limit nothing new arrives here: one poller drains what a
        # rate-limited deploy left (model_calls' module docstring).
        max_concurrent_activity_task_polls=None if separate else 1,
        deployment_config=deployment,
        graceful_shutdown_timeout=grace,
    )
    return KeelWorker(main, models, calls)


def engine_activities(keys: WorkerKeys) -> list[Callable[..., Any]]:
    """The activities every Keel worker runs for its workflows: signing and checking, and
    the keys trusted for review decisions."""
    signing = SigningActivities(keys)
    return [signing.sign, signing.verify_signature, signing.reviewer_trust]


SHARED_TYPE_ADAPTERS = functools.lru_cache(maxsize=1024)(TypeAdapter)
"""The pydantic ``TypeAdapter`` of each type a worker decodes, built once per process.

The SDK gives every workflow run a payload converter of its own, each with an empty adapter
cache, so without this every run built an adapter (about 0.1 ms) for every type it decoded:
a dozen per support email."""


class RefusingPayloadConverter(PydanticPayloadConverter):
    """Keel's converter, except that a payload it cannot decode (invalid or too deeply
    nested JSON, an unknown encoding, a value of the wrong shape) raises a non-retryable
    ``UndecodableInput`` failure: the SDK then fails the run it started instead of failing
    every workflow task, so an undecodable start ends FAILED rather than "running" forever.
    Its type adapters are the process's (``SHARED_TYPE_ADAPTERS``)."""

    def __init__(self) -> None:
        super().__init__()
        for converter in self.converters.values():
            if isinstance(converter, PydanticJSONPlainPayloadConverter):
                converter._type_adapter = SHARED_TYPE_ADAPTERS

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        """The decoded values, or a non-retryable ``UndecodableInput`` failure."""
        for payload in payloads:  # an encrypted payload the worker's codec could not open
            if payload.metadata.get("encoding") == REFUSED_ENCODING:
                reason = payload.data.decode("utf-8", "replace")[:300]
                raise ApplicationError(
                    f"undecodable input: {reason}", type="UndecodableInput", non_retryable=True
                )
        try:
            values = super().from_payloads(payloads, type_hints)
        except FailureError:
            raise
        except Exception as err:
            problems = err.errors()[:3] if isinstance(err, ValidationError) else None
            reason = "; ".join(e["msg"] for e in problems) if problems else f"{err!r}"
            raise ApplicationError(
                f"undecodable input: {reason[:300]}", type="UndecodableInput", non_retryable=True
            ) from None
        for value, hint in zip(values, type_hints or [], strict=False):
            # ``binary/null`` decodes to None whatever the type hint says.
            if value is None and isinstance(hint, type) and issubclass(hint, BaseModel):
                raise ApplicationError(
                    f"undecodable input: null where {hint.__name__} was expected",
                    type="UndecodableInput",
                    non_retryable=True,
                )
        return values


def refusing(converter: DataConverter) -> DataConverter:
    """``converter`` (its codec and failure converter kept) decoding payloads with
    ``RefusingPayloadConverter``; a history-encryption codec in it refuses (rather than
    raises on) a payload it cannot open, so that run fails instead of its every task."""
    codec = converter.payload_codec
    if isinstance(codec, EncryptionCodec):
        codec = codec.with_refusing()
    return dataclasses.replace(
        converter, payload_converter_class=RefusingPayloadConverter, payload_codec=codec
    )


def keel_data_converter(keyring: CodecKeyring | None) -> DataConverter:
    """Keel's pydantic converter, encrypting every payload with ``keyring`` (``None``: in
    plaintext). With encryption on, failure messages and stack traces travel in an encoded
    (so encrypted) payload as well."""
    if keyring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def worker_data_converter(keyring: CodecKeyring | None) -> DataConverter:
    """What Keel's workers decode with, over ``keyring``: a replayer of their histories
    needs the same (``WORKER_DATA_CONVERTER`` is the one of a worker without encryption)."""
    return refusing(keel_data_converter(keyring))


WORKER_DATA_CONVERTER = refusing(pydantic_data_converter)
"""The converter Keel's workers decode with; a replayer of their histories needs it too (an
undecodable start failed its run there, and must replay the same way)."""


def refusing_undecodable(client: Client) -> Client:
    """``client`` with ``RefusingPayloadConverter`` (for workers: the client's own callers
    keep their converter)."""
    config = client.config()
    config["data_converter"] = refusing(config["data_converter"])
    return Client(**config)


@asynccontextmanager
async def running_worker(
    client: Client,
    settings: KeelSettings,
    *,
    apps: Sequence[App],
    task_queue: str | None = None,
    provider: ModelProvider | None = None,
    scope: str = "default",
) -> AsyncIterator[KeelWorker]:
    """Run a full worker for ``apps`` (agent nodes and every app's activities) for the
    duration of the block; what it opened (databases, model clients built here) is closed
    after. ``scope`` keeps one demo run's fake systems apart from another's."""
    nodes = agent_node_activities(settings, provider)
    classifiers = classifier_activities(settings)
    try:
        async with (
            app_activities(apps, AppContext(settings, scope)) as activities,
            build_worker(
                client,
                settings,
                apps=apps,
                task_queue=task_queue,
                nodes=nodes,
                activities=activities,
                classifiers=classifiers,
            ) as worker,
        ):
            yield worker
    finally:
        await classifiers.aclose()
        await nodes.aclose()
        if provider is None:
            await close_provider(nodes.provider)


@asynccontextmanager
async def app_activities(
    apps: Sequence[App], context: AppContext
) -> AsyncIterator[list[Callable[..., Any]]]:
    """Every app's activities, open for the block (closed after), one per activity name:
    two apps that both open an engine tool (``send_email``) register it once."""
    async with AsyncExitStack() as stack:
        by_name: dict[str, Callable[..., Any]] = {}
        for app in apps:
            for fn in await stack.enter_async_context(app.open_activities(context)):
                defn = getattr(fn, "__temporal_activity_definition", None)
                by_name.setdefault(defn.name if defn else repr(fn), fn)
        yield list(by_name.values())


def agent_node_activities(
    settings: KeelSettings, provider: ModelProvider | None = None
) -> AgentNodeActivities:
    """The agent-node activity over ``provider`` (default: ``KEEL_MODEL``), able to build
    the fallback models contracts name."""
    return AgentNodeActivities(
        provider or build_provider(settings),
        record_prompts=settings.record_prompts,
        fallback=lambda spec: build_provider(settings.model_copy(update={"model": spec})),
    )


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox Keel's workflows run in (``keel.workers.sandbox``: Temporal's, entered
    only to run workflow code), with the ``keel`` package passed through.

    Without the pass-through the sandbox re-imports every ``keel`` module on every workflow
    run (about 16 ms of CPU each on our machines, growing with each scenario). Keel's
    modules are deterministic workflow code and pure models with no mutable module state,
    so sharing them across runs is safe; the replay tests guard determinism.
    """
    return KeelSandboxedWorkflowRunner(
        # phonenumbers (the guardrails' PII scrubber) loads a region's metadata module on
        # first use, maybe mid-workflow: passed through, that import is the real one.
        # cryptography: review signatures are checked in workflow code; its native extension
        # loads once, outside the sandbox; so does ahocorasick's (the injection check's).
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "keel", "phonenumbers", "cryptography", "ahocorasick"
        )
    )


_VALUE_TYPES = {
    SearchAttributeIndexedValueType.KEYWORD_LIST: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SearchAttributeIndexedValueType.BOOL: IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
}


async def ensure_search_attributes(client: Client) -> None:
    """Register Keel's search attributes in the client's namespace if they are missing."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(listed.custom_attributes)
    except RPCError as err:
        # The time-skipping test server cannot list, but can add.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: _VALUE_TYPES[key.indexed_value_type]
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        log.info("registering search attributes %s", sorted(missing))
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
        except RPCError as err:
            # Another worker added them first, or (time-skipping server) they were there
            # but could not be listed.
            if err.status is not RPCStatusCode.ALREADY_EXISTS:
                raise

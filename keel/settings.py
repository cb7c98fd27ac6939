"""Typed settings read from the environment (and a ``.env`` file), validated at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from keel.contracts.faults import OfflineFault
from keel.contracts.notifications import Channel


class KeelSettings(BaseSettings):
    """Process-wide settings; every field can be set through the environment."""

    model_config = SettingsConfigDict(
        env_prefix="KEEL_", env_file=".env", extra="ignore", populate_by_name=True
    )

    model: str | None = None
    """``offline``, ``openai:<model>`` or ``anthropic:<model>``; see ``resolved_model``."""
    temporal_address: str = Field(
        "localhost:7233", validation_alias=AliasChoices("TEMPORAL_ADDRESS", "KEEL_TEMPORAL_ADDRESS")
    )
    temporal_namespace: str = Field(
        "default", validation_alias=AliasChoices("TEMPORAL_NAMESPACE", "KEEL_TEMPORAL_NAMESPACE")
    )
    task_queue: str = "keel"
    data_dir: Path = Path(".keel")
    """Where ``keel dev`` and ``keel demo`` keep the dev server's database (and a worker
    its generated signing key, when ``signing_key_file`` is not set)."""
    signing_key_file: Path | None = None
    """The worker's Ed25519 private key (PEM, PKCS#8): it signs ledger chain heads, tool
    tasks and continue-as-new state. Unset: ``data_dir/keys/signing-key.pem``, generated on
    first use."""
    trusted_keys_file: Path | None = None
    """Public keys trusted besides the worker's own (``keel keys export`` writes one): the
    keys of earlier rotations, and of the other workers of a deployment."""
    reviewer_keys_file: Path | None = None
    """Keys trusted to sign review decisions (the review service's, reviewers' own), besides
    ``data_dir/keys/reviewer-keys.json`` where the embedded inbox registers its key. Read
    again whenever a gate opens: adding a key needs no worker restart."""
    reviewer_key_file: Path | None = None
    """The CLI's reviewer key (PEM): ``keel approve`` and ``keel reject`` sign with it; its
    public half must be in the workers' reviewer trust, bound to the reviewer
    (``keel keys reviewer``)."""
    inbox_port: int = 8234
    """Port of the reviewers' inbox (``keel inbox``, ``keel dev``; 0: any free port)."""
    inbox_directory_file: Path | None = None
    """The inbox's directory of reviewers (JSON: principals with roles, argon2 password
    hashes, delegations). Unset (and no ``inbox_directory_url``):
    ``data_dir/directory.json``, which ``keel dev`` and ``keel demo`` create."""
    inbox_directory_url: str | None = None
    """The directory as a PostgreSQL table instead (``postgresql://...``)."""
    inbox_directory_table: str = Field("keel_inbox_principals", pattern=r"^[a-z_][a-z0-9_]*$")
    """The table of ``inbox_directory_url`` (created if missing)."""
    inbox_oidc_issuer: str | None = None
    """OIDC issuer whose JWT bearer tokens the inbox's API accepts (``iss``); with
    ``inbox_oidc_audience`` and ``inbox_oidc_jwks_url``."""
    inbox_oidc_audience: str | None = None
    inbox_oidc_jwks_url: str | None = None
    inbox_oidc_roles_claim: str = "roles"
    """The token claim holding the reviewer's roles (a list of strings)."""
    inbox_oidc_subject_claim: str = "sub"
    """The token claim naming the reviewer (what gate specs and the ledger call them)."""
    inbox_signing_key_file: Path | None = None
    """The inbox's Ed25519 key (PEM) that signs every decision it sends. Unset:
    ``data_dir/keys/inbox-signing-key.pem``, generated on first use; the inbox adds its
    public half to ``data_dir/keys/reviewer-keys.json`` on start."""
    inbox_session_secret: SecretStr | None = None
    """Secret that signs the inbox's session cookies and API tokens. Unset:
    ``data_dir/keys/inbox-session-secret``, generated on first use."""
    inbox_session_minutes: int = Field(480, ge=1, le=7 * 24 * 60)
    """How long a sign-in (and an API token) lasts."""
    ui_port: int = 8233
    """Port of the embedded dev server's web UI."""
    ui_url: str = "http://127.0.0.1:8233"
    """Base URL of the Temporal UI, for links printed by the CLI."""
    codec: Literal["on", "off"] = "on"
    """History encryption (``keel.workers.codec``); ``off`` sends payloads in plaintext."""
    codec_keys: SecretStr | None = None
    """AES-256 history keys, ``id1:base64key,id2:base64key`` (the first encrypts)."""
    codec_key_file: Path | None = None
    """A file of such keys (one a line or comma-separated), when ``codec_keys`` is unset.
    Neither set: the dev key ``data_dir/keys/codec-keys`` (``keel.workers.codec``)."""
    codec_server_port: int = 0
    """Port of the codec server ``keel dev`` starts for the UI (0: any free port; the UI
    is given the one chosen)."""
    codec_server_token: SecretStr | None = None
    """Bearer token the codec server requires; unset, ``keel dev`` generates one."""
    codec_server_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest request body the codec server reads."""
    database_url: str | None = None
    """Side-effect record: a PostgreSQL URL (``postgresql://...``); unset means the SQLite
    file ``$KEEL_DATA_DIR/effects.sqlite3``."""
    archive_url: str | None = None
    """The ledger archive (docs/archive.md): a PostgreSQL URL, ``sqlite:///PATH`` or a
    path; unset means the SQLite file ``$KEEL_DATA_DIR/archive.sqlite3``."""
    archive_interval_seconds: int = Field(300, ge=10, le=24 * 3600)
    """How often the archiver's Temporal Schedule runs a pass (``keel archive schedule``)."""
    archive_task_queues: list[Annotated[str, Field(pattern=r"^[^'\"\\]{1,200}$")]] = Field(
        default_factory=list
    )
    """Archive only the runs of these task queues (JSON list; default: every run of the
    namespace). Set it alike on every worker and on the CLI reading ``keel archive status``."""
    smtp_host: str = "127.0.0.1"
    """SMTP server the support scenario sends replies through."""
    smtp_port: int = 2525
    smtp_sender: str = "support@keel.example"
    smtp_unknown_outcome: Literal["escalate", "resend"] = "escalate"
    """What the email tool does when a send's outcome is unknown (a worker died after the
    server may have accepted it): ``escalate`` to a person, or ``resend`` with the same
    Message-ID (only for receivers that deduplicate by Message-ID)."""
    inbox_url: str = "http://127.0.0.1:8234"
    """Base URL of the reviewers' inbox, for the signed links notifications carry."""
    inbox_link_key_file: Path | None = None
    """The key that signs inbox links (the workers and the inbox need the same one).
    Unset: ``data_dir/keys/inbox-link-key``, generated on first use."""
    notify_channels: dict[str, Channel] = Field(default_factory=dict)
    """Notification channels by name, as JSON (``{"legal-slack": {"kind": "webhook", "url":
    ..., "secret": ..., "format": "slack"}, "legal-mail": {"kind": "email", ...}}``); gate
    specs name them (``GateSpec.notify``). See docs/notifications.md."""
    notify_channels_file: Path | None = None
    """A JSON file of more such channels (keeps their secrets out of the environment)."""
    guardrail_classifier_base_url: str | None = None
    """An OpenAI-compatible endpoint (``.../v1``) of a prompt-injection classifier model,
    for contracts whose guardrails name ``classifier="openai-compatible"``."""
    guardrail_classifier_model: str | None = None
    guardrail_classifier_api_key: SecretStr | None = None
    guardrail_classifier_timeout_seconds: float = Field(20.0, gt=0)
    shutdown_grace_seconds: float = Field(30.0, ge=0, le=24 * 3600)
    """How long a worker told to stop (SIGTERM, Ctrl-C) lets its in-flight activities
    finish before it cancels them (a cancelled one is retried by another worker). It stops
    taking new work at once. Keep it under the orchestrator's own kill timeout
    (Kubernetes' ``terminationGracePeriodSeconds``, 30 s by default). See docs/deploys.md."""
    deployment_name: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[^.]+$")
    """Temporal Worker Versioning: the Worker Deployment this worker belongs to (with
    ``build_id``; no ``.``, which Temporal uses to join the two). Unset: the worker is
    unversioned (the embedded default). See docs/deploys.md."""
    build_id: str | None = Field(None, min_length=1, max_length=255)
    """The build of this worker's code within ``deployment_name`` (a release tag, a commit)."""
    versioning_behavior: Literal["pinned", "auto-upgrade"] = "pinned"
    """With Worker Versioning: what a Keel workflow that declares no behavior of its own
    does. ``pinned``: a run stays on the build it started on (old builds keep running until
    their runs drain); ``auto-upgrade``: a run moves to the current build at its next
    workflow task, so every change must replay old histories (``workflow.patched``)."""
    max_concurrent_activities: int = Field(50, ge=1)
    """Tool activities one worker runs at once: a burst of workflows queues instead."""
    max_concurrent_workflow_tasks: int = Field(50, ge=1)
    max_concurrent_model_calls: int = Field(20, ge=1)
    """Model calls (agent nodes, the classifier) one worker runs at once; more wait their
    turn, heartbeating."""
    model_calls_per_second: float | None = Field(None, gt=0)
    """Rate limit of model calls across every worker of the task queue, enforced by the
    Temporal server on a queue of their own (``<task queue>-models``); set it the same on
    every worker of the queue. Unset (no limit): model calls run on the workflow's own
    queue, dispatched eagerly (``keel.workers.model_calls``)."""
    record_prompts: bool = False
    """Put rendered prompt text in history (by default only its sha256 is recorded)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis of the progress stream: long-running workflows append their progress events to
    a Redis Stream per workflow id (``keel.progress``)."""
    progress_stream_prefix: str = Field("keel:progress", min_length=1, max_length=100)
    """Key prefix of those streams (``<prefix>:<workflow id>``)."""
    progress_retention_seconds: int = Field(7 * 24 * 3600, ge=0)
    """A stream expires this long after its last append (0: never)."""
    progress_port: int = 8235
    """Port of the progress server ``keel dev`` starts (SSE with ``Last-Event-ID``; 0: any
    free port)."""
    progress_max_streams: int = Field(256, ge=1, le=10_000)
    """Streams the progress server serves at once (each holds a Redis connection while it
    waits); one more is answered 503 with ``Retry-After``."""
    progress_url: str = "http://127.0.0.1:8235"
    """Base URL of the progress server, for ``keel watch``."""
    offline_faults: list[OfflineFault] = Field(default_factory=list)
    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    anthropic_api_key: SecretStr | None = Field(None, validation_alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(None, validation_alias="ANTHROPIC_BASE_URL")
    otel_console: bool = False
    """Print spans to stdout (OTLP export is on when OTEL_EXPORTER_OTLP_ENDPOINT is set)."""
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_service_name: str = Field(
        "keel", min_length=1, max_length=100, validation_alias="OTEL_SERVICE_NAME"
    )
    """The service name of this process's traces (``service.name``) and metrics (the
    ``service_name`` label)."""
    metrics_host: str = "127.0.0.1"
    """Interface of the worker's Prometheus endpoint (``0.0.0.0`` in a container, for a
    Prometheus outside it)."""
    metrics_port: int = Field(9464, ge=0, le=65535)
    """Port of the Prometheus endpoint (``/metrics``) of ``keel worker`` and ``keel dev``:
    the SDK's metrics and Keel's own (docs/operations.md). 0: no endpoint."""

    @property
    def resolved_model(self) -> str:
        """The model spec in force: ``KEEL_MODEL``, else the keyed provider, else offline."""
        if self.model:
            return self.model
        if self.openai_api_key:
            return "openai:gpt-4o-mini"
        if self.anthropic_api_key:
            return "anthropic:claude-sonnet-4-6"
        return "offline"


@lru_cache(maxsize=1)
def get_settings() -> KeelSettings:
    """The settings of this process, read once."""
    return KeelSettings()

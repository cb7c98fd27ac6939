"""The layout is a contract: the engine names no scenario, and layers import one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import keel

ROOT = Path(keel.__file__).parent
ENGINE = (
    "contracts",
    "workflows",
    "activities",
    "offline",
    "progress",
    "workers",
    "inbox",
    "archive",
    "cli",
    "testing",
)
# What each engine layer may import from Keel (besides itself and the shared modules).
ALLOWED = {
    "contracts": {"contracts"},
    "offline": {"contracts", "offline", "activities"},
    "activities": {"contracts", "activities", "offline"},
    "workflows": {"contracts", "workflows"},
    # The progress stream: events (workflow-safe), the workflow-side reporter, Redis, SSE.
    "progress": {"progress"},
    "workers": {"contracts", "activities", "workflows", "offline", "progress", "workers"},
    # The reviewers' inbox: above the workers, beside the CLI (which serves it).
    "inbox": {"contracts", "workers", "inbox"},
    # The ledger archive's readers' side: the archive store (an activity's) and the lag.
    "archive": {"contracts", "activities", "archive"},
    "cli": {
        "contracts",
        "activities",
        "workflows",
        "offline",
        "progress",
        "workers",
        "inbox",
        "archive",
        "cli",
    },
    "testing": {"contracts", "activities", "workflows", "offline", "workers", "testing"},
}
SHARED = {"errors", "settings"}


def keel_imports(path: Path) -> list[str]:
    """Every ``keel.*`` module a source file imports (at any depth of the file)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name == "keel" or name.startswith("keel.")]


def engine_files() -> list[Path]:
    return [p for layer in ENGINE for p in sorted((ROOT / layer).rglob("*.py"))]


@pytest.mark.parametrize("path", engine_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_engine_names_no_scenario(path: Path) -> None:
    scenario_imports = [m for m in keel_imports(path) if m.startswith("keel.scenarios")]
    text = path.read_text()
    assert not scenario_imports, f"{path} imports {scenario_imports}"
    for word in ("contract_review", "support_email", "IncidentInvestigation", "risk_level"):
        assert word not in text, f"{path} names the scenario word {word!r}"


@pytest.mark.parametrize("path", engine_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_layers_import_one_way(path: Path) -> None:
    layer = path.relative_to(ROOT).parts[0]
    for module in keel_imports(path):
        parts = module.split(".")
        if len(parts) == 1 or parts[1] in SHARED:
            continue  # the public API package and the shared modules
        assert parts[1] in ALLOWED[layer], f"{path} ({layer}) imports {module}"


def test_the_public_api_is_declared_and_every_name_resolves() -> None:
    assert (ROOT / "py.typed").exists()
    for name in keel.__all__:
        assert getattr(keel, name) is not None, name


def test_each_scenario_is_one_self_contained_folder() -> None:
    for folder in sorted(p for p in (ROOT / "scenarios").iterdir() if p.is_dir()):
        if folder.name.startswith("__"):
            continue
        assert (folder / "__init__.py").exists() and (folder / "README.md").exists(), folder
        for path in folder.rglob("*.py"):
            for module in keel_imports(path):
                other = module.split(".")[2] if module.startswith("keel.scenarios.") else None
                assert other in (None, folder.name), f"{path} imports another app: {module}"

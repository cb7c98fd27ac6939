"""What a built wheel holds: every data file under ``keel/`` (templates, static files,
samples) is named by ``[tool.setuptools.package-data]``, so an installed Keel (the Docker
image installs a wheel, not the source tree) serves its inbox pages and dossier."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_data_file_of_the_package_is_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    missing = []
    for path in sorted((ROOT / "keel").rglob("*")):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(ROOT)
        covered = False
        for depth in range(1, len(relative.parts)):
            package = ".".join(relative.parts[:depth])
            inside = "/".join(relative.parts[depth:])
            patterns = package_data.get(package, [])
            if any(
                fnmatch.fnmatch(inside, p) and inside.count("/") == p.count("/") for p in patterns
            ):
                covered = True
        if not covered:
            missing.append(str(relative))
    assert missing == []


def test_the_audit_extra_brings_what_keel_audit_imports() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {spec.split(">")[0].split("[")[0] for spec in extras["audit"]}
    assert {"jinja2", "playwright"} <= names

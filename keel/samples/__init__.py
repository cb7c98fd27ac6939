"""Sample inputs used by ``keel demo``, the docs and the tests."""

import json
from importlib.resources import files
from typing import Any


def load_sample(name: str) -> dict[str, Any]:
    """A sample input by file stem, e.g. ``contract-low-risk``."""
    data: dict[str, Any] = json.loads(files(__name__).joinpath(f"{name}.json").read_text())
    return data

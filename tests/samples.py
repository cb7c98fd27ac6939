"""Sample inputs of the built-in apps, by file stem (``contract-low-risk``, ...)."""

from typing import Any

from keel.workers.app import Entry
from keel.workers.apps import find_entry, resolve_apps

BUILTIN_APPS = {app.name: app for app in resolve_apps()}


def load_sample(name: str) -> dict[str, Any]:
    """The sample ``name`` from whichever built-in app has it."""
    for app in BUILTIN_APPS.values():
        if app.samples is not None and (app.samples / f"{name}.json").exists():
            return app.sample(name)
    raise KeyError(f"no built-in app has a sample {name!r}")


def entry(name: str) -> Entry:
    """The built-in entry ``name`` (what ``keel start NAME`` starts)."""
    found = find_entry(list(BUILTIN_APPS.values()), name)
    if found is None:
        raise KeyError(f"no built-in app has an entry {name!r}")
    return found[1]

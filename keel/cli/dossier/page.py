"""The dossier as one self-contained HTML page: a Jinja2 template with autoescape on, the
stylesheet inline, no script and no external resource (a Content-Security-Policy forbids
both, should anything slip through). Every ledger string is escaped twice over: HTML
escaping by the template, and control, line-separator and bidi-override characters shown
as escapes (``keel.cli.render.escape``), so a field cannot forge a line or reorder text."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from keel import __version__
from keel.cli.dossier.decisions import as_json
from keel.cli.dossier.facts import Dossier
from keel.cli.render import escape
from keel.errors import KeelUserError

TEMPLATES = Path(__file__).parent / "templates"


def render_html(dossier: Dossier, *, generated_at: datetime | None = None) -> str:
    """The page of ``dossier``.

    Raises:
        KeelUserError: Jinja2 is not installed (it comes with ``keel[inbox]``).
    """
    when = (generated_at or datetime.now(UTC)).isoformat(timespec="seconds")
    page: str = _template().render(
        d=dossier, generated_at=when, keel_version=__version__, css=_stylesheet()
    )
    return page


@cache
def _template() -> Any:
    try:
        import jinja2
    except ImportError as exc:
        raise KeelUserError(
            "keel audit renders with Jinja2: pip install 'keel[inbox]' (or jinja2)"
        ) from exc
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(line=_line, block=_block, cls=_css_class, tojson_text=_json_text)
    return env.get_template("dossier.html.j2")


@cache
def _stylesheet() -> Any:
    from markupsafe import Markup

    css = (TEMPLATES / "dossier.css").read_text(encoding="utf-8")
    return Markup(css)  # Keel's own file, not ledger content


def _line(value: Any) -> str:
    """One line of text: every control character shown as an escape (a newline too)."""
    return escape("" if value is None else str(value))


def _block(value: Any) -> str:
    """Text for a ``<pre>``: its lines kept, every other control character escaped."""
    return "\n".join(escape(part) for part in str(value).split("\n"))


_NOT_A_CLASS = re.compile(r"[^a-z0-9-]+")


def _css_class(value: Any) -> str:
    """A CSS class from a state word (``expired: reject by default`` -> ``expired``)."""
    first = str(value).strip().lower().split(":")[0].split(" ")[0]
    return _NOT_A_CLASS.sub("", first)[:24]


def _json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON text (escaped by the template like any text)."""
    return as_json(value, indent)

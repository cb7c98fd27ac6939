"""What the ``keel`` commands print (text, or JSON with ``-o json``) and their exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from keel.cli.render import escape

OK = 0
FAILURE = 1
"""The command ran and something failed: a workflow, a replay, a ledger's hash chain."""
USAGE = 2
"""The command was refused: bad arguments, unreadable or invalid input, a refused review."""
UNREACHABLE = 3
"""No Temporal server answered."""


class CliError(Exception):
    """Ends a command with ``message`` on stderr and exit code ``code``."""

    def __init__(self, message: str, code: int = FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@contextmanager
def output_file(path: str | None) -> Iterator[IO[str]]:
    """``path`` opened to write (closed after), or stdout when None; a ``CliError`` that says
    why (exit 2) when it cannot be opened."""
    if path is None:
        yield sys.stdout
        return
    try:
        out = open(path, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"cannot write {escape(path)}: {exc.strerror or exc}", USAGE) from exc
    with out:
        yield out


def wants_json(args: Any) -> bool:
    """Whether the command was asked for JSON (``-o json``, ``--output json``, ``--json``)."""
    return getattr(args, "output", "text") == "json"


def emit(args: Any, text: str, record: Any) -> None:
    """Print one result: ``text``, or ``record`` as one JSON object."""
    print(json.dumps(record, default=str) if wants_json(args) else text)


def emit_lines(args: Any, text: str, records: Iterable[Any]) -> None:
    """Print a list: ``text``, or one JSON object per line."""
    if wants_json(args):
        for record in records:
            print(json.dumps(record, default=str))
    else:
        print(text)


def report(args: Any, message: str, code: int = USAGE) -> int:
    """Print an error on stderr (``keel: message``, with control characters escaped: an
    error may quote what someone sent; or ``{"error": message}``); return ``code``."""
    if wants_json(args):
        print(json.dumps({"error": message}), file=sys.stderr)
    else:
        print(f"keel: {escape(message)}", file=sys.stderr)
    return code

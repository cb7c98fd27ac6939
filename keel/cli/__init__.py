"""The ``keel`` command line: ``main`` is the console script."""

from keel.cli.main import main, run

__all__ = ["main", "run"]

"""``keel inbox users``: local accounts in the directory file, edited from the shell."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from keel.cli.inbox import cmd_users
from keel.cli.main import build_parser
from keel.inbox.directory import FileDirectory, authenticate
from tests.conftest import offline_settings


def users(tmp_path: Path, *argv: str, stdin: str = "") -> int:
    args = build_parser().parse_args(["inbox", "users", *argv])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(stdin))
        return cmd_users(offline_settings(data_dir=tmp_path), args)


def test_users_are_added_with_roles_and_a_password_that_signs_them_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert users(tmp_path, "add", "legal.priya", "--role", "legal", "--role", "legal-lead") == 0
    subject, password = capsys.readouterr().out.split()
    directory = FileDirectory(tmp_path / "directory.json")
    priya = authenticate(directory, subject, password)
    assert priya is not None and priya.roles == ("legal", "legal-lead")
    assert users(tmp_path, "passwd", "legal.priya", "--password-stdin", stdin="new one\n") == 0
    assert authenticate(directory, "legal.priya", password) is None
    assert authenticate(directory, "legal.priya", "new one") is not None


def test_delegations_and_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users(tmp_path, "add", "legal.sam", "--role", "legal")
    assert (
        users(tmp_path, "delegate", "legal.sam", "legal.priya", "--until", "2030-01-01T00:00Z") == 0
    )
    capsys.readouterr()
    assert users(tmp_path, "list") == 0
    assert "delegates to legal.priya until 2030-01-01" in capsys.readouterr().out
    before = (tmp_path / "directory.json").read_text()
    assert users(tmp_path, "add", "legal.sam") == 2
    assert users(tmp_path, "passwd", "nobody") == 2
    assert users(tmp_path, "delegate", "legal.sam", "x", "--until", "next week") == 2
    assert "already in the directory" in capsys.readouterr().err
    assert (tmp_path / "directory.json").read_text() == before

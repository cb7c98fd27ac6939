"""``keel inbox``: serve the reviewers' inbox; ``keel inbox users``: edit its directory file."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from keel.cli.connection import connected_settings, open_client
from keel.cli.output import OK, USAGE, report
from keel.cli.render import escape
from keel.errors import KeelUserError
from keel.settings import KeelSettings


def add_inbox_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Register ``keel inbox`` and ``keel inbox users ...`` through ``command`` (main's
    subcommand factory, which adds the connection options)."""
    p = command("inbox", "the reviewers' inbox: web app and HTTP API (/api) on Temporal")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: KEEL_INBOX_PORT, 8234; 0: any free)")
    actions = p.add_subparsers(dest="inbox_action", metavar="ACTION")
    users = actions.add_parser("users", help="the local accounts of the directory file")
    verbs = users.add_subparsers(dest="users_action", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add a reviewer (prints a new password unless given one)")
    add.add_argument("subject", metavar="NAME")
    add.add_argument("--role", action="append", default=[], help="a role (repeatable)")
    add.add_argument("--display-name", default="")
    add.add_argument("--email")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    passwd = verbs.add_parser("passwd", help="set a reviewer's password")
    passwd.add_argument("subject", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true")
    verbs.add_parser("list", help="the reviewers, their roles and delegations")
    delegate = verbs.add_parser("delegate", help="let TO decide NAME's gates until a time")
    delegate.add_argument("subject", metavar="NAME")
    delegate.add_argument("to", metavar="TO")
    delegate.add_argument("--until", required=True, help="ISO 8601 time with a zone")


async def cmd_inbox(settings: KeelSettings, args: Any, stop: asyncio.Event) -> int:
    """Serve the inbox until ``stop`` is set, or run a ``users`` verb."""
    if getattr(args, "inbox_action", None) == "users":
        return cmd_users(settings, args)
    from keel.inbox.server import inbox_banner, serving

    client = await open_client(settings, args)
    settings = connected_settings(settings, client)
    async with serving(settings, client, host=args.host, port=args.port) as inbox:
        print(inbox_banner(inbox), flush=True)
        await stop.wait()
    return OK


def cmd_users(settings: KeelSettings, args: Any) -> int:
    """``keel inbox users add|passwd|list|delegate`` on the directory file."""
    from keel.inbox.accounts import default_directory_path
    from keel.inbox.directory import FileDirectory

    if settings.inbox_directory_url:
        return report(args, "the directory is a PostgreSQL table: edit its rows there", USAGE)
    path = default_directory_path(settings)
    directory = FileDirectory(path)
    principals = {p.subject: p for p in directory.principals()} if path.exists() else {}
    try:
        verb = {"add": _add, "passwd": _passwd, "list": _list, "delegate": _delegate}
        changed = verb[args.users_action](principals, args)
    except (KeelUserError, ValueError) as exc:
        return report(args, escape(str(exc).splitlines()[0]), USAGE)
    if changed:
        directory.save(principals.values())
        print(f"directory {path} updated", file=sys.stderr)
    return OK


def _password(args: Any) -> tuple[str, bool]:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(12), True


def _add(principals: dict[str, Any], args: Any) -> bool:
    from keel.inbox.directory import Principal, hash_password

    if args.subject in principals:
        raise KeelUserError(f"{args.subject} is already in the directory (use passwd)")
    password, generated = _password(args)
    principals[args.subject] = Principal(
        subject=args.subject,
        display_name=args.display_name,
        email=args.email,
        roles=tuple(args.role),
        password_hash=hash_password(password),
    )
    if generated:
        print(f"{args.subject} {password}")
    return True


def _passwd(principals: dict[str, Any], args: Any) -> bool:
    from keel.inbox.directory import hash_password

    if args.subject not in principals:
        raise KeelUserError(f"{args.subject} is not in the directory (use add)")
    password, generated = _password(args)
    principals[args.subject] = principals[args.subject].model_copy(
        update={"password_hash": hash_password(password)}
    )
    if generated:
        print(f"{args.subject} {password}")
    return True


def _list(principals: dict[str, Any], args: Any) -> bool:
    for p in principals.values():
        away = ", ".join(f"{d.to} until {d.until.isoformat()}" for d in p.delegations)
        note = f"  delegates to {away}" if away else ""
        print(f"{p.subject:<24} {','.join(p.roles) or '-':<30} {p.name}{note}")
    return False


def _delegate(principals: dict[str, Any], args: Any) -> bool:
    from keel.inbox.directory import Delegation

    if args.subject not in principals:
        raise KeelUserError(f"{args.subject} is not in the directory")
    until = datetime.fromisoformat(args.until)
    delegation = Delegation(to=args.to, until=until)
    owner = principals[args.subject]
    kept = tuple(d for d in owner.delegations if d.to != args.to)
    principals[args.subject] = owner.model_copy(update={"delegations": (*kept, delegation)})
    return True

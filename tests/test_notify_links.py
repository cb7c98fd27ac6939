"""Signed inbox links: a link Keel made admits its gate until it expires, and nothing else."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.contracts.links import inbox_link, link_problem
from keel.errors import KeelUserError
from keel.settings import KeelSettings
from keel.workers.link_key import link_key_path, load_link_key

KEY = b"k" * 32
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _parts(link: str) -> tuple[str, str, str, str]:
    """The workflow id, gate, exp and sig a link carries, as the inbox reads them."""
    url = urlsplit(link)
    _, gates, workflow_id, gate = url.path.split("/")
    assert gates == "gates"
    query = parse_qs(url.query)
    return unquote(workflow_id), unquote(gate), query["exp"][0], query["sig"][0]


def test_a_link_round_trips_until_it_expires() -> None:
    link = inbox_link("https://inbox.example/", "wf-1", "legal", KEY, expires=NOW + timedelta(1))
    assert link.startswith("https://inbox.example/gates/wf-1/legal?exp=")
    workflow_id, gate, exp, sig = _parts(link)
    assert link_problem(workflow_id, gate, exp, sig, KEY, NOW) is None
    expired = link_problem(workflow_id, gate, exp, sig, KEY, NOW + timedelta(days=2))
    assert expired is not None and "expired" in expired


@given(
    workflow_id=st.text(min_size=1, max_size=40),
    gate=st.text(min_size=1, max_size=20),
)
def test_any_workflow_id_and_gate_survive_the_url(workflow_id: str, gate: str) -> None:
    link = inbox_link("http://127.0.0.1:1", workflow_id, gate, KEY, expires=NOW + timedelta(1))
    got_id, got_gate, exp, sig = _parts(link)
    assert (got_id, got_gate) == (workflow_id, gate)
    assert link_problem(got_id, got_gate, exp, sig, KEY, NOW) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"workflow_id": "wf-2"}, "does not match"),
        ({"gate": "finance"}, "does not match"),
        ({"exp": "later"}, "not a whole number"),
        ({"exp": " 1"}, "not a whole number"),
        ({"sig": "not base64!"}, "not URL-safe base64"),
        ({"key": b"o" * 32}, "does not match"),
    ],
)
def test_a_tampered_link_is_refused_with_its_reason(change: dict[str, object], reason: str) -> None:
    link = inbox_link("http://inbox", "wf-1", "legal", KEY, expires=NOW + timedelta(1))
    workflow_id, gate, exp, sig = _parts(link)
    fields: dict[str, object] = {
        "workflow_id": workflow_id,
        "gate": gate,
        "exp": exp,
        "sig": sig,
        "key": KEY,
        "now": NOW,
    } | change
    assert reason in (link_problem(**fields) or "")  # type: ignore[arg-type]


def test_a_later_expiry_with_the_old_signature_does_not_match() -> None:
    link = inbox_link("http://inbox", "wf-1", "legal", KEY, expires=NOW + timedelta(1))
    workflow_id, gate, exp, sig = _parts(link)
    later = str(int(exp) + 86_400 * 365)
    assert "does not match" in (link_problem(workflow_id, gate, later, sig, KEY, NOW) or "")


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="time zone"):
        inbox_link("http://inbox", "wf", "g", KEY, expires=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="needs 32"):
        inbox_link("http://inbox", "wf", "g", b"short", expires=NOW)
    with pytest.raises(ValueError, match="http"):
        inbox_link("inbox.example", "wf", "g", KEY, expires=NOW)
    with pytest.raises(ValueError, match="empty"):
        inbox_link("http://inbox", "", "g", KEY, expires=NOW)


def test_the_default_link_key_is_generated_once_private(tmp_path: Path) -> None:
    settings = KeelSettings(data_dir=tmp_path)
    with ThreadPoolExecutor(4) as pool:
        keys = set(pool.map(lambda _: load_link_key(settings), range(8)))
    assert len(keys) == 1 and len(keys.pop()) >= 32
    mode = stat.S_IMODE(os.stat(link_key_path(settings)).st_mode)
    assert mode == 0o600
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["inbox-link-key"]


def test_a_configured_link_key_must_exist_and_be_long_enough(tmp_path: Path) -> None:
    missing = KeelSettings(data_dir=tmp_path, inbox_link_key_file=tmp_path / "nope")
    with pytest.raises(KeelUserError, match="nope"):
        load_link_key(missing)
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(KeelUserError, match="openssl rand"):
        load_link_key(KeelSettings(inbox_link_key_file=short))
    good = tmp_path / "good"
    good.write_text("  " + "x" * 40 + "\n")
    assert load_link_key(KeelSettings(inbox_link_key_file=good)) == b"x" * 40

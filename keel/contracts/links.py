"""Signed links into the inbox: a notification names one gate, and the link proves it.

A link is ``{base}/gates/{workflow id}/{gate}?exp=<unix seconds>&sig=<signature>``, the
signature an HMAC-SHA256 (URL-safe base64, no padding) under the inbox's link key over the
JSON array ``["keel/inbox-link/1", workflow id, gate, exp]`` (a JSON array, not a joined
string, so no workflow id or gate name can be cut differently to forge another pair).

A link grants nothing by itself: the inbox still signs the reviewer in and checks their
roles. It tells the inbox that Keel sent this link for this gate and until when, so a
notification cannot be edited to point a reviewer at a gate it never named, and an old
email stops working once the gate's deadline (or the link's own lifetime) has passed.

Pure: no I/O; the key comes from ``keel.workers.link_key.load_link_key``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from urllib.parse import quote, urlencode

LINK_PURPOSE = "keel/inbox-link/1"
MIN_KEY_BYTES = 32
"""An HMAC-SHA256 key shorter than its output gives away strength for nothing."""


def inbox_link(base_url: str, workflow_id: str, gate: str, key: bytes, *, expires: datetime) -> str:
    """The signed inbox link to ``gate`` of ``workflow_id``, valid until ``expires``.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL, ``expires`` has no time zone, an
            id is empty, or ``key`` is shorter than ``MIN_KEY_BYTES``.
    """
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"inbox URL {base_url!r} must start with http:// or https://")
    if expires.tzinfo is None:
        raise ValueError("a link's expiry needs a time zone (use datetime.now(UTC) + ...)")
    exp = int(expires.timestamp())
    query = urlencode({"exp": exp, "sig": link_signature(workflow_id, gate, exp, key)})
    path = f"/gates/{quote(workflow_id, safe='')}/{quote(gate, safe='')}"
    return f"{base_url.rstrip('/')}{path}?{query}"


def link_signature(workflow_id: str, gate: str, exp: int, key: bytes) -> str:
    """The ``sig`` of a link to ``gate`` of ``workflow_id`` expiring at ``exp``.

    Raises:
        ValueError: an id is empty or ``key`` is too short.
    """
    if not workflow_id or not gate:
        raise ValueError("a link names a workflow id and a gate; one of them is empty")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the inbox link key has {len(key)} bytes; it needs {MIN_KEY_BYTES}")
    message = json.dumps([LINK_PURPOSE, workflow_id, gate, exp], ensure_ascii=False)
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def link_problem(
    workflow_id: str, gate: str, exp: str | int, sig: str, key: bytes, now: datetime
) -> str | None:
    """Why a link's ``exp`` and ``sig`` do not admit it to ``gate`` of ``workflow_id`` at
    ``now``, or None when they do. ``exp`` and ``sig`` are the query values as received.

    The signature is compared in constant time, and checked before the expiry so that
    an answer about the expiry is only ever given for a link Keel made.

    Raises:
        ValueError: ``key`` is too short or ``now`` has no time zone (the server's
            fault, not the link's).
    """
    if now.tzinfo is None:
        raise ValueError("now needs a time zone (use datetime.now(UTC))")
    expiry = _parse_exp(exp)
    if expiry is None:
        return "the link's expiry is not a whole number of seconds"
    if not _is_b64url(sig):
        return "the link's signature is not URL-safe base64"
    if not workflow_id or not gate:
        return "the link names no workflow or no gate"
    expected = link_signature(workflow_id, gate, expiry, key)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        return "the link's signature does not match (altered, or made with another key)"
    if now.timestamp() >= expiry:
        return f"the link expired at {datetime.fromtimestamp(expiry, now.tzinfo).isoformat()}"
    return None


def _parse_exp(exp: str | int) -> int | None:
    if isinstance(exp, int):
        return exp
    # int() accepts " 12", "+12" and "1_2": a link Keel made has plain digits only.
    if not exp.isascii() or not exp.isdigit() or len(exp) > 12:
        return None
    return int(exp)


def _is_b64url(text: str) -> bool:
    if not text or len(text) > 128:
        return False
    try:
        base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return False
    return text.isascii() and all(c.isalnum() or c in "-_" for c in text)

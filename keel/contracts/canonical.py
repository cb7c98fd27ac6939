"""RFC 8785 canonical JSON, fast: the standard library's encoder wherever its output is
byte-for-byte the RFC's, the ``rfc8785`` package for the rest.

Every ledger event is hashed over this form, so its cost is paid per event in workflow code.
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` already writes what
RFC 8785 asks for strings (the same escapes), integers, booleans and null; it differs only in
three places, which ``_prepared`` checks for on the way:

- numbers: RFC 8785 writes floats the way ECMAScript does. A float that is a whole number
  below 2**53 is written as that integer (``300000.0`` -> ``300000``, ``-0.0`` -> ``0``), so it
  is handed over as an ``int``; any other float is written by both as its shortest round-trip
  digits when its magnitude is in [1e-4, 1e16) (Python's ``repr`` and ECMAScript switch to
  exponents at different places outside it), and anything else goes to ``rfc8785``;
- key order: RFC 8785 sorts keys by UTF-16 code units, Python by code points; they agree on
  keys that are all ASCII, so only those take the fast path;
- what RFC 8785 refuses (NaN, infinities, integers beyond I-JSON's range, lone surrogates,
  non-string keys) goes to ``rfc8785``, which raises as it always did.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_SAFE_INTEGER = 2**53 - 1
_SAFE_FLOAT = float(2**53)
_ENCODE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
).encode


class _Slow(Exception):
    """The value needs ``rfc8785`` (or is refused by it)."""


def canonical_bytes(value: Any) -> bytes:
    """``value``'s RFC 8785 canonical JSON, UTF-8 encoded (what ``rfc8785.dumps`` returns).

    Raises:
        rfc8785.CanonicalizationError, UnicodeEncodeError, TypeError: what ``rfc8785.dumps``
            raises for the value (NaN, infinities, integers beyond 2**53 - 1, non-string keys,
            lone surrogates, types JSON does not have).
    """
    plain = plain_canonical_bytes(value)
    return plain if plain is not None else rfc8785.dumps(value)


def plain_canonical_bytes(value: Any) -> bytes | None:
    """``value``'s RFC 8785 bytes when it is plain JSON that needs nothing replaced (no NaN,
    infinity, integer beyond 2**53 - 1, lone surrogate, non-ASCII or non-string key, float
    outside [1e-4, 1e16), subclass of a JSON type), else ``None``. One walk, by exact type:
    what the ledger hashes nearly always takes this path."""
    try:
        return _ENCODE(_prepared(value)).encode("utf-8")
    except (_Slow, UnicodeEncodeError, RecursionError):
        return None


def _prepared(value: Any) -> Any:
    """``value`` with whole-number floats as ints; raises ``_Slow`` where the standard
    encoder's output would not be RFC 8785's."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
            return value
        raise _Slow
    if kind is float:
        magnitude = abs(value)
        if value.is_integer():
            if magnitude < _SAFE_FLOAT:
                return int(value)
            raise _Slow  # ECMAScript pads the shortest digits with zeros; int() is exact
        if 1e-4 <= magnitude < 1e16:
            return value
        raise _Slow
    if kind is dict:
        prepared = {}
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                raise _Slow
            prepared[key] = _prepared(item)
        return prepared
    if kind is list or kind is tuple:
        return [_prepared(item) for item in value]
    raise _Slow  # subclasses and other types: rfc8785 decides

"""Keel's fast canonical JSON is byte-for-byte ``rfc8785.dumps`` on every JSON value, so a
hash computed in workflow code is the hash any RFC 8785 implementation computes."""

from __future__ import annotations

import math
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.contracts.canonical import canonical_bytes, plain_canonical_bytes
from keel.contracts.ledger import json_safe

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)

EDGES: list[Any] = [
    0.0,
    -0.0,
    300000.0,
    1e-4,
    9.9999e-5,
    1e-7,
    1e16,
    9999999999999998.0,
    2.0**53,
    2.0**53 + 2,
    1e21,
    1.2345678901234567e20,
    5e-324,
    1.7976931348623157e308,
    0.1 + 0.2,
    2**53 - 1,
    -(2**53) + 1,
    '\x00\x1f\x7f\u2028\u2029"\\/é😀',
    {"\ue000": 1, "😀": 2, "a": 3, "é": 4, "Z": 5},
    {"b": [1, {"a": None, "c": True}], "a": "x"},
    [],
    {},
]


@settings(max_examples=2000, deadline=None)
@given(JSON)
def test_it_matches_rfc8785_on_any_json_value(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


@pytest.mark.parametrize("value", EDGES, ids=repr)
def test_it_matches_rfc8785_at_the_edges(value: Any) -> None:
    assert canonical_bytes(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, 2**53, -(2**53), {"a": [1, math.nan]}],
    ids=repr,
)
def test_what_rfc8785_refuses_it_refuses(value: Any) -> None:
    with pytest.raises(rfc8785.CanonicalizationError):
        rfc8785.dumps(value)
    with pytest.raises(rfc8785.CanonicalizationError):
        canonical_bytes(value)


def test_lone_surrogates_and_odd_keys_are_rfc8785s_to_judge() -> None:
    odd: list[Any] = ["\ud800", {"\udfff": 1}, {1: "a"}]
    for value in odd:
        with pytest.raises(Exception) as expected:
            rfc8785.dumps(value)
        with pytest.raises(type(expected.value)):
            canonical_bytes(value)


ANY_DUMP = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=2000, deadline=None)
@given(ANY_DUMP)
def test_the_plain_path_is_taken_only_where_nothing_needs_making_safe(value: Any) -> None:
    """``seal_event`` hashes a dump as it is when ``plain_canonical_bytes`` gives bytes: those
    must be RFC 8785's, and ``json_safe`` (the slow path) must have had nothing to change."""
    plain = plain_canonical_bytes(value)
    if plain is None:
        return
    assert plain == rfc8785.dumps(value)
    assert json_safe(value) == value
    assert _all_finite(value)


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


@pytest.mark.parametrize(
    "value",
    [math.nan, {"a": [math.inf]}, 2**53, "\ud800", {"é": 1}, {1: 2}, 1e-5, 1e16, True.__class__],
    ids=repr,
)
def test_what_needs_care_leaves_the_plain_path(value: Any) -> None:
    assert plain_canonical_bytes(value) is None

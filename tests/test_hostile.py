"""Hostile input on every backend: stored literally or refused with the contract's error.

Never an injection (a name or filter that changes what a query means), never a traceback from a
driver: every outcome is either exactly what a plain dict would give or one of our errors.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from motia_state_sql import (
    InvalidKeyError,
    InvalidOperationError,
    InvalidValueError,
    StateAdapter,
    StateError,
    codec,
)
from motia_state_sql.ops import FILTER_OPERATIONS, apply_update, check_filters, check_ops, matches

from .conftest import MODEL_BACKENDS, FakeClock, colon_groups, make_factory

T = TypeVar("T")
Stores = tuple[asyncio.AbstractEventLoop, dict[str, StateAdapter]]
SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# Quotes, LIKE and glob wildcards, JSON-path and key separators, NUL, lone surrogates, unicode.
NASTY = "'\"%_*?[]{}:\\/.$\x00\ud800é中😀 \n\t"
NAMES = st.text(alphabet=st.sampled_from(NASTY) | st.characters(), max_size=12) | st.text(
    alphabet=st.sampled_from(NASTY), min_size=1000, max_size=3000
)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.sampled_from(NASTY) | st.characters())
)
HOSTILE_VALUES = st.recursive(
    JSON_SCALARS | st.binary(max_size=3) | st.sets(st.integers(), max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
        | st.tuples(inner, inner)
    ),
    max_leaves=10,
)


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stores]:
    loop = asyncio.new_event_loop()
    folder: Path = tmp_path_factory.mktemp("hostile")
    url = request.getfixturevalue("redis_url")
    pg_url = request.getfixturevalue("postgres_url")
    adapters = {
        name: make_factory(name, folder / name, FakeClock(), url, pg_url)() for name in MODEL_BACKENDS
    }
    yield loop, adapters
    for adapter in adapters.values():
        loop.run_until_complete(adapter.close())
    loop.close()


def _run(stores: Stores, call: Awaitable[T]) -> T:
    return stores[0].run_until_complete(call)


def _attempt(stores: Stores, call: Awaitable[T]) -> tuple[T | None, type[StateError] | None]:
    try:
        return _run(stores, call), None
    except StateError as exc:  # anything else (a driver error, a TypeError) fails the test
        return None, type(exc)


def _name_error(store: StateAdapter, group: str, key: str) -> type[StateError] | None:
    try:
        codec.check_name("group_id", group)
        codec.check_name("key", key)
    except InvalidKeyError:
        return InvalidKeyError
    return InvalidKeyError if ":" in group and not colon_groups(store) else None


@SETTINGS
@given(group=NAMES, key=NAMES, value=JSON_SCALARS)
def test_hostile_names(stores: Stores, group: str, key: str, value: Any) -> None:
    for store in stores[1].values():
        expected = _name_error(store, group, key)
        if expected is None:
            try:
                codec.encode(value, group, key)
            except InvalidValueError:  # NaN, infinities, big ints, lone surrogates
                expected = InvalidValueError
        stored, error = _attempt(stores, store.set(group, key, value))
        assert error is expected, (store, group, key, error)
        if error is None:
            assert stored == value
            assert _run(stores, store.get(group, key)) == value
            assert key in _run(stores, store.keys(group))
            assert group in _run(stores, store.list_groups())
            assert _run(stores, store.get_group(group)) == [value]
            assert _run(stores, store.delete(group, key)) == value
            assert _run(stores, store.get_group(group)) == []


@SETTINGS
@given(value=HOSTILE_VALUES | st.builds(_deep, st.integers(250, 400)))
def test_hostile_values(stores: Stores, value: Any) -> None:
    try:
        expected: Any = codec.decode(codec.encode(value, "g", "k"))
        refused = None
    except InvalidValueError:
        refused = InvalidValueError
    for store in stores[1].values():
        stored, error = _attempt(stores, store.set("values", "k", value))
        assert error is refused, (store, error)
        if refused is None:
            assert stored == expected
            assert _run(stores, store.get("values", "k")) == expected
        _run(stores, store.delete("values", "k"))


FILTER_ROWS = {
    "a": {"'": "x'y", '"': 1, "%": "100%", "_": None, "a.b": [1, "2"], "$": {"nested": True}, "é": "é"},
    "b": {"'": "x", '"': "1", "%": "1_0", "_": False, "a.b": "a.b", "$": "$", "é": 2.5},
    "c": ["not", "an", "object"],
    "d": "a string",
}


@SETTINGS
@given(
    field=st.sampled_from([*FILTER_ROWS["a"], "missing"]) | NAMES,
    operation=st.sampled_from([*sorted(FILTER_OPERATIONS), "like", "' OR 1=1 --"]),
    text=st.sampled_from(["x", "1", "1.0", "%", "_", "' OR '1'='1", "true", "false", "null", ""]) | NAMES,
)
def test_hostile_filters(stores: Stores, field: str, operation: str, text: str) -> None:
    flt = {"valueKey": field, "operation": operation, "value": text}
    try:
        checked = check_filters([flt])
        expected: list[str] | None = sorted(
            k for k, v in FILTER_ROWS.items() if matches(copy.deepcopy(v), checked)
        )
    except InvalidOperationError:
        expected = None
    for store in stores[1].values():
        if not _run(stores, store.keys("filters")):
            for key, row in FILTER_ROWS.items():
                _run(stores, store.set("filters", key, row))
        found, error = _attempt(stores, store.items("filters", [flt]))
        if expected is None:
            assert error is InvalidOperationError
        else:
            assert error is None
            assert found is not None
            assert [item.key for item in found] == expected, (store, flt)


@SETTINGS
@given(path=st.lists(NAMES, min_size=1, max_size=3), value=JSON_SCALARS, by=st.integers(-(2**64), 2**64))
def test_hostile_update_paths(stores: Stores, path: list[str], value: Any, by: int) -> None:
    ops = [
        {"type": "set", "path": path, "value": value},
        {"type": "increment", "path": [*path[:-1], "n"], "by": by},
    ]
    try:
        new = apply_update({"base": 1}, check_ops(ops))
        codec.encode(new, "g", "k")
        refused: type[StateError] | None = None
    except (InvalidOperationError, InvalidValueError) as exc:
        refused = type(exc)
    for store in stores[1].values():
        _run(stores, store.set("updates", "k", {"base": 1}))
        result, error = _attempt(stores, store.update("updates", "k", ops))
        assert error is refused, (store, error)
        if refused is None:
            assert result is not None
            assert result.new_value == codec.decode(codec.encode(new, "g", "k"))
            assert _run(stores, store.get("updates", "k")) == result.new_value
        else:
            assert _run(stores, store.get("updates", "k")) == {"base": 1}


def test_filter_fields_a_json_path_cannot_quote(stores: Stores) -> None:
    rows: dict[str, dict[str, Any]] = {
        "a": {"\x00": "x", 'q"': "x", "b\\": "x", "t\tab": "x", "n\n": "x"},
        "b": {"other": 1},
    }
    for store in stores[1].values():
        for key, row in rows.items():
            _run(stores, store.set("labels", key, row))
        for field in rows["a"]:
            found = _run(
                stores, store.items("labels", [{"valueKey": field, "operation": "eq", "value": "x"}])
            )
            assert [item.key for item in found] == ["a"], (store, field)

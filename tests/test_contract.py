"""The contract suite: every row of docs/contract-decisions.md, run over every backend."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
import struct
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from motia_state_sql import (
    ConflictError,
    InvalidKeyError,
    InvalidOperationError,
    InvalidValueError,
    RedisStateAdapter,
    StateAdapter,
    StateError,
    StateTransaction,
    StoreUnavailableError,
    UnsupportedError,
    decrement,
    increment,
    merge,
    remove,
    set_op,
)
from motia_state_sql.codec import MAX_TTL

from .conftest import Factory, FakeClock, colon_groups, is_cluster, is_file, is_motia_redis

# -- exact values ------------------------------------------------------------------------------

FALSY = [0, 0.0, "", False, [], {}, None]
ODD_VALUES: list[Any] = [
    {"nested": {"list": [1, "two", 3.5, None, True, {"deep": []}]}},
    'unicode: é ü 中文 😀 \u2028 \x1f tab\t quote" backslash\\',
    2**63 - 1,
    -(2**63),
    [[[[[]]]]],
    {"": "empty key inside a value is fine"},
]
FLOATS = [0.1, 1 / 3, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 2.0**53, 1e21, 1e-7]


@pytest.mark.parametrize("value", FALSY + ODD_VALUES, ids=repr)
async def test_values_round_trip_exactly(store: StateAdapter, value: Any) -> None:
    assert await store.set("g", "k", value) == value
    assert await store.get("g", "k") == value
    item = await store.get_item("g", "k")
    assert item is not None
    assert item.value == value
    assert type(item.value) is type(value)


@pytest.mark.parametrize("value", FLOATS, ids=repr)
async def test_floats_round_trip_bit_for_bit(store: StateAdapter, value: float) -> None:
    await store.set("g", "k", {"f": value})
    got = (await store.get("g", "k"))["f"]
    assert type(got) is float
    assert struct.pack("<d", got) == struct.pack("<d", value)


async def test_tuples_come_back_as_lists(store: StateAdapter) -> None:
    assert await store.set("g", "k", (1, (2, 3))) == [1, [2, 3]]
    assert await store.get("g", "k") == [1, [2, 3]]


async def test_stored_none_differs_from_absent(store: StateAdapter) -> None:
    await store.set("g", "none", None)
    assert await store.get("g", "none") is None
    item = await store.get_item("g", "none")
    assert item is not None
    assert item.value is None
    assert await store.get_item("g", "absent") is None
    assert await store.keys("g") == ["none"]


async def test_returned_values_do_not_alias_the_store(store: StateAdapter) -> None:
    original = {"items": [1]}
    await store.set("g", "k", original)
    original["items"].append(2)
    got = await store.get("g", "k")
    got["items"].append(3)
    assert await store.get("g", "k") == {"items": [1]}


async def test_overwrite_replaces(store: StateAdapter) -> None:
    await store.set("g", "k", {"a": 1})
    await store.set("g", "k", [1])
    assert await store.get("g", "k") == [1]


# -- exact groups and names --------------------------------------------------------------------


async def test_group_never_sees_a_longer_group(store: StateAdapter) -> None:
    await store.set("order", "1", "a")
    await store.set("orders", "2", "b")
    await store.set("order_x", "3", "c")
    assert await store.get_group("order") == ["a"]
    assert await store.keys("order") == ["1"]
    await store.clear("order")
    assert await store.get_group("orders") == ["b"]
    assert await store.list_groups() == ["order_x", "orders"]


NAMES = ["with space", "quote'\"", "slash/back\\", "percent%_under", "star*?[glob]", "é中😀", "a:b:c"]


@pytest.mark.parametrize("name", NAMES)
async def test_any_characters_in_keys(store: StateAdapter, name: str) -> None:
    await store.set("g", name, name)
    await store.set("g", name + "x", 1)
    assert await store.get("g", name) == name
    assert await store.keys("g") == sorted([name, name + "x"])
    assert await store.delete("g", name) == name


@pytest.mark.parametrize("name", NAMES)
async def test_any_characters_in_groups(store: StateAdapter, name: str) -> None:
    if not colon_groups(store) and ":" in name:
        with pytest.raises(InvalidKeyError, match="':'"):
            await store.set(name, "k", 1)
        return
    await store.set(name, "k", name)
    await store.set(name + "x", "k", "other")
    await store.set(name[:1], "k", "prefix")
    assert await store.get_group(name) == [name]
    assert name in await store.list_groups()
    await store.clear(name)
    assert await store.get_group(name) == []
    assert await store.get(name + "x", "k") == "other"


async def test_order_is_by_code_point(store: StateAdapter) -> None:
    keys = ["b", "a", "B", "é", "z", "aa", "😀", "\uffff", "a b", "A", "_", "~", "10", "9"]
    for index, key in enumerate(keys):
        await store.set("g", key, index)
        await store.set(key, "k", index)
    assert await store.keys("g") == sorted(keys)
    assert await store.get_group("g") == [keys.index(k) for k in sorted(keys)]
    assert await store.list_groups() == sorted([*keys, "g"])
    items = await store.items()
    assert [(i.group_id, i.key) for i in items] == sorted((i.group_id, i.key) for i in items)


# -- operations --------------------------------------------------------------------------------


async def test_delete_returns_the_value(store: StateAdapter) -> None:
    await store.set("g", "k", {"v": 0})
    assert await store.delete("g", "k") == {"v": 0}
    assert await store.delete("g", "k") is None
    assert await store.get("g", "k") is None
    assert await store.list_groups() == []


async def test_get_group_keys_items_and_clear(store: StateAdapter) -> None:
    for key in ["c", "a", "b"]:
        await store.set("g", key, key.upper())
    await store.set("h", "x", 1)
    assert await store.get_group("g") == ["A", "B", "C"]
    assert await store.keys("g") == ["a", "b", "c"]
    assert [(i.group_id, i.key, i.value) for i in await store.items("g")] == [
        ("g", "a", "A"),
        ("g", "b", "B"),
        ("g", "c", "C"),
    ]
    assert [(i.group_id, i.key) for i in await store.items()] == [
        ("g", "a"),
        ("g", "b"),
        ("g", "c"),
        ("h", "x"),
    ]
    await store.clear("g")
    assert await store.get_group("g") == []
    assert await store.keys("g") == []
    assert await store.list_groups() == ["h"]
    await store.clear("never-existed")


async def test_empty_store(store: StateAdapter) -> None:
    assert await store.list_groups() == []
    assert await store.items() == []
    assert await store.get_group("g") == []


# -- filters -----------------------------------------------------------------------------------

FILTER_ROWS: dict[str, Any] = {
    "a": {"status": "paid", "total": 10, "tags": ["x", "y"], "flag": True, "note": None},
    "b": {"status": "pending", "total": 99.5, "tags": [], "flag": False},
    "c": {"status": "paid-late", "total": "10", "name": "Zoë"},
    "d": [1, 2],
    "e": "plain",
}
FILTER_CASES = [
    ("status", "eq", "paid", ["a"]),
    ("status", "neq", "paid", ["b", "c", "d", "e"]),
    ("total", "eq", "10", ["a", "c"]),
    ("total", "eq", "10.0", ["a"]),
    ("total", "gt", "10", ["b"]),
    ("total", "gte", "10", ["a", "b", "c"]),  # c holds the string "10": compared as text
    ("total", "lt", "50", ["a", "c"]),
    ("total", "lte", "99.5", ["a", "b", "c"]),
    ("total", "lt", "9", ["c"]),  # "10" < "9" as text; 10 > 9 as numbers
    ("total", "gt", "abc", []),
    ("status", "gt", "paid", ["c", "b"]),
    ("status", "contains", "aid", ["a", "c"]),
    ("status", "notContains", "aid", ["b", "d", "e"]),
    ("status", "startsWith", "paid", ["a", "c"]),
    ("status", "endsWith", "late", ["c"]),
    ("status", "endsWith", "", ["a", "b", "c"]),
    ("tags", "contains", "x", ["a"]),
    ("flag", "eq", "true", ["a"]),
    ("flag", "eq", "false", ["b"]),
    ("flag", "neq", "true", ["b", "c", "d", "e"]),
    ("note", "isNull", "", ["b", "c", "d", "e", "a"]),
    ("note", "isNotNull", "", []),
    ("name", "isNotNull", "", ["c"]),
    ("name", "eq", "Zoë", ["c"]),
    # Numbers beyond signed 64-bit (no stored integer reaches them) still compare as numbers.
    ("total", "lt", "9223372036854775808", ["a", "b", "c"]),  # c: "10" < "9..." as text
    ("total", "gt", "-18446744073709551616", ["a", "b", "c"]),
    ("total", "eq", "9223372036854775808", []),
]


@pytest.mark.parametrize(("field", "operation", "text", "expected"), FILTER_CASES)
async def test_filters(
    store: StateAdapter, field: str, operation: str, text: str, expected: list[str]
) -> None:
    for key, value in FILTER_ROWS.items():
        await store.set("f", key, value)
    await store.set("other", "a", FILTER_ROWS["a"])
    found = await store.items("f", [{"valueKey": field, "operation": operation, "value": text}])
    assert [item.key for item in found] == sorted(expected)


async def test_filters_combine_and_span_groups(store: StateAdapter) -> None:
    for key, value in FILTER_ROWS.items():
        await store.set("f", key, value)
        await store.set("g", key, value)
    found = await store.items(
        filters=[
            {"valueKey": "status", "operation": "startsWith", "value": "paid"},
            {"valueKey": "total", "operation": "eq", "value": "10"},
        ]
    )
    assert [(i.group_id, i.key) for i in found] == [("f", "a"), ("f", "c"), ("g", "a"), ("g", "c")]


@pytest.mark.parametrize(
    "filters",
    [
        {"valueKey": "a", "operation": "eq", "value": "1"},
        [{"valueKey": "a", "operation": "like", "value": "1"}],
        [{"valueKey": "", "operation": "eq", "value": "1"}],
        [{"valueKey": "a", "operation": "eq", "value": 1}],
        [{"valueKey": "a", "operation": "eq"}],
        [{"valueKey": "a", "operation": "eq", "value": "1", "extra": 1}],
        ["not a dict"],
    ],
)
async def test_bad_filters_are_refused(store: StateAdapter, filters: Any) -> None:
    with pytest.raises(InvalidOperationError, match="filter"):
        await store.items(filters=filters)


# -- bad input ---------------------------------------------------------------------------------

BAD_VALUES: list[tuple[Any, str]] = [
    ({1, 2}, "set is not a JSON value"),
    (b"bytes", "bytes is not a JSON value"),
    (object(), "object is not a JSON value"),
    (datetime.date(2026, 1, 1), "date is not a JSON value"),
    (decimal.Decimal("1.5"), "Decimal is not a JSON value"),
    (uuid.UUID(int=1), "UUID is not a JSON value"),
    (math.nan, "not a JSON number"),
    (math.inf, "not a JSON number"),
    ({"deep": [1, {"x": -math.inf}]}, r"\$\.deep\[1\]\.x"),
    (2**63, "outside signed 64-bit"),
    (-(2**63) - 1, "outside signed 64-bit"),
    ({1: "int key"}, "dict key 1 is int"),
    ("\ud800", "surrogates"),
]


@pytest.mark.parametrize(("value", "message"), BAD_VALUES, ids=lambda v: type(v).__name__)
async def test_bad_values_are_refused_and_nothing_is_written(
    store: StateAdapter, value: Any, message: str
) -> None:
    await store.set("g", "kept", "old")
    for key in ("kept", "new"):
        with pytest.raises(InvalidValueError, match=message) as info:
            await store.set("g", key, value)
        assert "'g'" in str(info.value)
        assert f"'{key}'" in str(info.value)
    assert await store.get("g", "kept") == "old"
    assert await store.keys("g") == ["kept"]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypeError)


async def test_deep_nesting_is_refused(store: StateAdapter) -> None:
    value: Any = "leaf"
    for _ in range(300):
        value = [value]
    with pytest.raises(InvalidValueError, match="nested deeper"):
        await store.set("g", "k", value)
    assert await store.get("g", "k") is None


BAD_NAMES: list[Any] = ["", None, 1, b"g", "nul\x00inside", "\udc80"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
async def test_bad_group_and_key_are_refused(store: StateAdapter, name: Any) -> None:
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.set(name, "k", 1),
        lambda: store.set("g", name, 1),
        lambda: store.get(name, "k"),
        lambda: store.get("g", name),
        lambda: store.get_item("g", name),
        lambda: store.delete("g", name),
        lambda: store.get_group(name),
        lambda: store.clear(name),
        lambda: store.keys(name),
        lambda: store.update("g", name, []),
    ]
    if name is not None:  # items(None) means every group
        calls.append(lambda: store.items(name))
    for call in calls:
        with pytest.raises(InvalidKeyError) as info:
            await call()
        assert isinstance(info.value, ValueError)
    assert await store.list_groups() == []


@pytest.mark.parametrize("ttl", [0, -1, "5", True, math.nan, math.inf, [1]], ids=repr)
async def test_bad_ttl_is_refused(store: StateAdapter, ttl: Any) -> None:
    with pytest.raises(InvalidKeyError, match="ttl"):
        await store.set("g", "k", 1, ttl=ttl)
    assert await store.get("g", "k") is None


@pytest.mark.parametrize("ttl", [1e308, 2**63, 1e30, 2**1100, MAX_TTL * 2], ids=repr)
async def test_ttl_beyond_the_one_range_is_refused(store: StateAdapter, ttl: Any) -> None:
    for write in (
        lambda: store.set("g", "k", 1, ttl=ttl),
        lambda: store.set_json("g", "k", "1", ttl=ttl),
    ):
        with pytest.raises(InvalidKeyError, match="ttl"):
            await write()
    with pytest.raises(InvalidKeyError, match="ttl"):
        async with store.transaction() as tx:
            await tx.set("g", "k", 1, ttl=ttl)
    assert await store.get("g", "k") is None
    assert await store.list_groups() == []


async def test_the_longest_ttl_is_accepted(store: StateAdapter, clock: FakeClock) -> None:
    if is_file(store):  # Motia's JSON file cannot hold an expiry at all
        with pytest.raises(UnsupportedError):
            await store.set("g", "k", 1, ttl=MAX_TTL)
        return
    await store.set("g", "k", 1, ttl=MAX_TTL)
    async with store.transaction() as tx:
        await tx.set("g", "t", 2, ttl=MAX_TTL)
    for key in ("k", "t"):
        item = await store.get_item("g", key)
        assert item is not None
        assert item.expires_at == pytest.approx(clock.now + MAX_TTL, abs=0.001)
    assert await store.get_group("g") == [1, 2]
    await store.update("g", "k", [increment(None, 1)])
    assert await store.get("g", "k") == 2
    clock.advance(MAX_TTL - 1)
    assert await store.keys("g") == ["k", "t"]
    clock.advance(2)
    assert await store.keys("g") == []


async def test_json_with_a_repeated_key_is_stored_as_every_read_sees_it(store: StateAdapter) -> None:
    # JSON.parse, orjson and every read keep the last of a repeated key; SQL's json_extract must
    # see the same value, so the canonical text is stored (texts without repeats stay verbatim).
    await store.set_json("g", "k", '{"s":"a","o":{"x":1,"x":2},"s":"b"}')
    async with store.transaction() as tx:
        await tx.set_json("g", "t", '{"s": "a", "s": "c"}')
    assert await store.get("g", "k") == {"s": "b", "o": {"x": 2}}
    assert await store.get("g", "t") == {"s": "c"}
    for value, keys in (("b", ["k"]), ("a", []), ("c", ["t"])):
        found = await store.items("g", [{"valueKey": "s", "operation": "eq", "value": value}])
        assert [item.key for item in found] == keys, value
    found = await store.items("g", [{"valueKey": "s", "operation": "neq", "value": "a"}])
    assert [item.key for item in found] == ["k", "t"]
    assert [row async for row in store.iter_json("g")] == [
        ("g", "k", '{"s":"b","o":{"x":2}}'),
        ("g", "t", '{"s":"c"}'),
    ]


async def test_value_over_max_bytes_is_refused(factory: Factory) -> None:
    async with factory(max_value_bytes=100) as store:
        await store.set("g", "k", "x" * 90)
        with pytest.raises(InvalidValueError, match="max_value_bytes=100"):
            await store.set("g", "k", "x" * 200)
        with pytest.raises(InvalidValueError, match="max_value_bytes=100"):
            await store.update("g", "k", [set_op(None, "y" * 200)])
        assert await store.get("g", "k") == "x" * 90


# -- lifecycle ---------------------------------------------------------------------------------


async def test_close_twice_and_use_after_close(factory: Factory) -> None:
    store = factory()
    await store.set("g", "k", 1)
    await store.close()
    await store.close()
    await store.cleanup()
    with pytest.raises(StateError, match="closed"):
        await store.get("g", "k")
    with pytest.raises(StateError, match="closed"):
        await store.set("g", "k", 1)
    with pytest.raises(StateError, match="closed"):
        async with store.transaction():
            pass


def _persistent(backend: str) -> bool:
    return backend not in ("memory", "sqlite-memory")


async def test_close_drains_calls_in_flight(factory: Factory, backend: str) -> None:
    store = factory()
    await store.set("g", "seed", 0)
    results = await asyncio.gather(
        *(store.set("g", f"k{i}", i) for i in range(100)), store.close(), return_exceptions=True
    )
    # Every call started before close(): each one completed, none failed half-way.
    assert results == [*range(100), None]
    with pytest.raises(StateError, match="closed"):
        await store.set("g", "late", 1)
    if _persistent(backend):
        async with factory() as again:
            assert await again.keys("g") == sorted(["seed", *(f"k{i}" for i in range(100))])


async def test_close_waits_for_an_open_transaction(factory: Factory, backend: str) -> None:
    store = factory()
    await store.set("g", "a", 1)
    inside, release = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        async with store.transaction() as tx:
            await tx.set("g", "b", 2)
            inside.set()
            await release.wait()
            await tx.set("g", "c", 3)

    task = asyncio.create_task(work())
    await inside.wait()
    closing = asyncio.create_task(store.close())
    await asyncio.sleep(0)  # one loop turn: close() has started and waits
    with pytest.raises(StateError, match="closed"):
        await store.get("g", "a")  # new calls are refused while it drains
    release.set()
    await task
    await closing
    if _persistent(backend):
        async with factory() as again:
            assert await again.get_group("g") == [1, 2, 3]


async def test_close_rolls_back_a_transaction_open_past_its_grace(factory: Factory, backend: str) -> None:
    store = factory()
    await store.set("g", "a", 1)
    inside, release = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        async with store.transaction() as tx:
            await tx.set("g", "b", 2)
            inside.set()
            await release.wait()
            await tx.set("g", "c", 3)

    task = asyncio.create_task(work())
    await inside.wait()
    await store.close(grace=0.05)
    release.set()
    with pytest.raises(StateError, match="rolled back and nothing of it was written"):
        await task
    if _persistent(backend):
        async with factory() as again:
            assert await again.get_group("g") == [1]


async def test_transaction_block_ending_after_close_rolled_it_back_raises(factory: Factory) -> None:
    store = factory()
    await store.set("g", "a", 1)
    inside, release = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        async with store.transaction() as tx:
            await tx.set("g", "b", 2)
            inside.set()
            await release.wait()  # the block then ends without another call

    task = asyncio.create_task(work())
    await inside.wait()
    await store.close(grace=0)
    release.set()
    with pytest.raises(StateError, match="rolled back"):
        await task


@pytest.mark.parametrize(
    ("backend", "bound"),
    [
        ("memory", "lock_timeout"),
        ("sqlite-file", "busy_timeout"),
        ("sqlite-memory", "busy_timeout"),
        ("file", "lock_timeout"),
    ],
)
async def test_writers_behind_a_slow_transaction_give_up_after_the_bound(
    factory: Factory, bound: str
) -> None:
    store = factory(**{bound: 0.2})
    go = asyncio.Event()

    async def writer() -> None:
        await go.wait()
        await store.set("g", "b", 2)

    waiting = asyncio.create_task(writer())  # created outside the block: an ordinary caller
    try:
        async with store.transaction() as tx:
            await tx.set("g", "a", 1)
            go.set()
            with pytest.raises(StoreUnavailableError, match="locked"):
                await waiting
        assert await store.get_group("g") == [1]
    finally:
        await store.close()


async def test_state_persists_across_adapters(factory: Factory, backend: str) -> None:
    async with factory() as first:
        await first.set("orders", "1", {"total": 1})
    async with factory() as second:
        expected = [] if backend in ("memory", "sqlite-memory") else [{"total": 1}]
        assert await second.get_group("orders") == expected


# -- update ops --------------------------------------------------------------------------------


async def test_update_applies_ops_in_order(store: StateAdapter) -> None:
    result = await store.update(
        "g",
        "k",
        [
            set_op("status", "new"),
            increment("count", 2),
            increment(["stats", "seen"]),
            merge(None, {"extra": [1]}),
            decrement("count", 0.5),
            remove("status"),
        ],
    )
    assert result.old_value is None
    assert result.new_value == {"count": 1.5, "stats": {"seen": 1}, "extra": [1]}
    assert await store.get("g", "k") == result.new_value
    again = await store.update("g", "k", [{"type": "increment", "path": "count", "by": 1}])
    assert again.old_value == result.new_value
    assert again.new_value["count"] == 2.5


async def test_failed_update_writes_nothing(store: StateAdapter) -> None:
    await store.set("g", "k", {"name": "x", "n": 1})
    with pytest.raises(InvalidOperationError, match="#1"):
        await store.update("g", "k", [increment("n"), increment("name")])
    with pytest.raises(InvalidOperationError, match="#0"):
        await store.update("g", "k", [{"type": "explode"}])
    with pytest.raises(InvalidOperationError):
        await store.update("g", "absent", [set_op("name", "text"), increment(["name", "a"])])
    assert await store.get("g", "k") == {"name": "x", "n": 1}
    assert await store.get("g", "absent") is None


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (object(), "object is not a JSON value"),
        (math.nan, "not a JSON number"),
        (2**64, "outside signed 64-bit"),
        ({1: "x"}, "JSON object keys must be str"),
        (_nested(3000), "nested deeper"),
    ],
    ids=["object", "nan", "big-int", "int-key", "deep"],
)
async def test_update_refuses_op_values_that_are_not_json(store: StateAdapter, value: Any, why: str) -> None:
    await store.set("g", "k", {"n": 1})
    for op in (set_op("x", value), merge(None, {"x": value})):
        with pytest.raises(InvalidOperationError, match=rf"'g'/'k'.*op #1 .*{why}"):
            await store.update("g", "k", [increment("n"), op])
    assert await store.get("g", "k") == {"n": 1}


async def test_update_errors_name_group_key_and_op(store: StateAdapter) -> None:
    await store.set("orders", "o-1", {"status": "paid"})
    with pytest.raises(InvalidOperationError, match=r"update of 'orders'/'o-1': update op #0 .*not a number"):
        await store.update("orders", "o-1", [increment("status")])


# -- TTL ---------------------------------------------------------------------------------------


async def test_expired_items_are_invisible_everywhere(store: StateAdapter, clock: FakeClock) -> None:
    if is_file(store):
        with pytest.raises(UnsupportedError, match="ttl"):
            await store.set("g", "k", 1, ttl=10)
        assert await store.get("g", "k") is None
        return
    await store.set("g", "k", {"status": "x"}, ttl=10)
    await store.set("g", "stays", 2)
    await store.set("only-expiring", "k", 3, ttl=10.5)
    item = await store.get_item("g", "k")
    assert item is not None
    assert item.expires_at == clock.now + 10
    clock.advance(9.9)
    assert await store.get("g", "k") == {"status": "x"}
    clock.advance(0.6)
    assert await store.get("g", "k") is None
    assert await store.get_item("g", "k") is None
    assert await store.get_group("g") == [2]
    assert await store.keys("g") == ["stays"]
    assert [i.key for i in await store.items()] == ["stays"]
    assert await store.items("g", [{"valueKey": "status", "operation": "eq", "value": "x"}]) == []
    assert await store.list_groups() == ["g"]
    assert await store.delete("g", "k") is None
    # an expired key counts as absent: if_absent holds, update starts from {}
    await store.set("g", "k", 5, if_absent=True)
    assert await store.get("g", "k") == 5


async def test_expiry_is_exact_at_its_moment(store: StateAdapter, clock: FakeClock) -> None:
    if is_file(store):
        return  # covered by test_expired_items_are_invisible_everywhere: the file refuses ttl
    await store.set("g", "k", 1, ttl=5)
    first = await store.get_item("g", "k")
    assert first is not None
    clock.advance(4.999)
    assert await store.get("g", "k") == 1
    clock.advance(0.001)  # now == expires_at: expired for every read and write
    assert await store.get_item("g", "k") is None
    assert await store.keys("g") == []
    await store.set("g", "k", 2, if_absent=True)
    item = await store.get_item("g", "k")
    assert item is not None
    assert item.expires_at is None
    if first.created_at is not None:
        assert item.created_at == clock.now  # a new item, not the expired one continued
    result = await store.update("g", "gone", [increment("n")])
    assert result.old_value is None


async def test_update_keeps_expiry_and_set_drops_it(store: StateAdapter, clock: FakeClock) -> None:
    if is_file(store):
        return  # covered by test_expired_items_are_invisible_everywhere: the file refuses ttl
    await store.set("g", "k", {"n": 1}, ttl=10)
    await store.update("g", "k", [increment("n")])
    item = await store.get_item("g", "k")
    assert item is not None
    assert item.expires_at == clock.now + 10
    await store.set("g", "k", {"n": 5})
    clock.advance(100)
    assert await store.get("g", "k") == {"n": 5}


# -- versions and conditional writes -----------------------------------------------------------


async def test_versions_change_on_every_write(store: StateAdapter, clock: FakeClock) -> None:
    await store.set("g", "k", 1)
    first = await store.get_item("g", "k")
    assert first is not None
    if is_file(store):
        assert first.version is None
        with pytest.raises(UnsupportedError, match="version"):
            await store.set("g", "k", 2, if_version=1)
        return
    if is_motia_redis(store):
        # Motia's layout has no room for metadata: the version identifies the content.
        assert first.created_at is None
        await store.set("g", "k", 1)
        assert (await store.get_item("g", "k")) == first
        await store.set("g", "k", 2)
        second = await store.get_item("g", "k")
        assert second is not None
        assert second.version != first.version
        return
    seen = {first.version}
    for write in (lambda: store.set("g", "k", 1), lambda: store.update("g", "k", [set_op(None, 1)])):
        clock.advance(1)
        await write()
        item = await store.get_item("g", "k")
        assert item is not None
        assert item.version not in seen
        assert item.created_at == first.created_at
        assert item.updated_at == clock.now
        seen.add(item.version)


async def test_conditional_writes(store: StateAdapter) -> None:
    await store.set("g", "k", "a", if_absent=True)
    with pytest.raises(ConflictError, match="absent"):
        await store.set("g", "k", "b", if_absent=True)
    with pytest.raises(ConflictError):
        await store.update("g", "k", [set_op(None, "c")], if_absent=True)
    assert await store.get("g", "k") == "a"
    if is_file(store):
        return
    item = await store.get_item("g", "k")
    assert item is not None
    assert item.version is not None
    stale = item.version
    await store.set("g", "k", "b", if_version=stale)
    for write in (
        lambda: store.set("g", "k", "x", if_version=stale),
        lambda: store.update("g", "k", [set_op(None, "x")], if_version=stale),
        lambda: store.delete("g", "k", if_version=stale),
        lambda: store.set("g", "absent", "x", if_version=stale),
    ):
        with pytest.raises(ConflictError, match="version"):
            await write()
    assert await store.get("g", "k") == "b"
    assert await store.get("g", "absent") is None
    current = await store.get_item("g", "k")
    assert current is not None
    assert await store.delete("g", "k", if_version=current.version) == "b"
    # a deleted and re-created key never repeats a version read before the delete
    await store.set("g", "k", "new")
    with pytest.raises(ConflictError):
        await store.set("g", "k", "x", if_version=current.version)


async def test_malformed_conditions(store: StateAdapter) -> None:
    with pytest.raises(InvalidOperationError):
        await store.set("g", "k", 1, if_version="1")  # type: ignore[arg-type]
    with pytest.raises(InvalidOperationError):
        await store.set("g", "k", 1, if_version=1, if_absent=True)
    for flag in ("no", 1, None):
        with pytest.raises(InvalidOperationError, match="if_absent"):
            await store.set("g", "k", 1, if_absent=flag)  # type: ignore[arg-type]
        with pytest.raises(InvalidOperationError, match="if_absent"):
            await store.delete("g", "k", if_absent=flag)  # type: ignore[arg-type]
    assert await store.get_item("g", "k") is None


# -- transactions ------------------------------------------------------------------------------


async def test_transaction_across_cluster_slots_is_refused(store: StateAdapter) -> None:
    await store.set("acct", "a", 100)
    work = {"acct": 1, "new": 2}

    async def write_both() -> None:
        async with store.transaction() as tx:
            for group, value in work.items():
                await tx.set(group, "k", value)

    if not is_cluster(store):
        await write_both()
        assert [await store.get(g, "k") for g in work] == [1, 2]
        return
    with pytest.raises(StateError, match="hash slots"):
        await write_both()
    assert [await store.get(g, "k") for g in work] == [None, None]


async def test_transaction_commits_all(store: StateAdapter) -> None:
    await store.set("acct", "a", 100)
    await store.set("acct", "b", 0)
    async with store.transaction() as tx:
        a = await tx.get("acct", "a")
        await tx.set("acct", "a", a - 30)
        await tx.update("acct", "b", [set_op(None, 30)])
        assert await tx.get("acct", "a") == 70
        assert await tx.get_group("acct") == [70, 30]
        await tx.set("acct", "z", True)
        assert await tx.keys("acct") == ["a", "b", "z"]
    assert await store.get_group("acct") == [70, 30, True]
    with pytest.raises(StateError, match="ended"):
        await tx.get("acct", "a")


async def test_transaction_rolls_back_on_exception(store: StateAdapter) -> None:
    await store.set("g", "a", 1)

    async def failing() -> None:
        async with store.transaction() as tx:
            await tx.set("g", "a", 2)
            await tx.delete("g", "a")
            await tx.set("g", "b", 3)
            await tx.clear("g")
            assert await tx.get_group("g") == []
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing()
    assert await store.get_group("g") == [1]
    assert await store.keys("g") == ["a"]


async def test_transaction_clear_then_set(store: StateAdapter) -> None:
    for key in "abc":
        await store.set("g", key, key)
    async with store.transaction() as tx:
        await tx.clear("g")
        await tx.set("g", "z", "z")
        assert await tx.keys("g") == ["z"]
        assert await tx.get("g", "a") is None
    assert await store.get_group("g") == ["z"]


async def test_conflict_inside_transaction_can_be_handled(store: StateAdapter) -> None:
    await store.set("g", "k", 1)
    async with store.transaction() as tx:
        with pytest.raises(ConflictError):
            await tx.set("g", "k", 2, if_absent=True)
        await tx.set("g", "other", 3)
    assert await store.get("g", "k") == 1
    assert await store.get("g", "other") == 3


async def test_adapter_calls_inside_its_own_transaction_are_refused(store: StateAdapter) -> None:
    async with store.transaction() as tx:
        for call in (store.set("g", "k", 1), store.get("g", "k"), store.clear("g"), store.list_groups()):
            with pytest.raises(StateError, match="inside a transaction"):
                await call
        with pytest.raises(StateError, match="inside a transaction"):
            async with store.transaction():
                pass
        # Tasks started inside the block are inside it too (they would wait for it forever).
        results = await asyncio.wait_for(
            asyncio.gather(store.set("g", "k", 3), store.get("g", "k"), return_exceptions=True), 5
        )
        assert [type(result) for result in results] == [StateError, StateError]
        ended = asyncio.Event()

        async def late_call() -> None:
            await ended.wait()
            await store.set("g", "late", 1)

        late = asyncio.create_task(late_call())
        await tx.set("g", "k", 2)
    ended.set()
    await late  # started inside, called after the block ended: an ordinary call
    assert await store.get("g", "k") == 2
    assert await store.get("g", "late") == 1


async def _meanwhile(read: asyncio.Event, other: asyncio.Future[Any]) -> None:
    """Inside a transaction that has read: let ``other`` (a write) run until it is done or blocked.

    An optimistic backend lets it finish (so it lands before the commit); a locking one holds it
    back until the commit, so waiting for it there ends at the bound.
    """
    read.set()
    await asyncio.wait([other], timeout=0.05)


async def test_transactions_are_serialisable_with_other_writers(store: StateAdapter) -> None:
    await store.set("g", "n", 0)
    read = asyncio.Event()
    other: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def add_ten() -> None:
        async with store.transaction() as tx:
            n = await tx.get("g", "n")
            await _meanwhile(read, other)  # another task writes meanwhile
            await tx.set("g", "n", n + 10)

    task = asyncio.create_task(add_ten())
    await read.wait()
    write = asyncio.ensure_future(store.update("g", "n", [increment(None, 1)]))
    write.add_done_callback(lambda done: other.set_result(None))
    await write
    if isinstance(store, RedisStateAdapter):
        # optimistic: the other write landed first, so the commit is refused and changes nothing
        with pytest.raises(ConflictError, match="concurrent write"):
            await task
        assert await store.get("g", "n") == 1
    else:
        # locking: the other writer waited for the transaction
        await task
        assert await store.get("g", "n") == 11


async def test_run_transaction_retries_conflicts(store: StateAdapter) -> None:
    await store.set("g", "n", 0)
    calls = 0

    read = asyncio.Event()
    other: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def add_ten(tx: StateTransaction) -> int:
        nonlocal calls
        calls += 1
        n = await tx.get("g", "n")
        if calls == 1:
            await _meanwhile(read, other)
        await tx.set("g", "n", n + 10)
        return int(n + 10)

    task = asyncio.create_task(store.run_transaction(add_ten))
    await read.wait()
    write = asyncio.ensure_future(store.update("g", "n", [increment(None, 1)]))
    write.add_done_callback(lambda done: other.set_result(None))
    await write
    optimistic = isinstance(store, RedisStateAdapter)
    # optimistic: the first run conflicts and the second sees 1; locking: the update waits
    assert await task == (11 if optimistic else 10)
    assert await store.get("g", "n") == 11
    assert calls == (2 if optimistic else 1)


async def test_json_text_is_kept_verbatim_and_streamed_in_order(store: StateAdapter) -> None:
    texts = {"b": '{"x":0.000001,"y":[1,2]}', "a": "1e+21", "c": '"caf\\u00e9"'}
    for key, text in texts.items():
        await store.set_json("g", key, text)
    await store.set("h", "z", [1])
    await store.set("f", "y", None)
    assert await store.get("g", "b") == {"x": 1e-6, "y": [1, 2]}
    assert await store.get("g", "c") == "café"
    streamed = [row async for row in store.iter_json(batch_size=2)]
    assert streamed == [("f", "y", "null"), *sorted(("g", k, t) for k, t in texts.items()), ("h", "z", "[1]")]
    assert [row async for row in store.iter_json("g", batch_size=1)] == sorted(
        ("g", k, t) for k, t in texts.items()
    )
    for bad in ("{broken", "NaN", "[1,]"):
        with pytest.raises(InvalidValueError, match="'g'"):
            await store.set_json("g", "bad", bad)
    with pytest.raises(InvalidValueError):
        await store.set_json("g", "bad", b"1")  # type: ignore[arg-type]
    assert await store.get("g", "bad") is None

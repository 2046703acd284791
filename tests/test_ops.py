"""Unit tests of the pure functions in ``ops`` (update ops, filters) and ``codec`` (checks, JSON)."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import math
import re
import struct
import types
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motia_state_sql import InvalidKeyError, InvalidOperationError, InvalidValueError, StateError
from motia_state_sql.codec import (
    DEFAULT_MAX_VALUE_BYTES,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_TTL,
    check_encoded,
    check_name,
    check_ttl,
    decode,
    encode,
)
from motia_state_sql.ops import (
    FILTER_OPERATIONS,
    Filter,
    apply_update,
    check_filters,
    check_ops,
    decrement,
    filter_field,
    increment,
    matches,
    merge,
    parse_number,
    remove,
    set_op,
)


def _shown(value: object) -> str:
    """A test id for ``value``: its repr without memory addresses (the same in every process)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def run(current: Any, ops: object) -> Any:
    """Check then apply ``ops`` to a deep copy of ``current``, as the adapters do."""
    return apply_update(copy.deepcopy(current), check_ops(ops))


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same JSON types all the way down and floats equal bit for bit."""
    if type(a) is float or type(b) is float:
        return type(a) is type(b) and bits(a) == bits(b)
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# =============================================================================================
# Typed helpers build the Motia 1.x wire dicts


def test_set_op_builds_wire_dict() -> None:
    assert set_op("a", 1) == {"type": "set", "path": "a", "value": 1}
    assert set_op(None, {"x": 1}) == {"type": "set", "path": None, "value": {"x": 1}}
    assert set_op("", []) == {"type": "set", "path": "", "value": []}
    assert set_op(["a", "b"], None) == {"type": "set", "path": ["a", "b"], "value": None}


def test_helpers_turn_path_sequences_into_lists() -> None:
    op = set_op(("a", "b"), 1)
    assert op["path"] == ["a", "b"]
    assert type(op["path"]) is list


def test_merge_builds_wire_dict_with_a_dict_copy() -> None:
    source = {"x": 1}
    op = merge("a", source)
    assert op == {"type": "merge", "path": "a", "value": {"x": 1}}
    assert op["value"] is not source
    proxied = merge(None, types.MappingProxyType({"y": 2}))
    assert proxied == {"type": "merge", "path": None, "value": {"y": 2}}
    assert type(proxied["value"]) is dict


def test_increment_and_decrement_build_wire_dicts() -> None:
    assert increment("n") == {"type": "increment", "path": "n", "by": 1}
    assert increment(["a", "n"], 2.5) == {"type": "increment", "path": ["a", "n"], "by": 2.5}
    assert decrement("n") == {"type": "decrement", "path": "n", "by": 1}
    assert decrement(None, 7) == {"type": "decrement", "path": None, "by": 7}


def test_remove_builds_wire_dict() -> None:
    assert remove("a") == {"type": "remove", "path": "a"}
    assert remove(["a", "b"]) == {"type": "remove", "path": ["a", "b"]}


def test_helpers_pass_check_ops() -> None:
    ops = [set_op("a", 1), merge("m", {}), increment("n"), decrement("n", 2), remove("a")]
    parsed = check_ops(ops)
    assert [kind for kind, _, _ in parsed] == ["set", "merge", "increment", "decrement", "remove"]
    assert [path for _, path, _ in parsed] == [("a",), ("m",), ("n",), ("n",), ("a",)]
    assert [op for _, _, op in parsed] == ops


# =============================================================================================
# check_ops: paths


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (None, ()),
        ("", ()),
        ("f", ("f",)),
        ("a.b", ("a.b",)),
        (["f"], ("f",)),
        (["a", "b", "c"], ("a", "b", "c")),
        (("a", "b"), ("a", "b")),
        ([], ()),
    ],
    ids=repr,
)
def test_check_ops_parses_paths(path: object, expected: tuple[str, ...]) -> None:
    [(kind, parsed, _)] = check_ops([{"type": "set", "path": path, "value": 1}])
    assert kind == "set"
    assert parsed == expected


def test_absent_path_means_whole_value() -> None:
    [(_, parsed, _)] = check_ops([{"type": "set", "value": 1}])
    assert parsed == ()


@pytest.mark.parametrize("path", [1, 1.5, True, {"a": 1}, ["a", ""], ["a", 1], [None], b"ab"], ids=repr)
def test_check_ops_refuses_bad_paths(path: object) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*path"):
        check_ops([{"type": "set", "path": path, "value": 1}])


# =============================================================================================
# check_ops: op shapes


@pytest.mark.parametrize(
    "ops", [{"type": "set", "value": 1}, "set", "", None, 1, {"a"}, object()], ids=_shown
)
def test_check_ops_refuses_non_lists(ops: object) -> None:
    with pytest.raises(InvalidOperationError, match="list"):
        check_ops(ops)


def test_check_ops_accepts_empty_list_and_tuple() -> None:
    assert check_ops([]) == []
    assert check_ops((set_op("a", 1),)) == [("set", ("a",), {"type": "set", "path": "a", "value": 1})]


@pytest.mark.parametrize("op", ["set", None, 1, ["type", "set"]], ids=repr)
def test_check_ops_refuses_non_dict_op(op: object) -> None:
    with pytest.raises(InvalidOperationError, match=r"#1 must be a dict"):
        check_ops([set_op("a", 1), op])


@pytest.mark.parametrize("kind", ["add", "Set", "SET", "", None, 1, "delete", "patch"], ids=repr)
def test_check_ops_refuses_unknown_type(kind: object) -> None:
    with pytest.raises(InvalidOperationError, match=r"#2.*type must be one of"):
        check_ops([set_op("a", 1), set_op("b", 2), {"type": kind, "path": "a", "value": 1}])


def test_check_ops_refuses_missing_type() -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*type must be one of"):
        check_ops([{"path": "a", "value": 1}])


@pytest.mark.parametrize("kind", [["set"], {"t": "set"}], ids=repr)
def test_check_ops_refuses_unhashable_type_with_invalid_operation_error(kind: object) -> None:
    # Bug check: an unhashable ``type`` must be refused like any other unknown type.
    with pytest.raises(InvalidOperationError, match=r"#0"):
        check_ops([{"type": kind, "path": "a", "value": 1}])


@pytest.mark.parametrize(
    ("op", "field"),
    [
        ({"type": "set", "path": "a", "value": 1, "by": 1}, "by"),
        ({"type": "set", "path": "a", "value": 1, "ttl": 1}, "ttl"),
        ({"type": "merge", "path": "a", "value": {}, "extra": 1}, "extra"),
        ({"type": "increment", "path": "a", "by": 1, "value": 1}, "value"),
        ({"type": "decrement", "path": "a", "by": 1, "value": 1}, "value"),
        ({"type": "remove", "path": "a", "value": 1}, "value"),
        ({"type": "remove", "path": "a", "by": 1}, "by"),
        ({"type": "set", "path": "a", "value": 1, 5: "x"}, "5"),
    ],
    ids=repr,
)
def test_check_ops_refuses_unknown_fields(op: dict[Any, Any], field: str) -> None:
    with pytest.raises(InvalidOperationError, match=rf"#0.*unknown field.*'{field}'"):
        check_ops([op])


@pytest.mark.parametrize("kind", ["set", "merge"])
def test_set_and_merge_need_a_value(kind: str) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*needs a 'value'"):
        check_ops([{"type": kind, "path": "a"}])


def test_set_value_none_is_a_value() -> None:
    assert run({"a": 1}, [set_op("a", None)]) == {"a": None}
    assert run({"a": 1}, [set_op(None, None)]) is None


@pytest.mark.parametrize("value", [[], [("a", 1)], "x", 1, None, True, 1.5], ids=repr)
def test_merge_value_must_be_a_dict(value: object) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*must be an object"):
        check_ops([{"type": "merge", "path": "a", "value": value}])


@pytest.mark.parametrize("kind", ["increment", "decrement"])
@pytest.mark.parametrize(
    "by", [math.nan, math.inf, -math.inf, True, False, "1", None, [1], {"n": 1}, decimal.Decimal(1)], ids=repr
)
def test_by_must_be_a_finite_number(kind: str, by: object) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*'by' must be a finite number"):
        check_ops([{"type": kind, "path": "n", "by": by}])


@pytest.mark.parametrize("kind", ["increment", "decrement"])
def test_by_is_required(kind: str) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*'by'"):
        check_ops([{"type": kind, "path": "n"}])


@pytest.mark.parametrize("path", [None, "", []], ids=repr)
def test_remove_needs_a_path(path: object) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*needs a path"):
        check_ops([{"type": "remove", "path": path}])


def test_remove_without_path_field_is_refused() -> None:
    with pytest.raises(InvalidOperationError, match=r"#0.*needs a path"):
        check_ops([{"type": "remove"}])


def test_operation_errors_are_state_errors_and_value_errors() -> None:
    with pytest.raises(StateError):
        check_ops("nope")
    with pytest.raises(ValueError, match="list"):
        check_ops("nope")


def test_error_message_names_op_type() -> None:
    with pytest.raises(InvalidOperationError, match=r"#0 \('increment'\)"):
        check_ops([{"type": "increment", "path": "n", "by": "x"}])


# =============================================================================================
# apply_update: every op type and path shape


@pytest.mark.parametrize("path", [None, ""], ids=repr)
def test_set_whole_value(path: str | None) -> None:
    assert run({"old": 1}, [set_op(path, {"new": 2})]) == {"new": 2}
    assert run({"old": 1}, [set_op(path, [1, 2])]) == [1, 2]
    assert run({}, [set_op(path, 0)]) == 0
    assert run(5, [set_op(path, "s")]) == "s"


@pytest.mark.parametrize("path", ["f", ["f"]], ids=repr)
def test_set_field(path: str | list[str]) -> None:
    assert run({"old": 1}, [set_op(path, 2)]) == {"old": 1, "f": 2}
    assert run({"f": {"deep": 1}}, [set_op(path, [])]) == {"f": []}


def test_set_nested_path_creates_missing_objects() -> None:
    assert run({}, [set_op(["a", "b", "c"], 1)]) == {"a": {"b": {"c": 1}}}
    assert run({"a": {"x": 0}}, [set_op(["a", "b"], 1)]) == {"a": {"x": 0, "b": 1}}


def test_dotted_string_is_one_field_name() -> None:
    assert run({}, [set_op("a.b", 1)]) == {"a.b": 1}


@pytest.mark.parametrize("path", [None, ""], ids=repr)
def test_merge_whole_value_is_shallow(path: str | None) -> None:
    assert run({"a": 1, "b": {"x": 1}}, [merge(path, {"b": {"y": 2}, "c": 3})]) == {
        "a": 1,
        "b": {"y": 2},
        "c": 3,
    }
    assert run({}, [merge(path, {})]) == {}


@pytest.mark.parametrize("path", ["f", ["f"]], ids=repr)
def test_merge_field(path: str | list[str]) -> None:
    assert run({"f": {"x": 1}, "g": 0}, [merge(path, {"y": 2})]) == {"f": {"x": 1, "y": 2}, "g": 0}
    assert run({"g": 0}, [merge(path, {"y": 2})]) == {"g": 0, "f": {"y": 2}}


def test_merge_nested_path_creates_missing_objects() -> None:
    assert run({}, [merge(["a", "b"], {"c": 1})]) == {"a": {"b": {"c": 1}}}
    assert run({"a": {"b": {"x": 0}}}, [merge(["a", "b"], {"c": 1})]) == {"a": {"b": {"x": 0, "c": 1}}}


@pytest.mark.parametrize("path", [None, ""], ids=repr)
def test_increment_and_decrement_whole_value(path: str | None) -> None:
    assert run(5, [increment(path)]) == 6
    assert run(5, [increment(path, 10)]) == 15
    assert run(5, [decrement(path)]) == 4
    assert run(5, [decrement(path, 10)]) == -5
    assert run(1.5, [increment(path, 1)]) == 2.5


@pytest.mark.parametrize("path", ["n", ["n"]], ids=repr)
def test_increment_and_decrement_field(path: str | list[str]) -> None:
    assert run({"n": 1}, [increment(path, 2)]) == {"n": 3}
    assert run({"n": 1}, [decrement(path, 2)]) == {"n": -1}
    assert run({"n": 1}, [increment(path, -2)]) == {"n": -1}
    assert run({"n": 1}, [decrement(path, -2)]) == {"n": 3}


@pytest.mark.parametrize("path", ["n", ["n"], ["a", "n"], ["a", "b", "n"]], ids=repr)
def test_increment_of_missing_field_starts_from_zero(path: str | list[str]) -> None:
    names = [path] if isinstance(path, str) else path
    after_inc = run({}, [increment(path, 5)])
    after_dec = run({}, [decrement(path, 5)])
    for name in names[:-1]:
        after_inc, after_dec = after_inc[name], after_dec[name]
    assert after_inc == {names[-1]: 5}
    assert after_dec == {names[-1]: -5}
    assert type(after_inc[names[-1]]) is int


def test_increment_of_missing_field_by_float_is_float() -> None:
    result = run({}, [increment("n", 0.5)])
    assert result == {"n": 0.5}
    assert type(result["n"]) is float


def test_increment_keeps_int_and_float_types() -> None:
    assert type(run({"n": 1}, [increment("n", 2)])["n"]) is int
    assert type(run({"n": 1}, [increment("n", 0.5)])["n"]) is float
    result = run({"n": 1.5}, [increment("n", -0.5)])["n"]
    assert type(result) is float
    assert result == 1.0


@pytest.mark.parametrize("path", ["f", ["f"]], ids=repr)
def test_remove_field(path: str | list[str]) -> None:
    assert run({"f": 1, "g": 2}, [remove(path)]) == {"g": 2}


def test_remove_nested_field() -> None:
    assert run({"a": {"b": 1, "c": 2}}, [remove(["a", "b"])]) == {"a": {"c": 2}}


def test_remove_missing_field_is_noop() -> None:
    assert run({"g": 2}, [remove("f")]) == {"g": 2}


def test_remove_through_missing_path_is_noop_and_creates_nothing() -> None:
    assert run({}, [remove(["a", "b", "c"])]) == {}
    assert run({"a": {}}, [remove(["a", "b", "c"])]) == {"a": {}}


def test_empty_op_list_returns_current() -> None:
    assert run({"a": 1}, []) == {"a": 1}
    assert run(None, []) is None


def test_apply_update_returns_result_for_absent_key_base() -> None:
    assert apply_update({}, check_ops([set_op("a", 1)])) == {"a": 1}


# =============================================================================================
# apply_update: order


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([set_op("x", 1), set_op("x", 2)], {"x": 2}),
        ([increment("x"), set_op("x", 10)], {"x": 10}),
        ([set_op("x", 10), increment("x")], {"x": 11}),
        ([set_op("x", 10), remove("x"), increment("x")], {"x": 1}),
        ([increment("x"), remove("x")], {}),
        ([set_op(None, {"a": 1}), merge(None, {"b": 2})], {"a": 1, "b": 2}),
        ([merge(None, {"b": 2}), set_op(None, {"a": 1})], {"a": 1}),
        ([set_op("x", 5), decrement("x", 2), increment("x", 10)], {"x": 13}),
        ([set_op(["a", "b"], 1), merge("a", {"c": 2}), remove(["a", "b"])], {"a": {"c": 2}}),
        ([set_op(None, 3), increment(None, 4)], 7),
    ],
    ids=repr,
)
def test_ops_apply_in_order(ops: list[Any], expected: Any) -> None:
    assert run({}, ops) == expected


def test_later_op_sees_earlier_op_result() -> None:
    ops = [set_op("a", {"n": 0}), increment(["a", "n"]), increment(["a", "n"])]
    assert run({}, ops) == {"a": {"n": 2}}


# =============================================================================================
# apply_update: ops are not consumed (bug check: applying must not mutate the caller's ops)


@pytest.mark.parametrize(
    "ops",
    [
        [set_op("a", {"n": 0}), increment(["a", "n"])],
        [set_op(None, {"n": 0}), increment("n")],
        [merge(None, {"a": {"n": 0}}), increment(["a", "n"])],
        [set_op("a", {"m": {}}), merge(["a", "m"], {"x": 1})],
        [set_op("a", {"b": {"c": 1}}), remove(["a", "b", "c"])],
    ],
    ids=repr,
)
def test_apply_update_does_not_mutate_the_ops(ops: list[Any]) -> None:
    before = copy.deepcopy(ops)
    parsed = check_ops(ops)
    first = apply_update({}, parsed)
    assert ops == before
    second = apply_update({}, parsed)
    assert first == second


# =============================================================================================
# apply_update: ops that cannot apply

BLOCKERS: list[Any] = ["s", "", [1], [], 3, 0, 1.5, None, True, False]
OP_BUILDERS: list[Callable[[list[str]], Any]] = [
    lambda p: set_op(p, 1),
    lambda p: merge(p, {"x": 1}),
    lambda p: increment(p),
    lambda p: decrement(p),
    lambda p: remove(p),
]
OP_IDS = ["set", "merge", "increment", "decrement", "remove"]


@pytest.mark.parametrize("build", OP_BUILDERS, ids=OP_IDS)
@pytest.mark.parametrize("blocker", BLOCKERS, ids=repr)
def test_path_through_non_object_raises_naming_index(build: Callable[[list[str]], Any], blocker: Any) -> None:
    ops = [set_op("z", 0), build(["a", "b"])]
    with pytest.raises(InvalidOperationError, match=r"#1\b.*not an object"):
        run({"a": blocker}, ops)


@pytest.mark.parametrize("build", OP_BUILDERS, ids=OP_IDS)
@pytest.mark.parametrize("blocker", BLOCKERS, ids=repr)
def test_deep_path_through_non_object_raises(build: Callable[[list[str]], Any], blocker: Any) -> None:
    ops = [set_op("z", 0), increment("y"), build(["a", "b", "c", "d"])]
    with pytest.raises(InvalidOperationError, match=r"#2\b.*a\.b.*not an object"):
        run({"a": {"b": blocker}}, ops)


@pytest.mark.parametrize("build", OP_BUILDERS, ids=OP_IDS)
@pytest.mark.parametrize("blocker", BLOCKERS, ids=repr)
def test_field_path_on_non_object_value_raises(build: Callable[[list[str]], Any], blocker: Any) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0\b.*the value.*not an object"):
        run(blocker, [build(["f"])])


def test_path_through_value_set_by_earlier_op_raises() -> None:
    with pytest.raises(InvalidOperationError, match=r"#1\b"):
        run({}, [set_op(None, 5), set_op("a", 1)])
    with pytest.raises(InvalidOperationError, match=r"#1\b"):
        run({}, [set_op("a", "text"), set_op(["a", "b"], 1)])


@pytest.mark.parametrize("blocker", BLOCKERS, ids=repr)
def test_merge_into_non_object_field_raises(blocker: Any) -> None:
    with pytest.raises(InvalidOperationError, match=r"#1\b.*cannot merge into"):
        run({"f": blocker}, [set_op("z", 0), merge("f", {"x": 1})])


@pytest.mark.parametrize("blocker", BLOCKERS, ids=repr)
def test_merge_into_non_object_whole_value_raises(blocker: Any) -> None:
    with pytest.raises(InvalidOperationError, match=r"#0\b.*cannot merge into"):
        run(blocker, [merge(None, {"x": 1})])


@pytest.mark.parametrize("current", ["1", "", True, False, [1], [], None, {"a": 1}, {}], ids=repr)
@pytest.mark.parametrize("build", [increment, decrement], ids=["increment", "decrement"])
def test_increment_of_non_number_raises(current: Any, build: Callable[..., Any]) -> None:
    with pytest.raises(InvalidOperationError, match=r"#1\b.*not a number"):
        run({"n": current}, [set_op("z", 0), build("n")])
    with pytest.raises(InvalidOperationError, match=r"#0\b.*not a number"):
        run(current, [build(None)])


def test_increment_whole_absent_value_raises() -> None:
    # An absent key reads as {}; the whole value is then an object, not a number.
    with pytest.raises(InvalidOperationError, match=r"#0\b"):
        run({}, [increment(None)])


def test_failing_op_list_raises_even_after_good_ops() -> None:
    ops = check_ops([set_op("a", 1), increment("a"), increment("s")])
    with pytest.raises(InvalidOperationError, match=r"#2\b"):
        apply_update({"s": "text"}, ops)


# =============================================================================================
# apply_update: numbers


def test_float_sums_are_ieee_exact() -> None:
    result = run({}, [increment("n", 0.1), increment("n", 0.2)])["n"]
    assert bits(result) == bits(0.1 + 0.2)
    assert result == 0.30000000000000004
    result = run({"n": 0.3}, [decrement("n", 0.1)])["n"]
    assert bits(result) == bits(0.3 - 0.1)


def test_negative_zero_is_kept() -> None:
    assert bits(run({"n": -0.0}, [increment("n", -0.0)])["n"]) == bits(-0.0)
    assert bits(run({"n": -0.0}, [decrement("n", 0.0)])["n"]) == bits(-0.0)
    assert bits(run({"n": -0.0}, [increment("n", 0.0)])["n"]) == bits(0.0)
    assert bits(run({"n": 0.0}, [decrement("n", 0.0)])["n"]) == bits(0.0)


def test_int64_edges_are_reachable() -> None:
    assert run({"n": INT64_MAX - 1}, [increment("n")]) == {"n": INT64_MAX}
    assert run({"n": INT64_MIN + 1}, [decrement("n")]) == {"n": INT64_MIN}
    assert run({}, [increment("n", INT64_MAX)]) == {"n": INT64_MAX}
    assert run({}, [decrement("n", INT64_MAX), decrement("n")]) == {"n": INT64_MIN}
    assert run({"n": INT64_MAX}, [increment("n", 0)]) == {"n": INT64_MAX}


def test_int64_overflow_raises() -> None:
    with pytest.raises(InvalidOperationError, match=r"#0\b.*signed 64-bit"):
        run({"n": INT64_MAX}, [increment("n")])
    with pytest.raises(InvalidOperationError, match=r"#0\b.*signed 64-bit"):
        run({"n": INT64_MIN}, [decrement("n")])
    with pytest.raises(InvalidOperationError, match=r"#0\b.*signed 64-bit"):
        run({"n": INT64_MIN}, [increment("n", -1)])
    with pytest.raises(InvalidOperationError, match=r"#1\b.*signed 64-bit"):
        run({}, [increment("n", INT64_MAX), increment("n")])
    with pytest.raises(InvalidOperationError, match=r"#0\b.*signed 64-bit"):
        run(INT64_MAX, [increment(None)])


def test_float_overflow_raises() -> None:
    with pytest.raises(InvalidOperationError, match=r"#0\b.*finite"):
        run({"n": 1.7976931348623157e308}, [increment("n", 1.7976931348623157e308)])
    with pytest.raises(InvalidOperationError, match=r"#0\b.*finite"):
        run({"n": -1.7976931348623157e308}, [decrement("n", 1.7976931348623157e308)])


def test_int_plus_float_near_int64_edge_is_a_float() -> None:
    result = run({"n": INT64_MAX}, [increment("n", 1.0)])["n"]
    assert type(result) is float
    assert result == float(2**63)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    by=st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    down=st.booleans(),
)
def test_integer_arithmetic_is_exact_or_refused(start: int, by: int, down: bool) -> None:
    expected = start - by if down else start + by
    op = decrement("n", by) if down else increment("n", by)
    if INT64_MIN <= expected <= INT64_MAX:
        result = run({"n": start}, [op])["n"]
        assert type(result) is int
        assert result == expected
    else:
        with pytest.raises(InvalidOperationError, match="signed 64-bit"):
            run({"n": start}, [op])


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(allow_nan=False, allow_infinity=False),
    by=st.floats(allow_nan=False, allow_infinity=False),
)
def test_float_arithmetic_matches_ieee(start: float, by: float) -> None:
    expected = start + by
    if math.isfinite(expected):
        assert bits(run({"n": start}, [increment("n", by)])["n"]) == bits(expected)
    else:
        with pytest.raises(InvalidOperationError, match="finite"):
            run({"n": start}, [increment("n", by)])


# =============================================================================================
# check_filters


def flt(key: str, operation: str, value: str | None = None) -> Filter:
    raw: dict[str, str] = {"valueKey": key, "operation": operation}
    if value is not None:
        raw["value"] = value
    [checked] = check_filters([raw])
    return checked


def test_check_filters_none_is_empty() -> None:
    assert check_filters(None) == []
    assert check_filters([]) == []


def test_check_filters_accepts_every_operation() -> None:
    for operation in sorted(FILTER_OPERATIONS):
        assert flt("f", operation, "x")["operation"] == operation
    expected = {
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "contains",
        "notContains",
        "startsWith",
        "endsWith",
        "isNull",
        "isNotNull",
    }
    assert expected == FILTER_OPERATIONS


def test_check_filters_returns_clean_dicts() -> None:
    raw = ({"valueKey": "f", "operation": "eq", "value": "1"}, {"valueKey": "g", "operation": "isNull"})
    assert check_filters(raw) == [
        {"valueKey": "f", "operation": "eq", "value": "1"},
        {"valueKey": "g", "operation": "isNull"},
    ]


@pytest.mark.parametrize("operation", ["isNull", "isNotNull"])
@pytest.mark.parametrize("value", ["x", 5, None], ids=repr)
def test_null_checks_ignore_value(operation: str, value: object) -> None:
    assert check_filters([{"valueKey": "f", "operation": operation, "value": value}]) == [
        {"valueKey": "f", "operation": operation}
    ]


@pytest.mark.parametrize(
    "filters", [{"valueKey": "f", "operation": "isNull"}, "f", "", 1, {"a"}, object()], ids=_shown
)
def test_check_filters_refuses_non_lists(filters: object) -> None:
    with pytest.raises(InvalidOperationError, match="list"):
        check_filters(filters)


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ("f", r"#1 must be a dict"),
        (None, r"#1 must be a dict"),
        ({"operation": "eq", "value": "x"}, r"#1: valueKey"),
        ({"valueKey": "", "operation": "eq", "value": "x"}, r"#1: valueKey"),
        ({"valueKey": 1, "operation": "eq", "value": "x"}, r"#1: valueKey"),
        ({"valueKey": ["f"], "operation": "eq", "value": "x"}, r"#1: valueKey"),
        ({"valueKey": "f", "value": "x"}, r"#1: operation"),
        ({"valueKey": "f", "operation": "EQ", "value": "x"}, r"#1: operation"),
        ({"valueKey": "f", "operation": "like", "value": "x"}, r"#1: operation"),
        ({"valueKey": "f", "operation": None, "value": "x"}, r"#1: operation"),
        ({"valueKey": "f", "operation": "eq", "value": "x", "extra": 1}, r"#1: unknown field.*'extra'"),
        ({"valueKey": "f", "operation": "eq"}, r"#1 \(eq\): value must be a str"),
        ({"valueKey": "f", "operation": "gt", "value": 1}, r"#1 \(gt\): value must be a str"),
        ({"valueKey": "f", "operation": "contains", "value": None}, r"#1 \(contains\): value must be a str"),
        ({"valueKey": "f", "operation": "eq", "value": True}, r"#1 \(eq\): value must be a str"),
    ],
    ids=repr,
)
def test_check_filters_refuses_bad_filters(raw: object, pattern: str) -> None:
    with pytest.raises(InvalidOperationError, match=pattern):
        check_filters([{"valueKey": "ok", "operation": "isNull"}, raw])


@pytest.mark.parametrize("operation", [["eq"], {"op": "eq"}], ids=repr)
def test_check_filters_refuses_unhashable_operation_with_invalid_operation_error(operation: object) -> None:
    # Bug check: an unhashable operation must be refused like any other unknown operation.
    with pytest.raises(InvalidOperationError, match=r"#0: operation"):
        check_filters([{"valueKey": "f", "operation": operation, "value": "x"}])


# =============================================================================================
# filter_field and parse_number


def test_filter_field_reads_top_level_fields_only() -> None:
    assert filter_field({"a": 1}, "a") == 1
    assert filter_field({"a": None}, "a") is None
    assert filter_field({"a": {"b": 1}}, "a") == {"b": 1}
    missing = filter_field({}, "a")
    assert missing is not None
    assert filter_field({"a": {"b": 1}}, "a.b") is missing
    for value in [None, 1, "a", [1], ["a"], True]:
        assert filter_field(value, "a") is missing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("-1", -1),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (" 7 ", 7),
        ("-0", 0),
        ("9223372036854775807", INT64_MAX),
    ],
    ids=repr,
)
def test_parse_number_parses_json_numbers(text: str, expected: float) -> None:
    parsed = parse_number(text)
    assert parsed == expected
    assert type(parsed) is type(expected)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "true", "false", "null", '"1"', "[1]", "{}", "0x10", "+1", ".5", "1_000", "NaN", "Infinity"],
    ids=repr,
)
def test_parse_number_refuses_non_numbers(text: str) -> None:
    assert parse_number(text) is None


# =============================================================================================
# matches: strings


DOC: dict[str, Any] = {
    "s": "hello",
    "empty": "",
    "digits": "10",
    "i": 10,
    "f": 2.5,
    "zero": -0.0,
    "big": INT64_MAX,
    "t": True,
    "fa": False,
    "nul": None,
    "lst": [1, 2.5, "x", True, None, [1], {"a": 1}],
    "empty_list": [],
    "obj": {"a": 1},
    "sum": 0.1 + 0.2,
}


NUMBERS = st.integers(min_value=INT64_MIN, max_value=INT64_MAX) | st.floats(
    allow_nan=False, allow_infinity=False
)


def holds(key: str, operation: str, value: str | None = None, doc: Any = None) -> bool:
    return matches(DOC if doc is None else doc, [flt(key, operation, value)])


@pytest.mark.parametrize(
    ("key", "operation", "value", "expected"),
    [
        ("s", "eq", "hello", True),
        ("s", "eq", "Hello", False),
        ("s", "eq", "hell", False),
        ("s", "neq", "hello", False),
        ("s", "neq", "x", True),
        ("s", "gt", "hell", True),
        ("s", "gt", "hello", False),
        ("s", "gte", "hello", True),
        ("s", "lt", "help", True),
        ("s", "lt", "hello", False),
        ("s", "lte", "hello", True),
        ("s", "lte", "a", False),
        ("s", "contains", "ell", True),
        ("s", "contains", "", True),
        ("s", "contains", "xyz", False),
        ("s", "notContains", "ell", False),
        ("s", "notContains", "xyz", True),
        ("s", "startsWith", "he", True),
        ("s", "startsWith", "lo", False),
        ("s", "endsWith", "lo", True),
        ("s", "endsWith", "he", False),
        ("s", "isNull", None, False),
        ("s", "isNotNull", None, True),
        ("empty", "eq", "", True),
        ("empty", "isNull", None, False),
        ("empty", "isNotNull", None, True),
        ("empty", "startsWith", "", True),
        # string fields compare as text, even when both sides look like numbers
        ("digits", "gt", "9", False),
        ("digits", "lt", "9", True),
        ("digits", "eq", "10.0", False),
        ("digits", "eq", "10", True),
    ],
    ids=repr,
)
def test_string_fields(key: str, operation: str, value: str | None, expected: bool) -> None:
    assert holds(key, operation, value) is expected


def test_strings_compare_by_code_point_not_utf16() -> None:
    doc = {"s": "\U0001f600"}  # U+1F600 is above U+FF5E by code point, below it in UTF-16 units
    assert holds("s", "gt", "\uff5e", doc)
    assert not holds("s", "lt", "\uff5e", doc)
    assert holds("s", "gt", "\u00e9", {"s": "\u00e9z"})
    assert holds("s", "gt", "z", {"s": "\u00e9"})
    assert holds("s", "lt", "a", {"s": "Z"})


@settings(max_examples=200, deadline=None)
@given(a=st.text(), b=st.text())
def test_string_order_is_code_point_order(a: str, b: str) -> None:
    ka, kb = a.encode("utf-32-be", "surrogatepass"), b.encode("utf-32-be", "surrogatepass")
    doc = {"s": a}
    assert holds("s", "gt", b, doc) is (ka > kb)
    assert holds("s", "gte", b, doc) is (ka >= kb)
    assert holds("s", "lt", b, doc) is (ka < kb)
    assert holds("s", "lte", b, doc) is (ka <= kb)
    assert holds("s", "eq", b, doc) is (ka == kb)
    assert holds("s", "neq", b, doc) is (ka != kb)


# =============================================================================================
# matches: numbers


@pytest.mark.parametrize(
    ("key", "operation", "value", "expected"),
    [
        ("i", "eq", "10", True),
        ("i", "eq", "10.0", True),
        ("i", "eq", "1e1", True),
        ("i", "eq", " 10 ", True),
        ("i", "eq", "11", False),
        ("i", "eq", "ten", False),
        ("i", "eq", '"10"', False),
        ("i", "neq", "10", False),
        ("i", "neq", "11", True),
        ("i", "neq", "ten", True),
        ("i", "gt", "9", True),
        ("i", "gt", "9.99", True),
        ("i", "gt", "10", False),
        ("i", "gt", "100", False),
        ("i", "gte", "10", True),
        ("i", "gte", "10.5", False),
        ("i", "lt", "10.5", True),
        ("i", "lt", "10", False),
        ("i", "lte", "10", True),
        ("i", "lte", "-3", False),
        ("i", "gt", "abc", False),
        ("i", "gte", "abc", False),
        ("i", "lt", "abc", False),
        ("i", "lte", "abc", False),
        ("i", "gt", "", False),
        ("i", "contains", "1", False),
        ("i", "notContains", "1", True),
        ("i", "startsWith", "1", False),
        ("i", "endsWith", "0", False),
        ("i", "isNull", None, False),
        ("i", "isNotNull", None, True),
        ("f", "eq", "2.5", True),
        ("f", "eq", "2.50", True),
        ("f", "eq", "25e-1", True),
        ("f", "gt", "2", True),
        ("f", "lt", "3", True),
        ("f", "gte", "2.5", True),
        ("f", "lte", "2.4", False),
        ("zero", "eq", "0", True),
        ("zero", "eq", "-0", True),
        ("zero", "eq", "0.0", True),
        ("zero", "gt", "0", False),
        ("zero", "lt", "0", False),
        ("big", "eq", "9223372036854775807", True),
        ("big", "eq", "9223372036854775806", False),
        ("big", "gt", "9223372036854775806", True),
        ("big", "lt", "18446744073709551615", True),
        ("sum", "eq", "0.30000000000000004", True),
        ("sum", "eq", "0.3", False),
        ("sum", "gt", "0.3", True),
    ],
    ids=repr,
)
def test_number_fields(key: str, operation: str, value: str | None, expected: bool) -> None:
    assert holds(key, operation, value) is expected


@settings(max_examples=200, deadline=None)
@given(a=NUMBERS, b=NUMBERS)
def test_number_order_is_numeric(a: float, b: float) -> None:
    doc = {"n": a}
    text = repr(b)
    assert holds("n", "gt", text, doc) is (a > b)
    assert holds("n", "gte", text, doc) is (a >= b)
    assert holds("n", "lt", text, doc) is (a < b)
    assert holds("n", "lte", text, doc) is (a <= b)
    assert holds("n", "eq", text, doc) is (a == b)
    assert holds("n", "neq", text, doc) is (a != b)


# =============================================================================================
# matches: booleans, null, lists, objects, missing


@pytest.mark.parametrize(
    ("key", "operation", "value", "expected"),
    [
        ("t", "eq", "true", True),
        ("t", "eq", "false", False),
        ("t", "eq", "True", False),
        ("t", "eq", "1", False),
        ("t", "neq", "true", False),
        ("t", "neq", "false", True),
        ("fa", "eq", "false", True),
        ("fa", "eq", "true", False),
        ("fa", "eq", "0", False),
        ("fa", "eq", "", False),
        ("fa", "neq", "false", False),
        ("fa", "neq", "true", True),
        ("t", "gt", "false", False),
        ("t", "gte", "true", False),
        ("t", "lt", "true", False),
        ("t", "lte", "true", False),
        ("t", "contains", "t", False),
        ("t", "notContains", "t", True),
        ("t", "startsWith", "t", False),
        ("t", "endsWith", "e", False),
        ("t", "isNull", None, False),
        ("fa", "isNull", None, False),
        ("fa", "isNotNull", None, True),
    ],
    ids=repr,
)
def test_bool_fields(key: str, operation: str, value: str | None, expected: bool) -> None:
    assert holds(key, operation, value) is expected


@pytest.mark.parametrize("key", ["nul", "missing"])
@pytest.mark.parametrize(
    ("operation", "value", "expected"),
    [
        ("eq", "null", False),
        ("eq", "", False),
        ("eq", "x", False),
        ("neq", "null", True),
        ("neq", "x", True),
        ("gt", "", False),
        ("gte", "0", False),
        ("lt", "0", False),
        ("lte", "z", False),
        ("contains", "", False),
        ("notContains", "", True),
        ("notContains", "x", True),
        ("startsWith", "", False),
        ("endsWith", "", False),
        ("isNull", None, True),
        ("isNotNull", None, False),
    ],
    ids=repr,
)
def test_null_and_missing_fields(key: str, operation: str, value: str | None, expected: bool) -> None:
    assert holds(key, operation, value) is expected


@pytest.mark.parametrize(
    ("key", "operation", "value", "expected"),
    [
        ("lst", "contains", "1", True),
        ("lst", "contains", "1.0", True),
        ("lst", "contains", "2.5", True),
        ("lst", "contains", "x", True),
        ("lst", "contains", "true", True),
        ("lst", "contains", "2", False),
        ("lst", "contains", "y", False),
        ("lst", "contains", "false", False),
        ("lst", "contains", "null", False),
        ("lst", "contains", "[1]", False),
        ("lst", "contains", '{"a":1}', False),
        ("lst", "notContains", "1", False),
        ("lst", "notContains", "x", False),
        ("lst", "notContains", "y", True),
        ("lst", "notContains", "null", True),
        ("empty_list", "contains", "", False),
        ("empty_list", "notContains", "", True),
        ("lst", "eq", "x", False),
        ("lst", "eq", '[1,2.5,"x",true,null,[1],{"a":1}]', False),
        ("lst", "neq", "x", True),
        ("lst", "gt", "", False),
        ("lst", "lte", "z", False),
        ("lst", "startsWith", "", False),
        ("lst", "endsWith", "", False),
        ("lst", "isNull", None, False),
        ("lst", "isNotNull", None, True),
        ("empty_list", "isNotNull", None, True),
        ("obj", "eq", '{"a":1}', False),
        ("obj", "neq", '{"a":1}', True),
        ("obj", "contains", "a", False),
        ("obj", "notContains", "a", True),
        ("obj", "gt", "", False),
        ("obj", "startsWith", "", False),
        ("obj", "isNull", None, False),
        ("obj", "isNotNull", None, True),
    ],
    ids=repr,
)
def test_list_and_object_fields(key: str, operation: str, value: str | None, expected: bool) -> None:
    assert holds(key, operation, value) is expected


def test_list_of_strings_contains_exact_element_only() -> None:
    doc = {"tags": ["alpha", "beta"]}
    assert holds("tags", "contains", "alpha", doc)
    assert not holds("tags", "contains", "alp", doc)
    assert holds("tags", "notContains", "alp", doc)


@pytest.mark.parametrize("value", [None, 1, "text", [1, 2], True], ids=repr)
def test_non_object_values_have_only_missing_fields(value: Any) -> None:
    assert matches(value, [flt("a", "isNull")])
    assert matches(value, [flt("a", "neq", "x")])
    assert not matches(value, [flt("a", "isNotNull")])
    assert not matches(value, [flt("a", "eq", "1")])


def test_nested_keys_are_not_followed() -> None:
    doc = {"a": {"b": 1}, "a.b": 2}
    assert holds("a.b", "eq", "2", doc)
    assert not holds("a.b", "eq", "1", doc)


def test_all_filters_must_hold() -> None:
    doc = {"status": "open", "n": 3}
    assert matches(doc, [])
    assert matches(doc, check_filters([]))
    assert matches(doc, [flt("status", "eq", "open"), flt("n", "gt", "2")])
    assert not matches(doc, [flt("status", "eq", "open"), flt("n", "gt", "3")])
    assert not matches(doc, [flt("status", "eq", "closed"), flt("n", "gt", "2")])


# =============================================================================================
# codec.check_name


@pytest.mark.parametrize(
    "name",
    ["a", "a:b:c", "slash/back\\", "quote'\"", "percent%_", "star*?[x]", " ", "é中😀", "\u2028", "\uffff"],
    ids=repr,
)
def test_check_name_accepts_any_text(name: str) -> None:
    assert check_name("key", name) == name
    assert check_name("group_id", name) is name


@pytest.mark.parametrize("name", [None, 1, b"key", ["k"], 1.5, True], ids=repr)
def test_check_name_refuses_non_str(name: object) -> None:
    with pytest.raises(InvalidKeyError, match=r"key must be a str"):
        check_name("key", name)


def test_check_name_refuses_str_subclass() -> None:
    class Name(str):
        pass

    with pytest.raises(InvalidKeyError, match="must be a str"):
        check_name("key", Name("k"))


def test_check_name_refuses_empty() -> None:
    with pytest.raises(InvalidKeyError, match=r"group_id must not be empty"):
        check_name("group_id", "")


@pytest.mark.parametrize("name", ["\x00", "a\x00", "\x00b", "a\x00b"], ids=repr)
def test_check_name_refuses_nul(name: str) -> None:
    with pytest.raises(InvalidKeyError, match="NUL"):
        check_name("key", name)


@pytest.mark.parametrize("name", ["\ud800", "a\udfffb", "\udc00\ud800"], ids=repr)
def test_check_name_refuses_lone_surrogates(name: str) -> None:
    with pytest.raises(InvalidKeyError, match="surrogate"):
        check_name("key", name)


def test_check_name_names_the_group() -> None:
    with pytest.raises(InvalidKeyError, match=r"key in group 'orders' must not be empty"):
        check_name("key", "", "orders")
    with pytest.raises(InvalidKeyError, match=r"key 'a\\x00' in group 'orders'"):
        check_name("key", "a\x00", "orders")


def test_key_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        check_name("key", "")
    assert issubclass(InvalidKeyError, StateError)


# =============================================================================================
# codec.check_ttl


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(1, 1.0), (60, 60.0), (0.5, 0.5), (1e-300, 1e-300), (5e-324, 5e-324), (MAX_TTL, MAX_TTL)],
)
def test_check_ttl_accepts_positive_numbers(ttl: float, expected: float) -> None:
    seconds = check_ttl(ttl, "g", "k")
    assert seconds == expected
    assert type(seconds) is float


def test_check_ttl_none_means_no_expiry() -> None:
    assert check_ttl(None, "g", "k") is None


@pytest.mark.parametrize(
    "ttl",
    [
        *(0, 0.0, -0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "10", b"1", [1]),
        *(decimal.Decimal(1), MAX_TTL * 1.000001, 2**63, 1e30, 1e300, 1e308, 10**300),
    ],
    ids=repr,
)
def test_check_ttl_refuses_bad_ttls(ttl: object) -> None:
    with pytest.raises(InvalidKeyError, match=r"ttl for 'grp'/'key'"):
        check_ttl(ttl, "grp", "key")


def test_check_ttl_refuses_int_too_large_for_float_with_invalid_key_error() -> None:
    # Bug check: float(10**400) overflows; a bad ttl must still be an InvalidKeyError.
    with pytest.raises(InvalidKeyError, match="ttl"):
        check_ttl(10**400, "g", "k")


# =============================================================================================
# codec.encode / decode: accepted values

GOOD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    INT64_MAX,
    INT64_MIN,
    0.0,
    -0.0,
    1.5,
    5e-324,
    1.7976931348623157e308,
    "",
    "text",
    "é中😀\x00\u2028",
    [],
    {},
    [1, "a", None],
    {"": 1, "a": {"b": [True]}},
]


@pytest.mark.parametrize("value", GOOD_VALUES, ids=repr)
def test_encode_decode_round_trip(value: Any) -> None:
    text = encode(value, "g", "k")
    assert type(text) is str
    assert same(decode(text), value)
    assert same(decode(text.encode()), value)
    assert check_encoded(text, "g", "k") == text


def test_encode_is_compact_json() -> None:
    assert encode({"a": [1, 2], "b": None}, "g", "k") == '{"a":[1,2],"b":null}'
    assert encode("é", "g", "k") == '"é"'


def test_tuples_encode_as_lists() -> None:
    assert encode((1, (2, 3), []), "g", "k") == "[1,[2,3],[]]"
    assert decode(encode({"t": ()}, "g", "k")) == {"t": []}


# =============================================================================================
# codec.encode: refused values


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Name(enum.StrEnum):
    A = "a"


@dataclasses.dataclass
class Point:
    x: int


class Pair(NamedTuple):
    a: int
    b: int


class MyStr(str):
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyDict(dict[str, Any]):
    pass


class MyList(list[Any]):
    pass


BAD_LEAVES: list[Any] = [
    {1, 2},
    frozenset(),
    b"bytes",
    bytearray(b"x"),
    datetime.datetime(2024, 1, 1),
    datetime.date(2024, 1, 1),
    decimal.Decimal("1.5"),
    uuid.UUID(int=0),
    Color.RED,
    Level.LOW,
    Name.A,
    Point(1),
    MyStr("s"),
    MyInt(1),
    MyFloat(1.0),
    MyDict(),
    MyList(),
    collections.OrderedDict(),
    collections.defaultdict(list),
    object(),
    1j,
    range(2),
    Pair(1, 2),
]


@pytest.mark.parametrize("leaf", BAD_LEAVES, ids=lambda v: type(v).__name__)
def test_encode_refuses_non_json_types_naming_the_path(leaf: Any) -> None:
    pattern = r"value of 'grp'/'key' at \$\.a\[2\]\.b: .* is not a JSON value"
    with pytest.raises(InvalidValueError, match=pattern):
        encode({"a": [0, 1, {"b": leaf}]}, "grp", "key")


@pytest.mark.parametrize("leaf", BAD_LEAVES, ids=lambda v: type(v).__name__)
def test_encode_refuses_non_json_types_at_top(leaf: Any) -> None:
    with pytest.raises(InvalidValueError, match=r"value of 'g'/'k' at \$:"):
        encode(leaf, "g", "k")


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf], ids=repr)
def test_encode_refuses_non_finite_floats(number: float) -> None:
    with pytest.raises(InvalidValueError, match=r"'g'/'k' at \$\.x\[0\]: .* not a JSON number"):
        encode({"x": [number]}, "g", "k")


@pytest.mark.parametrize("number", [INT64_MAX + 1, INT64_MIN - 1, 2**64, -(2**100)], ids=repr)
def test_encode_refuses_ints_outside_int64(number: int) -> None:
    with pytest.raises(InvalidValueError, match=r"'g'/'k' at \$\[1\]: integer .* signed 64-bit"):
        encode([0, number], "g", "k")


@pytest.mark.parametrize("name", [1, 1.5, True, None, ("a",), b"a"], ids=repr)
def test_encode_refuses_non_str_dict_keys(name: Any) -> None:
    pattern = r"'g'/'k' at \$\.outer: dict key .* JSON object keys must be str"
    with pytest.raises(InvalidValueError, match=pattern):
        encode({"outer": {name: 1}}, "g", "k")


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb"], ids=repr)
def test_encode_refuses_lone_surrogates(text: str) -> None:
    with pytest.raises(InvalidValueError, match=r"'g'/'k'"):
        encode({"s": text}, "g", "k")
    with pytest.raises(InvalidValueError, match=r"'g'/'k'"):
        encode({text: 1}, "g", "k")


def test_value_errors_are_value_and_type_errors() -> None:
    with pytest.raises(TypeError, match="not a JSON value"):
        encode({1, 2}, "g", "k")
    with pytest.raises(ValueError, match="not a JSON value"):
        encode({1, 2}, "g", "k")
    assert issubclass(InvalidValueError, StateError)


def nested(levels: int, make: Callable[[Any], Any]) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = make(value)
    return value


@pytest.mark.parametrize("make", [lambda v: [v], lambda v: {"a": v}], ids=["list", "dict"])
def test_depth_limit(make: Callable[[Any], Any]) -> None:
    deepest_ok = nested(MAX_DEPTH, make)
    text = encode(deepest_ok, "g", "k")
    assert decode(text) == deepest_ok
    assert check_encoded(text, "g", "k") == text
    with pytest.raises(InvalidValueError, match=rf"'g'/'k' at \$.*nested deeper than {MAX_DEPTH} levels"):
        encode(nested(MAX_DEPTH + 1, make), "g", "k")
    with pytest.raises(InvalidValueError, match=rf"nested deeper than {MAX_DEPTH} levels"):
        encode(nested(MAX_DEPTH + 50, make), "g", "k")


def test_scalar_at_the_deepest_level_is_fine() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH):
        value = [value]
    assert decode(encode(value, "g", "k")) == value


def test_max_bytes_limit() -> None:
    value = "x" * 8  # encodes as 10 bytes with the quotes
    assert encode(value, "g", "k", max_bytes=10) == '"xxxxxxxx"'
    with pytest.raises(InvalidValueError, match=r"'g'/'k' is 11 bytes encoded.*max_value_bytes=10"):
        encode(value + "x", "g", "k", max_bytes=10)


def test_max_bytes_counts_utf8_bytes() -> None:
    assert encode("é", "g", "k", max_bytes=4) == '"é"'
    with pytest.raises(InvalidValueError, match="max_value_bytes=3"):
        encode("é", "g", "k", max_bytes=3)


def test_default_max_bytes() -> None:
    assert DEFAULT_MAX_VALUE_BYTES == 16 * 1024 * 1024
    big = "x" * (DEFAULT_MAX_VALUE_BYTES - 2)
    assert len(encode(big, "g", "k")) == DEFAULT_MAX_VALUE_BYTES
    with pytest.raises(InvalidValueError, match=f"max_value_bytes={DEFAULT_MAX_VALUE_BYTES}"):
        encode(big + "x", "g", "k")


# =============================================================================================
# codec.check_encoded


def test_check_encoded_returns_text_unchanged() -> None:
    text = '{ "a" : [1, 2.5, "x"] }'
    assert check_encoded(text, "g", "k") is text


@pytest.mark.parametrize("text", ["", "{", "nope", "NaN", "Infinity", "[1,]", "{'a': 1}"], ids=repr)
def test_check_encoded_refuses_invalid_json(text: str) -> None:
    with pytest.raises(InvalidValueError, match=r"'g'/'k' is not valid JSON"):
        check_encoded(text, "g", "k")


@pytest.mark.parametrize("text", ["9223372036854775808", "[18446744073709551615]"], ids=repr)
def test_check_encoded_refuses_values_encode_refuses(text: str) -> None:
    with pytest.raises(InvalidValueError, match="signed 64-bit"):
        check_encoded(text, "g", "k")


def test_check_encoded_refuses_too_deep() -> None:
    text = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(InvalidValueError, match="nested deeper"):
        check_encoded(text, "g", "k")


def test_check_encoded_max_bytes_counts_utf8() -> None:
    assert check_encoded('"é"', "g", "k", max_bytes=4) == '"é"'
    with pytest.raises(InvalidValueError, match=r"'g'/'k' is over the limit max_value_bytes=3"):
        check_encoded('"é"', "g", "k", max_bytes=3)


# =============================================================================================
# Property: arbitrary JSON values round-trip exactly

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]))
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(alphabet=st.characters(exclude_categories=["Cs"])), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES)
def test_encode_decode_round_trips_any_json_value(value: Any) -> None:
    text = encode(value, "g", "k")
    back = decode(text)
    assert back == value
    assert same(back, value)
    assert check_encoded(text, "g", "k") == text
    assert encode(back, "g", "k") == text


@settings(max_examples=200, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_bit_for_bit(value: float) -> None:
    back = decode(encode({"f": value}, "g", "k"))["f"]
    assert type(back) is float
    assert bits(back) == bits(value)


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES, ops_value=JSON_VALUES)
def test_set_op_stores_any_json_value(value: Any, ops_value: Any) -> None:
    result = run({"keep": value}, [set_op(["a", "b"], ops_value)])
    assert same(result, {"keep": value, "a": {"b": ops_value}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("18446744073709551616", "outside signed 64-bit"),
        ("[-9223372036854775809]", "outside signed 64-bit"),
        ("NaN", "not a JSON value"),
        ("[1e400]", "infinity"),
        ('"\\ud800"', "surrogate"),
    ],
)
def test_check_encoded_refuses_what_encode_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message):
        check_encoded(text, "g", "k")


def test_decrement_by_zero_keeps_negative_zero() -> None:
    # -0.0 - 0 is -0.0 (JavaScript agrees); adding the negated step gave 0.0.
    result = apply_update({"s": -0.0}, check_ops([decrement("s", 0)]))
    assert math.copysign(1, result["s"]) == -1
    assert math.copysign(1, apply_update(-0.0, check_ops([decrement(None, 0)]))) == -1

"""Update ops and filters as pure functions: every backend calls these, so none can disagree.

Update ops use Motia 1.x's wire format (dicts with a ``type``); filters use Motia's
``StateFilter`` (``{"valueKey", "operation", "value"}``). See ``docs/contract-decisions.md`` for
how non-string fields compare.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, TypedDict, cast

import orjson

from .codec import INT64_MAX, INT64_MIN, check_json
from .errors import InvalidOperationError, InvalidValueError

__all__ = [
    "FILTER_OPERATIONS",
    "Filter",
    "UpdateOp",
    "apply_update",
    "check_filters",
    "check_ops",
    "decrement",
    "filter_field",
    "increment",
    "matches",
    "merge",
    "parse_number",
    "remove",
    "set_op",
]

Path = str | Sequence[str] | None


class UpdateOp(TypedDict, total=False):
    """One Motia 1.x update op; ``type`` is required, the rest depends on it."""

    type: Literal["set", "merge", "increment", "decrement", "remove"]
    path: str | list[str] | None
    value: Any
    by: int | float


class Filter(TypedDict, total=False):
    """Motia's ``StateFilter``: ``value`` is text and is not needed by isNull/isNotNull."""

    valueKey: str
    operation: str
    value: str


_OP_FIELDS: Final[dict[str, frozenset[str]]] = {
    "set": frozenset({"type", "path", "value"}),
    "merge": frozenset({"type", "path", "value"}),
    "increment": frozenset({"type", "path", "by"}),
    "decrement": frozenset({"type", "path", "by"}),
    "remove": frozenset({"type", "path"}),
}


def set_op(path: Path, value: Any) -> UpdateOp:
    """Build ``{"type": "set"}``: put ``value`` at ``path`` (``None``/``""`` = whole value)."""
    return {"type": "set", "path": _wire_path(path), "value": value}


def merge(path: Path, value: Mapping[str, Any]) -> UpdateOp:
    """Build ``{"type": "merge"}``: shallow-merge the object ``value`` into the object at ``path``."""
    return {"type": "merge", "path": _wire_path(path), "value": dict(value)}


def increment(path: Path, by: int | float = 1) -> UpdateOp:
    """Build ``{"type": "increment"}``: add ``by`` to the number at ``path`` (missing = 0)."""
    return {"type": "increment", "path": _wire_path(path), "by": by}


def decrement(path: Path, by: int | float = 1) -> UpdateOp:
    """Build ``{"type": "decrement"}``: subtract ``by`` from the number at ``path`` (missing = 0)."""
    return {"type": "decrement", "path": _wire_path(path), "by": by}


def remove(path: Path) -> UpdateOp:
    """Build ``{"type": "remove"}``: delete the field at ``path``."""
    return {"type": "remove", "path": _wire_path(path)}


def _wire_path(path: Path) -> str | list[str] | None:
    return path if path is None or isinstance(path, str) else list(path)


def _fail(index: int, op: Mapping[str, Any], why: str) -> InvalidOperationError:
    kind = op.get("type") if isinstance(op, Mapping) else None
    return InvalidOperationError(f"update op #{index} ({kind!r}): {why}")


def _parse_path(index: int, op: Mapping[str, Any]) -> tuple[str, ...]:
    path = op.get("path")
    if path is None or path == "":
        return ()
    if isinstance(path, str):
        return (path,)
    if isinstance(path, list | tuple) and all(type(p) is str and p for p in path):
        return tuple(path)
    raise _fail(index, op, f"path must be a field name or a list of non-empty names, got {path!r}")


def check_ops(ops: object) -> list[tuple[str, tuple[str, ...], Mapping[str, Any]]]:
    """Validate update ops and return them as ``(type, path, op)`` triples.

    Raises:
        InvalidOperationError: not a list of op dicts, an unknown type or field, a bad path,
            a ``set``/``merge`` value that is not a JSON value, a non-object ``merge`` value or a
            non-numeric ``by``.
    """
    if isinstance(ops, Mapping | str | bytes | bytearray) or not isinstance(ops, Sequence):
        raise InvalidOperationError(f"update ops must be a list of op dicts, got {ops!r}")
    parsed = []
    for index, op in enumerate(ops):
        if not isinstance(op, Mapping):
            raise InvalidOperationError(f"update op #{index} must be a dict, got {op!r}")
        kind = op.get("type")
        if not isinstance(kind, str) or kind not in _OP_FIELDS:
            raise _fail(index, op, f"type must be one of {sorted(_OP_FIELDS)}")
        unknown = set(op) - _OP_FIELDS[kind]
        if unknown:
            raise _fail(index, op, f"unknown field(s) {sorted(map(str, unknown))}")
        path = _parse_path(index, op)
        if kind in ("set", "merge"):
            if "value" not in op:
                raise _fail(index, op, "needs a 'value'")
            try:
                check_json(op["value"], "value")
            except InvalidValueError as exc:
                raise _fail(index, op, str(exc)) from None
        if kind == "merge" and not isinstance(op["value"], dict):
            raise _fail(index, op, f"value must be an object, got {type(op['value']).__name__}")
        if kind in ("increment", "decrement"):
            by = op.get("by")
            if type(by) not in (int, float) or not math.isfinite(by):  # type: ignore[arg-type]
                raise _fail(index, op, f"'by' must be a finite number, got {by!r}")
        if kind == "remove" and not path:
            raise _fail(index, op, "needs a path: the whole value cannot be removed (use delete)")
        parsed.append((kind, path, op))
    return parsed


def _parent(
    index: int, op: Mapping[str, Any], root: Any, path: tuple[str, ...], create: bool
) -> dict[str, Any] | None:
    node = root
    for depth, name in enumerate(path[:-1]):
        if not isinstance(node, dict):
            where = ".".join(path[:depth]) or "the value"
            raise _fail(index, op, f"path goes through {where}, which is not an object")
        child = node.get(name)
        if child is None and name not in node:
            if not create:
                return None
            child = node[name] = {}
        node = child
    if not isinstance(node, dict):
        where = ".".join(path[:-1]) or "the value"
        raise _fail(index, op, f"path goes through {where}, which is {type(node).__name__}, not an object")
    return node


def _add(index: int, op: Mapping[str, Any], current: Any) -> int | float:
    if type(current) not in (int, float):
        raise _fail(index, op, f"cannot add to {type(current).__name__} {current!r}, not a number")
    # Subtract rather than add the negation: -0.0 - 0 is -0.0 (as in JavaScript); -0.0 + -0 is 0.0.
    result = current + op["by"] if op["type"] == "increment" else current - op["by"]
    if type(result) is int and not INT64_MIN <= result <= INT64_MAX:
        raise _fail(index, op, f"result {result} is outside signed 64-bit range")
    if type(result) is float and not math.isfinite(result):
        raise _fail(index, op, f"result {result} is not a finite number")
    return cast(int | float, result)


def apply_update(current: Any, ops: Sequence[tuple[str, tuple[str, ...], Mapping[str, Any]]]) -> Any:
    """Apply checked ops in order to ``current`` (mutated; pass a fresh copy) and return the result.

    Raises:
        InvalidOperationError: an op cannot apply; the message names its index and why.
    """
    root = current
    for index, (kind, path, op) in enumerate(ops):
        if not path:
            if kind == "set":
                root = copy.deepcopy(op["value"])
            elif kind == "merge":
                if not isinstance(root, dict):
                    raise _fail(index, op, f"cannot merge into {type(root).__name__}, not an object")
                root.update(copy.deepcopy(op["value"]))
            else:
                root = _add(index, op, root)
            continue
        parent = _parent(index, op, root, path, create=kind != "remove")
        name = path[-1]
        if kind == "set":
            assert parent is not None
            parent[name] = copy.deepcopy(op["value"])  # later ops must not change the caller's op
        elif kind == "merge":
            assert parent is not None
            target = parent.setdefault(name, {})
            if not isinstance(target, dict):
                raise _fail(index, op, f"cannot merge into {type(target).__name__} at {'.'.join(path)}")
            target.update(copy.deepcopy(op["value"]))
        elif kind == "remove":
            if parent is not None:
                parent.pop(name, None)
        else:
            assert parent is not None
            parent[name] = _add(index, op, parent.get(name, 0))
    return root


# ---------------------------------------------------------------------------------------------
# Filters

FILTER_OPERATIONS: Final = frozenset(
    {
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
)
_MISSING: Final = object()


def check_filters(filters: object) -> list[Filter]:
    """Validate Motia ``StateFilter`` dicts.

    Raises:
        InvalidOperationError: not a list of dicts, a missing/non-str ``valueKey``, an unknown
            ``operation``, or a missing/non-str ``value`` for an operation that needs one.
    """
    if filters is None:
        return []
    if isinstance(filters, Mapping | str | bytes | bytearray) or not isinstance(filters, Sequence):
        raise InvalidOperationError(f"filters must be a list of filter dicts, got {filters!r}")
    checked: list[Filter] = []
    for index, flt in enumerate(filters):
        if not isinstance(flt, Mapping):
            raise InvalidOperationError(f"filter #{index} must be a dict, got {flt!r}")
        field, operation = flt.get("valueKey"), flt.get("operation")
        if type(field) is not str or not field:
            raise InvalidOperationError(f"filter #{index}: valueKey must be a non-empty str, got {field!r}")
        if not _unicode(field):
            raise InvalidOperationError(f"filter #{index}: valueKey {field!r} is not valid Unicode text")
        if not isinstance(operation, str) or operation not in FILTER_OPERATIONS:
            raise InvalidOperationError(
                f"filter #{index}: operation {operation!r} is not one of {sorted(FILTER_OPERATIONS)}"
            )
        unknown = set(flt) - {"valueKey", "operation", "value"}
        if unknown:
            raise InvalidOperationError(f"filter #{index}: unknown field(s) {sorted(map(str, unknown))}")
        if operation in ("isNull", "isNotNull"):
            checked.append({"valueKey": field, "operation": operation})
            continue
        text = flt.get("value")
        if type(text) is not str:
            raise InvalidOperationError(f"filter #{index} ({operation}): value must be a str, got {text!r}")
        if not _unicode(text):
            raise InvalidOperationError(f"filter #{index}: value {text!r} is not valid Unicode text")
        checked.append({"valueKey": field, "operation": operation, "value": text})
    return checked


def _unicode(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: no stored text can hold them
        return False
    return True


def filter_field(value: Any, name: str) -> Any:
    """The top-level field ``name`` of an object value, or a private MISSING marker."""
    return value.get(name, _MISSING) if isinstance(value, dict) else _MISSING


def parse_number(text: str) -> int | float | None:
    """The number a filter's text holds as a JSON number, or ``None``."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return parsed if type(parsed) in (int, float) else None


def _equals(field: Any, text: str) -> bool:
    kind = type(field)
    if kind is str:
        return bool(field == text)
    if kind is bool:
        return text == ("true" if field else "false")
    if kind is int or kind is float:
        number = parse_number(text)
        return number is not None and field == number
    return False


def _order(field: Any, text: str) -> int | None:
    """-1/0/1 comparing ``field`` with ``text``, or None when they do not compare."""
    kind = type(field)
    other: Any
    if kind is str:
        other = text
    elif kind is int or kind is float:
        other = parse_number(text)
        if other is None:
            return None
    else:
        return None
    return int(field > other) - int(field < other)


def _holds(field: Any, flt: Filter) -> bool:
    operation = flt["operation"]
    if operation == "isNull":
        return field is _MISSING or field is None
    if operation == "isNotNull":
        return not (field is _MISSING or field is None)
    text = flt["value"]
    if operation == "eq":
        return _equals(field, text)
    if operation == "neq":
        return not _equals(field, text)
    if operation == "contains":
        return _contains(field, text)
    if operation == "notContains":
        return not _contains(field, text)
    if operation == "startsWith":
        return type(field) is str and field.startswith(text)
    if operation == "endsWith":
        return type(field) is str and field.endswith(text)
    order = _order(field, text)
    if order is None:
        return False
    return {"gt": order > 0, "gte": order >= 0, "lt": order < 0, "lte": order <= 0}[operation]


def _contains(field: Any, text: str) -> bool:
    if type(field) is str:
        return text in field
    if type(field) is list:
        return any(_equals(item, text) for item in field)
    return False


def matches(value: Any, filters: list[Filter]) -> bool:
    """True when every filter holds for ``value`` (the exact semantics; SQL only pre-selects)."""
    return all(_holds(filter_field(value, flt["valueKey"]), flt) for flt in filters)

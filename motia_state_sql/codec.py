"""The one place where values, group ids, keys and TTLs are checked, encoded and decoded.

Values are stored as compact JSON text produced by ``orjson``. Every check happens before any
backend is touched, so refused input never writes anything.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from .errors import InvalidKeyError, InvalidValueError

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DEPTH",
    "MAX_TTL",
    "check_encoded",
    "check_json",
    "check_name",
    "check_ttl",
    "decode",
    "encode",
]

#: Largest encoded value accepted unless an adapter is given another ``max_value_bytes``.
DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: The longest ``ttl`` accepted, in seconds (100 years of 365.25 days): one range for every backend,
#: so ``now + ttl`` stays an exact, finite time that Redis's millisecond expiries can hold too.
MAX_TTL = 100 * 365.25 * 24 * 3600
#: orjson refuses deeper nesting; we say so with our own error before it does.
MAX_DEPTH = 254


def check_name(what: str, name: object, group_id: object = None) -> str:
    """Return ``name`` when it is a usable group id or key, else raise ``InvalidKeyError``.

    Args:
        what: ``"group_id"`` or ``"key"``, used in the message.
        name: the value to check.
        group_id: the group the key belongs to, named in the message when given.

    Raises:
        InvalidKeyError: empty, not a ``str``, holding NUL, or not encodable as UTF-8.
    """
    where = f" in group {group_id!r}" if group_id is not None else ""
    if type(name) is not str:
        raise InvalidKeyError(f"{what}{where} must be a str, got {type(name).__name__}: {name!r}")
    if not name:
        raise InvalidKeyError(f"{what}{where} must not be empty")
    if "\x00" in name:
        raise InvalidKeyError(f"{what} {name!r}{where} must not contain the NUL character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(f"{what} {name!r}{where} is not valid Unicode text (lone surrogate)") from None
    return name


def check_ttl(ttl: object, group_id: str, key: str) -> float | None:
    """Return ``ttl`` as seconds (``None`` for no expiry), or raise ``InvalidKeyError``.

    Raises:
        InvalidKeyError: ``ttl`` is not an int or float, or not in ``(0, MAX_TTL]`` seconds.
    """
    if ttl is None:
        return None
    if type(ttl) not in (int, float):
        raise InvalidKeyError(
            f"ttl for {group_id!r}/{key!r} must be a number of seconds, got {type(ttl).__name__}: {ttl!r}"
        )
    try:
        seconds = float(ttl)  # type: ignore[arg-type]
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidKeyError(f"ttl for {group_id!r}/{key!r} must be > 0 and finite, got {ttl!r}")
    if seconds > MAX_TTL:
        raise InvalidKeyError(
            f"ttl for {group_id!r}/{key!r} is {ttl!r} seconds, over the longest accepted "
            f"({MAX_TTL:.0f} s, 100 years); leave ttl out for an item that never expires"
        )
    return seconds


def _label(group_id: str, key: str) -> str:
    return f"value of {group_id!r}/{key!r}"


def check_json(value: Any, label: str) -> bytes:
    """Check that ``value`` is a JSON value ``decode`` gives back exactly; return its JSON bytes.

    Args:
        value: the value to check.
        label: what the value is, for messages (``"value of 'g'/'k'"``).

    Raises:
        InvalidValueError: not a JSON value (the message names ``label`` and where inside).
    """
    _check_value(value, "$", 0, label)
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # surrogates in str: the walk cannot see those cheaply
        raise InvalidValueError(f"{label} at $: {exc}") from None


def _check_value(value: Any, path: str, depth: int, label: str) -> None:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidValueError(
                f"{label} at {path}: integer {value} is outside signed 64-bit range"
            )
        return
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValueError(f"{label} at {path}: {value} is not a JSON number")
        return
    if depth >= MAX_DEPTH:
        raise InvalidValueError(f"{label} at {path}: nested deeper than {MAX_DEPTH} levels")
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise InvalidValueError(
                    f"{label} at {path}: dict key {name!r} is "
                    f"{type(name).__name__}, JSON object keys must be str"
                )
            _check_value(item, f"{path}.{name}", depth + 1, label)
        return
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1, label)
        return
    raise InvalidValueError(
        f"{label} at {path}: {kind.__name__} is not a JSON value "
        "(use None, bool, int, float, str, list or dict with str keys)"
    )


def encode(value: Any, group_id: str, key: str, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """Check ``value`` and return its compact JSON text.

    Only exact JSON types are accepted (no subclasses, dataclasses, datetimes or enums), so what
    ``decode`` returns is exactly what was given, tuples aside (they come back as lists).

    Raises:
        InvalidValueError: not a JSON value, or encoded larger than ``max_bytes``.
    """
    raw = check_json(value, _label(group_id, key))
    if len(raw) > max_bytes:
        raise InvalidValueError(
            f"value of {group_id!r}/{key!r} is {len(raw)} bytes encoded, "
            f"over the limit max_value_bytes={max_bytes}"
        )
    return raw.decode()


def check_encoded(text: str, group_id: str, key: str, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """Check JSON text written elsewhere (Motia's files) and return it unchanged.

    Raises:
        InvalidValueError: not JSON, or a value ``encode`` would refuse.
    """
    try:
        # The standard parser keeps big integers exact (orjson would read them as floats), so
        # the range check sees them; NaN and Infinity are not JSON.
        value = json.loads(text, parse_constant=_not_json)
        orjson.loads(text)  # and the decoder every read uses takes it (no lone surrogates)
    except (ValueError, RecursionError) as exc:
        raise InvalidValueError(f"value of {group_id!r}/{key!r} is not valid JSON: {exc}") from None
    _check_value(value, "$", 0, _label(group_id, key))
    if len(text.encode()) > max_bytes:
        raise InvalidValueError(
            f"value of {group_id!r}/{key!r} is over the limit max_value_bytes={max_bytes}"
        )
    return text


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def decode(text: str | bytes) -> Any:
    """Return the value held by JSON text written by ``encode``."""
    return orjson.loads(text)

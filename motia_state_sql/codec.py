"""The one place where values, group ids, keys and TTLs are checked, encoded and decoded.

Values are stored as compact JSON text produced by ``orjson``. Every check happens before any
backend is touched, so refused input never writes anything.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final

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
    "from_node",
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
    if type(name) is str and name and "\x00" not in name and (name.isascii() or _encodable(name)):
        return name  # every write checks two names: no message is built unless one is wrong
    where = f" in group {group_id!r}" if group_id is not None else ""
    if type(name) is not str:
        raise InvalidKeyError(f"{what}{where} must be a str, got {type(name).__name__}: {name!r}")
    if not name:
        raise InvalidKeyError(f"{what}{where} must not be empty")
    if "\x00" in name:
        raise InvalidKeyError(f"{what} {name!r}{where} must not contain the NUL character")
    raise InvalidKeyError(f"{what} {name!r}{where} is not valid Unicode text (lone surrogate)")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_motia_group(group_id: str, where: str, instead: str) -> str:
    """Return ``group_id`` unless it holds ``:``, which Motia's ``"<group>:<key>"`` names cannot hold.

    Motia's formats (``motia.state.json`` entries, its Redis keys) join group and key with ``:``,
    so such a group would read back as another one.

    Args:
        group_id: a group id already checked by ``check_name``.
        where: the format, for the message (``"Motia's Redis layout"``).
        instead: what to use for such groups, for the message.

    Raises:
        InvalidKeyError: ``group_id`` holds ``:``.
    """
    if ":" in group_id:
        raise InvalidKeyError(
            f"group_id {group_id!r} holds ':', which {where} cannot tell apart from the key; {instead}"
        )
    return group_id


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


class _NotJson(Exception):
    """Raised by the walk below: why, and the path to the bad part, built only on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.steps: list[str] = []  # innermost first


def _check_value(value: Any, path: str, depth: int, label: str) -> None:
    """Raise ``InvalidValueError`` naming ``label`` and where in ``value`` it is not exact JSON."""
    try:
        _walk(value, depth)
    except _NotJson as bad:
        raise InvalidValueError(f"{label} at {path}{''.join(reversed(bad.steps))}: {bad.reason}") from None


def _walk(value: Any, depth: int) -> None:
    # The hot path of every write: no message, no path string unless something is wrong.
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _NotJson(f"integer {shown_int(value)} is outside signed 64-bit range")
        return
    if kind is float:
        if not math.isfinite(value):
            raise _NotJson(f"{value} is not a JSON number (NaN or infinity)")
        return
    if depth >= MAX_DEPTH:
        raise _NotJson(f"nested deeper than {MAX_DEPTH} levels")
    if kind is dict:
        for name, item in value.items():
            if type(name) is not str:
                raise _NotJson(f"dict key {name!r} is {type(name).__name__}, JSON object keys must be str")
            try:
                _walk(item, depth + 1)
            except _NotJson as bad:
                bad.steps.append(f".{name}")
                raise
        return
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            try:
                _walk(item, depth + 1)
            except _NotJson as bad:
                bad.steps.append(f"[{index}]")
                raise
        return
    raise _NotJson(
        f"{kind.__name__} is not a JSON value (use None, bool, int, float, str, list or dict with str keys)"
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
    """Check JSON text given by a caller (``set_json``, import, copy) and return the text to store.

    The text is kept byte for byte, except when an object in it repeats a key: then the
    canonical compact text of the value (the last of the repeated keys wins, as in
    ``JSON.parse`` and in every read) is returned, so that SQL filters and ``get`` see the same value.

    Raises:
        InvalidValueError: not JSON, or a value ``encode`` would refuse (an integer beyond
            signed 64-bit too: see ``from_node`` for text that Node wrote).
    """
    return _storable(text, group_id, key, max_bytes, node=False)


def from_node(text: str, group_id: str, key: str, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """The storable JSON text of a value that Node (JavaScript) wrote; the one policy for such values.

    Used wherever a value comes from Node: Motia's ``motia.state.json`` (the File adapter, the
    SQLite legacy import, ``motia-state import``), Motia's Redis layout, and the Node adapter.
    The name and the signature are stable.

    JavaScript numbers are doubles, so an integer beyond signed 64-bit
    (``JSON.stringify(1e19)`` is ``10000000000000000000``) is read as the double JavaScript
    meant, spelled as a float (``1e+19``); only those number tokens of the text change. Then the
    text is held to ``check_encoded``'s rules (a repeated object key gives the canonical text).

    Args:
        text: the JSON text as Node wrote it.
        group_id: the item's group, for messages.
        key: the item's key, for messages.
        max_bytes: largest accepted text, in UTF-8 bytes.

    Returns:
        ``text`` itself when it needs no change, else the text to store in its place.

    Raises:
        InvalidValueError: the text is not JSON, holds a lone surrogate (an escaped ``ud83d``, half of a
            UTF-16 pair, which no UTF-8 text can hold), an integer beyond even a double's range,
            or is over ``max_bytes``. The message names the item and the JSON path.
    """
    return _storable(text, group_id, key, max_bytes, node=True)


# int64's limits have 19 digits: a text without 19 digits in a row holds no integer beyond them.
_LONG_DIGITS: Final = re.compile(r"\d{19}")
# JSON strings (skipped whole) and numbers, in a text already known to be JSON.
_TOKENS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')


def _storable(text: str, group_id: str, key: str, max_bytes: int, *, node: bool) -> str:
    label = _label(group_id, key)
    long_digits = _LONG_DIGITS.search(text) is not None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if not (node and long_digits):
            raise _unreadable(text, label, str(exc)) from None
        value = None  # orjson refuses integers far beyond 64-bit: spelled as doubles below
    if long_digits:  # rare: only then is the exact (slower) parse needed
        exact = _exact(text, label)
        found = _first_int(exact, "$", _beyond_int64)
        if found is not None:
            huge = _first_int(exact, "$", _beyond_double) if node else found
            if huge is not None:
                path, number = huge
                raise InvalidValueError(
                    f"{label} at {path}: integer {shown_int(number)} is "
                    + (
                        "beyond the range of a double (JavaScript reads it as Infinity); make it a string"
                        if node
                        else "outside signed 64-bit range"
                    )
                )
            text = as_doubles(text)
            value = orjson.loads(text)
    if text.count("[") + text.count("{") >= MAX_DEPTH:  # could be nested too deep: walk it
        _check_value(value, "$", 0, label)
    raw = text.encode()
    # orjson writes the canonical text; when it differs, the text may repeat a key (the exact,
    # slower check). Python writers' texts are canonical already, Node's nearly always.
    if orjson.dumps(value) != raw and _repeats_a_key(text):
        raw = orjson.dumps(value)
        text = raw.decode()
    if len(raw) > max_bytes:
        raise InvalidValueError(
            f"{label} is over the limit max_value_bytes={max_bytes} ({len(raw)} bytes encoded)"
        )
    return text


def shown_int(number: int) -> str:
    """``number`` for a message: its digits, cut short past 40 of them."""
    text = str(number)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text.lstrip('-'))} digits)"


def _exact(text: str, label: str) -> Any:
    """The value of ``text`` with exact integers (orjson reads those beyond 2^64 as floats)."""
    try:
        return json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidValueError(f"{label} is not valid JSON: {exc}") from None


def _unreadable(text: str, label: str, reason: str) -> InvalidValueError:
    """The error for a text orjson refused: not JSON, a lone surrogate, or a refused value."""
    value = _exact(text, label)  # raises for text that is not JSON at all
    _check_value(value, "$", 0, label)  # infinity, nesting
    found = _first_surrogate(value, "$")
    if found is not None:
        path, unit = found
        return InvalidValueError(
            f"{label} at {path}: the string holds a lone surrogate ({unit}), half of a UTF-16 "
            "pair (JavaScript writes one for a string cut inside an emoji); no UTF-8 text can "
            "hold it. Rewrite the item without it, or delete it"
        )
    return InvalidValueError(f"{label} is not valid JSON: {reason}")


def _children(value: Any, path: str) -> list[tuple[str, Any]]:
    if type(value) is dict:
        return [(f"{path}.{name}", item) for name, item in value.items()]
    if type(value) is list:
        return [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    return []


def _beyond_int64(number: int) -> bool:
    return not INT64_MIN <= number <= INT64_MAX


def _beyond_double(number: int) -> bool:
    try:
        float(number)
    except OverflowError:
        return True
    return False


def _first_int(value: Any, path: str, wanted: Callable[[int], bool]) -> tuple[str, int] | None:
    """The JSON path and value of the first integer in ``value`` that is ``wanted``."""
    if type(value) is int:
        return (path, value) if wanted(value) else None
    for where, item in _children(value, path):
        found = _first_int(item, where, wanted)
        if found is not None:
            return found
    return None


def _first_surrogate(value: Any, path: str) -> tuple[str, str] | None:
    """The JSON path of the first string (or object key) holding a lone surrogate, and the unit."""
    texts = [value] if type(value) is str else list(value) if type(value) is dict else []
    for text in texts:
        for char in text:
            if "\ud800" <= char <= "\udfff":
                return path, f"\\u{ord(char):04x}"
    for where, item in _children(value, path):
        found = _first_surrogate(item, where)
        if found is not None:
            return found
    return None


def as_doubles(text: str) -> str:
    """``text`` with every integer beyond signed 64-bit spelled as the double JavaScript reads.

    Every such integer must be within a double's range (checked before).
    """

    def as_double(match: re.Match[str]) -> str:
        token = match.group()
        if not token.lstrip("-").isdigit():  # a string, or a number with a fraction or exponent
            return token
        # float() of the digits is correctly rounded, as JavaScript's parser is.
        return token if not _beyond_int64(int(token)) else repr(float(token))

    return _TOKENS.sub(as_double, text)


def big_ints_in(text: str) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The first integer beyond signed 64-bit in the JSON ``text``, and the first beyond a double.

    Each as ``(JSON path, integer)``, or ``None``; both ``None`` when ``text`` is not JSON.
    """
    if not _LONG_DIGITS.search(text):
        return None, None
    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        return None, None
    beyond = _first_int(value, "$", _beyond_int64)
    return beyond, (_first_int(value, "$", _beyond_double) if beyond is not None else None)


def _repeats_a_key(text: str) -> bool:
    """Whether an object in the JSON ``text`` names a key twice."""
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        found = dict(items)
        repeated = repeated or len(found) != len(items)
        return found

    json.loads(text, object_pairs_hook=pairs)
    return repeated


def refuse_constant(name: str) -> Any:
    """``parse_constant`` for the standard parser: ``NaN``/``Infinity`` are not JSON."""
    raise ValueError(f"{name} is not a JSON value")


def decode(text: str | bytes) -> Any:
    """Return the value held by JSON text written by ``encode``."""
    return orjson.loads(text)

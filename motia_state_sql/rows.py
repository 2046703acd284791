"""What is stored and what a write does to it: rows, writes, versions and ``plan_write``.

Every backend stores ``Row``s; every single-key write is a checked ``Write`` that ``plan_write``
turns into its outcome, a ``Plan``: the new row, ``None`` (delete it) or ``UNCHANGED``. This is
the one documented version of the write rules; where a backend must repeat one inside the store
for atomicity (SQLite's upsert, the Redis scripts), the contract tests hold it to this one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from . import codec
from .errors import ConflictError, InvalidOperationError, UnsupportedError
from .ops import apply_update

__all__ = [
    "UNCHANGED",
    "Clock",
    "Plan",
    "Row",
    "RowEntry",
    "StateItem",
    "Unchanged",
    "UpdateResult",
    "Write",
    "WriteResult",
    "item_of",
    "new_version",
    "plan_write",
    "refuse_unstorable",
]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class StateItem:
    """One stored item with its metadata; ``version`` etc. are ``None`` where a backend cannot hold them."""

    group_id: str
    key: str
    value: Any
    version: int | None
    created_at: float | None
    updated_at: float | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What ``update`` did: the value before (``None`` when absent) and after."""

    old_value: Any
    new_value: Any


class Row(NamedTuple):
    """An item as backends store it: the encoded value plus metadata."""

    value: str
    version: int | None
    created_at: float | None
    updated_at: float | None
    expires_at: float | None

    def live(self, now: float) -> bool:
        """False once the row has expired at ``now``."""
        return self.expires_at is None or self.expires_at > now


@dataclass(slots=True)
class Write:
    """A checked single-key write, ready to be planned against the current row."""

    kind: Literal["set", "delete", "update"]
    group_id: str
    key: str
    encoded: str | None = None
    ttl: float | None = None
    #: The checked update ops (a shared empty tuple for sets and deletes: one object less per write).
    ops: Sequence[Any] = ()
    if_version: int | None = None
    if_absent: bool = False
    max_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES

    def expires_at(self, now: float) -> float | None:
        """When a ``set`` at ``now`` makes the item expire (``None``: never)."""
        return None if self.ttl is None else now + self.ttl


class Unchanged:
    """The type of ``UNCHANGED``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


#: ``plan_write`` result meaning "leave the stored row as it is".
UNCHANGED: Final = Unchanged()


_FRESH_STEP: Final = 1 << 32
_FRESH_SPACE: Final = 1 << 62
_FRESH_PER_BASE: Final = 1 << 20
_fresh_count = itertools.count()  # next() on it is atomic under the GIL: safe across threads
_fresh_base: tuple[int, int] | None = None  # (epoch, random base) for fresh versions


def _forget_fresh_base() -> None:
    global _fresh_base
    _fresh_base = None


os.register_at_fork(after_in_child=_forget_fresh_base)  # a child never continues its parent's run


def new_version(current: Row | None) -> int:
    """The version a write gives a key: the next one, or a fresh start for a new key.

    A key's life (create, writes, delete) runs through consecutive versions from its fresh start,
    and a key deleted and created again must never repeat a version a caller read during an
    earlier life (no ABA on compare-and-set), whichever process writes it. Fresh starts are
    ``base + n * 2**32`` (mod ``2**62``, plus one): ``n`` counts the fresh starts this process
    gave, and ``base`` is drawn from ``os.urandom`` once per ``2**20`` of them and again in a
    forked child. So, without a system call per write:

    - within one process and base, a later life starts ``k * 2**32`` past an earlier one's start
      (``0 < k < 2**20``, modulo ``2**62``): an earlier life written fewer than ``2**32`` times
      never reached it, and counting up from there it never comes back to the earlier versions;
    - a life started under another base (another process sharing the database or Redis, or
      ``2**20`` fresh starts later) starts at an independent uniform point of ``2**62``: it meets
      an earlier life of ``w`` writes with probability about ``(w + 1) / 2**62``, below the
      ``(w + 1) / 2**48`` of the random 48-bit start drawn per write before;
    - versions stay below ``2**62 + writes``: ``2**62`` writes to one key before int64 overflows.
    """
    if current is not None and current.version is not None:
        return current.version + 1
    global _fresh_base
    epoch, step = divmod(next(_fresh_count), _FRESH_PER_BASE)
    held = _fresh_base
    if held is None or held[0] != epoch:
        held = _fresh_base = (epoch, int.from_bytes(os.urandom(8), "big") % _FRESH_SPACE)
    return (held[1] + step * _FRESH_STEP) % _FRESH_SPACE + 1


#: What a write makes of a row: the new row, ``None`` to delete it, or ``UNCHANGED``.
Plan: TypeAlias = "Row | None | Unchanged"


def plan_write(write: Write, current: Row | None, now: float) -> Plan:
    """Decide what ``write`` makes of the live row ``current`` (``None`` when absent or expired).

    Returns the new row, ``None`` to delete the row, or ``UNCHANGED``.

    Raises:
        ConflictError: ``if_absent`` or ``if_version`` does not hold.
        InvalidOperationError: an update op cannot apply.
        InvalidValueError: an update produced a value that cannot be stored.
    """
    where = f"{write.group_id!r}/{write.key!r}"
    if write.if_absent and current is not None:
        raise ConflictError(f"{write.kind} of {where} required the key to be absent, but it exists")
    if write.if_version is not None and (current is None or current.version != write.if_version):
        found = "absent" if current is None else f"at version {current.version}"
        raise ConflictError(f"{write.kind} of {where} required version {write.if_version}, but it is {found}")
    if write.kind == "delete":
        return UNCHANGED if current is None else None
    if write.kind == "set":
        assert write.encoded is not None
        encoded, expires_at = write.encoded, write.expires_at(now)
    else:
        base = codec.decode(current.value) if current is not None else {}
        try:
            new_value = apply_update(base, write.ops)
        except InvalidOperationError as exc:
            raise InvalidOperationError(f"update of {where}: {exc}") from None
        encoded = codec.encode(new_value, write.group_id, write.key, write.max_bytes)
        expires_at = current.expires_at if current is not None else None
    created_at = current.created_at if current is not None and current.created_at is not None else now
    return Row(encoded, new_version(current), created_at, now, expires_at)


def item_of(group_id: str, key: str, row: Row) -> StateItem:
    """The ``StateItem`` a caller sees for ``row`` (its value decoded)."""
    return StateItem(
        group_id,
        key,
        codec.decode(row.value),
        row.version,
        row.created_at,
        row.updated_at,
        row.expires_at,
    )


RowEntry = tuple[str, str, Row]
#: What ``_write`` reports: ``(plan, current)``; ``None`` for an unconditional set whose backend
#: wrote it without reading the row before (``set`` needs neither).
WriteResult: TypeAlias = "tuple[Plan, Row | None] | None"


def refuse_unstorable(write: Write, backend: str, *, ttl: bool, versions: bool) -> None:
    """Raise ``UnsupportedError`` for a TTL or ``if_version`` the backend's format cannot hold."""
    if not ttl and write.ttl is not None:
        raise UnsupportedError(f"{backend} cannot store a ttl (for {write.group_id!r}/{write.key!r})")
    if not versions and write.if_version is not None:
        raise UnsupportedError(
            f"{backend} keeps no versions, so if_version cannot be checked "
            f"(for {write.group_id!r}/{write.key!r})"
        )

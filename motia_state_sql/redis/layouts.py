"""The two ways items are kept in Redis, behind one interface, ``Layout``.

* ``NativeLayout``: a group is one hash plus one sorted set of expiries, both under a hash tag
  derived from the group, so every single-group operation is one atomic script that also runs on
  Redis Cluster, and reading a group costs what the group holds.
* ``MotiaLayout``: exactly the keys of Motia's ``@motiadev/adapter-redis-state`` (one string per
  item, ``<prefix><group>:<key>``), so Node and Python instances share state; standalone only.

Each layout says how its keys are named, reads rows, runs one script per write and commits a
transaction with its own commit script; every request goes through the ``Transport``. Each has
one function reading a write script's reply (``_outcome``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from redis.crc import key_slot

from .. import codec
from ..errors import ConflictError, InvalidValueError, SchemaError, StateError, StoreUnavailableError
from ..rows import UNCHANGED, Row, Write, WriteResult, new_version, plan_write
from . import scripts
from .transport import text

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["Layout", "MotiaLayout", "NativeLayout", "Reads"]

_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})

#: Keys SCAN looks at per page when ``store_info`` lists a whole store's names.
_INFO_SCAN_PAGE: Final = 10_000
#: Per-group scripts ``store_info`` sends at once (pipelined; their replies are small).
_INFO_BURST: Final = 1000

#: The row ``MotiaLayout.group_rows(names_only=True)`` gives every key: its value was not read.
_UNREAD: Final = Row("null", None, None, None, None)


def _glob(text: str) -> str:
    """Escape glob characters so SCAN MATCH takes ``text`` literally."""
    return text.translate(_GLOB)


def _condition(write: Write, version: Callable[[int], str]) -> str:
    """The write scripts' condition argument: '' (none), 'absent', or '=' and the version as stored."""
    if write.if_absent:
        return "absent"
    if write.if_version is not None:
        return f"={version(write.if_version)}"
    return ""


def _refuse(write: Write, current: Row | None, now: float) -> ConflictError:
    """The error of a write whose condition failed against ``current`` (as the script saw it)."""
    plan_write(write, current, now)  # raises the ConflictError with its message
    return ConflictError(f"{write.kind} of {write.group_id!r}/{write.key!r}: condition failed")


def _committed(reply: Any) -> None:
    """Read a commit script's reply: 1, or {0, what changed}.

    Raises:
        ConflictError: a concurrent write changed what the transaction read.
    """
    if reply != 1:
        raise ConflictError(
            f"transaction not committed: a concurrent write changed what it read ({text(reply[1])}); "
            "nothing of it was applied"
        )


@dataclass(slots=True)
class Reads:
    """What a transaction read, which its commit checks is still so.

    Each read is remembered the first time only: that is what the transaction saw.
    """

    #: (group, key) -> the version read, None for an absent key.
    rows: dict[tuple[str, str], int | None] = field(default_factory=dict)
    #: group -> its live keys and their versions, when the whole group was read.
    groups: dict[str, dict[str, int | None]] = field(default_factory=dict)
    #: The live groups seen by the first read across groups (list_groups, items()), if any.
    all_groups: list[str] | None = None


class Layout(Protocol):
    """How items are kept in Redis; the adapter and its transactions use only this."""

    def check_group(self, group_id: str) -> str:
        """``group_id`` (already a valid name), or ``InvalidKeyError`` if this layout cannot hold it."""
        ...

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        """The live row of one key, or None."""
        ...

    async def group_rows(self, group_id: str, now: float) -> dict[str, Row]:
        """The group's live rows by key."""
        ...

    async def live_keys(self, group_id: str, now: float) -> list[str]:
        """The group's live keys, sorted."""
        ...

    async def group_keys(self, group_id: str) -> list[str]:
        """The group's key names, live or not, in no order (to read a group in batches)."""
        ...

    async def rows_of(self, group_id: str, keys: list[str], now: float) -> list[tuple[str, Row]]:
        """The live rows of ``keys``, in that order."""
        ...

    async def groups(self, now: float) -> list[str]:
        """The groups holding a live item, sorted."""
        ...

    async def write(self, write: Write, now: float) -> WriteResult:
        """Apply a set or delete (with its condition) atomically; what it did, as ``_write`` returns."""
        ...

    async def put_if(self, group_id: str, key: str, current: Row | None, new: Row, now: float) -> bool:
        """Store ``new`` if the key still holds ``current`` (None: absent); whether it did."""
        ...

    async def clear(self, group_id: str) -> None:
        """Remove every item of the group."""
        ...

    async def commit(
        self, reads: Reads, cleared: set[str], writes: dict[tuple[str, str], Row | None], now: float
    ) -> None:
        """Check ``reads`` and apply ``cleared`` then ``writes`` in one script, or apply nothing.

        Raises:
            ConflictError: what the transaction read has changed.
            StateError: the transaction cannot be committed atomically here (Cluster slots).
        """
        ...


class NativeLayout:
    """A group is a hash of records plus a sorted set of expiries, under the group's hash tag."""

    __slots__ = ("_cluster", "_margin_ms", "_names", "_prefix", "_transport")

    def __init__(self, transport: Transport, key_prefix: str, *, margin_ms: str) -> None:
        """Keys under ``key_prefix``; a group whose every item expired lives ``margin_ms`` longer."""
        self._transport = transport
        self._prefix = key_prefix
        self._margin_ms = margin_ms
        self._cluster = transport.cluster
        self._names: dict[str, list[str]] = {}

    def check_group(self, group_id: str) -> str:
        """Every valid name is a group here."""
        return group_id

    # -- keys and records ---------------------------------------------------------------------

    def redis_keys(self, group_id: str) -> list[str]:
        """The Redis keys of the group's data hash and expiry set (a fresh list: scripts take it as KEYS)."""
        names = self._names.get(group_id)
        if names is None:
            tag = hashlib.sha1(group_id.encode()).hexdigest()[:16]
            base = f"{self._prefix}{{{tag}}}"
            names = [f"{base}:d:{group_id}", f"{base}:e:{group_id}"]
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[group_id] = names
        return names.copy()

    def _data_key(self, group_id: str) -> str:
        return self.redis_keys(group_id)[0]

    def _group_of(self, name: str) -> str | None:
        """The group a data-hash key belongs to, or None for keys that are not ours."""
        head = len(self._prefix) + 18  # "{" + 16 hex + "}"
        if not name.startswith(self._prefix) or name[head : head + 3] != ":d:":
            return None
        group = name[head + 3 :]
        return group if group and self._data_key(group) == name else None

    def _data_pattern(self) -> str:
        """The glob matching every group's data hash."""
        return _glob(self._prefix) + "{*}:d:*"

    @staticmethod
    def _parse(record: Any, group_id: str, key: str) -> Row:
        try:
            version, created, updated, expires, value = text(record).split("|", 4)
            return Row(
                value, int(version), float(created), float(updated), float(expires) if expires else None
            )
        except ValueError:
            raise SchemaError(
                f"Redis native layout: item {group_id!r}/{key!r} holds {text(record)[:60]!r}, which is "
                "not a record of this package (another tool wrote into our keys?)"
            ) from None

    @staticmethod
    def _record(row: Row) -> str:
        expires = repr(row.expires_at) if row.expires_at is not None else ""
        return f"{row.version}|{row.created_at!r}|{row.updated_at!r}|{expires}|{row.value}"

    # -- reads --------------------------------------------------------------------------------

    async def _reclaim(self, group_id: str, now: float) -> None:
        """Drop the group's expired fields now (reads call it when they meet one); best effort."""
        with contextlib.suppress(StoreUnavailableError):
            await self._transport.script(
                scripts.NATIVE_RECLAIM,
                self.redis_keys(group_id),
                [repr(now), self._margin_ms],
                idempotent=True,
            )

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        """The live row of one key (one HGET), reclaiming the group's expired fields if it met one."""
        record = await self._transport.command("HGET", self._data_key(group_id), key, idempotent=True)
        if record is None:
            return None
        row = self._parse(record, group_id, key)
        if row.live(now):
            return row
        await self._reclaim(group_id, now)
        return None

    async def group_rows(self, group_id: str, now: float) -> dict[str, Row]:
        """The group's live rows (one HGETALL), reclaiming its expired fields if it met one."""
        found = await self._transport.command("HGETALL", self._data_key(group_id), idempotent=True)
        pairs = found.items() if isinstance(found, dict) else zip(found[::2], found[1::2], strict=True)
        rows: dict[str, Row] = {}
        expired = False
        for name, record in pairs:
            key = text(name)
            row = self._parse(record, group_id, key)
            if row.live(now):
                rows[key] = row
            else:
                expired = True
        if expired:
            await self._reclaim(group_id, now)
        return rows

    async def live_keys(self, group_id: str, now: float) -> list[str]:
        """The group's live keys, sorted (its records are read: expiry lives in them)."""
        return sorted(await self.group_rows(group_id, now))

    async def group_keys(self, group_id: str) -> list[str]:
        """The group's key names, live or not (one HKEYS)."""
        found = await self._transport.command("HKEYS", self._data_key(group_id), idempotent=True)
        return [text(key) for key in found]

    async def rows_of(self, group_id: str, keys: list[str], now: float) -> list[tuple[str, Row]]:
        """The live rows of ``keys`` (in that order) in one command."""
        records = await self._transport.command("HMGET", self._data_key(group_id), *keys, idempotent=True)
        rows = [
            (key, self._parse(record, group_id, key))
            for key, record in zip(keys, records, strict=True)
            if record is not None
        ]
        return [(key, row) for key, row in rows if row.live(now)]

    async def groups(self, now: float) -> list[str]:
        """The live groups: one atomic scan on a standalone server, a scan per node on a Cluster."""
        transport = self._transport
        if not self._cluster:
            found = await transport.script(
                scripts.NATIVE_GROUPS, [], [self._prefix, self._data_pattern(), repr(now)], idempotent=True
            )
            return sorted(text(g) for g in found)
        names = await transport.scan(self._data_pattern())
        live: list[str] = []
        for group in sorted({g for name in names if (g := self._group_of(name))}):
            # one small script per group: each group is its own hash slot
            count = await transport.script(
                scripts.NATIVE_LIVE_COUNT,
                self.redis_keys(group),
                [repr(now), self._margin_ms],
                idempotent=True,
            )
            if count > 0:
                live.append(group)
        return live

    async def counts(self, now: float) -> tuple[int, int, int, float | None, float | None]:
        """Live items, groups, expired items, oldest and newest ``updated_at``.

        One scan of the keyspace, ``_INFO_SCAN_PAGE`` keys a page, for the groups' data hashes;
        then one small script per group over its record headers (no value leaves the server),
        ``_INFO_BURST`` scripts at a time, which the transport pipelines into a few round trips.
        """
        items = groups = expired = 0
        oldest: float | None = None
        newest: float | None = None
        names = set(await self._transport.scan(self._data_pattern(), count=_INFO_SCAN_PAGE))
        found = sorted(g for name in names if (g := self._group_of(name)))
        at, script = [repr(now)], self._transport.script
        replies: list[Any] = []
        for start in range(0, len(found), _INFO_BURST):
            burst = found[start : start + _INFO_BURST]
            replies += await asyncio.gather(
                *(script(scripts.NATIVE_INFO, [self._data_key(g)], at, idempotent=True) for g in burst)
            )
        for live, gone, low, high in replies:
            items += live
            expired += gone
            groups += 1 if live else 0
            if live:
                oldest = min(float(text(low)), oldest if oldest is not None else float("inf"))
                newest = max(float(text(high)), newest if newest is not None else float("-inf"))
        return items, groups, expired, oldest, newest

    # -- writes -------------------------------------------------------------------------------

    def _send_write(
        self,
        group_id: str,
        key: str,
        condition: str,
        now: float,
        tail: str,
        version: int | None,
        expires: str,
        *,
        want: bool,
    ) -> Awaitable[Any]:
        """Run NATIVE_WRITE (see its arguments in ``scripts``); await its raw reply.

        ``version`` is the version of a new key (an existing key's version goes up by one).
        """
        return self._transport.script(
            scripts.NATIVE_WRITE,
            self.redis_keys(group_id),
            [
                key,
                condition,
                repr(now),
                tail,
                str(version),
                expires,
                self._margin_ms,
                "1" if want else "0",
            ],
            idempotent=False,
        )

    def _outcome(self, write: Write, reply: Any, now: float, expires_at: float | None) -> WriteResult:
        """What a NATIVE_WRITE reply says ``write`` did.

        The reply is the new version alone for an unconditional set (nothing to read: None),
        else {1, old record or false[, new version]} or {0, current record or false}.

        Raises:
            ConflictError: the write's condition failed.
        """
        if not isinstance(reply, list):
            return None
        current = self._parse(reply[1], write.group_id, write.key) if reply[1] is not None else None
        if reply[0] == 0:
            raise _refuse(write, current, now)
        if write.kind == "delete":
            return (UNCHANGED if current is None else None), current
        assert write.encoded is not None
        # The script keeps a live record's created time, as here.
        created = current.created_at if current is not None and current.created_at is not None else now
        return Row(write.encoded, int(reply[2]), created, now, expires_at), current

    async def write(self, write: Write, now: float) -> WriteResult:
        """A set or delete in one script; an unconditional set asks for nothing back."""
        condition = _condition(write, str)
        tail = expires = ""
        expires_at = write.expires_at(now) if write.kind == "set" else None
        if write.kind == "set":
            assert write.encoded is not None
            expires = "" if expires_at is None else repr(expires_at)
            tail = f"{now!r}|{expires}|{write.encoded}"
        reply = await self._send_write(
            write.group_id, write.key, condition, now, tail, new_version(None), expires, want=bool(condition)
        )
        return self._outcome(write, reply, now, expires_at)

    async def put_if(self, group_id: str, key: str, current: Row | None, new: Row, now: float) -> bool:
        """Store ``new`` if the key's version is still ``current``'s (one script)."""
        condition = f"={current.version if current is not None else ''}"
        expires = repr(new.expires_at) if new.expires_at is not None else ""
        tail = f"{new.updated_at!r}|{expires}|{new.value}"
        reply = await self._send_write(group_id, key, condition, now, tail, new.version, expires, want=False)
        return not isinstance(reply, list)  # the new version alone, or {0, current}

    async def clear(self, group_id: str) -> None:
        """Delete the group's two keys."""
        await self._transport.command("DEL", *self.redis_keys(group_id), idempotent=True)

    async def commit(
        self, reads: Reads, cleared: set[str], writes: dict[tuple[str, str], Row | None], now: float
    ) -> None:
        """Check and apply the transaction with NATIVE_COMMIT (groups are numbered by their KEYS).

        Raises:
            ConflictError: what the transaction read has changed.
            StateError: on a Cluster, the groups are in different hash slots.
        """
        index: dict[str, int] = {}
        keys: list[str] = []

        def group(name: str) -> int:
            if name not in index:
                index[name] = len(index) + 1
                keys.extend(self.redis_keys(name))
            return index[name]

        args: list[Any] = [repr(now), self._margin_ms]
        args.append(len(reads.rows))
        for (g, k), version in reads.rows.items():
            args += [group(g), k, "" if version is None else version]
        args.append(len(reads.groups))
        for g, seen in reads.groups.items():
            args += [group(g), len(seen)]
            for k, version in seen.items():
                args += [k, version]
        if reads.all_groups is None:
            args.append("0")
        else:
            args += ["1", self._prefix, self._data_pattern(), len(reads.all_groups), *reads.all_groups]
        args.append(len(cleared))
        args += [group(g) for g in sorted(cleared)]
        args.append(len(writes))
        for (g, k), row in writes.items():
            if row is None:
                args += [group(g), k, "", ""]
            else:
                expires = repr(row.expires_at) if row.expires_at is not None else ""
                args += [group(g), k, self._record(row), expires]
        if not keys and reads.all_groups is None:
            return
        if self._cluster and len({key_slot(name.encode()) for name in keys}) > 1:
            raise StateError(
                f"this transaction spans groups in different Redis Cluster hash slots ({sorted(index)}); "
                "on a cluster a transaction must stay within one group; nothing was applied"
            )
        _committed(await self._transport.script(scripts.NATIVE_COMMIT, keys, args, idempotent=False))


def _motia_version(value: str) -> int:
    """The version of a value in Motia's layout: the first 13 hex digits of its SHA-1."""
    return int(hashlib.sha1(value.encode()).hexdigest()[:13], 16)


class MotiaLayout:
    """One string per item, ``<prefix><group>:<key>``, as Motia's Node adapter keeps them."""

    __slots__ = ("_prefix", "_transport")

    def __init__(self, transport: Transport, key_prefix: str) -> None:
        """Keys under ``key_prefix``."""
        self._transport = transport
        self._prefix = key_prefix

    def check_group(self, group_id: str) -> str:
        """``group_id`` if Motia's keys can hold it (no ``:``, nothing a glob would misread)."""
        return codec.check_motia_group(
            group_id, "Motia's Redis layout", "use layout='native' for such groups"
        )

    # -- keys and values ----------------------------------------------------------------------

    def _redis_key(self, group_id: str, key: str) -> str:
        return f"{self._prefix}{group_id}:{key}"

    def _group_pattern(self, group_id: str) -> str:
        """The glob matching every key of the group."""
        return _glob(f"{self._prefix}{group_id}:") + "*"

    def _all_pattern(self) -> str:
        """The glob matching every key under the prefix."""
        return _glob(self._prefix) + "*"

    def _row(self, value: Any, expire_ms: int, name: Any, *, written: bool = False) -> Row:
        """The row of a value read from the key ``name``, under the policy for values Node wrote.

        ``codec.from_node`` gives the text to use (an integer beyond 64-bit is the double Node
        meant); the version stays the hash of the text as stored, which the scripts compare.
        A value that text cannot hold (not JSON, a lone surrogate) makes the read of this key
        raise ``SchemaError`` naming it. ``written``: the value was just replaced or deleted, so
        refusing it would fail a write that landed; it then comes back as its text (a JSON string).
        """
        try:
            stored = text(value)
            group_id, _, key = text(name)[len(self._prefix) :].partition(":")
            decoded = codec.from_node(stored, group_id or "?", key or "?", max_bytes=2**62)
        except (UnicodeDecodeError, InvalidValueError) as exc:
            if not written:
                raise SchemaError(
                    f"Redis key {text(name)!r} (key_prefix {self._prefix!r}) holds "
                    f"{value[:60]!r}, which is not a JSON value this store can hold ({exc}); "
                    "rewrite or delete that key (another tool wrote it?)"
                ) from None
            stored = decoded = orjson.dumps(
                value.decode(errors="replace") if isinstance(value, bytes) else value
            ).decode()
        expires = expire_ms / 1000 if expire_ms > 0 else None
        return Row(decoded, _motia_version(stored), None, None, expires)

    # -- reads --------------------------------------------------------------------------------

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        """The live row of one key (one script: GET and its expiry)."""
        name = self._redis_key(group_id, key)
        value, at = await self._transport.script(
            scripts.MOTIA_GET, [name], [int(now * 1000)], idempotent=True
        )
        return None if value is None else self._row(value, at, name)

    async def group_rows(self, group_id: str, now: float, *, names_only: bool = False) -> dict[str, Row]:
        """The group's live items, in one atomic script (SCAN MATCH and GET on the server).

        ``names_only``: only the keys are wanted, so values are not checked (a key whose value
        cannot be read is still listed by ``live_keys``).
        """
        head = len(self._redis_key(group_id, ""))
        flat = await self._transport.script(
            scripts.MOTIA_GROUP, [], [self._group_pattern(group_id), int(now * 1000)], idempotent=True
        )
        rows: dict[str, Row] = {}
        for index in range(0, len(flat), 3):
            name = text(flat[index])
            rows[name[head:]] = _UNREAD if names_only else self._row(flat[index + 1], flat[index + 2], name)
        return rows

    async def live_keys(self, group_id: str, now: float) -> list[str]:
        """The group's live keys, sorted, without checking their values."""
        return sorted(await self.group_rows(group_id, now, names_only=True))

    async def group_keys(self, group_id: str) -> list[str]:
        """The group's key names, listed with SCAN a page at a time (not atomic, not blocking)."""
        head = len(self._redis_key(group_id, ""))
        names = await self._transport.scan(self._group_pattern(group_id))
        return list({name[head:] for name in names})  # SCAN may return a key twice

    async def rows_of(self, group_id: str, keys: list[str], now: float) -> list[tuple[str, Row]]:
        """The live rows of ``keys`` (in that order) in one script."""
        names = [self._redis_key(group_id, key) for key in keys]
        flat = await self._transport.script(scripts.MOTIA_MGET, names, [int(now * 1000)], idempotent=True)
        return [
            (key, self._row(value, at, name))
            for key, name, value, at in zip(keys, names, flat[::2], flat[1::2], strict=True)
            if value is not None
        ]

    async def groups(self, now: float) -> list[str]:
        """The live groups, in one atomic scan."""
        found = await self._transport.script(
            scripts.MOTIA_GROUPS,
            [],
            [self._all_pattern(), len(self._prefix.encode()), int(now * 1000)],
            idempotent=True,
        )
        return sorted(text(g) for g in found)

    # -- pruning: the layout keeps no write times; Redis's idle time of each key stands for them -

    async def idle_times(self, now: float) -> dict[str, tuple[int, int]]:
        """Each group's live items and their least idle seconds.

        SCAN a page at a time, then OBJECT IDLETIME in scripts of 500 keys: the server is never
        held for the whole keyspace.
        """
        names = sorted(set(await self._transport.scan(self._all_pattern())))
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            idle = await self._transport.script(scripts.MOTIA_IDLE, chunk, [int(now * 1000)], idempotent=True)
            for name, seconds in zip(chunk, idle, strict=True):
                group = self._group_of(name)
                if seconds < 0 or group is None:
                    continue
                count, least = found.get(group, (0, seconds))
                found[group] = (count + 1, min(least, seconds))
        return found

    def _group_of(self, name: str) -> str | None:
        """The group of the item key ``name`` (under the prefix), or None for a key that is not an item."""
        group, colon, key = name[len(self._prefix) :].partition(":")
        return group if group and colon and key else None

    async def counts(self) -> tuple[int, int]:
        """Live items and groups, from the key names alone.

        One scan of the keys under the prefix, ``_INFO_SCAN_PAGE`` keys a page; no value is read
        and no key touched (SCAN skips keys past their expiry, as Redis expires them itself).
        """
        names = set(await self._transport.scan(self._all_pattern(), count=_INFO_SCAN_PAGE))
        groups = Counter(g for name in names if (g := self._group_of(name)))
        return sum(groups.values()), len(groups)

    async def prune_group(self, group_id: str, age: float, now: float) -> tuple[int, int] | None:
        """Remove the group if every live item is idle for more than ``age`` seconds, atomically.

        Returns its live items and least idle seconds, or ``None`` when it stays.
        """
        live, least = await self._transport.script(
            scripts.MOTIA_PRUNE,
            [],
            [self._group_pattern(group_id), repr(age), int(now * 1000)],
            idempotent=False,
        )
        return None if live <= 0 else (int(live), int(least))

    # -- writes -------------------------------------------------------------------------------

    def _outcome(self, write: Write, reply: Any, now: float, value: str, at: str) -> WriteResult:
        """What a MOTIA_WRITE reply says ``write`` did.

        The reply is {1, old value or false} or {0, current value or false}.

        Raises:
            ConflictError: the write's condition failed.
        """
        ok, old = reply
        name = self._redis_key(write.group_id, write.key)
        current = self._row(old, -1, name, written=ok == 1) if old is not None else None
        if ok == 0:
            raise _refuse(write, current, now)
        if write.kind == "delete":
            return (UNCHANGED if current is None else None), current
        expires = int(at) / 1000 if at else None
        return Row(value, _motia_version(value), None, None, expires), current

    async def write(self, write: Write, now: float) -> WriteResult:
        """A set or delete in one script."""
        condition = _condition(write, "{:013x}".format)
        value, at = "", ""
        if write.kind == "set":
            assert write.encoded is not None
            value = write.encoded
            expires_at = write.expires_at(now)
            at = "" if expires_at is None else str(round(expires_at * 1000))
        reply = await self._transport.script(
            scripts.MOTIA_WRITE,
            [self._redis_key(write.group_id, write.key)],
            [condition, int(now * 1000), value, at, "0"],
            idempotent=False,
        )
        if write.kind == "set" and not condition:
            return None  # an unconditional set needs nothing back: the old value is not parsed
        return self._outcome(write, reply, now, value, at)

    async def put_if(self, group_id: str, key: str, current: Row | None, new: Row, now: float) -> bool:
        """Store ``new`` if the key's value is still ``current``'s, keeping its expiry (one script)."""
        condition = f"={current.version:013x}" if current is not None else "="
        ok, _ = await self._transport.script(
            scripts.MOTIA_WRITE,
            [self._redis_key(group_id, key)],
            [condition, int(now * 1000), new.value, "", "1"],
            idempotent=False,
        )
        return bool(ok == 1)

    async def clear(self, group_id: str) -> None:
        """Delete every key of the group, atomically."""
        pattern = self._group_pattern(group_id)
        await self._transport.script(scripts.MOTIA_CLEAR, [], [pattern], idempotent=False)

    async def commit(
        self, reads: Reads, cleared: set[str], writes: dict[tuple[str, str], Row | None], now: float
    ) -> None:
        """Check and apply the transaction with MOTIA_COMMIT (keys are numbered by their KEYS).

        Raises:
            ConflictError: what the transaction read has changed.
        """
        index: dict[str, int] = {}

        def key(g: str, k: str) -> int:
            name = self._redis_key(g, k)
            if name not in index:
                index[name] = len(index) + 1
            return index[name]

        args: list[Any] = [int(now * 1000)]
        args.append(len(reads.rows))
        for (g, k), version in reads.rows.items():
            args += [key(g, k), "" if version is None else f"{version:013x}"]
        args.append(len(reads.groups))
        for g, seen in reads.groups.items():
            args += [self._group_pattern(g), len(seen)]
            for k, version in seen.items():
                args += [key(g, k), f"{version:013x}"]
        if reads.all_groups is None:
            args.append("0")
        else:
            skip = len(self._prefix.encode())
            args += ["1", self._all_pattern(), skip, len(reads.all_groups), *reads.all_groups]
        args.append(len(cleared))
        args += [self._group_pattern(g) for g in sorted(cleared)]
        args.append(len(writes))
        for (g, k), row in writes.items():
            if row is None:
                args += [key(g, k), "", "", "0"]
            else:
                at = str(round(row.expires_at * 1000)) if row.expires_at is not None else ""
                args += [key(g, k), row.value, at, "0"]
        _committed(await self._transport.script(scripts.MOTIA_COMMIT, list(index), args, idempotent=False))

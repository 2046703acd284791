"""PostgresStateAdapter: durable state shared by many instances, on asyncpg.

The table is the SQLite one (``schema.py``, the same Alembic revisions), in a PostgreSQL schema
of its own choosing (``schema="public"`` by default). Every call is one short transaction on a
pooled connection (or on the one connection the caller gave, one call at a time):

* reads: one ``SELECT`` (expired rows are filtered in SQL with the adapter's clock);
* unconditional ``set``s: a set with no other in flight is written at once; sets arriving
  beside others are queued (``sqlite.commit.GroupCommit``, the SQLite adapter's queue), so the
  sets arriving in the same event-loop turns are written by one upsert statement over
  ``unnest`` of their arrays; it continues a live row's version and creation time and starts
  afresh over an expired one (as ``rows.plan_write`` decides). A key set twice in a batch goes
  into the next statement, so each task's writes of a key land in order; a statement that
  fails (a deadlock with a transaction, say) is retried in halves until each failing set
  stands alone, so each set gets its own result; the server failing fails each of the writes not yet written;
* a plain ``delete``: one ``DELETE ... RETURNING``;
* conditional writes and ``update``: ``SELECT ... FOR UPDATE`` (the row lock serialises writers of
  the key across instances), ``rows.plan_write``, the write, ``COMMIT``; a key that does not exist
  yet is inserted with ``ON CONFLICT DO NOTHING``, and a concurrent insert makes it start over;
* ``transaction()``: every row it reads is locked (``FOR UPDATE``) until it ends, so other
  writers of those rows wait for it, as they wait for a SQLite transaction; the commit writes
  the overlay. What row locks cannot cover (keys it saw absent, groups it read whole) is checked
  again at commit under per-group advisory locks; a change there, or a deadlock PostgreSQL
  breaks, is a ``ConflictError``: nothing of the transaction lands, and ``run_transaction``
  retries. (``SERIALIZABLE`` was measured first: its predicate locks on index pages made
  transactions writing different keys of one group fail each other.)

A connection whose call was cancelled or failed goes back to the pool only after asyncpg has
waited for the cancellation and what was left open is rolled back; one whose connection broke,
and one that held a ``transaction()`` of ours, is closed instead, so none returns to the pool
with a transaction open. Server
outages raise ``StoreUnavailableError`` within ``command_timeout`` (or ``connect_timeout``); the
pool reconnects, so the same adapter works again once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlsplit

try:
    import asyncpg
except ImportError as missing:  # pragma: no cover - the dev install has it
    raise ImportError(
        "the PostgreSQL backend needs asyncpg: pip install 'motia-state-sql[postgres]'"
    ) from missing

from .. import codec, options
from ..base import IdleGroup, StateAdapter, StoreInfo, TxStore, acquire_within
from ..errors import ConfigError, ConflictError, StateError, StoreUnavailableError
from ..ops import Filter
from ..redact import redact, scrub, secrets_in
from ..revision import HEAD_REVISION
from ..rows import UNCHANGED, Clock, Row, RowEntry, Write, WriteResult, new_version, plan_write
from ..schema import TABLE
from ..sqlite.commit import GroupCommit, Job, WriteJob
from . import migrate

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_URL", "PG_URL_PARAMETERS", "PostgresStateAdapter"]

DEFAULT_URL: Final = "postgresql://localhost:5432/postgres"
#: The size of the pool an adapter creates unless told otherwise.
DEFAULT_MAX_CONNECTIONS: Final = 10
T = TypeVar("T")

#: Query parameters of a PostgreSQL URL that asyncpg reads itself (libpq's names).
PG_URL_PARAMETERS: Final = frozenset(
    {
        "host",
        "port",
        "dbname",
        "database",
        "user",
        "password",
        "passfile",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "service",
        "application_name",
    }
)

_COLUMNS = "value, version, created_at, updated_at, expires_at"
#: The row is live at the time in parameter ``${}``.
_LIVE_AT = "(expires_at IS NULL OR expires_at > ${})"
_PURGE_BATCH = 1000
#: At most this many sets, or this many bytes of values, go into one batched statement.
_BATCH_ROWS = 1000
_BATCH_BYTES = 4 << 20
#: JSON text holding this escape cannot be read by PostgreSQL's JSON functions: such rows skip
#: the SQL pre-selection and are checked in Python only.
_NUL_ESCAPE = "\\u0000"


def _discard(conn: Any) -> None:
    """Close ``conn`` at once (the pool opens a fresh one); harmless when it is already gone."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def _no_reset(conn: Any) -> None:
    """Our pool's reset: none (asyncpg still rolls back a transaction left open).

    asyncpg's default (``RESET ALL``, ``UNLISTEN *``, ...) costs a round trip per call, and we
    leave no session state: settings are ``SET LOCAL``, locks are transaction-scoped except the
    migration's, whose connection is closed if the migration fails.
    """


class _Pooled:
    """Connections from an asyncpg pool (ours, or one the caller gave).

    From our own pool one connection is kept out (``hold``) for calls that find it free: a call
    at a time, the common case, then skips the pool's acquire and release (a task and a few loop
    turns each). Concurrent calls take the pool's other connections.
    """

    __slots__ = ("held", "hold", "lock", "pool")

    def __init__(self, pool: Any, hold: bool) -> None:
        self.pool = pool
        self.hold = hold
        self.held: Any = None
        self.lock = asyncio.Lock()  # held by the call using ``held``

    async def acquire(self, seconds: float) -> Any:
        if self.hold and not self.lock.locked():
            await self.lock.acquire()  # free: returns at once
            if self.held is not None:
                return self.held
            try:
                async with asyncio.timeout(seconds):
                    self.held = await self.pool.acquire()
            except BaseException:
                self.lock.release()
                raise
            return self.held
        # asyncio.timeout, not acquire(timeout=): asyncpg wraps that in wait_for, a task per call.
        async with asyncio.timeout(seconds):
            return await self.pool.acquire()

    async def release(self, conn: Any, broken: bool = False, dirty: bool = False) -> None:
        """Hand ``conn`` back.

        A ``broken`` one (its connection failed) is closed first; a ``dirty`` one (its call was
        cancelled or failed mid-way) goes back to the pool, whose release waits for the
        cancellation and rolls back what is left open, as a pool does for any caller.
        """
        if conn is self.held:
            try:
                if broken or dirty or _in_transaction(conn):
                    await self.unhold(broken)
            finally:
                self.lock.release()
            return
        if broken:
            _discard(conn)
        await self.pool.release(conn)

    async def unhold(self, broken: bool = False) -> None:
        """Give the held connection back to the pool (closed first when ``broken``)."""
        conn, self.held = self.held, None
        if conn is not None:
            if broken:
                _discard(conn)
            await self.pool.release(conn)


class _OneConnection:
    """The caller's own connection, never closed by us.

    One call or transaction holds it at a time (the others wait up to ``connect_timeout``). After
    a call failed or was cancelled mid-way, it is reset (``Connection.reset()``: the transaction
    rolled back, and session settings and advisory locks reset too), as a pool resets its own.
    """

    __slots__ = ("conn", "label", "lock", "timeout")

    def __init__(self, conn: Any, label: str, timeout: float) -> None:
        self.conn = conn
        self.label = label
        self.timeout = timeout
        self.lock = asyncio.Lock()

    async def acquire(self, seconds: float) -> Any:
        await acquire_within(self.lock, seconds, self.label)
        return self.conn

    async def release(self, conn: Any, broken: bool = False, dirty: bool = False) -> None:
        try:
            if broken or dirty or _in_transaction(conn):
                # A dead connection stays dead: the next call's error says so.
                with contextlib.suppress(Exception):
                    await conn.reset(timeout=self.timeout)
        finally:
            self.lock.release()


def _in_transaction(conn: Any) -> bool:
    try:
        return bool(conn.is_in_transaction())
    except asyncpg.InterfaceError:  # already closed and handed back
        return False


def _row(record: Any) -> Row:
    return Row(record[0], record[1], record[2], record[3], record[4])


class _Sql:
    """The statements of one table (``schema.motia_state``)."""

    __slots__ = (
        "delete_group",
        "delete_row",
        "groups",
        "idle_groups",
        "insert_new",
        "keys",
        "live_row",
        "lock_groups",
        "prune_groups",
        "purge",
        "row_for_update",
        "rows",
        "set",
        "set_one",
        "table",
        "upsert",
    )

    def __init__(self, schema: str) -> None:
        table = self.table = f"{migrate.quote(schema)}.{migrate.quote(TABLE)}"
        one = f"{table} WHERE group_id = $1 AND key = $2"
        self.live_row = f"SELECT {_COLUMNS} FROM {one} AND {_LIVE_AT.format(3)}"
        self.row_for_update = f"SELECT {_COLUMNS} FROM {one} FOR UPDATE"
        self.rows = f"SELECT group_id, key, {_COLUMNS} FROM {table} WHERE {_LIVE_AT.format(1)}"
        self.keys = f"SELECT key FROM {table} WHERE group_id = $1 AND {_LIVE_AT.format(2)} ORDER BY key"
        # A loose index scan: one index probe per group, not one row visit per item.
        self.groups = f"""
WITH RECURSIVE g(id) AS (
  SELECT (SELECT min(group_id) FROM {table} WHERE {_LIVE_AT.format(1)})
  UNION ALL
  SELECT (SELECT min(group_id) FROM {table} WHERE group_id > g.id AND {_LIVE_AT.format(1)})
  FROM g WHERE g.id IS NOT NULL
)
SELECT id FROM g WHERE id IS NOT NULL"""
        # Unconditional sets (see the module docstring): one row (``set_one``), or one row per
        # element of the arrays (``set``, a batch; unnest costs a lone set about 50 us more).
        live = "s.expires_at IS NULL OR s.expires_at > excluded.updated_at"
        rows = """SELECT g, k, v, n, t, t, e
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[], $6::float8[])
  AS u(g, k, v, n, t, e)"""
        self.set = f"""
INSERT INTO {table} AS s (group_id, key, {_COLUMNS})
{rows}
ON CONFLICT (group_id, key) DO UPDATE SET
  value = excluded.value,
  version = CASE WHEN {live} THEN s.version + 1 ELSE excluded.version END,
  created_at = CASE WHEN {live} THEN s.created_at ELSE excluded.created_at END,
  updated_at = excluded.updated_at,
  expires_at = excluded.expires_at"""
        self.set_one = self.set.replace(rows, "VALUES ($1, $2, $3, $4, $5, $5, $6)")
        self.upsert = f"""
INSERT INTO {table} AS s (group_id, key, {_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (group_id, key) DO UPDATE SET
  value = excluded.value, version = excluded.version, created_at = excluded.created_at,
  updated_at = excluded.updated_at, expires_at = excluded.expires_at"""
        # A key seen absent: inserted, or written over a row that expired by the write's time;
        # a live row there (another writer's) is left alone ("INSERT 0 0": a conflict).
        self.insert_new = (
            f"{self.upsert}\nWHERE s.expires_at IS NOT NULL AND s.expires_at <= excluded.updated_at"
        )
        self.delete_row = f"DELETE FROM {one} RETURNING {_COLUMNS}"
        self.delete_group = f"DELETE FROM {table} WHERE group_id = $1"
        # Pruning (see _prune_groups): the idle groups after $2 (NULL: from the start) with the
        # prefix $3 (NULL: any); the batch's rows locked; its groups still idle deleted, returning
        # each live row's updated_at.
        self.idle_groups = f"""
SELECT group_id, count(*), max(updated_at) FROM {table}
WHERE {_LIVE_AT.format(1)} AND ($2::text IS NULL OR group_id > $2)
  AND ($3::text IS NULL OR (group_id >= $3 AND starts_with(group_id, $3)))
GROUP BY group_id HAVING max(updated_at) < $4 ORDER BY group_id LIMIT $5"""
        self.lock_groups = (
            f"SELECT 1 FROM {table} WHERE group_id = ANY($1::text[]) ORDER BY group_id, key FOR UPDATE"
        )
        self.prune_groups = f"""
DELETE FROM {table} AS t WHERE group_id = ANY($1::text[]) AND NOT EXISTS (
  SELECT 1 FROM {table} AS live WHERE live.group_id = t.group_id AND live.updated_at >= $2
    AND (live.expires_at IS NULL OR live.expires_at > $3))
RETURNING group_id, CASE WHEN {_LIVE_AT.format(3)} THEN updated_at END"""
        self.purge = (
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "
            "WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2))"
        )


def _filter_sql(filters: list[Filter], first: int) -> tuple[str, list[Any]]:
    """SQL that pre-selects rows for ``filters``: never drops a row ``ops.matches`` keeps.

    Its parameters are numbered from ``$first``.
    Strings compare in SQL (``"C"`` collation: code point order, as Python); numbers and booleans
    only by their JSON type, left to the exact check; ``neq``/``notContains`` are left out.
    """
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${first + len(params) - 1}"

    parts: list[str] = []
    for flt in filters:
        operation = flt["operation"]
        if operation in ("neq", "notContains") or "\x00" in flt["valueKey"] + flt.get("value", ""):
            continue  # PostgreSQL text cannot hold NUL: left to the exact check
        name = param(flt["valueKey"])
        kind = f"json_typeof(value::json -> {name})"
        text = f"(value::json ->> {name})"
        if operation == "isNull":
            parts.append(f"COALESCE({kind}, 'null') = 'null'")
            continue
        if operation == "isNotNull":
            parts.append(f"COALESCE({kind}, 'null') <> 'null'")
            continue
        given = flt["value"]
        if operation == "startsWith":
            parts.append(f"({kind} = 'string' AND starts_with({text}, {param(given)}))")
        elif operation == "endsWith":
            parts.append(f"({kind} = 'string' AND right({text}, {param(len(given))}) = {param(given)})")
        elif operation == "contains":
            parts.append(f"(({kind} = 'string' AND strpos({text}, {param(given)}) > 0) OR {kind} = 'array')")
        else:
            sql_op = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[operation]
            parts.append(
                f"(({kind} = 'string' AND {text} COLLATE \"C\" {sql_op} {param(given)}) "
                f"OR {kind} IN ('number', 'boolean'))"
            )
    if not parts:
        return "", []
    guard = param(_NUL_ESCAPE)
    return f" AND CASE WHEN strpos(value, {guard}) > 0 THEN true ELSE ({' AND '.join(parts)}) END", params


class PostgresStateAdapter(StateAdapter):
    """State in one PostgreSQL table keyed on ``(group_id, key)``; see the module docstring."""

    kind = "postgres"

    __slots__ = (
        "_commits",
        "_last_purge",
        "_open_lock",
        "_owns_pool",
        "_pool",
        "_purging",
        "_ready",
        "_secrets",
        "_setting",
        "_sql",
        "_url",
        "command_timeout",
        "connect_timeout",
        "max_connections",
        "purge_interval",
        "safe_url",
        "schema",
    )

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        pool: Any = None,
        schema: str = "public",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        purge_interval: float = 60.0,
        read_only: bool = False,
        idle_group_ttl: float | None = None,
        max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = time.time,
    ) -> None:
        """Describe the store; the pool is created (and the schema migrated) on first use.

        Args:
            url: ``postgresql://user:password@host:port/database?sslmode=...`` (libpq's query
                parameters, as asyncpg reads them); ignored when ``pool`` is given.
            pool: an existing ``asyncpg.Pool``, or one ``asyncpg.Connection``, to use instead; it
                is never closed by us. On one connection, calls and transactions take turns.
            schema: the PostgreSQL schema holding the ``motia_state`` table (created if missing).
            max_connections: the size of the pool we create.
            connect_timeout: seconds to wait for a connection (new, or free in the pool).
            command_timeout: seconds a statement may take before ``StoreUnavailableError``.
            purge_interval: seconds between sweeps that reclaim expired rows (bounded batches).
            read_only: open an existing store without writing to it (no migration); writes
                raise ``UnsupportedError``.
            idle_group_ttl: seconds after which a group nobody wrote to is removed, whole, by a
                background prune (``prune_idle_groups``, run every ``idle_group_ttl / 2`` seconds,
                at most hourly); ``None`` (default): never.
            max_value_bytes: largest encoded value accepted.
            clock: time source (seconds since the epoch), injectable for tests.
        """
        super().__init__(
            max_value_bytes=max_value_bytes, clock=clock, read_only=read_only, idle_group_ttl=idle_group_ttl
        )
        self._closed = True  # until every option is checked (see StateAdapter.__del__)
        if type(url) is not str:
            raise ConfigError(f"url must be a postgresql:// URL, got {type(url).__name__}")
        parts = urlsplit(url)
        if pool is None:
            if parts.scheme not in ("postgresql", "postgres"):
                raise ConfigError(f"url must start with postgresql:// or postgres://, got {redact(url)!r}")
            unknown = sorted({name for name, _ in parse_qsl(parts.query)} - PG_URL_PARAMETERS)
            if unknown:
                raise ConfigError(
                    f"unknown parameter(s) {unknown} in {redact(url)!r}; "
                    f"accepted: {sorted(PG_URL_PARAMETERS)}"
                )
        elif not isinstance(pool, asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
            raise ConfigError(
                f"pool must be an asyncpg.Pool or asyncpg.Connection, got {type(pool).__name__}"
            )
        if (
            type(schema) is not str
            or not schema
            or "\x00" in schema
            or len(schema.encode()) > 63
            or schema.startswith("pg_")
        ):
            raise ConfigError(
                "schema must be a PostgreSQL schema name (1-63 bytes, no NUL, not starting with "
                f"pg_, which PostgreSQL reserves), got {schema!r}"
            )
        self.schema = schema
        self.max_connections = options.positive_int("max_connections", max_connections, 1000)
        self.connect_timeout = options.seconds("connect_timeout", connect_timeout, zero=False)
        self.command_timeout = options.seconds("command_timeout", command_timeout, zero=False)
        self.purge_interval = options.seconds("purge_interval", purge_interval)
        self._url = url
        self._secrets = secrets_in(url) if pool is None else ()
        self._pool: _Pooled | _OneConnection | None
        if pool is None:
            self.safe_url = redact(url)
            self._pool = None
        elif isinstance(pool, asyncpg.Pool):
            self.safe_url = "an existing asyncpg pool"
            self._pool = _Pooled(pool, hold=False)  # all of the caller's connections stay shared
        else:
            self.safe_url = "an existing asyncpg connection"
            self._pool = _OneConnection(pool, f"PostgreSQL at {self.safe_url}", self.command_timeout)
        self._owns_pool = pool is None
        self._setting = 0  # unconditional sets in flight
        self._commits = GroupCommit(
            asyncio.Lock(), None, self._commit_sets, self.command_timeout, f"PostgreSQL at {self.safe_url}"
        )
        self._ready = False
        self._open_lock = asyncio.Lock()
        self._sql = _Sql(schema)
        self._last_purge = float("-inf")
        self._purging: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        return f"PostgresStateAdapter(url={self.safe_url!r}, schema={self.schema!r}{mode})"

    def _holds_resources(self) -> bool:
        return self._owns_pool and self._pool is not None

    def _release_now(self) -> None:
        if self._owns_pool and isinstance(self._pool, _Pooled):
            with contextlib.suppress(Exception):
                self._pool.pool.terminate()
            self._pool = None

    # -- connections --------------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> StateError:
        """Our error for a driver's (passwords scrubbed)."""
        text = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
        if isinstance(exc, asyncpg.SerializationError | asyncpg.DeadlockDetectedError):
            return ConflictError(
                f"a concurrent write conflicted with this transaction ({text}); nothing of it was "
                "written (run_transaction retries)"
            )
        if isinstance(
            exc,
            OSError
            | TimeoutError
            | asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.InternalClientError  # a connection the server killed while we used it
            | asyncpg.CannotConnectNowError
            | asyncpg.AdminShutdownError
            | asyncpg.CrashShutdownError
            | asyncpg.QueryCanceledError,
        ) or (isinstance(exc, asyncpg.PostgresError) and str(getattr(exc, "sqlstate", "")).startswith("08")):
            return StoreUnavailableError(
                f"PostgreSQL at {self.safe_url} is unavailable ({text}); nothing was written unless "
                "the call's result said so"
            )
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidCatalogNameError):
            return ConfigError(f"PostgreSQL at {self.safe_url} refused us: {text}")
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return ConfigError(
                f"PostgreSQL at {self.safe_url}: {text}; grant the user rights on schema "
                f"{self.schema!r}, or open the store with read_only=True (?mode=ro)"
            )
        if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
            return StoreUnavailableError(f"PostgreSQL at {self.safe_url} is read-only now ({text})")
        return StateError(f"PostgreSQL at {self.safe_url}: {text}")

    async def _open(self) -> _Pooled | _OneConnection:
        """The pool, created and the schema checked (and migrated) on first use."""
        if self._ready and self._pool is not None:
            return self._pool
        self._check_closed()
        async with self._open_lock:
            if self._ready and self._pool is not None:
                return self._pool
            await self._inspect(
                lambda conn: migrate.prepare(conn, self.schema, self.safe_url, read_only=self.read_only)
            )
            self._ready = True
            assert self._pool is not None
            return self._pool

    async def _inspect(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(connection)`` on a pooled connection, creating the pool (not migrating)."""
        try:
            async with asyncio.timeout(self.connect_timeout + self.command_timeout):
                if self._pool is None:
                    self._pool = _Pooled(
                        await asyncpg.create_pool(
                            self._url,
                            min_size=1,
                            max_size=self.max_connections,
                            timeout=self.connect_timeout,
                            command_timeout=self.command_timeout,
                            max_inactive_connection_lifetime=60.0,
                            server_settings={"application_name": "motia_state_sql"},
                            reset=_no_reset,
                        ),
                        hold=True,
                    )
                pool = self._pool
                conn = await pool.acquire(self.connect_timeout)
                broken = True  # a migration cut short may hold its session lock: close it
                try:
                    result = await work(conn)
                    broken = False
                    return result
                finally:
                    await pool.release(conn, broken)
        except (StateError, asyncio.CancelledError):
            await self._drop_pool()
            raise
        except Exception as exc:
            await self._drop_pool()
            raise self._translate(exc) from None

    async def schema_revision(self) -> str | None:
        """The schema revision stamped in the store (``None``: none yet), without migrating it.

        Raises:
            SchemaError: the version table is damaged; StoreUnavailableError: no server.
        """
        self._check_closed()
        return (await self._inspect(lambda conn: migrate.current_revision(conn, self.schema)))[0]

    async def schema_differences(self) -> list[str]:
        """How the store's table differs from the declared schema (empty: it matches)."""
        self._check_closed()
        return await self._inspect(lambda conn: migrate.differences(conn, self.schema))

    async def _store_info(self, now: float) -> StoreInfo:
        """One pass over the table for counts and times; the table's size from the catalog.

        A read-only adapter not yet opened looks without opening (which refuses a schema behind
        head): such a schema is reported with its revision and what it holds, nothing migrated.
        """

        async def read(conn: Any) -> StoreInfo:
            revision, has_table = await migrate.current_revision(conn, self.schema)
            migrate.check(revision, has_table, self.safe_url)
            if not has_table:
                return StoreInfo(self.kind, 0, 0, 0, None, None, revision, HEAD_REVISION)
            live = _LIVE_AT.format(1)
            items, groups, oldest, newest, expired, size = await conn.fetchrow(
                f"SELECT count(*) FILTER (WHERE {live}), count(DISTINCT group_id) FILTER (WHERE {live}), "
                f"min(updated_at) FILTER (WHERE {live}), max(updated_at) FILTER (WHERE {live}), "
                f"count(*) FILTER (WHERE NOT {live}), pg_total_relation_size($2::regclass) "
                f"FROM {self._sql.table}",
                now,
                self._sql.table,
            )
            files = ((f"{self.schema}.{TABLE}", size),)
            return StoreInfo(
                self.kind, items, groups, expired, oldest, newest, revision, HEAD_REVISION, files
            )

        if self._ready or not self.read_only:
            async with self._connection() as conn:
                return await read(conn)
        return await self._inspect(read)

    async def _drop_pool(self) -> None:
        if self._owns_pool and isinstance(self._pool, _Pooled):
            pool, self._pool = self._pool, None
            pool.pool.terminate()

    async def _acquire(self) -> tuple[_Pooled | _OneConnection, Any]:
        """The pool (opened) and a connection from it, within ``connect_timeout``."""
        pool = await self._open()
        try:
            return pool, await pool.acquire(self.connect_timeout)
        except StateError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection for one call; closed instead of reused when the call failed mid-way.

        Raises:
            StoreUnavailableError: no connection within ``connect_timeout``, or the server failed.
        """
        pool, conn = await self._acquire()
        broken = dirty = False
        try:
            yield conn
        except StateError:
            # Ours (a failed condition, say): the statement's own transaction has ended already;
            # only a connection left inside one needs a reset.
            dirty = _in_transaction(conn)
            raise
        except BaseException as exc:
            # Cancelled, or failed mid-statement. An error the server reported, or a cancellation
            # (asyncpg cancels the statement and waits for that before the connection's next
            # use), leaves the connection usable once what is left open is rolled back; any
            # other failure closes it (the pool opens a fresh one when needed). Closing on every
            # cancellation would make a caller that cancels often reconnect on every call.
            dirty = True
            broken = not isinstance(exc, asyncpg.PostgresError | asyncio.CancelledError)
            if isinstance(exc, Exception):
                raise self._translate(exc) from None
            raise
        finally:
            await pool.release(conn, broken, dirty)

    async def __aenter__(self) -> PostgresStateAdapter:
        self._check_open()
        await self._open()
        return self

    async def _close(self) -> None:
        await self._commits.drain()
        if self._purging is not None:
            with contextlib.suppress(BaseException):
                await self._purging
        self._ready = False
        if self._owns_pool and isinstance(self._pool, _Pooled):
            held = self._pool
            pool, self._pool = held.pool, None
            try:
                await held.unhold()
                async with asyncio.timeout(self.command_timeout):
                    await pool.close()
            except BaseException:
                pool.terminate()
                raise

    # -- reads --------------------------------------------------------------------------------

    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        async with self._connection() as conn:
            found = await conn.fetchrow(self._sql.live_row, group_id, key, now)
        return None if found is None else _row(found)

    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        sql, params = _rows_sql(self._sql, group_id, now, filters)
        async with self._connection() as conn:
            records = await conn.fetch(sql, *params)
        return [(r[0], r[1], Row(r[2], r[3], r[4], r[5], r[6])) for r in records]

    async def _read_keys(self, group_id: str, now: float) -> list[str]:
        async with self._connection() as conn:
            return [r[0] for r in await conn.fetch(self._sql.keys, group_id, now)]

    async def _read_groups(self, now: float) -> list[str]:
        async with self._connection() as conn:
            return [r[0] for r in await conn.fetch(self._sql.groups, now)]

    # -- writes -------------------------------------------------------------------------------

    async def _write(self, write: Write, now: float) -> WriteResult:
        sql = self._sql
        if write.kind == "set" and write.if_version is None and not write.if_absent:
            job = WriteJob(write, now)
            # A set with no other in flight is written at once; sets arriving beside others queue
            # and go out together.
            self._setting += 1
            try:
                await (self._set_rows([job]) if self._setting == 1 else self._commits.write(job))
            finally:
                self._setting -= 1
            self._maybe_purge(now)
            return None
        if write.kind == "delete" and write.if_version is None and not write.if_absent:
            async with self._connection() as conn:
                found = await conn.fetchrow(sql.delete_row, write.group_id, write.key)
            current = None if found is None else _row(found)
            if current is not None and not current.live(now):
                current = None
            return (UNCHANGED if current is None else None), current
        while True:
            async with self._connection() as conn, conn.transaction():
                found = await conn.fetchrow(sql.row_for_update, write.group_id, write.key)
                current = None if found is None else _row(found)
                if current is not None and not current.live(now):
                    current = None
                plan = plan_write(write, current, now)
                if plan is UNCHANGED:
                    return plan, current
                if plan is None:
                    await conn.execute(sql.delete_row, write.group_id, write.key)
                elif found is None:
                    status = await conn.execute(sql.insert_new, write.group_id, write.key, *plan)  # type: ignore[misc]
                    if status.endswith(" 0"):
                        continue  # inserted meanwhile by another writer: lock it and plan again
                else:
                    await conn.execute(sql.upsert, write.group_id, write.key, *plan)  # type: ignore[misc]
            self._maybe_purge(now)
            return plan, current

    async def _commit_sets(self, jobs: list[Job]) -> list[Any]:
        """Write a batch of unconditional sets; each one's result (``None``) or error, in order.

        Each chunk of the batch (no key twice, bounded in rows and bytes) is one statement. A chunk
        that fails is split in halves, and those retried, until each failing set stands alone (a
        few statements, not one per set): only a set that fails alone gets an error. Once the
        server is unavailable, every set not yet written fails with that error.
        """
        sets = [job for job in jobs if isinstance(job, WriteJob)]
        assert len(sets) == len(jobs), "only sets are queued here: results go by position"
        results: list[Any] = []
        down: list[StoreUnavailableError] = []
        for chunk in _chunks(sets):
            results += await self._set_or_split(chunk, down)
        return results

    async def _set_or_split(self, jobs: list[WriteJob], down: list[StoreUnavailableError]) -> list[Any]:
        if down:
            return [StoreUnavailableError(*down[0].args) for _ in jobs]
        try:
            await self._set_rows(jobs)
        except StoreUnavailableError as exc:
            down.append(exc)
            return [StoreUnavailableError(*exc.args) for _ in jobs]
        except StateError as exc:
            if len(jobs) == 1:
                return [exc]
            half = len(jobs) // 2
            return [
                *await self._set_or_split(jobs[:half], down),
                *await self._set_or_split(jobs[half:], down),
            ]
        return [None] * len(jobs)

    async def _set_rows(self, jobs: list[WriteJob]) -> None:
        """One statement writing ``jobs`` (distinct keys), in key order.

        In key order, concurrent batches lock rows in one order and never deadlock each other.
        """
        ordered = sorted(jobs, key=lambda job: (job.write.group_id, job.write.key))
        if len(ordered) == 1:
            write, now = ordered[0].write, ordered[0].now
            async with self._connection() as conn:
                await conn.execute(
                    self._sql.set_one,
                    write.group_id,
                    write.key,
                    write.encoded,
                    new_version(None),
                    now,
                    write.expires_at(now),
                )
            return
        async with self._connection() as conn:
            await conn.execute(
                self._sql.set,
                [job.write.group_id for job in ordered],
                [job.write.key for job in ordered],
                [job.write.encoded for job in ordered],
                [new_version(None) for _ in ordered],
                [job.now for job in ordered],
                [job.write.expires_at(job.now) for job in ordered],
            )

    async def _clear(self, group_id: str, now: float) -> None:
        async with self._connection() as conn:
            await conn.execute(self._sql.delete_group, group_id)

    # -- pruning idle groups ------------------------------------------------------------------

    async def _idle_groups(
        self, cutoff: float, prefix: str | None, after: str | None, limit: int, now: float
    ) -> list[IdleGroup]:
        """One ``GROUP BY`` over the primary key: the groups whose newest live row predates ``cutoff``."""
        async with self._connection() as conn:
            records = await conn.fetch(self._sql.idle_groups, now, after, prefix, cutoff, limit)
        return [IdleGroup(r[0], r[1], r[2]) for r in records]

    async def _prune_groups(self, groups: list[str], cutoff: float, now: float) -> list[IdleGroup]:
        """The whole batch in one transaction and one ``DELETE``, each group only if still idle.

        The group's rows are locked first (``FOR UPDATE``: writers of them committed before, or
        wait), so the ``DELETE``, whose ``NOT EXISTS`` sees what was committed when it starts,
        finds every write that landed before it; a row inserted after it recreates its group with
        only the new item. The commit's advisory group locks come next, in the order a
        transaction takes its locks (rows as it reads, groups at commit): a prune waiting for a
        transaction's rows holds no group lock that transaction's commit needs.
        """
        if not groups:
            return []
        sql = self._sql
        async with self._connection() as conn, conn.transaction(isolation="read_committed"):
            await conn.execute(sql.lock_groups, groups)
            await _lock_groups(conn, sql.table, set(groups))
            records = await conn.fetch(sql.prune_groups, groups, cutoff, now)
        live: dict[str, list[float]] = {}
        for group_id, updated_at in records:
            if updated_at is not None:  # an expired row goes with its group, uncounted
                live.setdefault(group_id, []).append(updated_at)
        return [IdleGroup(g, len(times), max(times)) for g, times in sorted(live.items())]

    def _maybe_purge(self, now: float) -> None:
        """Reclaim expired rows in a bounded batch, at most every ``purge_interval`` (off the call)."""
        if now - self._last_purge < self.purge_interval or self._purging is not None:
            return
        self._last_purge = now
        self._purging = asyncio.get_running_loop().create_task(self._purge(now))

    async def _purge(self, now: float) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(self._sql.purge, now, _PURGE_BATCH)
        except StateError:
            pass  # the next sweep catches up; a failing server shows in the calls themselves
        finally:
            self._purging = None

    # -- transactions -------------------------------------------------------------------------

    async def _begin(self) -> TxStore:
        pool, conn = await self._acquire()
        transaction = conn.transaction(isolation="read_committed")
        try:
            await transaction.start()
        except BaseException as exc:
            await pool.release(conn, True)
            if isinstance(exc, Exception):
                raise self._translate(exc) from None
            raise
        return _PostgresTx(self, pool, conn, transaction)


def _chunks(jobs: list[WriteJob]) -> list[list[WriteJob]]:
    """``jobs`` cut, in order, into statements of distinct keys.

    A key already in a chunk starts the next one (a statement cannot write a row twice), as do
    ``_BATCH_ROWS`` rows or ``_BATCH_BYTES`` of values.
    """
    chunks: list[list[WriteJob]] = []
    keys: set[tuple[str, str]] = set()
    size = 0
    for job in jobs:
        key = (job.write.group_id, job.write.key)
        length = len(job.write.encoded or "")
        if not chunks or key in keys or len(chunks[-1]) >= _BATCH_ROWS or size + length > _BATCH_BYTES:
            chunks.append([])
            keys.clear()
            size = 0
        chunks[-1].append(job)
        keys.add(key)
        size += length
    return chunks


def _rows_sql(sql: _Sql, group_id: str | None, now: float, filters: list[Filter]) -> tuple[str, list[Any]]:
    if group_id is None:
        where, params = _filter_sql(filters, 2)
        return f"{sql.rows}{where} ORDER BY group_id, key", [now, *params]
    where, params = _filter_sql(filters, 3)
    return f"{sql.rows} AND group_id = $2{where} ORDER BY key", [now, group_id, *params]


class _PostgresTx(TxStore):
    """One transaction on a connection held from start to end (see ``commit`` for how it holds).

    Rows it reads are locked (``FOR UPDATE``) until it ends. What it saw absent, and the
    membership of the groups it read, are checked again at commit, under an advisory lock per
    group it read or writes (taken in one order, so commits of transactions never deadlock on
    them); a change there is a ``ConflictError`` and nothing of the transaction lands.
    """

    __slots__ = (
        "_absent",
        "_adapter",
        "_all",
        "_conn",
        "_groups",
        "_pool",
        "_present",
        "_released",
        "_transaction",
    )

    def __init__(
        self, adapter: PostgresStateAdapter, pool: _Pooled | _OneConnection, conn: Any, transaction: Any
    ) -> None:
        self._adapter = adapter
        self._pool = pool
        self._conn = conn
        self._transaction = transaction
        self._released = False
        self._present: set[tuple[str, str]] = set()  # read and locked
        self._absent: set[tuple[str, str]] = set()  # read as absent (or expired)
        self._groups: dict[str, set[str]] = {}  # groups read whole: their keys then
        self._all: set[tuple[str, str]] | None = None  # every row, when all groups were read

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[Any]:
        if self._released:
            raise StateError("this transaction's connection was lost; nothing of it was written")
        try:
            yield self._conn
        except BaseException as exc:
            # Failed or cancelled mid-transaction: nothing of it may land, and its connection
            # must never go back to the pool with the transaction open.
            await self._discard()
            if isinstance(exc, Exception) and not isinstance(exc, StateError):
                raise self._adapter._translate(exc) from None
            raise

    async def _discard(self) -> None:
        if not self._released:
            self._released = True
            await self._pool.release(self._conn, True)

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        async with self._using() as conn:
            found = await conn.fetchrow(f"{self._adapter._sql.live_row} FOR UPDATE", group_id, key, now)
        if found is None:
            self._absent.add((group_id, key))
            return None
        self._present.add((group_id, key))
        return _row(found)

    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        sql, params = _rows_sql(self._adapter._sql, group_id, now, [])
        async with self._using() as conn:
            records = await conn.fetch(f"{sql} FOR UPDATE", *params)
        entries = [(r[0], r[1], Row(r[2], r[3], r[4], r[5], r[6])) for r in records]
        seen = {(g, k) for g, k, _ in entries}
        self._present |= seen
        if group_id is None:
            self._all = seen
        else:
            self._groups[group_id] = {k for _, k in seen}
        return entries

    def _was_absent(self, group_id: str, key: str) -> bool:
        """Whether this transaction saw the key absent: then it must still be absent at commit."""
        if (group_id, key) in self._absent:
            return True
        if (group_id, key) in self._present:
            return False
        if group_id in self._groups:
            return True  # not among the group's keys when it was read
        return self._all is not None

    async def commit(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> None:
        sql = self._adapter._sql
        now = self._adapter._clock()
        groups = {g for g, _ in self._absent} | set(self._groups) | {g for g, _ in writes} | cleared
        async with self._using() as conn:
            # Every commit holds the store's lock shared, a transaction that read all groups
            # holds it alone; then the group locks, in one order.
            await _lock_groups(conn, sql.table, groups, alone=self._all is not None)
            await self._validate(conn, now)
            for group_id in cleared:
                await conn.execute(sql.delete_group, group_id)
            deletes = [(g, k) for (g, k), row in writes.items() if row is None]
            if deletes:
                await conn.executemany(sql.delete_row, deletes)
            upserts: list[tuple[Any, ...]] = []
            inserts: list[tuple[Any, ...]] = []
            for (g, k), row in writes.items():
                if row is not None:
                    fresh = g not in cleared and self._was_absent(g, k)
                    (inserts if fresh else upserts).append((g, k, *row))
            if upserts:
                await conn.executemany(sql.upsert, upserts)
            for args in inserts:
                if (await conn.execute(sql.insert_new, *args)).endswith(" 0"):
                    raise _conflict(f"{args[0]!r}/{args[1]!r} was created by another writer meanwhile")
            await self._transaction.commit()
        self._released = True
        await self._pool.release(self._conn)

    async def _validate(self, conn: Any, now: float) -> None:
        """What the transaction saw absent is still absent; no group it read gained a key."""
        sql = self._adapter._sql
        if self._absent:
            await self._none_created(conn, "IN", self._absent, now)
        for group_id, keys in self._groups.items():
            found = await conn.fetchrow(
                f"SELECT key FROM {sql.table} WHERE group_id = $1 AND NOT (key = ANY($2::text[])) "
                "AND (expires_at IS NULL OR expires_at > $3) LIMIT 1",
                group_id,
                sorted(keys),
                now,
            )
            if found is not None:
                raise _conflict(f"group {group_id!r} gained {found[0]!r} from another writer meanwhile")
        if self._all is not None:
            await self._none_created(conn, "NOT IN", self._all, now)

    async def _none_created(self, conn: Any, how: str, pairs: set[tuple[str, str]], now: float) -> None:
        """No live row is (``how="IN"``) or is not (``"NOT IN"``) among ``pairs``, else a conflict."""
        ordered = sorted(pairs)
        found = await conn.fetchrow(
            f"SELECT group_id, key FROM {self._adapter._sql.table} WHERE {_LIVE_AT.format(3)} "
            f"AND (group_id, key) {how} (SELECT * FROM unnest($1::text[], $2::text[])) LIMIT 1",
            [g for g, _ in ordered],
            [k for _, k in ordered],
            now,
        )
        if found is not None:
            raise _conflict(f"{found[0]!r}/{found[1]!r} was created by another writer meanwhile")

    async def rollback(self) -> None:
        if self._released:
            return
        try:
            async with asyncio.timeout(self._adapter.command_timeout):
                await self._transaction.rollback()
        except Exception:
            # The server or the connection failed: nothing of the transaction landed either way,
            # and the block's own exception (if any) is the one to see.
            await self._discard()
            return
        except BaseException:
            await self._discard()
            raise
        self._released = True
        await self._pool.release(self._conn)


async def _lock_groups(conn: Any, table: str, groups: set[str], alone: bool = False) -> None:
    """Take the store's advisory lock (shared, or ``alone``), then each group's, in one order.

    Held to the end of the transaction by every commit and prune, so the checks a commit makes
    under them see no group change meanwhile, and two of them never deadlock on these locks.
    """
    store_lock = "pg_advisory_xact_lock" if alone else "pg_advisory_xact_lock_shared"
    await conn.execute(f"SELECT {store_lock}($1)", _lock_id(table))
    if groups:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(id)) FROM unnest($1::bigint[]) AS id",
            sorted(_lock_id(f"{table}\n{g}") for g in groups),
        )


def _lock_id(name: str) -> int:
    """A signed 64-bit advisory lock id for ``name``, the same in every process."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _conflict(what: str) -> ConflictError:
    return ConflictError(
        f"this transaction read what changed before it could commit: {what}; nothing of it was "
        "written (run_transaction retries)"
    )

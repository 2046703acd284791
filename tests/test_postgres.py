"""PostgreSQL backend: schema and migrations, URLs and passwords, pools, outages, cancellation.

The contract suite, the state machines and the hostile inputs run over PostgreSQL too (conftest's
backends); this file holds what only PostgreSQL has. Tests that stop or break the server start
a cluster of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from benchmarks.postgres_server import PostgresServer, throwaway_server
from motia_state_sql import (
    ConfigError,
    InvalidKeyError,
    PostgresStateAdapter,
    SchemaError,
    StateError,
    StoreUnavailableError,
    UnsupportedError,
    increment,
    open_state,
)
from motia_state_sql.schema import HEAD_REVISION, PG_VERSION_TABLE, TABLE, state_table

from .conftest import FakeClock
from .test_cli import _in_process, _one_line_error


def _schema() -> str:
    return f"st_{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def _raw(url: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A cluster of this module's own: tests stop, restart and break it."""
    with throwaway_server() as server:
        yield server


# -- schema and migrations ---------------------------------------------------------------------


async def test_migrations_build_exactly_the_declared_schema(postgres_url: str) -> None:
    schema = _schema()
    async with PostgresStateAdapter(postgres_url, schema=schema) as store:
        await store.set("g", "k", 1)
    async with _raw(postgres_url) as conn:
        columns = await conn.fetch(
            "SELECT column_name, data_type, is_nullable, collation_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            schema,
            TABLE,
        )
        types = {"TEXT": "text", "BIGINTEGER": "bigint", "FLOAT": "double precision"}
        expected = [
            (
                column.name,
                types[type(column.type).__name__.upper()],
                "YES" if column.nullable else "NO",
                "C" if column.name in ("group_id", "key") else None,
            )
            for column in state_table.columns
        ]
        assert [tuple(row) for row in columns] == expected
        primary = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass($1) AND contype = 'p'",
            f'"{schema}".{TABLE}',
        )
        assert primary == "PRIMARY KEY (group_id, key)"
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes "
            "WHERE schemaname = $1 AND indexname = 'ix_motia_state_expires_at'",
            schema,
        )
        assert index is not None
        assert "WHERE (expires_at IS NOT NULL)" in index
        stamp = await conn.fetch(f'SELECT version_num FROM "{schema}".{PG_VERSION_TABLE}')
        assert [row[0] for row in stamp] == [HEAD_REVISION]


async def test_instances_opening_at_once_migrate_once(postgres_url: str) -> None:
    schema = _schema()
    stores = [PostgresStateAdapter(postgres_url, schema=schema) for _ in range(8)]
    try:
        await asyncio.gather(*(store.__aenter__() for store in stores))
        await asyncio.gather(*(store.set("g", f"k{n}", n) for n, store in enumerate(stores)))
        assert await stores[0].keys("g") == [f"k{n}" for n in range(8)]
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def _newer_revision(url: str, schema: str) -> None:
    async with PostgresStateAdapter(url, schema=schema) as store:
        await store.set("g", "k", "kept")
    async with _raw(url) as conn:
        await conn.execute(f'UPDATE "{schema}".{PG_VERSION_TABLE} SET version_num = $1', "zz_future")


async def _someone_elses_table(url: str, schema: str) -> None:
    async with _raw(url) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".{TABLE} (id int PRIMARY KEY, name text)')
        await conn.execute(f"INSERT INTO \"{schema}\".{TABLE} VALUES (1, 'theirs')")


@pytest.mark.parametrize(
    ("make", "match", "kept"),
    [
        (
            _newer_revision,
            r"zz_future.*newer version",
            [
                (f"SELECT version_num FROM {{schema}}.{PG_VERSION_TABLE}", [("zz_future",)]),
                (f"SELECT value FROM {{schema}}.{TABLE}", [('"kept"',)]),
            ],
        ),
        (
            _someone_elses_table,
            "someone else's table",
            [
                (f"SELECT * FROM {{schema}}.{TABLE}", [(1, "theirs")]),
                (f"SELECT to_regclass('{{schema}}.{PG_VERSION_TABLE}')", [(None,)]),
            ],
        ),
    ],
    ids=["newer revision", "someone else's table"],
)
async def test_a_schema_not_ours_is_refused_untouched(
    postgres_url: str,
    make: Callable[[str, str], Awaitable[None]],
    match: str,
    kept: list[tuple[str, list[tuple[Any, ...]]]],
) -> None:
    schema = _schema()
    await make(postgres_url, schema)
    with pytest.raises(SchemaError, match=match):
        async with PostgresStateAdapter(postgres_url, schema=schema):
            pass
    async with _raw(postgres_url) as conn:
        for query, rows in kept:
            assert [tuple(r) for r in await conn.fetch(query.format(schema=f'"{schema}"'))] == rows


async def test_the_applications_own_alembic_history_is_left_alone(postgres_url: str) -> None:
    schema = _schema()
    async with _raw(postgres_url) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'CREATE TABLE "{schema}".alembic_version (version_num varchar(32) PRIMARY KEY)')
        await conn.execute(f"INSERT INTO \"{schema}\".alembic_version VALUES ('app_rev_42')")
        await conn.execute(f'CREATE TABLE "{schema}".orders (id int)')
    async with PostgresStateAdapter(postgres_url, schema=schema) as store:
        await store.set("g", "k", 1)
    async with _raw(postgres_url) as conn:
        assert await conn.fetchval(f'SELECT version_num FROM "{schema}".alembic_version') == "app_rev_42"


async def test_read_only_never_migrates_and_refuses_writes(postgres_url: str) -> None:
    schema = _schema()
    with pytest.raises(SchemaError, match="open it once without read_only"):
        async with PostgresStateAdapter(postgres_url, schema=schema, read_only=True):
            pass
    async with _raw(postgres_url) as conn:
        assert await conn.fetchval("SELECT to_regnamespace($1)", schema) is None  # nothing created
    async with PostgresStateAdapter(postgres_url, schema=schema) as store:
        await store.set("g", "k", "v")
    async with open_state(f"{postgres_url}?schema={schema}&mode=ro") as reader:
        assert await reader.get("g", "k") == "v"
        with pytest.raises(UnsupportedError, match="read-only"):
            await reader.set("g", "k", "w")


async def test_a_database_that_is_not_utf8_is_refused(postgres_url: str) -> None:
    name = f"latin_{uuid.uuid4().hex[:8]}"
    async with _raw(postgres_url) as conn:
        await conn.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        )
    try:
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
        with pytest.raises(ConfigError, match="encoding is LATIN1"):
            async with PostgresStateAdapter(url):
                pass
    finally:
        async with _raw(postgres_url) as conn:
            await conn.execute(f"DROP DATABASE {name}")


# -- URLs, options, passwords, pools -------------------------------------------------------------


async def test_urls_take_both_schemes_our_options_and_libpq_parameters(postgres_url: str) -> None:
    schema = _schema()
    tail = postgres_url.split("://", 1)[1]
    async with open_state(f"postgres://{tail}?schema={schema}&sslmode=disable&max_connections=3") as store:
        assert isinstance(store, PostgresStateAdapter)
        assert (store.schema, store.max_connections) == (schema, 3)
        await store.set("g", "k", [1, 2])
    async with open_state(f"postgresql://{tail}?schema={schema}&application_name=mine") as store:
        assert await store.get("g", "k") == [1, 2]
    with pytest.raises(InvalidKeyError, match="unknown parameter 'sslmdoe'"):
        open_state(f"postgresql://{tail}?sslmdoe=require")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['sslmdoe'\]"):
        PostgresStateAdapter(f"postgresql://{tail}?sslmdoe=require")
    with pytest.raises(ConfigError, match="max_connections"):
        open_state(f"postgresql://{tail}?max_connections=0")
    with pytest.raises(ConfigError, match="command_timeout"):
        PostgresStateAdapter(postgres_url, command_timeout=float("nan"))
    with pytest.raises(ConfigError, match="schema"):
        PostgresStateAdapter(postgres_url, schema="")
    with pytest.raises(ConfigError, match="postgresql://"):
        PostgresStateAdapter("mysql://host/db")


async def test_passwords_never_show(own_server: PostgresServer) -> None:
    url = own_server.password_url
    store = PostgresStateAdapter(url, schema=_schema())
    assert own_server.password not in repr(store)
    assert "motia:***@" in repr(store)
    async with store:
        await store.set("g", "k", 1)  # the password works
    wrong = url.replace(own_server.password, "not-the-" + own_server.password)
    with pytest.raises(ConfigError) as caught:
        async with PostgresStateAdapter(wrong, schema=_schema()):
            pass
    assert "password authentication failed" in str(caught.value)
    assert own_server.password not in str(caught.value)
    with pytest.raises(InvalidKeyError) as unknown:
        open_state(url + "?bogus=1")
    assert own_server.password not in str(unknown.value)


async def test_an_existing_pool_is_used_and_never_closed(postgres_url: str) -> None:
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        async with PostgresStateAdapter(pool=pool, schema=_schema()) as store:
            await store.set("g", "k", {"a": 1})
            assert await store.get("g", "k") == {"a": 1}
            assert "an existing asyncpg pool" in repr(store)
        assert not pool.is_closing()
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
    with pytest.raises(ConfigError, match=r"asyncpg\.Pool or asyncpg\.Connection"):
        PostgresStateAdapter(pool="not a pool")


async def test_one_connection_serves_calls_and_transactions_in_turn(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        store = PostgresStateAdapter(pool=conn, schema=_schema(), connect_timeout=3.0)
        async with store:
            assert "an existing asyncpg connection" in repr(store)

            async def add(n: int) -> None:
                async def work(tx: Any) -> None:
                    await tx.set("acct", "total", (await tx.get("acct", "total") or 0) + n)
                    await tx.set("log", f"k{n}", n)

                await store.run_transaction(work)

            # Transactions, updates, sets and reads all at once on the one connection.
            await store.set("acct", "total", 0)
            await asyncio.gather(
                *(add(n) for n in range(1, 21)),
                *(store.update("acct", "hits", [increment("n", 1)]) for _ in range(20)),
                *(store.set("many", f"k{n}", n) for n in range(200)),
                *(store.get("acct", "total") for _ in range(20)),
            )
            assert await store.get("acct", "total") == sum(range(1, 21))
            assert await store.get("acct", "hits") == {"n": 20}
            assert await store.keys("log") == sorted(f"k{n}" for n in range(1, 21))
            assert await store.get_group("many") == [n for _, n in sorted((f"k{n}", n) for n in range(200))]

            async def fail_in_block() -> None:
                async with store.transaction() as tx:
                    await tx.set("rolled", "back", 1)
                    raise RuntimeError("block failed")

            with pytest.raises(RuntimeError):
                await fail_in_block()
            assert await store.get("rolled", "back") is None
            # A call behind a transaction waits at most connect_timeout (3 s here: calls of the gather
            # above wait their turn as long on a busy machine) for the connection.
            entered, done = asyncio.Event(), asyncio.Event()

            async def hold() -> None:
                async with store.transaction() as tx:
                    await tx.set("held", "k", 1)
                    entered.set()
                    await done.wait()

            holder = asyncio.create_task(hold())
            await entered.wait()
            with pytest.raises(StoreUnavailableError, match="stayed locked"):
                await store.get("held", "k")
            done.set()
            await holder
            assert await store.get("held", "k") == 1
            # A call cancelled mid-statement leaves the connection usable.
            slow = asyncio.create_task(store.update("held", "k", [increment("n", 1)]))
            await asyncio.sleep(0)
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            await store.set("after", "k", "fine")
            assert await store.get("after", "k") == "fine"
        assert not conn.is_closed()
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_concurrent_sets_share_statements_and_keep_their_own_results(postgres_url: str) -> None:
    schema = _schema()
    async with PostgresStateAdapter(postgres_url, schema=schema) as store:
        await store.set("g", "warm", 0)
        # Count the statements that reach the table (a statement-level trigger), and refuse one
        # key (a CHECK constraint) so that one set of a batch fails alone.
        async with _raw(postgres_url) as conn:
            await conn.execute(
                f"""
                CREATE TABLE "{schema}".statements (n bigint NOT NULL);
                INSERT INTO "{schema}".statements VALUES (0);
                CREATE FUNCTION "{schema}".count_statement() RETURNS trigger LANGUAGE plpgsql AS
                  $$ BEGIN UPDATE "{schema}".statements SET n = n + 1; RETURN NULL; END $$;
                CREATE TRIGGER count_statement AFTER INSERT ON "{schema}".{TABLE}
                  FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".count_statement();
                ALTER TABLE "{schema}".{TABLE} ADD CONSTRAINT not_this_key CHECK (key <> 'refused')
                """
            )

            async def writer(task: int) -> None:
                for n in range(5):  # one task's writes of one key land in its order
                    await store.set("order", f"t{task}", n)

            keys = [f"k{n}" for n in range(2000)]
            results = await asyncio.gather(
                *(store.set("g", key, {"key": key}) for key in keys),
                store.set("g", "refused", 1),
                *(store.set("g", "twice", n) for n in range(3)),  # one key, one batch
                *(writer(task) for task in range(20)),
                return_exceptions=True,
            )
            statements = await conn.fetchval(f'SELECT n FROM "{schema}".statements')
        assert [r for r in results if isinstance(r, BaseException)] == [results[len(keys)]]
        assert isinstance(results[len(keys)], StateError)
        assert "not_this_key" in str(results[len(keys)])
        assert results[: len(keys)] == [{"key": key} for key in keys]
        assert await store.keys("g") == sorted([*keys, "twice", "warm"])
        assert await store.get("g", "refused") is None
        assert await store.get("g", "twice") in (0, 1, 2)
        assert await store.get_group("order") == [4] * 20
        # 2 104 sets: far fewer statements (the refused set's batch is retried in halves).
        assert statements < 200, statements


async def test_expired_rows_are_reclaimed_in_bounded_sweeps(postgres_url: str) -> None:
    schema = _schema()
    clock = FakeClock()
    async with PostgresStateAdapter(postgres_url, schema=schema, clock=clock, purge_interval=0) as store:
        async with store.transaction() as tx:
            for n in range(1500):
                await tx.set("ttl", f"k{n}", n, ttl=1)
        await store.set("keep", "k", "forever")  # a sweep that finds nothing expired yet
        await asyncio.sleep(0.2)
        clock.advance(2)
        assert await store.keys("ttl") == []  # invisible at once
        await store.set("keep", "k2", "x")  # a write starts a sweep
        await asyncio.sleep(0.2)
        async with _raw(postgres_url) as conn:
            left = await conn.fetchval(f'SELECT count(*) FROM "{schema}".{TABLE} WHERE group_id = $1', "ttl")
        assert left == 500  # one batch of 1000 per sweep
        await store.set("keep", "k3", "x")
        await asyncio.sleep(0.2)
        async with _raw(postgres_url) as conn:
            assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".{TABLE}') == 3


# -- outages, killed connections, cancellation -------------------------------------------------


async def test_a_stopped_server_fails_fast_and_the_same_adapter_recovers(own_server: PostgresServer) -> None:
    async with PostgresStateAdapter(
        own_server.url, schema=_schema(), connect_timeout=2, command_timeout=2
    ) as store:
        await store.set("g", "k", "before")
        await asyncio.to_thread(own_server.stop, "immediate")
        try:
            for call in (store.get("g", "k"), store.set("g", "k", "during"), store.update("g", "n", [])):
                started = time.monotonic()
                with pytest.raises(StoreUnavailableError, match="unavailable") as caught:
                    await call
                assert time.monotonic() - started < 5
                assert "asyncpg" not in type(caught.value).__module__
            with pytest.raises(StoreUnavailableError):
                async with store.transaction() as tx:
                    await tx.set("g", "k", "never")
        finally:
            await asyncio.to_thread(own_server.start)
            await asyncio.to_thread(own_server.wait_until_up)
        for _ in range(2):  # a pooled connection may still be dead: at most one call fails
            with contextlib.suppress(StoreUnavailableError):
                await store.get("g", "k")
        assert await store.get("g", "k") == "before"
        await store.set("g", "k", "after")
        assert await store.get("g", "k") == "after"


async def test_a_restart_mid_load_leaves_no_half_written_group(own_server: PostgresServer) -> None:
    async with PostgresStateAdapter(
        own_server.url, schema=_schema(), connect_timeout=2, command_timeout=2
    ) as store:
        outcomes: dict[int, str] = {}
        stop, restarted, recovered = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def load(worker: int) -> None:
            n = worker
            while not stop.is_set():
                try:
                    async with store.transaction() as tx:
                        for k in range(5):
                            await tx.set(f"t{n}", f"k{k}", n)
                    outcomes[n] = "done"
                    if restarted.is_set():
                        recovered.set()
                except StoreUnavailableError:
                    outcomes[n] = "unavailable"
                    await asyncio.sleep(0.01)
                n += 8

        workers = [asyncio.create_task(load(w)) for w in range(8)]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(own_server.stop, "fast")  # rolls back the sessions in flight
        await asyncio.sleep(0.3)
        await asyncio.to_thread(own_server.start)
        await asyncio.to_thread(own_server.wait_until_up)
        restarted.set()
        await asyncio.wait_for(recovered.wait(), 20)  # the same adapter commits again
        stop.set()
        await asyncio.gather(*workers)
        assert "unavailable" in outcomes.values()
        for group in await store.list_groups():
            assert await store.get_group(group) == [int(group[1:])] * 5, group  # all or nothing
        done = {f"t{n}" for n, what in outcomes.items() if what == "done"}
        assert done <= set(await store.list_groups())


async def test_killed_connections_leave_no_half_written_transaction(postgres_url: str) -> None:
    schema = _schema()
    async with (
        PostgresStateAdapter(postgres_url, schema=schema, max_connections=4) as store,
        _raw(postgres_url) as admin,
    ):
        outcomes: dict[int, str] = {}

        async def transfer(n: int) -> None:
            try:
                async with store.transaction() as tx:
                    for k in range(10):
                        await tx.set(f"t{n}", f"k{k}", n)
                        await asyncio.sleep(0)
                outcomes[n] = "done"
            except StoreUnavailableError:
                outcomes[n] = "unavailable"

        async def killer() -> int:
            killed = 0
            for _ in range(20):
                await asyncio.sleep(0.005)
                killed += len(
                    await admin.fetch(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'motia_state_sql' AND pid <> pg_backend_pid()"
                    )
                )
            return killed

        kills = asyncio.create_task(killer())
        try:
            for start in range(0, 200, 10):
                await asyncio.gather(*(transfer(n) for n in range(start, start + 10)))
        finally:
            killed = await kills
        assert killed > 0
        assert "unavailable" in outcomes.values()
        assert "done" in outcomes.values()
        for _ in range(2):
            with contextlib.suppress(StoreUnavailableError):
                await store.list_groups()
        groups = await store.list_groups()
        for group in groups:
            assert await store.get_group(group) == [int(group[1:])] * 10  # all or nothing
        assert {f"t{n}" for n, what in outcomes.items() if what == "done"} <= set(groups)
        await store.set("after", "k", 1)
        assert await store.get("after", "k") == 1


async def test_cancelled_calls_never_leave_a_transaction_open(postgres_url: str) -> None:
    async with (
        PostgresStateAdapter(postgres_url, schema=_schema(), max_connections=3) as store,
        _raw(postgres_url) as admin,
    ):

        async def transaction(n: int) -> None:
            async with store.transaction() as tx:
                await tx.get("g", "n")
                await asyncio.sleep(0.001)
                await tx.set("g", f"t{n}", n)

        for n in range(150):
            kind = n % 3
            call = (
                transaction(n)
                if kind == 0
                else store.update("g", "n", [increment("n")])
                if kind == 1
                else store.set("g", "k", n, if_absent=n % 2 == 0)
            )
            task = asyncio.ensure_future(call)
            await asyncio.sleep([0, 0.0005, 0.001, 0.002][n % 4])
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert (
                not task.done()
                or task.cancelled()
                or task.exception() is None
                or isinstance(task.exception(), StateError)
            )
        await asyncio.sleep(0.1)
        stuck = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'motia_state_sql' "
            "AND state LIKE 'idle in transaction%'"
        )
        assert stuck == 0
        # Every connection the pool hands out is usable, and the store still works.
        await asyncio.gather(*(store.update("g", "m", [increment("n")]) for _ in range(20)))
        assert (await store.get("g", "m")) == {"n": 20}


# -- the command line --------------------------------------------------------------------------


def test_cli_db_commands_manage_a_postgres_schema(own_server: PostgresServer, tmp_path: Path) -> None:
    cli = _in_process(tmp_path)
    schema = _schema()
    url = f"{own_server.password_url}?schema={schema}"
    shown = f"postgresql://motia:***@127.0.0.1:{own_server.port}/postgres (schema {schema})"
    assert cli("db", "current", "--url", url).stdout.startswith("none (head is")
    _one_line_error(cli("db", "check", "--url", url), 1, "revision none", "db upgrade")
    upgraded = f"Upgraded {shown} from no schema to {HEAD_REVISION}.\n"
    assert cli("db", "upgrade", "--url", url).stdout == upgraded
    assert cli("db", "upgrade", "--url", url).stdout == f"{shown} is already at head ({HEAD_REVISION}).\n"
    assert cli("db", "current", "--url", url).stdout == f"{HEAD_REVISION} (head)\n"
    assert cli("db", "current", "--url", url, "--json").json() == {
        "url": f"postgresql://motia:***@127.0.0.1:{own_server.port}/postgres",
        "schema": schema,
        "revision": HEAD_REVISION,
        "head": HEAD_REVISION,
        "at_head": True,
    }
    assert "head, current" in cli("db", "history", "--url", url).stdout
    matches = f"{shown} is at head ({HEAD_REVISION}) and matches the schema.\n"
    assert cli("db", "check", "--url", url).stdout == matches
    own_server.psql(f'DROP INDEX "{schema}".ix_motia_state_expires_at')
    own_server.psql(f'ALTER TABLE "{schema}".{TABLE} ADD COLUMN note text')
    differs = cli("db", "check", "--url", url)
    _one_line_error(differs, 1, "schema differs", "ix_motia_state_expires_at", "note")
    own_server.psql(f"UPDATE \"{schema}\".{PG_VERSION_TABLE} SET version_num = '9999'")
    _one_line_error(cli("db", "upgrade", "--url", url), 2, "'9999'", "newer version")
    _one_line_error(cli("db", "check", "--url", url), 1, "revision 9999")
    for command in ("current", "check", "upgrade", "history"):
        assert own_server.password not in cli("db", command, "--url", url).stderr


def test_cli_reads_writes_and_copies_to_and_from_postgres(postgres_url: str, tmp_path: Path) -> None:
    cli = _in_process(tmp_path)
    url = f"{postgres_url}?schema={_schema()}"
    assert cli("set", "orders", "o-1", '{"total": 9.5, "status": "paid"}', "--url", url).code == 0
    assert cli("set", "orders", "o-2", '{"total": 12}', "--ttl", "300", "--url", url).code == 0
    assert cli("get", "orders", "o-1", "--url", url).json() == {"total": 9.5, "status": "paid"}
    assert cli("groups", "--url", url, "--json").json() == ["orders"]
    copied = cli("copy", url, "sqlite:///copy.db").stdout
    assert copied.startswith("Copied 2 items in 1 group from postgresql://")
    back = f"{postgres_url}?schema={_schema()}"
    assert cli("copy", "sqlite:///copy.db", back).code == 0
    assert cli("export", "--url", back).stdout == cli("export", "--url", url).stdout
    _one_line_error(cli("copy", url, url), 2, "same store")

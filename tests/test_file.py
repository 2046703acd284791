"""The legacy File adapter: Motia's exact bytes, corrupt files, atomic writes and the file lock.

The generic contract runs over this backend in test_contract.py; this module covers what only
``motia.state.json`` has: the byte format Node's ``JSON.stringify(data, null, 2)`` writes, files
written by Motia, refusing corrupt files, temp file + rename, and locking across processes.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from motia_state_sql import (
    ConflictError,
    FileStateAdapter,
    InvalidKeyError,
    InvalidOperationError,
    SchemaError,
    StoreUnavailableError,
    UnsupportedError,
    increment,
    set_op,
)
from motia_state_sql.file import FILE_NAME, dump_motia_json, read_motia_json

Call = Callable[[], Awaitable[Any]]


@pytest.fixture
async def adapter(tmp_path: Path) -> AsyncIterator[FileStateAdapter]:
    async with FileStateAdapter(tmp_path, durable=False) as store:
        yield store


def state_file(folder: Path) -> Path:
    return folder / FILE_NAME


def stray_files(folder: Path) -> list[str]:
    """Everything in the folder but the state file and its lock file (temp files, above all)."""
    return sorted(n for n in os.listdir(folder) if n not in (FILE_NAME, FILE_NAME + ".lock"))


def stamp(path: Path) -> tuple[int, int, bytes]:
    """Inode, mtime and bytes: any rewrite through temp file + rename changes the inode."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, path.read_bytes()


# -- 1. the bytes are exactly what Node's JSON.stringify(data, null, 2) writes ------------------

TRICKY_TEXT = 'tab\there\nnew "quoted" back\\slash \x01\x1f\x7f \u2028 naïve'

# Checked once against `node`: each entry is "<group>:<key>": JSON.stringify(value); the file is
# JSON.stringify(data, null, 2) — 2-space indent, '": "', control characters as \u00XX, other
# text raw (U+007F and U+2028 included), no trailing newline.
EXPECTED_LINES = [
    "{",
    r'  "zeta:first": "{\"id\":2}",',
    r'  "users:é中😀": "\"tab\\there\\nnew \\\"quoted\\\" back\\\\slash \\u0001\\u001f'
    + "\x7f \u2028 naïve"
    + r'\"",',
    r'  "say:q\"uo\\te": "{\"k\\\"ey\":{\"é\":[null,false,0,\"\",{},[]]}}",',
    r'  "nums:floats": "[0.1,-2.5,1e+21,1e-7,3]",',
    r'  "nulls:n": "null",',
    r'  "trace:a:b:c": "\"moved to the end\""',
    "}",
]
EXPECTED = "\n".join(EXPECTED_LINES).encode()


async def test_file_bytes_match_node_json_stringify(tmp_path: Path, adapter: FileStateAdapter) -> None:
    await adapter.set("zeta", "first", {"id": 1, "items": [{"sku": "A-1", "qty": 2}], "paid": True})
    await adapter.set("trace", "a:b:c", "colons stay in the key")
    await adapter.set("users", "é中😀", TRICKY_TEXT)
    await adapter.set("say", 'q"uo\\te', {'k"ey': {"é": [None, False, 0, "", {}, []]}})
    await adapter.set("nums", "floats", [0.1, -2.5, 1e21, 1e-7, 3])
    await adapter.set("nulls", "n", None)
    await adapter.set("tmp", "gone", 1)
    assert await adapter.delete("tmp", "gone") == 1
    await adapter.set("zeta", "first", {"id": 2})  # a re-set key keeps its place
    await adapter.delete("trace", "a:b:c")
    await adapter.set("trace", "a:b:c", "moved to the end")  # deleted then re-set: goes last
    assert state_file(tmp_path).read_bytes() == EXPECTED
    # and it reads back exactly
    assert await adapter.get("users", "é中😀") == TRICKY_TEXT
    assert await adapter.get("nums", "floats") == [0.1, -2.5, 1e21, 1e-7, 3]
    item = await adapter.get_item("nulls", "n")
    assert item is not None
    assert item.value is None
    assert await adapter.list_groups() == ["nulls", "nums", "say", "trace", "users", "zeta"]


async def test_update_keeps_the_entry_in_place(tmp_path: Path, adapter: FileStateAdapter) -> None:
    await adapter.set("a", "1", {"n": 1})
    await adapter.set("b", "2", "x")
    await adapter.update("a", "1", [increment("n", 2), set_op("s", "é")])
    await adapter.update("c", "3", [increment("n")])
    assert state_file(tmp_path).read_bytes() == (
        b'{\n  "a:1": "{\\"n\\":3,\\"s\\":\\"\xc3\xa9\\"}",\n  "b:2": "\\"x\\"",\n  "c:3": "{\\"n\\":1}"\n}'
    )


async def test_clear_removes_only_that_group_and_keeps_order(
    tmp_path: Path, adapter: FileStateAdapter
) -> None:
    await adapter.set("orders", "1", 1)
    await adapter.set("order", "1", 2)
    await adapter.set("orders", "2", 3)
    await adapter.set("order", "2", 4)
    await adapter.clear("order")
    assert state_file(tmp_path).read_bytes() == b'{\n  "orders:1": "1",\n  "orders:2": "3"\n}'


async def test_empty_state_writes_empty_object(tmp_path: Path, adapter: FileStateAdapter) -> None:
    await adapter.set("g", "k", 1)
    await adapter.delete("g", "k")
    assert state_file(tmp_path).read_bytes() == b"{}"
    await adapter.set("g", "k", 1)
    await adapter.set("g", "j", 2)
    await adapter.clear("g")
    assert state_file(tmp_path).read_bytes() == b"{}"
    assert await adapter.list_groups() == []


async def test_writes_that_change_nothing_do_not_rewrite(tmp_path: Path, adapter: FileStateAdapter) -> None:
    await adapter.set("g", "k", 1)
    before = stamp(state_file(tmp_path))
    assert await adapter.delete("g", "absent") is None
    await adapter.clear("never-existed")
    async with adapter.transaction() as tx:
        assert await tx.get("g", "k") == 1
    assert stamp(state_file(tmp_path)) == before


async def test_reads_and_no_op_writes_do_not_create_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / ".motia"
    async with FileStateAdapter(folder, durable=False) as store:
        assert await store.get("g", "k") is None
        assert await store.list_groups() == []
        assert not folder.exists()
        await store.delete("g", "k")
        assert not state_file(folder).exists()
        await store.set("g", "k", "v")
    assert state_file(folder).read_bytes() == b'{\n  "g:k": "\\"v\\""\n}'


# -- 2. files written by Motia ------------------------------------------------------------------

MOTIA_LINES = [
    "{",
    r'  "orders:order-2": "null",',
    r'  "orders:order-1": "{\"id\":1,\"total\":9.5,\"tags\":[\"a\",\"b\"],\"note\":\"say \\\"hi\\\"\"}",',
    r'  "order:only": "\"text\"",',
    r'  "trace:a:b": "[1,2]",',
    r'  "trace:a": "{}",',
    r'  "flow-é:ключ": "false",',
    r'  "orders:order-10": "0"',
    "}",
]
MOTIA_FILE = "\n".join(MOTIA_LINES).encode()
ORDER_1 = {"id": 1, "total": 9.5, "tags": ["a", "b"], "note": 'say "hi"'}


@pytest.fixture
def motia_folder(tmp_path: Path) -> Path:
    state_file(tmp_path).write_bytes(MOTIA_FILE)
    return tmp_path


async def test_reads_a_file_written_by_motia(motia_folder: Path) -> None:
    async with FileStateAdapter(motia_folder, durable=False) as store:
        assert await store.get("orders", "order-1") == ORDER_1
        assert await store.get("orders", "order-10") == 0
        assert await store.get("order", "only") == "text"
        assert await store.get("trace", "a:b") == [1, 2]
        assert await store.get("trace", "a") == {}
        assert await store.get("flow-é", "ключ") is False
        stored_null = await store.get_item("orders", "order-2")
        assert stored_null is not None
        assert stored_null.value is None
        assert (stored_null.version, stored_null.created_at, stored_null.updated_at) == (None, None, None)
        assert stored_null.expires_at is None
        assert await store.get_item("orders", "order-3") is None
        assert await store.get_group("orders") == [ORDER_1, 0, None]
        assert await store.keys("orders") == ["order-1", "order-10", "order-2"]
        assert await store.get_group("order") == ["text"]
        assert await store.keys("order") == ["only"]
        assert await store.get_group("ord") == []
        assert await store.get_group("trace") == [{}, [1, 2]]
        assert await store.keys("trace") == ["a", "a:b"]
        assert await store.get("trace", "a:b:c") is None
        assert await store.list_groups() == ["flow-é", "order", "orders", "trace"]
        assert [(i.group_id, i.key, i.value) for i in await store.items()] == [
            ("flow-é", "ключ", False),
            ("order", "only", "text"),
            ("orders", "order-1", ORDER_1),
            ("orders", "order-10", 0),
            ("orders", "order-2", None),
            ("trace", "a", {}),
            ("trace", "a:b", [1, 2]),
        ]
    assert state_file(motia_folder).read_bytes() == MOTIA_FILE


async def test_writing_keeps_motia_entries_byte_for_byte(motia_folder: Path) -> None:
    async with FileStateAdapter(motia_folder, durable=False) as store:
        await store.set("new", "k", {"x": 1})
        assert state_file(motia_folder).read_bytes() == MOTIA_FILE[:-2] + (b',\n  "new:k": "{\\"x\\":1}"\n}')
        await store.delete("new", "k")
        assert state_file(motia_folder).read_bytes() == MOTIA_FILE
        await store.clear("order")
        assert await store.keys("orders") == ["order-1", "order-10", "order-2"]
        await store.set("order", "only", "text")
    lines = [*MOTIA_LINES[:3], *MOTIA_LINES[4:-2], MOTIA_LINES[-2] + ",", r'  "order:only": "\"text\""', "}"]
    assert state_file(motia_folder).read_bytes() == "\n".join(lines).encode()


def test_read_and_dump_motia_json_round_trip(motia_folder: Path) -> None:
    entries = read_motia_json(state_file(motia_folder))
    assert entries[:4] == [
        ("orders", "order-2", "null"),
        ("orders", "order-1", r'{"id":1,"total":9.5,"tags":["a","b"],"note":"say \"hi\""}'),
        ("order", "only", '"text"'),
        ("trace", "a:b", "[1,2]"),
    ]
    assert [g for g, _, _ in entries] == ["orders", "orders", "order", "trace", "trace", "flow-é", "orders"]
    assert dump_motia_json(entries) == MOTIA_FILE
    assert dump_motia_json([]) == b"{}"


# -- 3. corrupt files: SchemaError naming the file and the entry, file untouched ---------------

CORRUPT: list[tuple[str, bytes, str | None]] = [
    ("empty file", b"", None),
    ("only whitespace", b" \n", None),
    ("truncated", b'{\n  "g:k": "1",\n  "g:j": "{\\"a\\":', None),
    ("json array", b'[\n  "g:k"\n]', None),
    ("json null", b"null", None),
    ("json string", b'"g:k"', None),
    ("not utf-8", b'{\n  "g:k": "\\"\xff\\""\n}', None),
    ("number value", b'{\n  "g:ok": "1",\n  "g:k": 1\n}', "'g:k'"),
    ("object value", b'{\n  "g:k": {"a": 1}\n}', "'g:k'"),
    ("null value", b'{\n  "g:k": null\n}', "'g:k'"),
    ("entry without colon", b'{\n  "g:ok": "1",\n  "gk": "1"\n}', "'gk'"),
    ("empty group", b'{\n  ":k": "1"\n}', "':k'"),
    ("empty key", b'{\n  "g:": "1"\n}', "'g:'"),
]


def every_call(store: FileStateAdapter) -> list[tuple[str, Call]]:
    async def tx_read() -> None:
        async with store.transaction() as tx:
            await tx.get("g", "k")

    async def tx_write_only() -> None:
        async with store.transaction() as tx:
            await tx.clear("other")

    return [
        ("get", lambda: store.get("g", "k")),
        ("get other group", lambda: store.get("other", "x")),
        ("get_item", lambda: store.get_item("g", "k")),
        ("get_group", lambda: store.get_group("g")),
        ("keys", lambda: store.keys("other")),
        ("list_groups", store.list_groups),
        ("items", store.items),
        ("items of a group", lambda: store.items("other")),
        ("set", lambda: store.set("other", "x", 1)),
        ("set if_absent", lambda: store.set("other", "x", 1, if_absent=True)),
        ("delete", lambda: store.delete("g", "k")),
        ("delete absent", lambda: store.delete("other", "x")),
        ("update", lambda: store.update("other", "x", [increment("n")])),
        ("clear", lambda: store.clear("g")),
        ("clear absent group", lambda: store.clear("other")),
        ("transaction read", tx_read),
        ("transaction write only", tx_write_only),
    ]


@pytest.mark.parametrize(
    ("content", "entry"), [(c, e) for _, c, e in CORRUPT], ids=[n for n, _, _ in CORRUPT]
)
async def test_corrupt_file_is_refused_and_left_untouched(
    tmp_path: Path, content: bytes, entry: str | None
) -> None:
    path = state_file(tmp_path)
    path.write_bytes(content)
    before = stamp(path)
    async with FileStateAdapter(tmp_path, durable=False, lock_timeout=1.0) as store:
        for name, call in every_call(store):
            with pytest.raises(SchemaError) as info:
                await call()
            message = str(info.value)
            assert str(path) in message, (name, message)
            if entry is not None:
                assert entry in message, (name, message)
            assert stamp(path) == before, name
        assert stray_files(tmp_path) == []
        with pytest.raises(SchemaError) as info:
            read_motia_json(path)
        assert str(path) in str(info.value)
        # The lock was released after every failure: once repaired, the file works again.
        path.write_bytes(b'{\n  "g:k": "1"\n}')
        async with FileStateAdapter(tmp_path, durable=False, lock_timeout=0.5) as other:
            await other.set("g", "j", 2)
        assert await store.get_group("g") == [2, 1]
        await store.update("g", "k", [set_op(None, 5)])
    assert path.read_bytes() == b'{\n  "g:k": "5",\n  "g:j": "2"\n}'


# One entry our rules cannot hold fails alone (the policy for values Node wrote, codec.from_node):
# reads of it raise SchemaError naming the file and the entry; every other entry stays readable.
# (entry as Node writes it, the entry's name in messages, what the message says)
BAD_ENTRIES: list[tuple[str, bytes, str, str]] = [
    # JSON.stringify({t: "\u{1F600}".substring(0, 1)}) is {"t":"\ud83d"}
    ("lone surrogate", b'"g:k": "{\\"t\\":\\"\\\\ud83d\\"}"', "'g:k'", "lone surrogate (\\ud83d)"),
    ("lone surrogate raw", b'"g:k": "\\"\\ud83d\\""', "'g:k'", "lone surrogate"),
    ("integer beyond a double", b'"g:k": "1' + b"0" * 400 + b'"', "'g:k'", "beyond the range of a double"),
    ("inner text not json", b'"g:k": "{\\"a\\":"', "'g:k'", "not valid JSON"),
    ("inner text undefined", b'"g:k": "undefined"', "'g:k'", "not valid JSON"),
    ("inner text NaN", b'"g:k": "NaN"', "'g:k'", "not valid JSON"),
    ("NUL in key", b'"g:k\\u0000": "1"', r"'g:k\x00'", "NUL"),
    ("lone surrogate in key", b'"g:k\\udc00": "1"', r"'g:k\udc00'", "surrogate"),
]


@pytest.mark.parametrize(
    ("entry", "name", "reason"), [c[1:] for c in BAD_ENTRIES], ids=[c[0] for c in BAD_ENTRIES]
)
async def test_an_entry_that_cannot_be_held_fails_alone(
    tmp_path: Path, entry: bytes, name: str, reason: str
) -> None:
    path = state_file(tmp_path)
    bad_value = b"\\u0000" not in entry and b"udc00" not in entry
    content = b'{\n  "g:ok": "1",\n  ' + entry + b',\n  "other:x": "{\\"n\\":10000000000000000000}"\n}'
    path.write_bytes(content)
    async with FileStateAdapter(tmp_path, durable=False) as store:
        failing: list[Call] = [
            lambda: store.get_group("g"),
            lambda: store.items("g"),
            store.items,
        ]
        if bad_value:
            failing += [lambda: store.get("g", "k"), lambda: store.get_item("g", "k")]
            failing += [lambda: store.update("g", "k", [increment("n")])]
        else:
            failing += [store.list_groups, lambda: store.keys("g")]
        for call in failing:
            with pytest.raises(SchemaError) as info:
                await call()
            message = str(info.value)
            assert all(part in message for part in (str(path), name, reason)), message
            assert "fix or remove this entry" in message
        # Every other entry stays readable; a number beyond 64-bit is the double Node meant.
        assert await store.get("g", "ok") == 1
        assert await store.get("other", "x") == {"n": 1e19}
        assert type((await store.get("other", "x"))["n"]) is float
        assert await store.get_group("other") == [{"n": 1e19}]
        assert [i.key for i in await store.items("other")] == ["x"]
        assert (await store.update("other", "x", [increment("n", 2048)])).new_value == {"n": 1e19 + 2048}
        if bad_value:
            assert await store.keys("g") == ["k", "ok"]
            assert await store.list_groups() == ["g", "other"]
        # Writing elsewhere keeps the bad entry as Node wrote it, byte for byte.
        await store.set("other", "y", 2)
        assert entry in path.read_bytes()
        if bad_value:  # the item can be overwritten, or deleted (which returns its text)
            await store.set("g", "k", "fixed")
            assert await store.get_group("g") == ["fixed", 1]
            path.write_bytes(content)
            deleted = await store.delete("g", "k")
            assert type(deleted) is str
            assert deleted
            assert await store.get_group("g") == [1]
    path.write_bytes(content)
    with pytest.raises(SchemaError) as info:  # read_motia_json (import) is all or nothing
        read_motia_json(path)
    assert name in str(info.value)
    assert reason in str(info.value)


async def test_file_corrupted_after_use_is_not_served_from_memory(tmp_path: Path) -> None:
    path = state_file(tmp_path)
    async with FileStateAdapter(tmp_path, durable=False) as store:
        await store.set("g", "k", 1)
        assert await store.get("g", "k") == 1
        path.write_bytes(b'{\n  "g:k": "1",\n  "g:j": ')  # e.g. Motia crashed mid-write
        before = path.read_bytes()
        for _, call in every_call(store):
            with pytest.raises(SchemaError, match="not valid JSON"):
                await call()
        assert path.read_bytes() == before


# -- 4. atomic writes ---------------------------------------------------------------------------


async def test_many_writes_leave_no_temp_files(tmp_path: Path) -> None:
    async with FileStateAdapter(tmp_path, durable=True) as store:
        for i in range(40):
            await store.set("g", f"k{i % 7}", {"i": i})
            await store.update("counter", "c", [increment("n")])
            if i % 3 == 0:
                await store.delete("g", f"k{(i + 1) % 7}")
            if i % 10 == 0:
                async with store.transaction() as tx:
                    await tx.set("tx", str(i), i)
                    await tx.clear("g")
        with pytest.raises(ConflictError):
            await store.set("counter", "c", 0, if_absent=True)
        with pytest.raises(InvalidOperationError):
            await store.update("g", "k1", [increment("i"), set_op("s", "x"), increment("s")])

        async def failing_transaction() -> None:
            async with store.transaction() as tx:
                await tx.set("tx", "never", 1)
                raise RuntimeError("rollback")

        with pytest.raises(RuntimeError, match="rollback"):
            await failing_transaction()
    assert stray_files(tmp_path) == []
    async with FileStateAdapter(tmp_path) as fresh:
        assert await fresh.get("counter", "c") == {"n": 40}
        assert await fresh.keys("tx") == ["0", "10", "20", "30"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o666], ids=oct)
async def test_existing_permission_bits_are_kept(tmp_path: Path, mode: int) -> None:
    path = state_file(tmp_path)
    async with FileStateAdapter(tmp_path, durable=False) as store:
        await store.set("g", "k", 1)
        path.chmod(mode)
        writes: list[Call] = [
            lambda: store.set("g", "k", 2),
            lambda: store.update("g", "k", [set_op(None, 3)]),
            lambda: store.delete("g", "k"),
            lambda: store.set("h", "k", 1),
            lambda: store.clear("h"),
        ]
        for write in writes:
            inode = path.stat().st_ino
            await write()
            assert path.stat().st_ino != inode  # really replaced, not written in place
            assert stat.S_IMODE(path.stat().st_mode) == mode
        async with store.transaction() as tx:
            await tx.set("t", "k", 1)
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stray_files(tmp_path) == []


# -- 5. no lost updates across processes --------------------------------------------------------

COUNTER_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from motia_state_sql import FileStateAdapter, increment

    async def main() -> None:
        async with FileStateAdapter(sys.argv[1], durable=False) as store:
            print("ready", flush=True)
            sys.stdin.readline()
            for _ in range(100):
                await store.update("counter", "c", [increment("n")])

    asyncio.run(main())
    """
)

TRANSFER_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from motia_state_sql import FileStateAdapter

    async def main() -> None:
        source, target, amount = sys.argv[2], sys.argv[3], int(sys.argv[4])
        async with FileStateAdapter(sys.argv[1], durable=False) as store:
            print("ready", flush=True)
            sys.stdin.readline()
            for _ in range(50):
                async with store.transaction() as tx:
                    balance = await tx.get("bank", source)
                    await tx.set("bank", source, balance - amount)
                    await asyncio.sleep(0)
                    await tx.set("bank", target, await tx.get("bank", target) + amount)

    asyncio.run(main())
    """
)


async def run_children(
    script: str, argvs: list[list[str]], while_running: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Start every child, release them at once, and wait (running ``while_running`` meanwhile)."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if line != b"ready\n":
                _, err = await proc.communicate()
                pytest.fail(f"child did not start: {err.decode()}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        waiting = [asyncio.ensure_future(proc.communicate()) for proc in procs]
        if while_running is not None:
            while not all(task.done() for task in waiting):
                await while_running()
        results = await asyncio.wait_for(asyncio.gather(*waiting), 60)
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()


async def test_increments_from_two_processes_are_not_lost(tmp_path: Path) -> None:
    await run_children(COUNTER_CHILD, [[str(tmp_path)], [str(tmp_path)]])
    async with FileStateAdapter(tmp_path) as store:
        assert await store.get("counter", "c") == {"n": 200}
    assert stray_files(tmp_path) == []


async def test_transfers_from_two_processes_keep_the_total(tmp_path: Path) -> None:
    async with FileStateAdapter(tmp_path, durable=False) as store:
        await store.set("bank", "a", 1000)
        await store.set("bank", "b", 1000)
        totals: list[int] = []

        async def watch() -> None:
            totals.append(sum(await store.get_group("bank")))
            await asyncio.sleep(0.002)

        await run_children(
            TRANSFER_CHILD, [[str(tmp_path), "a", "b", "1"], [str(tmp_path), "b", "a", "3"]], watch
        )
        assert totals
        assert set(totals) == {2000}
        # 50 x 1 from a to b and 50 x 3 from b to a, none lost
        assert await store.get("bank", "a") == 1100
        assert await store.get("bank", "b") == 900
    assert stray_files(tmp_path) == []


# -- 6. what the format cannot hold -------------------------------------------------------------


async def test_ttl_and_if_version_are_refused_and_write_nothing(
    tmp_path: Path, adapter: FileStateAdapter
) -> None:
    path = state_file(tmp_path)
    await adapter.set("g", "k", {"n": 1})
    before = stamp(path)
    refused: list[tuple[Call, str]] = [
        (lambda: adapter.set("g", "k", 2, ttl=5), "ttl"),
        (lambda: adapter.set("g", "new", 2, ttl=0.5), "ttl"),
        (lambda: adapter.set("g", "k", 2, if_version=1), "if_version"),
        (lambda: adapter.set("g", "new", 2, if_version=1), "if_version"),
        (lambda: adapter.delete("g", "k", if_version=1), "if_version"),
        (lambda: adapter.update("g", "k", [increment("n")], if_version=1), "if_version"),
    ]
    for call, word in refused:
        with pytest.raises(UnsupportedError) as info:
            await call()
        message = str(info.value)
        assert "motia.state.json" in message
        assert word in message
        assert "cannot" in message
        assert "'g'" in message
    assert stamp(path) == before
    async with adapter.transaction() as tx:
        with pytest.raises(UnsupportedError, match="ttl"):
            await tx.set("g", "k", 3, ttl=1)
        with pytest.raises(UnsupportedError, match="if_version"):
            await tx.update("g", "k", [increment("n")], if_version=1)
        await tx.set("h", "k", 1)
    assert await adapter.get("g", "k") == {"n": 1}
    assert await adapter.get("h", "k") == 1


async def test_refused_ttl_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / ".motia"
    async with FileStateAdapter(folder, durable=False) as store:
        with pytest.raises(UnsupportedError, match=r"motia\.state\.json format cannot store a ttl"):
            await store.set("g", "k", 1, ttl=60)
    assert not folder.exists()


async def test_if_absent_works(tmp_path: Path, adapter: FileStateAdapter) -> None:
    path = state_file(tmp_path)
    assert await adapter.set("g", "k", "a", if_absent=True) == "a"
    before = stamp(path)
    with pytest.raises(ConflictError, match="absent"):
        await adapter.set("g", "k", "b", if_absent=True)
    with pytest.raises(ConflictError, match="absent"):
        await adapter.update("g", "k", [set_op("x", 1)], if_absent=True)
    with pytest.raises(ConflictError, match="absent"):
        await adapter.delete("g", "k", if_absent=True)
    assert stamp(path) == before
    result = await adapter.update("g", "new", [increment("n")], if_absent=True)
    assert (result.old_value, result.new_value) == (None, {"n": 1})
    assert await adapter.delete("g", "gone", if_absent=True) is None
    assert path.read_bytes() == b'{\n  "g:k": "\\"a\\"",\n  "g:new": "{\\"n\\":1}"\n}'


async def test_group_ids_with_colon_are_refused(tmp_path: Path, adapter: FileStateAdapter) -> None:
    await adapter.set("a", "b:c", 1)  # ':' in a key is fine
    before = stamp(state_file(tmp_path))

    async def in_transaction() -> None:
        async with adapter.transaction() as tx:
            await tx.set("a:b", "c", 1)

    calls: list[Call] = [
        lambda: adapter.set("a:b", "c", 1),
        lambda: adapter.get("a:b", "c"),
        lambda: adapter.get_item("a:b", "c"),
        lambda: adapter.delete("a:b", "c"),
        lambda: adapter.update("a:b", "c", [increment("n")]),
        lambda: adapter.get_group("a:b"),
        lambda: adapter.keys(":"),
        lambda: adapter.clear("a:"),
        lambda: adapter.items("a:b"),
        in_transaction,
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError, match="':'") as info:
            await call()
        assert isinstance(info.value, ValueError)
    assert stamp(state_file(tmp_path)) == before
    assert await adapter.get("a", "b:c") == 1


async def test_get_item_has_no_version_or_times(adapter: FileStateAdapter) -> None:
    await adapter.set("g", "k", [1])
    await adapter.update("g", "k", [set_op(None, [2])])
    item = await adapter.get_item("g", "k")
    assert item is not None
    assert (item.group_id, item.key, item.value) == ("g", "k", [2])
    assert item.version is None
    assert item.created_at is None
    assert item.updated_at is None
    assert item.expires_at is None
    assert [(i.version, i.created_at) for i in await adapter.items("g")] == [(None, None)]


# -- 7. update and transactions under the file lock --------------------------------------------


async def test_transaction_lands_in_one_write(tmp_path: Path, adapter: FileStateAdapter) -> None:
    path = state_file(tmp_path)
    await adapter.set("acct", "a", 100)
    await adapter.set("acct", "b", 0)
    await adapter.set("old", "x", 1)
    before = stamp(path)
    async with FileStateAdapter(tmp_path, durable=False) as reader:
        async with adapter.transaction() as tx:
            await tx.set("acct", "a", await tx.get("acct", "a") - 30)
            await tx.update("acct", "b", [set_op(None, 30)])
            await tx.clear("old")
            await tx.set("new", "k", True)
            await tx.delete("acct", "absent")
            # nothing reaches the file before the commit; readers see the old state
            assert stamp(path) == before
            assert await reader.get_group("acct") == [100, 0]
            assert await reader.get("new", "k") is None
        assert path.read_bytes() == b'{\n  "acct:a": "70",\n  "acct:b": "30",\n  "new:k": "true"\n}'
        assert await reader.get_group("acct") == [70, 30]
        assert await reader.list_groups() == ["acct", "new"]


async def test_transaction_exception_leaves_the_file_unchanged(
    tmp_path: Path, adapter: FileStateAdapter
) -> None:
    path = state_file(tmp_path)
    await adapter.set("g", "a", 1)
    await adapter.set("g", "b", 2)
    before = stamp(path)

    async def failing_transaction() -> None:
        async with adapter.transaction() as tx:
            await tx.set("g", "a", 10)
            await tx.clear("g")
            await tx.update("h", "n", [increment("n")])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing_transaction()
    assert stamp(path) == before
    assert stray_files(tmp_path) == []
    # the lock was released: another adapter can write at once
    async with FileStateAdapter(tmp_path, durable=False, lock_timeout=0.5) as other:
        await other.set("g", "c", 3)
    assert await adapter.get_group("g") == [1, 2, 3]


async def test_open_transaction_holds_the_file_lock(tmp_path: Path, adapter: FileStateAdapter) -> None:
    path = state_file(tmp_path)
    await adapter.set("g", "n", 0)
    async with FileStateAdapter(tmp_path, durable=False, lock_timeout=0.2) as other:
        async with adapter.transaction() as tx:
            await tx.set("g", "n", 10)
            before = stamp(path)
            blocked: list[Call] = [
                lambda: other.set("g", "x", 1),
                lambda: other.update("g", "n", [increment("n")]),
                lambda: other.delete("g", "n"),
                lambda: other.clear("g"),
            ]
            for call in blocked:
                with pytest.raises(StoreUnavailableError) as info:
                    await call()
                assert str(path) in str(info.value)
            assert stamp(path) == before
            assert await other.get("g", "n") == 0  # reads need no lock
        assert await other.get("g", "n") == 10
        await other.update("g", "n", [set_op(None, 11)])
    assert path.read_bytes() == b'{\n  "g:n": "11"\n}'
    assert stray_files(tmp_path) == []


async def test_update_waits_for_a_transaction_and_applies_after_it(
    tmp_path: Path, adapter: FileStateAdapter
) -> None:
    await adapter.set("g", "c", {"n": 0})
    async with FileStateAdapter(tmp_path, durable=False, lock_timeout=10) as other:
        async with adapter.transaction() as tx:
            current = await tx.get("g", "c")
            waiting = asyncio.ensure_future(other.update("g", "c", [increment("n")]))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await tx.set("g", "c", {"n": current["n"] + 10})
        result = await asyncio.wait_for(waiting, 10)
        assert (result.old_value, result.new_value) == ({"n": 10}, {"n": 11})
    assert await adapter.get("g", "c") == {"n": 11}

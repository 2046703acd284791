"""The ``motia-state`` command line: every command in-process and as real processes, exit codes,
one-line errors, documentation, round trips through a chain of stores, and flat-memory copies."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from motia_state_sql import SqliteStateAdapter, open_state
from motia_state_sql.cli import EXIT_CODES, main
from motia_state_sql.cli_io import (
    BadLineError,
    big_ints,
    copy_items,
    export_items,
    import_items,
    jsonl_line,
    parse_jsonl_line,
    read_import_file,
)
from motia_state_sql.file import dump_motia_json
from motia_state_sql.schema import HEAD_REVISION
from motia_state_sql.url import _SCHEMES

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("motia-state")
# Environment variables that would change what the command line prints or which store it opens.
_NOISE = ("MOTIA_STATE_URL", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Run = Callable[..., Outcome]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _NOISE}
    env["COLUMNS"] = "160"
    return {**env, **(extra or {})}


def _runner_kwargs() -> dict[str, Any]:
    # Click 8.1 mixes stderr into stdout unless told not to; 8.2+ always keeps them apart.
    return {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}


def _in_process(cwd: Path) -> Run:
    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Outcome:
        runner = CliRunner(**_runner_kwargs())
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            # env=None entries unset variables for the duration of the call.
            overrides: dict[str, str | None] = {name: None for name in _NOISE}
            overrides.update({"COLUMNS": "160", **(env or {})})
            result = runner.invoke(main, list(args), input=input, env=overrides, catch_exceptions=False)
        finally:
            os.chdir(previous)
        return Outcome(result.exit_code, result.stdout, result.stderr)

    return run


def _process(command: Sequence[str], cwd: Path) -> Run:
    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Outcome:
        done = subprocess.run(
            [*command, *args],
            cwd=cwd,
            input=input,
            capture_output=True,
            text=True,
            env=_env(env),
            timeout=120,
        )
        return Outcome(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def cli(tmp_path: Path) -> Run:
    """The command line through click's CliRunner, in ``tmp_path``."""
    return _in_process(tmp_path)


def _one_line_error(outcome: Outcome, code: int, *fragments: str) -> None:
    assert outcome.code == code, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("Error: "), outcome.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _commands(
    group: click.Group = main, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def _leaf_commands() -> list[tuple[str, ...]]:
    return [path for path, command in _commands() if not isinstance(command, click.Group)]


# -- every command, three ways ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["clirunner", "python -m", "motia-state script"])
def test_every_command(how: str, tmp_path: Path) -> None:
    if how == "clirunner":
        run = _in_process(tmp_path)
    elif how == "python -m":
        run = _process([sys.executable, "-m", "motia_state_sql"], tmp_path)
    else:
        assert SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}"
        run = _process([str(SCRIPT)], tmp_path)
    invoked: set[tuple[str, ...]] = set()

    def step(*args: str, code: int = 0, input: str | None = None) -> Outcome:
        outcome = run(*args, input=input)
        assert outcome.code == code, (args, outcome)
        assert "Traceback" not in outcome.stderr, outcome.stderr
        words = tuple(arg for arg in args if not arg.startswith("-"))
        invoked.add(words[:2] if words[:1] == ("db",) else words[:1])
        return outcome

    assert "Usage:" in step("--help").stdout
    assert "no state store at .motia/motia.state.db" in step("groups", code=1).stderr
    assert not (tmp_path / ".motia").exists()  # reading never creates a store
    assert "Created" in step("db", "upgrade").stdout
    assert step("db", "current", "--json").json()["at_head"] is True
    assert step("db", "history", "--json").json()[0] == {
        "revision": HEAD_REVISION,
        "down_revision": None,
        "description": "Create the motia_state table.",
        "head": True,
        "current": True,
    }
    assert "matches the schema" in step("db", "check").stdout
    if how == "clirunner":
        # serve speaks on the process's own file descriptors 0 and 1, which CliRunner does not
        # replace; the two process variants below and tests/test_serve.py run it for real.
        invoked.add(("serve",))
    else:
        hello = json.loads(step("serve", "--stdio", input="").stdout.splitlines()[0])
        assert hello["id"] == 0
        assert "url" in hello["ok"]  # the store opened; stdin's end closed it
    step("set", "orders", "o1", '{"status": "paid", "total": 60}')
    assert step("set", "orders", "o2", "-", "--json", input='{"status":"new","total":5}').json() == {
        "group": "orders",
        "key": "o2",
        "value": {"status": "new", "total": 5},
    }
    step("set", "cache", "rates", '{"eur": 1.08}', "--ttl", "300")
    assert step("groups", "--json").json() == ["cache", "orders"]
    assert "orders" in step("groups").stdout
    assert step("keys", "orders", "--json").json() == ["o1", "o2"]
    assert step("get", "orders", "o1", "--json").json() == {"status": "paid", "total": 60}
    paid = step("items", "--group", "orders", "--filter", "status", "eq", "paid", "--json").json()
    assert [(item["key"], item["value"]) for item in paid] == [("o1", {"status": "paid", "total": 60})]
    assert step("items", "--filter", "total", "gt", "10", "--json").json()[0]["key"] == "o1"
    table = step("items").stdout
    assert "rates" in table
    assert '{"status":"new","total":5}' in table
    step("export", "--output", "state.json")
    exported = json.loads((tmp_path / "state.json").read_text())
    assert exported == {
        "cache:rates": '{"eur":1.08}',
        "orders:o1": '{"status":"paid","total":60}',
        "orders:o2": '{"status":"new","total":5}',
    }
    lines = step("export", "--group", "orders", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["o1", "o2"]
    (tmp_path / "orders.jsonl").write_text("\n".join(lines) + "\n")
    assert (
        "Imported 2 items in 1 group" in step("import", "orders.jsonl", "--url", "sqlite:///other.db").stdout
    )
    assert step("keys", "orders", "--url", "sqlite:///other.db", "--json").json() == ["o1", "o2"]
    copied = step("copy", "sqlite:///.motia/motia.state.db", "sqlite:///copied.db").stdout
    assert re.fullmatch(
        r"Copied 3 items in 2 groups from \S+ to sqlite:///copied.db in \d+\.\d\d s\.\n", copied
    )
    bench = step("bench", "sqlite:///bench.db", "--ops", "5", "--rounds", "1", "--workload", "set/x1").stdout
    assert bench.startswith("sqlite:///bench.db\tset x1\t")
    step("export", "--url", "sqlite:///copied.db", "--output", "copied.json")
    assert json.loads((tmp_path / "copied.json").read_text()) == exported
    assert step("delete", "orders", "o2", "--json").json()["value"] == {"status": "new", "total": 5}
    assert "no item 'o2' in group 'orders'" in step("delete", "orders", "o2", code=1).stderr
    assert "nothing was deleted" in step("clear", "orders", input="n\n", code=1).stderr
    assert step("clear", "orders", input="y\n").stdout.startswith("Cleared group 'orders' (1 item)")
    assert "group 'orders' has no items" in step("keys", "orders", code=1).stderr
    assert "Imported 3 items" in step("import", "state.json").stdout
    assert step("clear", "orders", "--yes", "--json").json() == {"group": "orders", "cleared": 2}
    # Running in production (tests/test_admin.py covers each in depth).
    info = step("info", "--json").json()
    assert (info["backend"], info["items"], info["groups"], info["at_head"]) == ("sqlite", 1, 1, True)
    assert "integrity_check ok" in step("backup", "backup.db").stdout
    assert step("keys", "cache", "--url", "sqlite:///backup.db", "--json").json() == ["rates"]
    assert step("prune", "--idle", "1d", "--dry-run", "--json").json()["groups"] == []
    assert step("ping").stdout.startswith("OK: ")
    assert "Vacuumed .motia/motia.state.db" in step("db", "vacuum").stdout
    assert invoked >= {path[:2] for path in _leaf_commands()}, set(_leaf_commands()) - invoked


# -- documentation ----------------------------------------------------------------------------


def test_every_command_has_help_and_is_documented(cli: Run) -> None:
    readme = (ROOT / "README.md").read_text()
    reference = (ROOT / "docs" / "cli.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    paths = list(_commands())
    assert len(paths) >= 15
    for path, command in paths:
        name = " ".join(("motia-state", *path))
        assert (command.help or "").strip(), f"{name} has no help text"
        outcome = cli(*path, "--help")
        assert outcome.code == 0, (name, outcome)
        assert "Usage:" in outcome.stdout, (name, outcome)
        if isinstance(command, click.Group):
            continue
        assert name in section, f"README's Command line section does not show `{name}`"
        assert f"### `{name}" in reference, f"docs/cli.md has no entry for `{name}`"
        entry = reference.split(f"### `{name}", 1)[1].split("\n### ", 1)[0]
        for param in command.params:
            for option in param.opts if isinstance(param, click.Option) else []:
                if option.startswith("--"):
                    assert option in entry, f"docs/cli.md does not document {name} {option}"


def test_every_url_scheme_is_documented_in_the_reference_and_help(cli: Run) -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    table = reference.split("| URL | store |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert sorted(_SCHEMES) == [
        "file", "memory", "postgres", "postgresql", "redis", "rediss", "sqlite", "unix"
    ]
    for scheme in _SCHEMES:
        assert any(line.startswith(f"| `{scheme}:") for line in rows), f"docs/cli.md: no {scheme}:// row"
    help_text = " ".join(cli("--help").stdout.split())
    for backend in ("SQLite", "PostgreSQL", "Redis", "Motia's JSON file", "memory"):
        assert backend in help_text, backend
    assert "redis://" in " ".join(cli("groups", "--help").stdout.split())


def test_exit_codes_are_documented_in_the_readme_and_help(cli: Run) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    assert sorted(EXIT_CODES) == [0, 1, 2, 3]
    for code in EXIT_CODES:
        assert f"\n| {code} |" in section
    help_text = cli("--help").stdout
    for code, meaning in EXIT_CODES.items():
        assert f"{code}  {meaning}" in help_text


def test_version(cli: Run) -> None:
    outcome = cli("--version")
    assert outcome.code == 0
    assert "motia-state" in outcome.stdout


# -- store selection --------------------------------------------------------------------------


def test_url_comes_from_the_option_then_the_environment_then_the_default(cli: Run, tmp_path: Path) -> None:
    assert cli("set", "g", "k", "1").code == 0
    assert (tmp_path / ".motia" / "motia.state.db").is_file()
    env = {"MOTIA_STATE_URL": "sqlite:///env.db"}
    assert cli("set", "g", "k", "2", env=env).code == 0
    assert cli("get", "g", "k", env=env).stdout == "2\n"
    assert cli("get", "g", "k", "--url", "sqlite:///.motia/motia.state.db", env=env).stdout == "1\n"
    assert cli("get", "g", "k").stdout == "1\n"


def test_url_before_the_command_works_and_the_one_after_wins(cli: Run) -> None:
    assert cli("--url", "sqlite:///before.db", "set", "g", "k", "1").code == 0
    assert cli("--url", "sqlite:///before.db", "get", "g", "k").stdout == "1\n"
    assert cli("--url", "sqlite:///before.db", "groups", "--json").json() == ["g"]
    assert cli("--url", "sqlite:///before.db", "db", "current").stdout == f"{HEAD_REVISION} (head)\n"
    assert cli("set", "g", "k", "2", "--url", "sqlite:///after.db").code == 0
    both = ("--url", "sqlite:///before.db", "get", "g", "k", "--url", "sqlite:///after.db")
    assert cli(*both).stdout == "2\n"
    env = {"MOTIA_STATE_URL": "sqlite:///after.db"}
    assert cli("--url", "sqlite:///before.db", "get", "g", "k", env=env).stdout == "1\n"
    _one_line_error(
        cli("--url", "sqlite:///before.db", "copy", "sqlite:///before.db", "sqlite:///c.db"),
        2,
        "copy takes its stores as SRC_URL DST_URL",
    )


def test_read_commands_never_create_a_store(cli: Run, tmp_path: Path) -> None:
    for args in (
        ["groups", "--url", "sqlite:///x.db"],
        ["keys", "g", "--url", "sqlite:///x.db"],
        ["get", "g", "k", "--url", "sqlite:///x.db"],
        ["delete", "g", "k", "--url", "sqlite:///x.db"],
        ["clear", "g", "--yes", "--url", "sqlite:///x.db"],
        ["items", "--url", "sqlite:///x.db"],
        ["export", "--url", "file:dir"],
        ["copy", "sqlite:///x.db", "sqlite:///y.db"],
        ["db", "current", "--url", "sqlite:///x.db"],
        ["db", "check", "--url", "sqlite:///x.db"],
    ):
        _one_line_error(cli(*args), 1, "x.db" if "x.db" in " ".join(args) else "dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://db/state", "unknown state URL scheme 'mysql'"),
        ("postgres://db/state?sslmdoe=require", "unknown parameter 'sslmdoe'"),
        ("sqlite:///x.db?cache=big", "unknown parameter 'cache'"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite://host/x.db", "no host"),
    ],
)
def test_bad_urls_are_bad_input(cli: Run, url: str, fragment: str) -> None:
    _one_line_error(cli("set", "g", "k", "1", "--url", url), 2, fragment)


# -- reading and writing single items ---------------------------------------------------------


def test_get_prints_values_exactly(cli: Run) -> None:
    value = {"s": "[bold]not markup[/bold] ü ✓", "n": [0, -1.5, 1e300, 9223372036854775807], "b": False}
    assert cli("set", "g", "k", json.dumps(value)).code == 0
    assert json.loads(cli("get", "g", "k").stdout) == value
    assert cli("get", "g", "k").stdout.startswith('{\n  "s"')  # indented for people
    assert cli("get", "g", "k", "--json").stdout.count("\n") == 1  # one line for scripts
    assert cli("set", "[red]g[/red]", "[bold]k", "1").code == 0
    assert "[red]g[/red]" in cli("groups").stdout  # shown as written, never read as markup
    assert "[bold]k" in cli("keys", "[red]g[/red]").stdout
    assert cli("set", "g", "nothing", "null").code == 0
    outcome = cli("get", "g", "nothing")
    assert (outcome.code, outcome.stdout) == (0, "null\n")  # a stored null is a value


def test_output_that_is_not_a_terminal_is_tab_separated_lines(cli: Run) -> None:
    long_value = {"text": "x" * 200}
    assert cli("set", "orders", "o1", json.dumps(long_value)).code == 0
    assert cli("set", "a\tb", "line\nbreak\\", "null", "--ttl", "3600").code == 0
    listed = cli("items")
    assert listed.stderr == ""
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    odd = lines[0].split("\t")
    assert odd[:3] == ["a\\tb", "line\\nbreak\\\\", "null"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", odd[3])
    assert lines[1].split("\t") == ["orders", "o1", json.dumps(long_value, separators=(",", ":")), "-"]
    assert cli("groups").stdout == "a\\tb\norders\n"
    assert cli("keys", "orders").stdout == "o1\n"
    history = cli("db", "history").stdout.splitlines()
    assert history[0].split("\t") == [HEAD_REVISION, "-", "Create the motia_state table.", "head, current"]


def test_output_on_a_terminal_is_a_table(tmp_path: Path) -> None:
    assert _in_process(tmp_path)("set", "orders", "o1", '{"total": 5}').code == 0
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "motia_state_sql", "items"],
            cwd=tmp_path,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=_env({"TERM": "xterm"}),
        )
        os.close(terminal)
        shown = _read_terminal(controller)
        errors = child.communicate(timeout=60)[1]
    finally:
        os.close(controller)
    assert child.returncode == 0, errors
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode())  # rich's bold header
    assert "\t" not in text
    header = next(line for line in text.splitlines() if "group" in line)
    assert header.split() == ["group", "key", "value", "expires", "(UTC)"]
    assert "\u2500" in text  # the rule under rich's header
    assert '{"total":5}' in text


def test_set_human_output_and_ttl(cli: Run) -> None:
    assert cli("set", "g", "k", '"v"').stdout == "Stored 'g'/'k'.\n"
    assert cli("set", "g", "t", "1", "--ttl", "300").code == 0
    item = cli("items", "--json").json()[1]
    assert item["key"] == "t"
    assert item["expires_at"] == pytest.approx(item["updated_at"] + 300)
    assert "+00:00" in cli("items").stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["set", "g", "k", '{"a": '], ["not valid JSON", "line 1 column 7"]),
        (["set", "g", "k", "NaN"], ["NaN is not a JSON value"]),
        (["set", "g", "k", "[1, 2] 3"], ["Extra data"]),
        (["set", "g", "k", "18446744073709551616"], ["outside signed 64-bit"]),
        (["set", "", "k", "1"], ["group_id must not be empty"]),
        (["set", "g", "a\x00b", "1"], ["NUL"]),
        (["set", "g", "k", "1", "--ttl", "-1"], ["ttl", "> 0"]),
        (["set", "g", "k", "1", "--ttl", "nan"], ["ttl"]),
        (["set", "g", "k", "1", "--ttl", "5", "--url", "file:legacy"], ["cannot store a ttl"]),
        (["set", "a:b", "k", "1", "--url", "file:legacy"], ["holds ':'"]),
        (["set", "g", "k", "[1,2,3]", "--url", "sqlite:///s.db?max_value_bytes=4"], ["max_value_bytes=4"]),
        (["items", "--filter", "total", "biggerThan", "3"], ["operation 'biggerThan'"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Run, args: list[str], fragments: list[str]) -> None:
    assert cli("set", "seed", "k", "1").code == 0
    _one_line_error(cli(*args), 2, *fragments)
    assert cli("groups", "--json").json() == ["seed"]  # nothing else was written


def test_usage_errors_exit_2(cli: Run) -> None:
    assert cli("get", "only-group").code == 2
    assert cli("copy", "sqlite:///a.db", "sqlite:///b.db", "--batch-size", "0").code == 2
    assert cli("export", "--format", "xml").code == 2
    assert cli("frobnicate").code == 2


def test_not_found_exits_1(cli: Run, tmp_path: Path) -> None:
    assert cli("set", "orders", "o1", "1").code == 0
    _one_line_error(cli("get", "orders", "o2"), 1, "no item 'o2' in group 'orders'")
    _one_line_error(cli("get", "order", "o1"), 1, "no item 'o1' in group 'order'")
    _one_line_error(cli("keys", "order"), 1, "group 'order' has no items")
    _one_line_error(cli("clear", "order", "--yes"), 1, "group 'order' has no items")
    _one_line_error(cli("delete", "orders", "o2"), 1, "no item 'o2'")
    _one_line_error(cli("export", "--group", "order"), 1, "group 'order' has no items")
    _one_line_error(
        cli("copy", "sqlite:///.motia/motia.state.db", "sqlite:///b.db", "--group", "x"), 1, "'x'"
    )
    assert not (tmp_path / "b.db").exists()
    assert cli("keys", "orders", "--json").json() == ["o1"]


def test_a_group_without_items_is_not_found_by_keys_and_items_alike(cli: Run) -> None:
    assert cli("set", "orders", "o1", '{"status": "paid"}').code == 0
    nosuch = (("keys", "nosuch"), ("items", "--group", "nosuch"), ("items", "--group", "nosuch", "--json"))
    for args in nosuch:
        _one_line_error(cli(*args), 1, "group 'nosuch' has no items")
    # A group that has items, none of them matching: an empty answer, not "not found".
    unmatched = cli("items", "--group", "orders", "--filter", "status", "eq", "new", "--json")
    assert (unmatched.code, unmatched.json()) == (0, [])
    assert cli("items", "--group", "orders", "--json").json()[0]["key"] == "o1"


def test_expired_items_are_not_found(cli: Run) -> None:
    assert cli("set", "g", "k", "1", "--ttl", "0.001").code == 0
    _one_line_error(cli("get", "g", "k"), 1, "no item 'k'")
    assert cli("groups", "--json").json() == []
    assert (cli("groups").stdout, cli("groups").stderr) == ("", "No groups.\n")
    assert (cli("items").stdout, cli("items").stderr) == ("", "No items.\n")


def test_clear_asks_first(cli: Run) -> None:
    for key in ("a", "b"):
        assert cli("set", "g", key, "1").code == 0
    declined = cli("clear", "g", input="n\n")
    assert "Delete all 2 items of group 'g'" in declined.stderr
    assert declined.code == 1
    assert cli("clear", "g", input="").code == 1  # no answer: nothing deleted
    assert cli("keys", "g", "--json").json() == ["a", "b"]
    assert cli("clear", "g", "-y").stdout == "Cleared group 'g' (2 items).\n"
    assert cli("groups", "--json").json() == []


def test_clear_reports_what_it_deleted(cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("a", "b"):
        assert cli("set", "g", key, "1").code == 0
    asked: list[str] = []

    def confirm(text: str, **kwargs: Any) -> bool:
        asked.append(text)
        # Another process writes to the group while the question waits for an answer.
        subprocess.run(
            [sys.executable, "-m", "motia_state_sql", "set", "g", "c", "1"],
            cwd=tmp_path,
            env=_env(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        return True

    monkeypatch.setattr(click, "confirm", confirm)
    outcome = cli("clear", "g")
    assert asked == ["Delete all 2 items of group 'g' in sqlite:///.motia/motia.state.db?"]
    assert outcome.stdout == "Cleared group 'g' (3 items; 2 when asked).\n"
    assert cli("groups", "--json").json() == []
    for key in ("a", "b"):
        assert cli("set", "g", key, "1").code == 0
    assert cli("clear", "g", "--yes", "--json").json() == {"group": "g", "cleared": 2}


def test_store_locked_past_its_timeout_exits_3(cli: Run, tmp_path: Path) -> None:
    assert cli("set", "g", "k", "1", "--url", "sqlite:///locked.db").code == 0
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        outcome = cli("set", "g", "k", "2", "--url", "sqlite:///locked.db?busy_timeout=0.2")
        _one_line_error(outcome, 3, "locked", "busy_timeout=0.2")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert cli("get", "g", "k", "--url", "sqlite:///locked.db").stdout == "1\n"


# -- db ---------------------------------------------------------------------------------------


def test_db_check_finds_a_schema_that_differs(cli: Run, tmp_path: Path) -> None:
    assert cli("db", "upgrade").code == 0
    assert "already at head" in cli("db", "upgrade").stdout
    with sqlite3.connect(tmp_path / ".motia" / "motia.state.db") as raw:
        raw.execute("DROP INDEX ix_motia_state_expires_at")
        raw.execute("ALTER TABLE motia_state ADD COLUMN note TEXT")
    _one_line_error(cli("db", "check"), 1, "schema differs", "ix_motia_state_expires_at", "note")
    assert cli("db", "current").stdout == f"{HEAD_REVISION} (head)\n"


def test_db_check_and_upgrade_a_database_without_our_schema(cli: Run, tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()  # a database with no tables at all
    url = "sqlite:///empty.db"
    _one_line_error(cli("db", "check", "--url", url), 1, "revision none", "db upgrade")
    assert cli("db", "current", "--url", url, "--json").json()["revision"] is None
    assert cli("db", "current", "--url", url).stdout.startswith("none (head is")
    assert "current" not in cli("db", "history", "--url", url).stdout
    assert (
        cli("db", "upgrade", "--url", url).stdout == f"Upgraded empty.db from no schema to {HEAD_REVISION}.\n"
    )
    assert cli("db", "check", "--url", url).code == 0


def test_db_commands_refuse_what_they_cannot_handle(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_bytes(b"these are not the bytes of a database" * 100)
    before = (tmp_path / "notes.db").read_bytes()
    for command in ("check", "current", "upgrade", "history"):
        _one_line_error(cli("db", command, "--url", "sqlite:///notes.db"), 2, "not a SQLite database")
    assert (tmp_path / "notes.db").read_bytes() == before
    with sqlite3.connect(tmp_path / "newer.db") as raw:
        raw.execute("CREATE TABLE alembic_version (version_num TEXT)")
        raw.execute("INSERT INTO alembic_version VALUES ('9999')")
    _one_line_error(cli("db", "check", "--url", "sqlite:///newer.db"), 1, "revision 9999")
    _one_line_error(cli("db", "upgrade", "--url", "sqlite:///newer.db"), 2, "'9999'", "newer version")
    _one_line_error(cli("db", "current", "--url", "file:dir"), 2, "not a sqlite:/// or postgresql:// URL")
    _one_line_error(cli("db", "check", "--url", "memory://"), 2, "not a sqlite:/// or postgresql:// URL")
    _one_line_error(cli("db", "upgrade", "--url", "sqlite:///:memory:"), 2, ":memory:")


# -- import and export ------------------------------------------------------------------------

# Values as Node's JSON.stringify writes them, including spellings orjson would not produce.
VALUES = [
    ("orders", "a:b:c", '{"id":"a:b:c","total":99.99,"items":[{"sku":"x","qty":2}]}'),
    ("orders", "big", "1e+21"),
    ("orders", "order-1", '{"z":1,"a":{"nested":[null,true,false,"",0,-0.5]}}'),
    ("orders", 'quote " and space', '"caf\\u00e9 \\"quoted\\"\\n"'),
    ("ordersX", "k", "[]"),
    ("unicode ü ✓ 😀", "ключ", '"значение ✓ \u2028 😀"'),
    ("users", "1", "null"),
    ("users", "2", "false"),
    ("users", "3", "0"),
    ("users", "4", '""'),
    ("users", "5", "{}"),
]


def _motia_file(path: Path, entries: Sequence[tuple[str, str, str]] = VALUES) -> bytes:
    data = dump_motia_json(entries)
    path.write_bytes(data)
    return data


def test_import_export_round_trip_keeps_every_byte(cli: Run, tmp_path: Path) -> None:
    original = _motia_file(tmp_path / "motia.state.json")
    assert sorted(VALUES) == VALUES  # the order every export writes
    outcome = cli("import", "motia.state.json")
    assert re.fullmatch(
        r"Imported 11 items in 4 groups from motia.state.json into \S+ in \d+\.\d\d s\.\n", outcome.stdout
    )
    assert cli("export").stdout.encode() == original
    assert cli("export", "-o", "again.json").code == 0
    assert (tmp_path / "again.json").read_bytes() == original
    assert cli("get", "orders", "big", "--json").json() == 1e21


def test_jsonl_round_trips(cli: Run, tmp_path: Path) -> None:
    original = _motia_file(tmp_path / "motia.state.json")
    assert cli("import", "motia.state.json").code == 0
    assert cli("export", "-o", "all.jsonl").code == 0  # .jsonl: the format follows the name
    jsonl = (tmp_path / "all.jsonl").read_bytes()
    lines = jsonl.decode().split("\n")
    assert lines[-1] == ""
    assert len(lines) == len(VALUES) + 1
    assert json.loads(lines[1]) == {"group": "orders", "key": "big", "value": 1e21}
    assert '"value":1e+21}' in lines[1]  # the value's JSON text as stored
    assert cli("import", "all.jsonl", "--url", "sqlite:///from-jsonl.db").code == 0
    assert cli("export", "--url", "sqlite:///from-jsonl.db").stdout.encode() == original
    assert cli("export", "--url", "sqlite:///from-jsonl.db", "--format", "jsonl").stdout.encode() == jsonl
    # --format wins over the name.
    (tmp_path / "lines.txt").write_bytes(jsonl)
    assert cli("import", "lines.txt", "--format", "jsonl", "--url", "sqlite:///txt.db").code == 0
    assert cli("export", "--url", "sqlite:///txt.db").stdout.encode() == original


def test_import_of_an_unsorted_motia_file_keeps_the_state(cli: Run, tmp_path: Path) -> None:
    _motia_file(tmp_path / "motia.state.json", list(reversed(VALUES)))
    assert cli("import", "motia.state.json").code == 0
    exported = cli("export").stdout
    assert json.loads(exported) == json.loads((tmp_path / "motia.state.json").read_text())
    assert exported.encode() == dump_motia_json(VALUES)


def test_import_replaces_items_and_keeps_others(cli: Run, tmp_path: Path) -> None:
    assert cli("set", "orders", "order-1", '"old"').code == 0
    assert cli("set", "other", "k", '"kept"').code == 0
    _motia_file(tmp_path / "in.json")
    assert cli("import", "in.json").code == 0
    assert cli("get", "orders", "order-1", "--json").json() == {
        "z": 1,
        "a": {"nested": [None, True, False, "", 0, -0.5]},
    }
    assert cli("get", "other", "k", "--json").json() == "kept"


def test_import_into_a_new_database_takes_only_the_file(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    _motia_file(tmp_path / "store" / "motia.state.json", [("legacy", "k", "1")])
    (tmp_path / "in.jsonl").write_text('{"group":"new","key":"k","value":2}\n')
    assert cli("import", "in.jsonl", "--url", "sqlite:///store/s.db").code == 0
    assert cli("groups", "--url", "sqlite:///store/s.db", "--json").json() == ["new"]


CORRUPT_MOTIA = [
    (b'{"orders:1": "{\\"a\\":1}",', ["bad.json", "not valid JSON"]),
    (b'["not", "an", "object"]', ["bad.json", "must hold a JSON object"]),
    (b'{"orders:1": "1", "no-colon": "2"}', ["bad.json", "'no-colon'", "'<group>:<key>'"]),
    (b'{"orders:1": "1", "orders:2": "{\\"a\\":"}', ["bad.json", "'orders:2'", "not valid JSON"]),
    (b'{"orders:1": "1", "orders:2": 2}', ["bad.json", "'orders:2'", "expected the JSON text"]),
    (b'{"orders:1": "NaN"}', ["bad.json", "'orders:1'"]),
    (b'{"orders:1": "1", "orders:2": "2", "orders:1": "3"}', ["bad.json", "'orders:1' appears more"]),
]


@pytest.mark.parametrize(("content", "fragments"), CORRUPT_MOTIA)
def test_corrupt_motia_files_import_nothing(
    cli: Run, tmp_path: Path, content: bytes, fragments: list[str]
) -> None:
    assert cli("set", "orders", "0", '"before"').code == 0
    (tmp_path / "bad.json").write_bytes(content)
    _one_line_error(cli("import", "bad.json"), 2, *fragments)
    assert cli("keys", "orders", "--json").json() == ["0"]
    _one_line_error(cli("import", "bad.json", "--url", "sqlite:///fresh.db"), 2, "bad.json")
    assert not (tmp_path / "fresh.db").exists()  # checked before the store was even opened


GOOD_LINE = '{"group":"orders","key":"1","value":{"a":1}}'
CORRUPT_JSONL = [
    ("{", ["bad.jsonl:2:", "field name"]),
    ('{"group":"orders","key":"2"}', ["bad.jsonl:2:", "missing field(s) value"]),
    ('{"group":"orders","key":"2","value":1,"ttl":5}', ["bad.jsonl:2:", "unknown field 'ttl'"]),
    ('{"group":"orders","key":"2","value":1,"value":2}', ["bad.jsonl:2:", "'value' appears twice"]),
    ('{"group":"orders","key":2,"value":1}', ["bad.jsonl:2:", "key must be a string"]),
    ('{"group":"orders","key":"2","value":NaN}', ["bad.jsonl:2:", "NaN is not a JSON value"]),
    ('{"group":"orders","key":"2","value":[1,}', ["bad.jsonl:2:", "Expecting value at column 40"]),
    ('{"group":"orders","key":"2","value":', ["bad.jsonl:2:", "one whole item per line"]),
    ('{"group":"orders","key":"2","value":{', ["bad.jsonl:2:", "one whole item per line"]),
    ('{"group":"orders","key":"2","value":1} trailing', ["bad.jsonl:2:", "unexpected text", "column 40"]),
    ('["orders","2",1]', ["bad.jsonl:2:", "expected '{'"]),
    (GOOD_LINE, ["bad.jsonl:2:", "repeats line 1"]),
    ('{"group":"","key":"2","value":1}', ["bad.jsonl:2:", "group_id must not be empty"]),
]


@pytest.mark.parametrize(("line", "fragments"), CORRUPT_JSONL)
def test_corrupt_jsonl_files_import_nothing(
    cli: Run, tmp_path: Path, line: str, fragments: list[str]
) -> None:
    assert cli("set", "orders", "0", '"before"').code == 0
    (tmp_path / "bad.jsonl").write_text(f"{GOOD_LINE}\n{line}\n{GOOD_LINE.replace('1', '3')}\n")
    _one_line_error(cli("import", "bad.jsonl"), 2, *fragments)
    assert cli("keys", "orders", "--json").json() == ["0"]


# Items only the store refuses (names, value limits, a backend's own rules): still checked before
# the store is opened, so no database, folder or lock file appears.
REFUSED_BY_THE_STORE = [
    ('{"group":"","key":"2","value":1}', "sqlite:///c.db", ["in.jsonl:2:", "group_id must not be empty"]),
    ('{"group":"","key":"2","value":1}', "file:dir", ["in.jsonl:2:", "group_id must not be empty"]),
    ('{"group":"a:b","key":"2","value":1}', "file:dir", ["in.jsonl:2:", "'a:b'", "':'"]),
    ('{"group":"g","key":"2","value":"long text"}', "sqlite:///sub/c.db?max_value_bytes=8", ["in.jsonl:2:"]),
    ('{"group":"g","key":"2","value":"long text"}', "file:dir?max_value_bytes=8", ["max_value_bytes=8"]),
    ('{"group":"g","key":"2\\u0000","value":1}', "sqlite:///c.db", ["in.jsonl:2:", "NUL"]),
]


@pytest.mark.parametrize(("line", "url", "fragments"), REFUSED_BY_THE_STORE)
def test_a_refused_import_creates_no_store(
    cli: Run, tmp_path: Path, line: str, url: str, fragments: list[str]
) -> None:
    (tmp_path / "in.jsonl").write_text(f"{GOOD_LINE}\n{line}\n")
    _one_line_error(cli("import", "in.jsonl", "--url", url), 2, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize("fmt", ["motia", "jsonl"])
def test_import_dash_reads_stdin(cli: Run, tmp_path: Path, fmt: str) -> None:
    text = (
        '{"orders:1": "{\\"a\\":1}"}'
        if fmt == "motia"
        else '\ufeff{"group":"orders","key":"1","value":{"a":1}}\n'  # a BOM, as a file may have
    )
    done = cli("import", "--format", fmt, "-", input=text)
    assert done.code == 0, done
    assert "from <stdin>" in done.stdout
    assert cli("get", "orders", "1", "--json").json() == {"a": 1}
    _one_line_error(cli("import", "--format", "jsonl", "-", input="{\n"), 2, "<stdin>:1:")


def test_set_dash_takes_a_bom_as_import_does(cli: Run) -> None:
    assert cli("set", "orders", "1", "-", input='\ufeff{"a": 1}').code == 0
    assert cli("get", "orders", "1", "--json").json() == {"a": 1}


def test_only_motias_json_file_there_hints_at_reading_or_importing_it(cli: Run, tmp_path: Path) -> None:
    (tmp_path / ".motia").mkdir()
    _motia_file(tmp_path / ".motia" / "motia.state.json", [("orders", "1", "1")])
    for args in (["groups"], ["keys", "orders"], ["get", "orders", "1"]):
        _one_line_error(cli(*args), 1, "--url file:.motia", "motia-state import .motia/motia.state.json")
    assert not (tmp_path / ".motia" / "motia.state.db").exists()
    assert cli("groups", "--url", "file:.motia", "--json").json() == ["orders"]
    _one_line_error(cli("groups", "--url", "file://.motia"), 2, "file:///absolute/dir", "file:relative/dir")
    assert cli("import", ".motia/motia.state.json").code == 0
    assert cli("groups", "--json").json() == ["orders"]


def test_jsonl_that_is_not_utf8_imports_nothing(cli: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(GOOD_LINE.encode() + b"\n\n" + b'{"group":"\xff"}\n')
    _one_line_error(cli("import", "bad.jsonl"), 2, "bad.jsonl:3:", "not UTF-8")
    assert not (tmp_path / ".motia").exists()


def test_an_item_the_store_refuses_rolls_the_whole_import_back(cli: Run, tmp_path: Path) -> None:
    url = "sqlite:///s.db?max_value_bytes=20"
    assert cli("set", "keep", "k", "1", "--url", url).code == 0
    lines = [
        GOOD_LINE,
        '{"group":"orders","key":"2","value":"short"}',
        '{"group":"orders","key":"3","value":"' + "x" * 40 + '"}',
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines))
    _one_line_error(cli("import", "in.jsonl", "--url", url), 2, "in.jsonl:3:", "max_value_bytes=20")
    assert cli("groups", "--url", url, "--json").json() == ["keep"]
    _motia_file(tmp_path / "legacy.json", [("a", "1", "1"), ("b", "2", '"too long"')])
    url = "file:dir?max_value_bytes=5"
    _one_line_error(
        cli("import", "legacy.json", "--url", url), 2, "legacy.json: entry b:2:", "max_value_bytes=5"
    )
    assert not (tmp_path / "dir" / "motia.state.json").exists()


# Node writes every number as a double: JSON.stringify(2**64) is "18446744073709552000" and
# JSON.stringify(2**63) is "9223372036854776000" (which orjson would read back as an int).
BIG = [
    ("big", "beyond-u64", '{"n":18446744073709552000,"s":"18446744073709552000","f":1e+21}'),
    ("big", "in-u64", "[9223372036854776000, -9223372036854776000, 9223372036854775807, 1.5e19]"),
    ("big", "negative", "-18446744073709552000"),
    ("small", "k", '{"n":12345678901234567}'),
]


@pytest.mark.parametrize("name", ["in.json", "in.jsonl"])
def test_integers_beyond_64_bit_are_refused_with_the_way_on(cli: Run, tmp_path: Path, name: str) -> None:
    data = dump_motia_json(BIG)
    if name.endswith(".jsonl"):
        data = "".join(jsonl_line(*entry) for entry in BIG).encode()
    (tmp_path / name).write_bytes(data)
    where = "in.json: entry 'big:beyond-u64': " if name == "in.json" else "in.jsonl:1: "
    _one_line_error(
        cli("import", name, "--big-ints", "refuse"),
        2,
        f"{where}value of 'big'/'beyond-u64' at $.n: integer 18446744073709552000 exceeds signed 64-bit",
        "the double 1.8446744073709552e+19",
        "--big-ints double",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_integers_beyond_64_bit_import_as_the_doubles_node_meant(cli: Run, tmp_path: Path) -> None:
    _motia_file(tmp_path / "in.json", BIG)
    assert cli("import", "in.json").code == 0  # the default: the policy for values Node wrote
    exported = json.loads(cli("export").stdout)
    assert exported == {
        # Only the integers beyond 64-bit are spelled differently; every other byte is kept.
        "big:beyond-u64": '{"n":1.8446744073709552e+19,"s":"18446744073709552000","f":1e+21}',
        "big:in-u64": "[9.223372036854776e+18, -9.223372036854776e+18, 9223372036854775807, 1.5e19]",
        "big:negative": "-1.8446744073709552e+19",
        "small:k": '{"n":12345678901234567}',
    }
    for group, key, text in BIG:  # the same numbers as Node reads them
        assert json.loads(exported[f"{group}:{key}"], parse_int=float) == json.loads(text, parse_int=float)
    # What get returns, set takes back unchanged: no integer beyond 64-bit is ever returned.
    for group, key, _ in BIG:
        value = cli("get", group, key, "--json").stdout
        assert cli("set", group, f"{key}-again", "--", value).code == 0
        assert cli("get", group, f"{key}-again", "--json").stdout == value
    assert cli("get", "big", "in-u64", "--json").json() == [2.0**63, -(2.0**63), 2**63 - 1, 1.5e19]
    # The exported file imports again as it is, byte for byte.
    assert cli("export", "--group", "big", "-o", "again.json").code == 0
    assert cli("import", "again.json", "--url", "sqlite:///again.db").code == 0
    assert (
        cli("export", "--url", "sqlite:///again.db").stdout.encode() == (tmp_path / "again.json").read_bytes()
    )
    # JSON Lines take the same option.
    (tmp_path / "in.jsonl").write_text("".join(jsonl_line(*entry) for entry in BIG))
    assert cli("import", "in.jsonl", "--big-ints", "double", "--url", "sqlite:///lines.db").code == 0
    assert json.loads(cli("export", "--url", "sqlite:///lines.db").stdout) == exported


def test_integers_beyond_a_double_are_refused_either_way(cli: Run, tmp_path: Path) -> None:
    _motia_file(tmp_path / "in.json", [("g", "k", "[1, 1" + "0" * 400 + "]")])
    for mode in ("refuse", "double"):
        _one_line_error(
            cli("import", "in.json", "--big-ints", mode), 2, "'g'/'k' at $[1]", "beyond the range of a double"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]


def test_big_ints_keeps_what_it_does_not_change() -> None:
    for text in ("1", '"9223372036854775808"', "[1e400]", "{", '{"a": 9223372036854775807}'):
        assert big_ints("g", "k", text, "refuse") == text
        assert big_ints("g", "k", text, "double") == text
    text = '{ "a\\"": [ 9223372036854775808 ,"\\u0031 9223372036854775808", -9223372036854775809e0 ] }'
    assert big_ints("g", "k", text, "double") == (
        '{ "a\\"": [ 9.223372036854776e+18 ,"\\u0031 9223372036854775808", -9223372036854775809e0 ] }'
    )


def test_unreadable_import_files_exit_2(cli: Run, tmp_path: Path) -> None:
    _one_line_error(cli("import", "missing.json"), 2, "missing.json", "No such file")
    _one_line_error(cli("import", "missing.jsonl"), 2, "missing.jsonl", "No such file")
    (tmp_path / "folder.jsonl").mkdir()
    _one_line_error(cli("import", "folder.jsonl"), 2, "folder.jsonl", "directory")
    (tmp_path / "folder.json").mkdir()
    _one_line_error(cli("import", "folder.json"), 2, "folder.json", "directory")


def test_export_never_leaves_half_a_file(cli: Run, tmp_path: Path) -> None:
    assert cli("set", "a", "k", "1").code == 0
    assert cli("set", "b:c", "k", "2").code == 0
    (tmp_path / "out.json").write_text("previous")
    _one_line_error(cli("export", "-o", "out.json"), 2, "'b:c'", "--format jsonl")
    assert (tmp_path / "out.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".motia", "out.json"]
    assert cli("export", "-o", "out.jsonl").code == 0
    assert cli("export", "--group", "a", "-o", "out.json").stdout.startswith("Exported 1 item in 1 group")
    assert json.loads((tmp_path / "out.json").read_text()) == {"a:k": "1"}
    _one_line_error(
        cli("export", "--group", "a", "-o", "missing/out.json"), 2, "missing/out.json", "No such file"
    )


@pytest.mark.parametrize(
    "args", [("export", "--format", "jsonl"), ("export",), ("items",), ("keys", "g")], ids=" ".join
)
def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path, args: tuple[str, ...]) -> None:
    # Far more than a pipe buffers (64 KiB), so the command is still writing when the reader goes.
    lines = [jsonl_line("g", f"k{i:05}-{'y' * 40}", json.dumps("x" * 100)) for i in range(3000)]
    (tmp_path / "many.jsonl").write_text("".join(lines))
    assert _in_process(tmp_path)("import", "many.jsonl").code == 0
    child = subprocess.Popen(
        [sys.executable, "-m", "motia_state_sql", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert child.stdout is not None
    assert child.stderr is not None
    assert child.stdout.readline()  # what `head -1` does: read a line, then close the pipe
    child.stdout.close()
    errors = child.stderr.read()
    child.stderr.close()
    assert child.wait(timeout=60) == 0, errors
    assert errors == b""


def test_empty_store_exports(cli: Run) -> None:
    assert cli("db", "upgrade").code == 0
    assert cli("export").stdout == "{}"  # what JSON.stringify({}, null, 2) gives
    assert cli("export", "--format", "jsonl").stdout == ""


# -- JSON Lines, unit level -------------------------------------------------------------------


def test_jsonl_lines_parse_with_values_verbatim() -> None:
    assert parse_jsonl_line(' { "value" : [1, 2.50,\t1e+21] , "key":"k", "group":"g"}\r\n') == (
        "g",
        "k",
        "[1, 2.50,\t1e+21]",
    )
    assert parse_jsonl_line('{"group":"g\\u00fc","key":"\\n","value":"\\u2028"}') == ("gü", "\n", '"\\u2028"')
    for line in (
        "",
        "{}",
        '{"group":"g","key":"k","value":1,}',
        '{"group":"g" "key":"k","value":1}',
        "{" * 5000,
    ):
        with pytest.raises(BadLineError):
            parse_jsonl_line(line)
    with pytest.raises(BadLineError, match="nested too deeply"):
        parse_jsonl_line('{"group":"g","key":"k","value":' + "[" * 100_000 + "]" * 100_000 + "}")


def test_jsonl_line_stays_on_one_line() -> None:
    line = jsonl_line("g\nx", "k\u2028", '{\n  "a": 1\r\n}')
    assert line.count("\n") == 1
    assert line.endswith("\n")
    assert parse_jsonl_line(line) == ("g\nx", "k\u2028", '{   "a": 1  }')
    assert json.loads(line) == {"group": "g\nx", "key": "k\u2028", "value": {"a": 1}}


# -- copy -------------------------------------------------------------------------------------


def test_copy_between_backends(cli: Run, tmp_path: Path) -> None:
    original = _motia_file(tmp_path / "in.json")
    assert cli("import", "in.json", "--url", "sqlite:///a.db").code == 0
    outcome = cli("copy", "sqlite:///a.db", "sqlite:///b.db", "--batch-size", "3")
    assert outcome.stdout.startswith("Copied 11 items in 4 groups from sqlite:///a.db to sqlite:///b.db in ")
    assert outcome.stderr == ""  # no progress bar when stderr is not a terminal
    assert cli("export", "--url", "sqlite:///b.db").stdout.encode() == original
    assert cli("copy", "sqlite:///b.db", "file:f", "--group", "users").stdout.startswith(
        "Copied 5 items in 1 group"
    )
    assert cli("groups", "--url", "file:f", "--json").json() == ["users"]
    assert cli("copy", "sqlite:///:memory:", "sqlite:///c.db").stdout.startswith("Copied 0 items in 0 groups")


def test_copy_keeps_expiry(cli: Run, tmp_path: Path) -> None:
    assert cli("set", "cache", "rates", '{"eur": 1.08}', "--ttl", "300", "--url", "sqlite:///a.db").code == 0
    assert cli("set", "cache", "forever", "1", "--url", "sqlite:///a.db").code == 0
    assert cli("copy", "sqlite:///a.db", "sqlite:///b.db").code == 0

    async def expiries(url: str) -> dict[str, float | None]:
        async with open_state(url) as state:
            return {item.key: item.expires_at for item in await state.items("cache")}

    before, after = (
        asyncio.run(expiries(f"sqlite:///{tmp_path}/a.db")),
        asyncio.run(expiries(f"sqlite:///{tmp_path}/b.db")),
    )
    assert after["forever"] is None
    assert before["rates"] is not None
    assert after["rates"] is not None
    assert abs(after["rates"] - before["rates"]) < 5
    # Motia's JSON file cannot hold an expiry: the copy says so instead of keeping the item forever
    _one_line_error(cli("copy", "sqlite:///a.db", "file:f"), 2, "ttl")
    # and the help says what the command does
    help_text = " ".join(cli("copy", "--help").stdout.split())
    assert "keep their expiry times" in help_text
    assert "not carried over" not in help_text


def test_copy_refuses_a_store_onto_itself(cli: Run, tmp_path: Path) -> None:
    assert cli("set", "g", "k", "1", "--url", "sqlite:///a.db").code == 0
    _one_line_error(cli("copy", "sqlite:///a.db", f"sqlite:///{tmp_path}/./a.db"), 2, "same store")
    assert cli("set", "g", "k", "1", "--url", "file:f").code == 0
    _one_line_error(cli("copy", "file:f", "file:./f/"), 2, "same store")


def test_copy_stops_at_an_item_the_destination_refuses(cli: Run) -> None:
    for group in ("a", "b:c", "d"):
        assert cli("set", group, "k", "1", "--url", "sqlite:///a.db").code == 0
    outcome = cli("copy", "sqlite:///a.db", "file:f", "--batch-size", "1")
    _one_line_error(outcome, 2, "copy stopped after 1 item", "'b:c'")
    assert cli("groups", "--url", "file:f", "--json").json() == ["a"]  # the batch before stays


def _read_terminal(controller: int) -> bytes:
    """Everything a child wrote to the pseudo-terminal, until it closed it."""
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the child is done with it
            break
        if not chunk:
            break
        drawn += chunk
    return drawn


def _with_stderr_on_a_terminal(cwd: Path, *args: str) -> tuple[int, bytes, bytes]:
    """Run ``motia-state ARGS`` with stderr on a pseudo-terminal: exit code, what it drew, stdout."""
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "motia_state_sql", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=_env({"TERM": "xterm"}),
        )
        os.close(terminal)
        drawn = _read_terminal(controller)
        out = child.communicate(timeout=60)[0]
    finally:
        os.close(controller)
    return child.returncode, drawn, out


def test_copy_draws_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    run = _in_process(tmp_path)
    _motia_file(tmp_path / "in.json")
    assert run("import", "in.json", "--url", "sqlite:///a.db").code == 0
    code, drawn, summary = _with_stderr_on_a_terminal(tmp_path, "copy", "sqlite:///a.db", "sqlite:///b.db")
    assert code == 0
    assert b"Copying" in drawn
    assert b"11/11" in drawn
    assert summary.startswith(b"Copied 11 items in 4 groups")


def test_backup_draws_a_progress_bar_on_a_terminal_and_copy_restores_it(tmp_path: Path) -> None:
    run = _in_process(tmp_path)
    _motia_file(tmp_path / "in.json")
    assert run("import", "in.json", "--url", "sqlite:///a.db").code == 0
    backup = ["backup", "backup.db", "--pages", "1", "--url", "sqlite:///a.db"]
    code, drawn, summary = _with_stderr_on_a_terminal(tmp_path, *backup)
    assert code == 0
    assert b"Backing up" in drawn
    pages = int(summary.split(b" pages in ")[0].rsplit(b" ", 1)[1])
    assert f"{pages}/{pages}".encode() in drawn
    assert run("copy", "sqlite:///backup.db", "sqlite:///restored.db").code == 0  # restored anywhere
    assert run("export", "--url", "sqlite:///restored.db").stdout == run("export", "--url", "sqlite:///a.db").stdout


# -- round trips through a chain of stores ----------------------------------------------------


# Each store is filled from the one before; the last one is exported.
def _redis(redis_url: str, layout: str) -> str:
    return f"{redis_url}?layout={layout}&key_prefix=cli-{uuid.uuid4().hex[:8]}:"


def _chain_of_processes(tmp_path: Path, redis_url: str) -> list[str]:
    return [
        f"sqlite:///{tmp_path}/first.db",
        _redis(redis_url, "native"),
        f"file://{tmp_path}/legacy",
        _redis(redis_url, "motia"),
        f"sqlite:///{tmp_path}/last.db",
    ]


def _chain_in_process(tmp_path: Path, redis_url: str) -> list[str]:
    return [
        f"sqlite:///{tmp_path}/first.db",
        "memory://",
        _redis(redis_url, "motia"),
        f"file://{tmp_path}/legacy",
        "sqlite:///:memory:",
        _redis(redis_url, "native"),
        f"sqlite:///{tmp_path}/last.db",
    ]


def test_round_trip_through_a_chain_of_stores_with_the_command_line(
    cli: Run, tmp_path: Path, redis_url: str
) -> None:
    original = _motia_file(tmp_path / "in.json")
    chain = _chain_of_processes(tmp_path, redis_url)
    assert cli("import", "in.json", "--url", chain[0]).code == 0
    for source, target in itertools.pairwise(chain):
        assert cli("copy", source, target, "--batch-size", "4").stdout.startswith(
            "Copied 11 items in 4 groups"
        )
    assert cli("export", "--url", chain[-1], "-o", "out.json").code == 0
    assert (tmp_path / "out.json").read_bytes() == original


async def test_round_trip_through_a_chain_of_stores_in_one_process(tmp_path: Path, redis_url: str) -> None:
    original = _motia_file(tmp_path / "in.json")
    stores = [open_state(url) for url in _chain_in_process(tmp_path, redis_url)]
    try:
        for store in stores:
            await store.__aenter__()
        numbered = read_import_file(tmp_path / "in.json", "motia")
        assert await import_items(stores[0], tmp_path / "in.json", numbered) == (11, 4)
        for source, target in itertools.pairwise(stores):
            assert await copy_items(source.iter_entries(batch_size=4), target, 4) == (11, 4)
        output = tmp_path / "out.json"
        assert await export_items(stores[-1].iter_json(), "motia", str(output)) == (11, 4)
        assert output.read_bytes() == original
        jsonl = tmp_path / "out.jsonl"
        assert await export_items(stores[-1].iter_json(), "jsonl", str(jsonl)) == (11, 4)
        numbered = read_import_file(jsonl, "jsonl")
        async with open_state("memory://") as again:
            await import_items(again, jsonl, numbered)
            await export_items(again.iter_json(), "motia", str(output))
        assert output.read_bytes() == original
    finally:
        for store in stores:
            await store.close()


# -- copy keeps memory flat -------------------------------------------------------------------

_MEASURED_COPY = r"""
import re, sys

def kib(field):
    with open("/proc/self/status") as status:
        return int(re.search(field + r":\s+(\d+) kB", status.read()).group(1))

from motia_state_sql.cli import main
import alembic.command, alembic.config, alembic.script  # loaded before the baseline
baseline = kib("VmRSS")
main(sys.argv[1:], standalone_mode=False)
print(baseline, kib("VmHWM"))
"""


def _peak_growth_of_copy(folder: Path, count: int) -> int:
    """KiB the peak RSS of a ``copy`` of ``count`` items rose above its start, in a fresh process."""
    source = folder / "source"
    source.mkdir(parents=True)
    items = (
        (
            f"group-{index % 50:02d}",
            f"key-{index:07d}",
            f'{{"id":{index},"name":"item {index}","tags":["a","b"]}}',
        )
        for index in range(count)
    )
    (source / "motia.state.json").write_bytes(dump_motia_json(items))

    async def create() -> None:  # a new database imports the motia.state.json beside it
        async with SqliteStateAdapter(source / "state.db") as store:
            assert len(await store.keys("group-00")) == count // 50

    asyncio.run(create())
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURED_COPY,
            "copy",
            f"sqlite:///{source}/state.db",
            f"sqlite:///{folder}/target/state.db",
            "--batch-size",
            "1000",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=True,
    )
    summary, numbers = done.stdout.splitlines()
    assert summary.startswith(f"Copied {count} items in 50 groups"), summary
    with sqlite3.connect(folder / "target" / "state.db") as raw:
        assert raw.execute("SELECT count(*) FROM motia_state").fetchone()[0] == count
    baseline, peak = map(int, numbers.split())
    return peak - baseline


def test_copy_of_100_000_items_keeps_memory_flat(tmp_path: Path) -> None:
    small = _peak_growth_of_copy(tmp_path / "small", 10_000)
    large = _peak_growth_of_copy(tmp_path / "large", 100_000)
    # Holding the store would cost well over 30 MiB more for 90 000 more items.
    assert large < 1.5 * small + 8 * 1024, (small, large)

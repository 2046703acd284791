"""Start-up: ``import motia_state_sql`` and opening a store at head load no heavy dependency.

SQLAlchemy and Alembic load only when a migration must run; redis-py only when a Redis adapter
is built. Each check runs in a fresh interpreter, so modules imported by other tests do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.baselines import HEAVY

#: What ``motia-state --help`` must not load: no backend, no event loop, no driver.
NOT_FOR_HELP = (
    *HEAVY,
    "asyncio",
    "asyncpg",
    "motia_state_sql.base",
    "motia_state_sql.sqlite",
    "motia_state_sql.file",
    "motia_state_sql.memory",
    "motia_state_sql.admin",
    "motia_state_sql.serve",
    "motia_state_sql.url",
)


def loaded_after(code: str, watched: tuple[str, ...] = HEAVY) -> list[str]:
    """The ``watched`` modules in ``sys.modules`` (by full name or top package) after ``code`` ran anew."""
    probe = (
        f"{code}\nimport json, sys\n"
        "names = {m.split('.')[0] for m in sys.modules} | set(sys.modules)\n"
        f"print(json.dumps(sorted(names & {set(watched)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    result: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_loads_no_heavy_dependency() -> None:
    assert loaded_after("import motia_state_sql") == []


def test_help_loads_no_backend() -> None:
    code = (
        "import contextlib, io\nfrom motia_state_sql.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])"
    )
    assert loaded_after(code, NOT_FOR_HELP) == []


def test_every_public_name_resolves() -> None:
    code = "import motia_state_sql as m\nfor name in m.__all__:\n    getattr(m, name)\nprint(len(m.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout) > 20


def test_store_at_head_opens_without_sqlalchemy(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    use = (
        "import asyncio\n"
        "from motia_state_sql import open_state\n"
        "async def main():\n"
        f"    st = open_state('sqlite:///{path}')\n"
        "    await st.set('g', 'k', {'n': 1})\n"
        "    assert (await st.get('g', 'k')) == {'n': 1}\n"
        "    await st.close()\n"
        "asyncio.run(main())"
    )
    # The first open creates the schema: that is a migration, so Alembic runs.
    assert set(loaded_after(use)) == {"sqlalchemy", "alembic"}
    assert loaded_after(use) == []


def test_redis_loads_when_named() -> None:
    assert loaded_after("from motia_state_sql import RedisStateAdapter") == ["redis"]
    assert loaded_after("import motia_state_sql\nmotia_state_sql.RedisStateAdapter") == ["redis"]


def test_unknown_attribute_is_an_attribute_error() -> None:
    code = "import motia_state_sql\ntry:\n    motia_state_sql.Nope\nexcept AttributeError as e:\n    print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "has no attribute 'Nope'" in out.stdout

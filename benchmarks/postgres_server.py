"""A throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a free loopback port, for tests and
the benchmark harness.

Runs as the ``postgres`` OS user when we are root (PostgreSQL refuses to run as root), in a temp
folder that also holds the unix socket. The tests' cluster runs with ``fsync=off`` (nothing there
must survive a power loss); the harness's keeps PostgreSQL's defaults (``durable=True``: fsync on),
so its figures are those of a durable server. Tests may stop, kill and restart it.
``$POSTGRES_URL`` points the suite (and the harness) at an external server instead; the
machine's own server on 5432 is never used by default.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.redis_server import free_port, wait_until

PASSWORD_USER = "motia"


def bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Raises:
        RuntimeError: PostgreSQL is not installed (``make test`` installs it from Debian).
    """
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(os.path.realpath(found)).parent
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout
        if (Path(out.strip()) / "initdb").exists():
            return Path(out.strip())
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists():
            return Path(folder)
    raise RuntimeError("PostgreSQL (initdb, pg_ctl) is not installed: `make test` installs it from Debian")


class PostgresServer:
    """One PostgreSQL cluster bound to 127.0.0.1; superuser ``postgres`` (trust), user ``motia``
    (password, scram-sha-256) for the tests of passwords."""

    def __init__(self, durable: bool = False) -> None:
        self.bin = bindir()
        self.durable = durable
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"pg-{self.port}-"))
        self.data = self.folder / "data"
        self.password = "pw-" + secrets.token_hex(8)
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        """The superuser's URL (no password: loopback connections of ``postgres`` are trusted)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def password_url(self) -> str:
        """A URL holding a password (user ``motia``), for the tests that it never shows."""
        return f"postgresql://{PASSWORD_USER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_postgres, *args], capture_output=True, text=True, check=True, timeout=timeout
        )

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=trust",
            "--no-sync",
        )
        # The password user authenticates by password over TCP; every other user is trusted.
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"local all all trust\nhost all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )

    def start(self) -> None:
        """Start the cluster (``init`` first, once) and wait until it accepts connections."""
        settings = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        if not self.durable:
            settings += " -c fsync=off -c full_page_writes=off"
        try:
            self._run(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                settings,
                "-l",
                str(self.folder / "postgres.log"),
                "-w",
                "-t",
                "60",
                "start",
            )
        except subprocess.CalledProcessError as exc:
            log = f"{exc.stderr}{self.log()}"
            raise RuntimeError(f"postgres on port {self.port} did not start: {log}") from exc

    def setup_password_user(self) -> None:
        self.psql(f"CREATE ROLE {PASSWORD_USER} LOGIN SUPERUSER PASSWORD '{self.password}'")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` through psql on the unix socket, as the superuser; its output."""
        return self._run(
            str(self.bin / "psql"),
            "-h",
            str(self.folder),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        ).stdout

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``mode``: ``fast`` rolls back sessions, ``immediate`` aborts)."""
        if not (self.data / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def wait_until_up(self, seconds: float = 30) -> None:
        """Wait until the (re)started cluster answers a query.

        Raises:
            RuntimeError: it did not within ``seconds``.
        """
        if not wait_until(self._answers, seconds):
            raise RuntimeError(f"postgres on port {self.port} did not come back: {self.log()}")

    def _answers(self) -> bool:
        try:
            self.psql("SELECT 1")
        except subprocess.CalledProcessError:
            return False
        return True


@contextlib.contextmanager
def throwaway_server(durable: bool = False) -> Iterator[PostgresServer]:
    """A started cluster, stopped and deleted afterwards."""
    server = PostgresServer(durable)
    try:
        server.init()
        server.start()
        server.setup_password_user()
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def postgres_url_or_throwaway(durable: bool = False) -> Iterator[str]:
    """``$POSTGRES_URL`` when set, else the URL of a throwaway cluster, stopped afterwards."""
    external = os.environ.get("POSTGRES_URL")
    if external:
        yield external
        return
    with throwaway_server(durable) as server:
        yield server.url

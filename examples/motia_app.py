"""Run the Motia app in ``examples/motia-app`` on motia-state-sql: what ``make demo`` does.

The app is Motia's order workflow as real Motia steps (a TypeScript API step, a Python event step,
a cron step and a report route) whose state lives in ``.motia/motia.state.db`` through
``SqlStateAdapter`` (``motia.config.ts``). This script installs what the app needs (cached), starts
``motia start`` on a free loopback port with a throwaway redis-server (Motia keeps its event queue
and cron locks in Redis even when its state is elsewhere), creates three orders over HTTP, waits for
the Python step to mark them paid, prints the report and stops Motia. Run it twice: the orders of
the first run are still in the store. Without node and npm it runs ``order_workflow.py`` instead.

``tests/test_motia_app.py`` drives the same app with the same helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "motia-app"
STATE_FILE = Path(".motia") / "motia.state.db"  # in the app folder: motia.config.ts says so
READY = "Server ready and listening on port"
ADAPTER_READY = "motia-state-sql: state in "

__all__ = ["APP", "Motia", "NodeMissingError", "http", "install", "redis_server"]


class NodeMissingError(RuntimeError):
    """node or npm is not on PATH."""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDISMS_DISABLE_POSTINSTALL="1",  # redis-memory-server's postinstall downloads and builds Redis
        MOTIA_ANALYTICS_DISABLED="true",
    )
    env.update(extra)
    return env


def _digest(*paths: Path, extra: str = "") -> str:
    hashed = hashlib.sha256(extra.encode())
    for path in paths:
        hashed.update(path.name.encode() + b"\0")
        hashed.update(path.read_bytes() if path.exists() else b"(missing)")
    return hashed.hexdigest()


def _run(command: list[str], cwd: Path, log: IO[str]) -> None:
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        log.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise RuntimeError(f"{' '.join(command)} failed with code {done.returncode} (in {cwd})")


def install(app: Path = APP, log: IO[str] = sys.stdout) -> None:
    """Install the app's npm packages and its ``python_modules``, unless done already.

    npm: ``npm ci`` (``npm install`` without a lock file), skipped while ``package.json`` and
    ``package-lock.json`` are unchanged (a stamp in ``node_modules``); npm's own cache (~/.npm)
    makes a reinstall fast. ``python_modules``: the virtualenv Motia runs Python steps in, as
    ``npx motia install`` creates it (``python -m venv`` plus Motia's requirements-core.txt), with
    motia-state-sql installed in it too (editable, from this checkout): the adapter's default
    Python is ``python_modules/bin/python``. Skipped while pyproject.toml is unchanged.

    Raises:
        NodeMissingError: node or npm is not on PATH.
    """
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        raise NodeMissingError("node and npm are needed to run the Motia app (Node 18+)")
    with FileLock(str(app / ".install.lock")):
        modules = app / "node_modules"
        stamp = modules / ".motia-state-sql-installed"
        lock_file = app / "package-lock.json"
        wanted = _digest(app / "package.json", lock_file)
        if not stamp.exists() or stamp.read_text() != wanted:
            command = "ci" if lock_file.exists() else "install"
            log.write(f"npm {command} in {app.relative_to(ROOT)} (REDISMS_DISABLE_POSTINSTALL=1) ...\n")
            log.flush()
            _run([npm, command, "--no-audit", "--no-fund", "--loglevel=error"], app, log)
            stamp.write_text(_digest(app / "package.json", lock_file))
        venv = app / "python_modules"
        python = venv / "bin" / "python"
        requirements = modules / "motia" / "dist" / "requirements-core.txt"
        stamp = venv / ".motia-state-sql-installed"
        wanted = _digest(ROOT / "pyproject.toml", requirements, extra=sys.version)
        if not stamp.exists() or stamp.read_text() != wanted:
            log.write(f"python_modules in {app.relative_to(ROOT)}: Motia's requirements, motia-state-sql\n")
            log.flush()
            if not python.exists():
                _run([sys.executable, "-m", "venv", str(venv)], app, log)
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            _run([*pip, "-r", str(requirements), "-e", str(ROOT)], app, log)
            stamp.write_text(wanted)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway redis-server on a free loopback port, keeping nothing on disk: its port."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="motia-redis-") as folder:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5) as client:
                        if client.ping():
                            break
                except redis.exceptions.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {port} did not start") from None
                    time.sleep(0.05)
            yield port
        finally:
            process.terminate()
            process.wait(10)


def http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """``(status, JSON body)`` of one HTTP request."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text.decode(errors="replace")


class Motia:
    """``motia start`` of one app folder, in a process group of its own (Python children too)."""

    def __init__(
        self, app: Path = APP, redis_port: int = 6379, redis_host: str = "127.0.0.1", redis_db: int = 0
    ) -> None:
        self.app = app
        self.env = _env(
            # Our own Redis, not Motia's redis-memory-server (which would download Redis).
            MOTIA_DISABLE_MEMORY_SERVER="true",
            MOTIA_REDIS_HOST=redis_host,
            MOTIA_REDIS_PORT=str(redis_port),
            MOTIA_REDIS_DB=str(redis_db),
            MOTIA_DOCKER_DISABLE_WORKBENCH="true",  # no UI: only the API routes
        )
        self.log_path = app / ".motia" / "motia.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.started_at = 0  # where the output of the last start begins in the log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, offset: int = 0) -> str:
        """Motia's output (appended to ``.motia/motia.log``) from byte ``offset`` on."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def start(self, timeout: float = 120) -> None:
        """Start Motia and wait until it serves HTTP and our adapter has opened the store."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        cli = self.app / "node_modules" / "motia" / "dist" / "cli.mjs"  # what `npx motia` runs
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                ["node", str(cli), "start", "-p", str(free_port()), "-H", "127.0.0.1"],
                cwd=self.app,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            text = self.log(offset)
            if READY in text and ADAPTER_READY in text:
                self.port = int(text.split(READY, 1)[1].split()[0])
                self.started_at = offset
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.kill()
                raise RuntimeError(
                    f"Motia did not start (in {self.app}; exit code {code}); its output:\n{text[-6000:]}"
                )
            time.sleep(0.1)

    @property
    def state_url(self) -> str:
        """The store our adapter announced (its ``motia-state-sql: state in URL`` line)."""
        return self.log(self.started_at).split(ADAPTER_READY, 1)[1].split()[0]

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to Motia's process group (ours closes the store), SIGKILL if that hangs."""
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._wait_group()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the whole process group: Motia, our Python process, the running steps."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(30)
        self._wait_group()
        self.process = None

    def _wait_group(self, timeout: float = 30) -> None:
        """Wait until no process of the group is left (our Python process closes the store)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        self._signal(signal.SIGKILL)


def wait_paid(motia: Motia, ids: set[str], timeout: float = 120) -> list[dict[str, Any]]:
    """Poll ``GET /report?orders=1`` until every order of ``ids`` is paid: every order then."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http("GET", f"{motia.url}/report?orders=1")
        assert status == 200, body
        orders: list[dict[str, Any]] = body["orders"]
        paid = {order["id"] for order in orders if order["status"] == "paid"}
        if ids <= paid:
            return orders
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids - paid)} of {len(ids)} orders not paid after {timeout} s")
        time.sleep(0.2)


def demo() -> None:
    started = time.monotonic()
    install()
    print(f"Motia app: {APP.relative_to(ROOT)} (motia start, state through motia-state-sql)")
    with redis_server() as redis_port:
        motia = Motia(APP, redis_port)
        motia.start()
        try:
            print(f"Motia serves {motia.url}; our adapter keeps its state in {motia.state_url}")
            print(f"  (Redis, for Motia's event queue only: a throwaway redis-server on port {redis_port})")
            _, body = http("GET", f"{motia.url}/report")
            earlier = body["report"]["total"]
            ids = set()
            for sku, qty, price in (("SKU-101", 1, 19.99), ("SKU-202", 2, 5.50), ("SKU-303", 3, 2.25)):
                wanted = {"items": [{"sku": sku, "qty": qty}], "total": round(qty * price, 2)}
                status, order = http("POST", f"{motia.url}/orders", wanted)
                assert status == 201, order
                ids.add(order["id"])
                print(
                    f"POST /orders -> {status}: CreateOrder stored order {order['id'][:8]} "
                    f"({sku} x{qty}, total {order['total']:.2f}, {order['status']})"
                )
            waited = time.monotonic()
            wait_paid(motia, ids)
            took = time.monotonic() - waited
            print(f"ProcessPayment (a Python step) marked the {len(ids)} orders paid in {took:.1f} s")
            _, body = http("GET", f"{motia.url}/report")
            report = body["report"]
            print(f"GET /report (DailyReport's report, also run by its cron at midnight): {report}")
            print(f"orders in store: {report['total']} ({earlier} from earlier runs)")
        finally:
            motia.stop()
    print(f"Motia stopped ({time.monotonic() - started:.0f} s in all). The same orders, from the shell:")
    print(f"  motia-state items --group orders --url sqlite:///{(APP / STATE_FILE).relative_to(ROOT)}")


def main() -> None:
    try:
        demo()
    except NodeMissingError as exc:
        print(f"{exc}: running the Python-only order workflow (examples/order_workflow.py) instead")
        import asyncio

        sys.path.insert(0, str(ROOT))
        from examples.order_workflow import main as python_only

        asyncio.run(python_only())


if __name__ == "__main__":
    main()

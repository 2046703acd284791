"""Throwaway redis-server processes on free loopback ports, which tests may stop and restart."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster: bool = False) -> int:
    """A free loopback port; for a cluster node also its bus port (+10000), so at most 55535."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(20000, 45000)
        if _bindable(port) and (not cluster or _bindable(port + 10000)):
            return port
    raise RuntimeError("no free loopback port found")


def wait_until(ready: Callable[[], bool], seconds: float, gone: Callable[[], bool] = lambda: False) -> bool:
    """Poll ``ready()`` every 50 ms: True once it holds, False when ``gone()`` holds (the server
    process exited) or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not ready():
        if gone() or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class RedisServer:
    """One redis-server bound to 127.0.0.1, keeping nothing on disk."""

    def __init__(self, port: int | None = None, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `make test` installs it from Debian")
        self.binary = binary
        self.port = port or free_port()
        self.extra = list(extra)
        self.folder = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, tls_ca: str | None = None) -> None:
        """Start the server and wait until it answers (over TLS, trusting ``tls_ca``, if given)."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process
        if not wait_until(lambda: self._answers(tls_ca), 10, lambda: process.poll() is not None):
            log = self.log()
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start: {log}")

    def _answers(self, tls_ca: str | None) -> bool:
        try:
            # No retries: redis-py would back off for seconds on the expected AuthenticationError.
            options: dict[str, Any] = {"socket_timeout": 0.5, "retry": Retry(NoBackoff(), 0)}
            if tls_ca:
                options |= {"ssl": True, "ssl_ca_certs": tls_ca}
            with redis.Redis(host="127.0.0.1", port=self.port, **options) as client:
                return bool(client.ping())
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
            return True  # it answered: up, and asking for a password
        except redis.exceptions.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisCluster:
    """Three redis-server primaries on loopback ports, joined into a cluster by redis-cli."""

    def __init__(self) -> None:
        self.nodes = [
            RedisServer(free_port(cluster=True), "--cluster-enabled", "yes", "--cluster-node-timeout", "5000")
            for _ in range(3)
        ]
        for node in self.nodes:
            node.extra += ["--cluster-config-file", str(node.folder / "nodes.conf")]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: `make test` installs redis-server with it")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        if not wait_until(self._ready, 30):
            raise RuntimeError("the Redis cluster did not become ready")

    def _ready(self) -> bool:
        for node in self.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text:
                    return False
        return True

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@contextlib.contextmanager
def redis_url_or_throwaway() -> Iterator[str]:
    """``$REDIS_URL`` when set, else the URL of a throwaway redis-server, stopped afterwards."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()

"""End to end: the Motia app of examples/motia-app, run by real Motia processes on our SQLite store.

Each test runs a copy of the app in a temporary folder (its own ``.motia/motia.state.db``; the
installed node_modules and python_modules of examples/motia-app are shared through symlinks, made
by the same cached install as ``make demo``), with the session's throwaway redis-server for
Motia's event queue. Nothing is mocked: HTTP requests reach ``motia start``, the TypeScript and
Python steps run in Motia's own child processes, and the state goes through ``SqlStateAdapter``
to a ``motia_state_sql serve`` process.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from examples.motia_app import APP, STATE_FILE, Motia, http, install
from motia_state_sql import SqliteStateAdapter

COUNT = 200


@pytest.fixture(scope="module")
def installed() -> Path:
    """examples/motia-app with node_modules and python_modules installed (cached by stamps)."""
    install(APP)
    return APP


@pytest.fixture
def app(installed: Path, tmp_path: Path) -> Path:
    """A copy of the app whose state and Motia output stay in ``tmp_path``."""
    copy = tmp_path / "motia-app"
    copy.mkdir()
    for name in ("package.json", "motia.config.ts", "types.d.ts"):
        shutil.copy2(installed / name, copy / name)
    shutil.copytree(installed / "src", copy / "src")
    for name in ("node_modules", "python_modules"):
        (copy / name).symlink_to(installed / name, target_is_directory=True)
    return copy


@pytest.fixture
def motia(app: Path, redis_url: str) -> Iterator[Motia]:
    parts = urlsplit(redis_url)
    database = int(parts.path.strip("/") or 0)
    host = parts.hostname or "127.0.0.1"
    server = Motia(app, redis_port=parts.port or 6379, redis_host=host, redis_db=database)
    try:
        yield server
    finally:
        server.kill()


def stored_orders(app: Path) -> dict[str, Any]:
    """Every order in the app's SQLite file, read with our own Python API."""

    async def read() -> dict[str, Any]:
        async with SqliteStateAdapter(app / STATE_FILE, read_only=True) as store:
            keys = await store.keys("orders")
            values = await store.get_group("orders")
        orders = {order["id"]: order for order in values}
        assert sorted(orders) == sorted(keys)
        return orders

    return asyncio.run(read())


def integrity(app: Path) -> str:
    with sqlite3.connect(app / STATE_FILE) as db:
        result: str = db.execute("PRAGMA integrity_check").fetchone()[0]
    return result


def order_body(n: int) -> dict[str, Any]:
    return {"items": [{"sku": f"SKU-{n:03d}", "qty": n % 5 + 1}], "total": (n % 5 + 1) * 2.5 + n / 100}


# Minutes: Motia 0.17.6-beta.187 slows down with every step it runs (0.2 s a POST at first, about
# 1.5 s after 250: its trace streams are wrapped once more per step run, with its own Redis state
# too), and the first run also installs the app (npm ci, python_modules).
@pytest.mark.timeout(600)
def test_200_concurrent_orders_paid_by_the_python_step_and_kept_across_a_restart(
    app: Path, motia: Motia
) -> None:
    motia.start()
    assert motia.state_url == "sqlite:///.motia/motia.state.db"

    def create(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
        body = order_body(n)
        status, order = http("POST", f"{motia.url}/orders", body, timeout=240)
        assert status == 201, order
        return body, order

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:  # 200 orders, 16 requests in flight at a time
        created = list(pool.map(create, range(COUNT)))
    print(f"{COUNT} POST /orders answered in {time.monotonic() - started:.1f} s")
    sent = {order["id"]: (body, order) for body, order in created}
    assert len(sent) == COUNT
    for body, order in created:
        assert order["items"] == body["items"]
        assert order["total"] == body["total"]
        assert order["status"] == "pending"

    # Wait for the Python step, watching the file (polling GET /report would start a Motia step
    # process each time, slowing down the steps we wait for).
    deadline = time.monotonic() + 150
    while (paid := sum(order["status"] == "paid" for order in stored_orders(app).values())) < COUNT:
        assert time.monotonic() < deadline, f"{paid} of {COUNT} orders paid after 150 s"
        time.sleep(0.5)
    print(f"all paid {time.monotonic() - started:.1f} s after the first POST")
    started = time.monotonic()
    status, answer = http("GET", f"{motia.url}/report?orders=1")
    assert status == 200
    over_http = answer["orders"]
    print(f"GET /report?orders=1 took {time.monotonic() - started:.2f} s")
    status, answer = http("GET", f"{motia.url}/report")
    assert status == 200
    revenue = sum(body["total"] for body, _ in created)
    assert answer["report"]["total"] == COUNT
    assert answer["report"]["pending"] == 0
    assert answer["report"]["paid"] == COUNT
    assert answer["report"]["revenue"] == pytest.approx(revenue, abs=0.006)
    motia.stop()

    # The file itself, read with our Python API: 200 orders, each exactly as created, then paid.
    stored = stored_orders(app)
    assert set(stored) == set(sent)
    for order_id, (_, order) in sent.items():
        value = stored[order_id]
        paid_at = value.pop("paidAt")
        assert value == {**order, "status": "paid"}
        assert datetime.fromisoformat(paid_at) >= datetime.fromisoformat(order["createdAt"])
    assert sorted(over_http, key=lambda order: order["id"]) == sorted(
        stored_orders(app).values(), key=lambda order: order["id"]
    )
    assert integrity(app) == "ok"

    # A new Motia process on the same folder serves the same orders.
    motia.start()
    status, answer = http("GET", f"{motia.url}/report?orders=1")
    assert status == 200
    assert answer["report"]["total"] == COUNT
    assert answer["report"]["paid"] == COUNT
    assert {order["id"]: order for order in answer["orders"]} == stored_orders(app)
    motia.stop()


@pytest.mark.timeout(240)
def test_sigkill_while_orders_are_created_loses_no_answered_order(app: Path, motia: Motia) -> None:
    motia.start()
    answered: list[dict[str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()
    counter = iter(range(1_000_000))

    def keep_creating() -> None:
        while not stop.is_set():
            with lock:
                n = next(counter)
            try:
                status, order = http("POST", f"{motia.url}/orders", order_body(n), timeout=60)
            except (OSError, HTTPException) as exc:  # Motia was killed mid-request
                with lock:
                    failures.append(type(exc).__name__)
                return
            if status != 201:
                with lock:
                    failures.append(f"HTTP {status}: {order}")
                return
            with lock:
                answered.append(order)

    workers = [threading.Thread(target=keep_creating) for _ in range(12)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 120
        while len(answered) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        motia.kill()  # SIGKILL to the whole group: Motia, our Python process, the running steps
    finally:
        stop.set()
        for worker in workers:
            worker.join(90)
    assert len(answered) >= 60, failures
    assert all("HTTP" not in failure for failure in failures), failures
    # Requests were in flight when Motia died (not only refused afterwards).
    assert {"RemoteDisconnected", "ConnectionResetError"} & set(failures), failures

    assert integrity(app) == "ok"
    stored = stored_orders(app)
    missing = [order["id"] for order in answered if order["id"] not in stored]
    assert missing == []
    for order in answered:
        value = dict(stored[order["id"]])
        value.pop("paidAt", None)
        assert value == {**order, "status": value["status"]}
        assert value["status"] in ("pending", "paid")

    # Motia starts again on the file the killed process left, and serves what it holds.
    motia.start()
    status, answer = http("GET", f"{motia.url}/report")
    assert status == 200
    assert answer["report"]["total"] == len(stored_orders(app))
    motia.stop()

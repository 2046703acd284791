"""Motia's documented order workflow, in Python, on the default SQLite state store.

Three steps share state exactly as in Motia's state guide: an API step creates an order, an event
step processes its payment, and a cron-style step prints a daily report of every order. State
lives in ``.motia/motia.state.db``; run this twice and the report shows the orders of both runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from motia_state_sql import StateAdapter, merge, open_state

logging.basicConfig(level=logging.INFO, format="%(message)s")
logging.getLogger("alembic").setLevel(logging.WARNING)  # schema creation on the first run
log = logging.getLogger("order-workflow")

Handler = Callable[[dict[str, Any], StateAdapter], Awaitable[None]]


class Flow:
    """A minimal stand-in for Motia's event bus: ``emit`` runs the subscribed step."""

    def __init__(self, state: StateAdapter) -> None:
        self.state = state
        self.subscribers: dict[str, list[Handler]] = {}

    def on(self, topic: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.subscribers.setdefault(topic, []).append(handler)
            return handler

        return register

    async def emit(self, topic: str, data: dict[str, Any]) -> None:
        for handler in self.subscribers.get(topic, []):
            await handler(data, self.state)


async def create_order(flow: Flow, items: list[dict[str, Any]], total: float) -> dict[str, Any]:
    """Step 1 (API): store a new order in group ``orders`` and emit ``order.created``."""
    order_id = str(uuid.uuid4())
    order = {
        "id": order_id,
        "items": items,
        "total": total,
        "status": "pending",
        "createdAt": datetime.now(UTC).isoformat(),
    }
    await flow.state.set("orders", order_id, order)
    log.info("CreateOrder     stored order %s (total %.2f, status pending)", order_id[:8], total)
    await flow.emit("order.created", {"orderId": order_id})
    return order


async def process_payment(data: dict[str, Any], state: StateAdapter) -> None:
    """Step 2 (event): mark the order paid.

    Motia's guide reads the order, changes it and writes it back; ``update`` does the same in one
    atomic step, so two steps paying at once cannot lose each other's change.
    """
    order_id = data["orderId"]
    if await state.get("orders", order_id) is None:
        raise LookupError(f"Order {order_id} not found")
    result = await state.update(
        "orders", order_id, [merge(None, {"status": "paid", "paidAt": datetime.now(UTC).isoformat()})]
    )
    log.info(
        "ProcessPayment  order %s: %s -> %s",
        order_id[:8],
        result.old_value["status"],
        result.new_value["status"],
    )


async def daily_report(state: StateAdapter) -> dict[str, int]:
    """Step 3 (cron): count every order by status."""
    orders = await state.get_group("orders")
    report = {
        "total": len(orders),
        "pending": sum(1 for o in orders if o["status"] == "pending"),
        "paid": sum(1 for o in orders if o["status"] == "paid"),
    }
    log.info("DailyReport     %s", report)
    return report


async def main() -> None:
    async with open_state() as state:  # MOTIA_STATE_URL, else .motia/motia.state.db
        log.info("State store: %r", state)
        flow = Flow(state)
        flow.on("order.created")(process_payment)
        rng = random.Random()
        for _ in range(2):
            count = rng.randint(1, 3)
            await create_order(flow, [{"sku": f"SKU-{rng.randint(100, 999)}", "qty": count}], 19.99 * count)
        # An order whose payment has not been processed yet: the report counts it as pending.
        flow.subscribers.clear()
        await create_order(flow, [{"sku": "SKU-LATER", "qty": 1}], 5.0)
        report = await daily_report(state)
        log.info("(%d orders from earlier runs are still in the store)", report["total"] - 3)


if __name__ == "__main__":
    asyncio.run(main())

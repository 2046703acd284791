"""Step 2 (event, Python): mark the order of an ``order.created`` event paid."""

from datetime import UTC, datetime
from typing import Any

config = {
    "type": "event",
    "name": "ProcessPayment",
    "description": "Marks the order paid (a Python step sharing state with the TypeScript ones)",
    "subscribes": ["order.created"],
    "emits": [],
    "flows": ["orders"],
    "input": {
        "type": "object",
        "properties": {"orderId": {"type": "string"}},
        "required": ["orderId"],
    },
}


def stored_value(answer: Any) -> Any:
    """The stored value from Motia's Python ``state.get``.

    Motia 0.17's Python runner (motia_rpc_state_manager.py) hands back ``{"data": value}`` when the
    stored value is an object without a "data" field, or null; any other value (a list, a string,
    a number, an object that has a "data" field) comes back as itself. So ``{"data": x}`` is
    ambiguous: it is either a wrapped ``x`` or a stored object whose only field is "data". Orders
    never have a "data" field, so here every object answer is wrapped and unwrapping is exact.
    (Its ``get_group`` wraps the same way, and its ``getGroup`` alias is broken: use ``get_group``.)
    """
    if isinstance(answer, dict) and set(answer) == {"data"}:
        return answer["data"]
    return answer


async def handler(data: dict[str, Any], context: Any) -> None:
    order_id = data["orderId"]
    order = stored_value(await context.state.get("orders", order_id))
    if order is None:
        raise LookupError(f"order {order_id} not found")
    if order["status"] == "paid":  # an event delivered twice (BullMQ retries): nothing to do
        return
    paid = {**order, "status": "paid", "paidAt": datetime.now(UTC).isoformat()}
    # Only this step writes an order after it was created, once per order: a plain set is safe.
    await context.state.set("orders", order_id, paid)
    context.logger.info("ProcessPayment marked order paid", {"orderId": order_id, "total": order["total"]})

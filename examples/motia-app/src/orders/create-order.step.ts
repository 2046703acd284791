// Step 1 (API): POST /orders stores a new order in state group "orders", then emits order.created.
// The order is in the store (committed to SQLite) before the response is sent.
import { randomUUID } from 'node:crypto'
import type { ApiRouteConfig, ApiRouteHandler } from 'motia'
import type { Order } from './report'

export const config: ApiRouteConfig = {
  type: 'api',
  name: 'CreateOrder',
  description: 'Stores a new order (status pending) and emits order.created',
  path: '/orders',
  method: 'POST',
  emits: ['order.created'],
  flows: ['orders'],
  bodySchema: {
    type: 'object',
    properties: {
      items: {
        type: 'array',
        items: {
          type: 'object',
          properties: { sku: { type: 'string' }, qty: { type: 'integer', minimum: 1 } },
          required: ['sku', 'qty'],
        },
      },
      total: { type: 'number', minimum: 0 },
    },
    required: ['items', 'total'],
  },
}

type Body = { items: Order['items']; total: number }

export const handler: ApiRouteHandler<Body> = async (req, { state, emit, logger }) => {
  const { items, total } = req.body ?? ({} as Body)
  if (!Array.isArray(items) || typeof total !== 'number') {
    return { status: 400, body: { error: 'expected {"items": [{"sku", "qty"}], "total": number}' } }
  }
  const order: Order = {
    id: randomUUID(),
    items,
    total,
    status: 'pending',
    createdAt: new Date().toISOString(),
  }
  await state.set('orders', order.id, order)
  logger.info('CreateOrder stored order', { orderId: order.id, total })
  await emit({ topic: 'order.created', data: { orderId: order.id } } as never)
  return { status: 201, body: order }
}

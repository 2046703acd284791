// GET /report: the DailyReport's report on demand (so nobody waits for midnight), and the orders.
import type { ApiRouteConfig, ApiRouteHandler } from 'motia'
import { dailyReport, type Order } from './report'

export const config: ApiRouteConfig = {
  type: 'api',
  name: 'Report',
  description: 'The daily report now; with ?orders=1 also every order',
  path: '/report',
  method: 'GET',
  emits: [],
  flows: ['orders'],
  queryParams: [{ name: 'orders', description: '1 to include every order' }],
}

export const handler: ApiRouteHandler = async (req, { state }) => {
  const report = await dailyReport(state)
  if (req.queryParams.orders === '1') {
    return { status: 200, body: { report, orders: await state.getGroup<Order>('orders') } }
  }
  return { status: 200, body: { report } }
}

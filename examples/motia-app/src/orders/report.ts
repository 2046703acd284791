// The daily report, shared by the cron step and the GET /report route.
import type { InternalStateManager } from 'motia'

export type Order = {
  id: string
  items: { sku: string; qty: number }[]
  total: number
  status: 'pending' | 'paid'
  createdAt: string
  paidAt?: string
}

export type Report = { total: number; pending: number; paid: number; revenue: number }

export async function dailyReport(state: InternalStateManager): Promise<Report> {
  const orders = await state.getGroup<Order>('orders')
  const paid = orders.filter((order) => order.status === 'paid')
  return {
    total: orders.length,
    pending: orders.filter((order) => order.status === 'pending').length,
    paid: paid.length,
    revenue: Math.round(paid.reduce((sum, order) => sum + order.total, 0) * 100) / 100,
  }
}

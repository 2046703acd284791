// Step 3 (cron): every day at midnight, log the report of every order in the store.
import type { CronConfig, CronHandler } from 'motia'
import { dailyReport } from './report'

export const config: CronConfig = {
  type: 'cron',
  name: 'DailyReport',
  description: 'Counts the orders by status, every day at midnight',
  cron: '0 0 * * *',
  emits: [],
  flows: ['orders'],
}

export const handler: CronHandler = async ({ state, logger }) => {
  logger.info('DailyReport', await dailyReport(state))
}

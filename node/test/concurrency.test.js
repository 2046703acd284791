// Node and Python processes writing one SQLite file at once: no increment is lost.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'

import { PYTHON, openStore, sqlitePath } from './helpers.js'

const N = 200

// Opens the store, says "ready", waits for "go", then makes N increments in waves of 20.
const PYTHON_INCREMENTS = `
import asyncio, sys
from motia_state_sql import SqliteStateAdapter, increment
async def main(path, n):
    async with SqliteStateAdapter(path) as state:
        await state.get("count", "c")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        done = 0
        for wave in range(0, n, 20):
            results = await asyncio.gather(*(state.update("count", "c", [increment("n")]) for _ in range(wave, min(n, wave + 20))))
            done += len(results)
        print(done, flush=True)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
`

test(`${N} increments from Node and ${N} from Python on one SQLite file: exactly ${2 * N}`, { timeout: 45_000 }, async (t) => {
  const state = await openStore(t, 'sqlite')
  const file = sqlitePath(state.options.url)
  assert.equal(await state.get('count', 'c'), null) // the store exists, the process runs
  const py = spawn(PYTHON, ['-c', PYTHON_INCREMENTS, file, String(N)], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  py.stderr.setEncoding('utf8').on('data', (chunk) => (err += chunk))
  const exited = new Promise((resolve) => py.on('close', resolve))
  await new Promise((resolve, reject) => {
    py.stdout.setEncoding('utf8').on('data', (chunk) => {
      out += chunk
      if (out.startsWith('ready\n')) resolve()
    })
    exited.then((code) => reject(new Error(`python exited (${code}) before it was ready: ${err}`)))
  })
  py.stdin.end('go\n')
  const results = []
  for (let wave = 0; wave < N; wave += 20) {
    const calls = Array.from({ length: Math.min(20, N - wave) }, () =>
      state.update('count', 'c', [{ type: 'increment', path: 'n', by: 1 }]),
    )
    results.push(...(await Promise.all(calls)))
  }
  assert.equal(await exited, 0, err)
  assert.equal(Number(out.split('\n')[1]), N, 'every Python increment was acknowledged')
  assert.equal(results.length, N)
  // Each acknowledged Node increment saw its own distinct step of the counter.
  const seen = new Set(results.map((result) => result.newValue.n))
  assert.equal(seen.size, N)
  for (const result of results) assert.equal(result.newValue.n, (result.oldValue?.n ?? 0) + 1)
  assert.deepEqual(await state.get('count', 'c'), { n: 2 * N })
})

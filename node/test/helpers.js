// Shared by the node tests: the Python to run, a throwaway redis-server, fresh store URLs.
//
// Python: $MOTIA_STATE_PYTHON (tests/test_node_adapter.py sets it to pytest's interpreter), else
// python3. Redis: $REDIS_URL when set, else a redis-server of this test file's own on a free
// loopback port, keeping nothing on disk, killed when the file's tests end. PostgreSQL:
// $POSTGRES_URL (tests/test_node_adapter.py passes the session's throwaway cluster), each store
// in a schema of its own.

import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after } from 'node:test'

import { SqlStateAdapter } from '../index.js'

export const PYTHON = process.env.MOTIA_STATE_PYTHON || 'python3'
// $MOTIA_NODE_BACKENDS (comma separated) picks the stores; tests/test_node_adapter.py runs the
// contract over postgres in a run of its own, so neither run nears its time limit.
export const BACKENDS = (process.env.MOTIA_NODE_BACKENDS || 'sqlite,redis').split(',')

const folders = []
let redis = null // { url, process }

/** A fresh temporary folder, removed when the file's tests end. */
export function tempDir() {
  const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'motia-node-test-'))
  folders.push(folder)
  return folder
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

function ping(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    let answer = ''
    socket.setTimeout(500)
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (data) => {
      answer += data
      if (answer.includes('\r\n')) {
        socket.destroy()
        resolve(answer.startsWith('+PONG'))
      }
    })
    socket.on('timeout', () => {
      socket.destroy()
      resolve(false)
    })
    socket.on('error', () => resolve(false))
  })
}

async function startRedis() {
  const port = await freePort()
  const folder = tempDir()
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', folder],
    { stdio: 'ignore' },
  )
  const failed = new Promise((_resolve, reject) => {
    child.on('error', (error) =>
      reject(new Error(`cannot start redis-server (install it, or set $REDIS_URL): ${error.message}`)),
    )
    child.on('exit', (code) => reject(new Error(`redis-server exited with code ${code} at start`)))
  })
  failed.catch(() => {})
  const deadline = Date.now() + 10_000
  while (!(await Promise.race([ping(port), failed]))) {
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer within 10 s`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  child.removeAllListeners('exit')
  process.on('exit', () => child.kill('SIGKILL')) // even when a test crashes the file
  return { url: `redis://127.0.0.1:${port}/0`, process: child }
}

async function redisBase() {
  if (process.env.REDIS_URL) return process.env.REDIS_URL
  redis ??= startRedis()
  return (await redis).url
}

after(async () => {
  if (redis !== null) {
    const { process: child } = await redis.catch(() => ({}))
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child.on('exit', resolve))
      child.kill('SIGTERM')
      await exited
    }
  }
  for (const folder of folders) fs.rmSync(folder, { recursive: true, force: true })
})

/** A store URL no other test uses: a new SQLite file, Redis (native) under a new key prefix, or a new PostgreSQL schema. */
export async function storeUrl(backend, query = {}) {
  if (backend === 'sqlite') {
    const url = new URL(`sqlite:///${path.join(tempDir(), 'state.db')}`)
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, String(value))
    return url.toString()
  }
  if (backend === 'postgres') {
    const url = new URL(process.env.POSTGRES_URL)
    url.searchParams.set('schema', `node_${randomUUID().replaceAll('-', '')}`)
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, String(value))
    return url.toString()
  }
  if (backend !== 'redis') throw new Error(`unknown backend ${backend}`)
  const url = new URL(await redisBase())
  url.searchParams.set('layout', 'native')
  url.searchParams.set('key_prefix', `node-test:${randomUUID()}:`)
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, String(value))
  return url.toString()
}

/** An adapter on a fresh store of `backend`, closed when the test `t` ends. */
export async function openStore(t, backend, { query, ...options } = {}) {
  const url = await storeUrl(backend, query)
  const adapter = new SqlStateAdapter({ url, python: PYTHON, log: false, timeout: 20_000, ...options })
  t.after(() => adapter.cleanup())
  return adapter
}

/** Run Python code (with `URL` defined) against the store at `url`; resolves to its stdout. */
export function python(code, { url, args = [] } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ['-c', `URL = ${JSON.stringify(url ?? '')}\n${code}`, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 30_000,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (code === 0) resolve(stdout)
      else reject(new Error(`python failed (${code ?? signal}):\n${stderr}`))
    })
  })
}

/** Whether process `pid` still runs (a zombie does not). */
export function alive(pid) {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return true
  }
}

export async function waitUntil(check, what, ms = 10_000) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** Asserts that `promise` rejects with an Error named `name` whose message matches `pattern`. */
export async function rejectsWith(assert, promise, name, pattern) {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof Error, `not an Error: ${error}`)
    assert.equal(error.name, name, `${error.name}: ${error.message}`)
    if (pattern) assert.match(error.message, pattern)
    return true
  })
}

/** The file of a sqlite:///PATH URL made by storeUrl. */
export function sqlitePath(url) {
  return decodeURIComponent(new URL(url).pathname.replace(/^\/\//, '/'))
}

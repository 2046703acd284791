// The Node side of the benchmark: Motia's own state adapters, measured on request so the Python
// harness (benchmarks/node.py) can alternate them with its own stores, round by round.
//
// Stores: Motia's FileStateAdapter (@motiadev/core), Motia's RedisStateAdapter
// (@motiadev/adapter-redis-state) on the harness's Redis server, and motia-state-sql's own
// SqlStateAdapter (node/index.js; SQLite through its Python serve process) for reference.
//
// Protocol: one JSON object per line. On start this process prints {node, versions}; then for
// each request on stdin it answers one line with the same id:
//   {id, cmd: "open", backend, role, stored, filled}   opens a store whose group g holds k0 ..
//       k<stored-1>, filling it unless `filled` says the harness wrote them already (a Motia file)
//   {id, cmd: "measure", backend, role, op, arrival, start, count, tag}
//       op: "set" (new keys, in group "sets": g keeps its `stored` items for "getGroup"),
//       "get" (k<i % stored>), "overwrite" (set of k<i % stored>), "getGroup" (of g);
//       arrival: "x1" (one call after another; latency per call) or "all" (Promise.all of every
//       call; latency from the start of the burst). Answers {id, seconds, latencies} (seconds).
//   {id, cmd: "profile", backend, role, op, arrival, count}  the top functions of a CPU profile
//       (node:inspector) of that workload: {id, text}
//   {id, cmd: "close", backend, role}           clears what the store holds and closes it
// A failed request answers {id, error}. At the end of stdin every store is closed.
//
// Usage: node node_bench.mjs CONFIG_JSON, from a folder whose node_modules holds the Motia
// packages (benchmarks/node.py copies this file there). CONFIG_JSON: {index, python, env,
// folder, redisUrl, prefix}.

import { mkdirSync, readFileSync, rmSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'

import { FileStateAdapter } from '@motiadev/core'
import { RedisStateAdapter } from '@motiadev/adapter-redis-state'

const config = JSON.parse(process.argv[2])
const { SqlStateAdapter } = await import(pathToFileURL(config.index).href)
const VALUE = { id: 'order-0', status: 'pending', total: 99.99, items: [{ sku: 'A-1', qty: 2 }] }
const stores = new Map() // "backend\trole" -> {backend, store, stored}

async function open(backend, role, stored, filled) {
  let store
  if (backend === 'node-sqlite') {
    store = new SqlStateAdapter({
      url: `sqlite:///${path.join(config.folder, `node-${role}.db`)}`, // the folder is absolute
      python: config.python,
      env: config.env,
      log: null,
    })
  } else if (backend === 'node-motia-redis') {
    store = new RedisStateAdapter({ url: config.redisUrl }, { keyPrefix: `${config.prefix}node-${role}:` })
    await store.ensureConnected()
  } else if (backend === 'node-motia-file') {
    const folder = path.join(config.folder, `node-file-${role}`) // motia_file_folder in node.py
    mkdirSync(folder, { recursive: true })
    store = new FileStateAdapter({ filePath: folder })
  } else throw new Error(`unknown backend ${backend}`)
  // Fill group g (unless the harness wrote the store already): in one transaction on SQLite,
  // 500 at once on Redis, one after another on the file (it has nothing else).
  if (filled) {
    // the file's items were written by the harness, in Motia's format
  } else if (backend === 'node-sqlite') {
    await store.transaction(async (tx) => {
      for (let i = 0; i < stored; i++) await tx.set('g', `k${i}`, VALUE)
    })
  } else if (backend === 'node-motia-redis') {
    for (let at = 0; at < stored; at += 500) {
      const part = []
      for (let i = at; i < Math.min(stored, at + 500); i++) part.push(store.set('g', `k${i}`, VALUE))
      await Promise.all(part)
    }
  } else {
    for (let i = 0; i < stored; i++) await store.set('g', `k${i}`, VALUE)
  }
  stores.set(`${backend}\t${role}`, { backend, store, stored })
}

function find(backend, role) {
  const entry = stores.get(`${backend}\t${role}`)
  if (!entry) throw new Error(`${backend} ${role} is not open`)
  return entry
}

function operation({ store, stored }, op, tag) {
  if (op === 'set') return (i) => store.set('sets', `s${tag}-${i}`, VALUE)
  if (op === 'get') return (i) => store.get('g', `k${i % stored}`)
  if (op === 'overwrite') return (i) => store.set('g', `k${i % stored}`, VALUE)
  if (op === 'getGroup') return () => store.getGroup('g')
  throw new Error(`unknown op ${op}`)
}

async function timed(call, arrival, start, count) {
  const latencies = new Array(count)
  const began = performance.now()
  if (arrival === 'all') {
    const all = []
    for (let n = 0; n < count; n++) {
      all.push(call(start + n).then(() => (latencies[n] = (performance.now() - began) / 1000)))
    }
    await Promise.all(all)
  } else if (arrival === 'x1') {
    for (let n = 0; n < count; n++) {
      const t = performance.now()
      await call(start + n)
      latencies[n] = (performance.now() - t) / 1000
    }
  } else throw new Error(`unknown arrival ${arrival}`)
  return { seconds: (performance.now() - began) / 1000, latencies }
}

// The top functions of a V8 CPU profile, by self time and by total time (a function counted once
// per sample however deep it recurses); `(idle)` is time this process waited (for Redis, Python).
function cpuSummary(profile, top = 12) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const parent = new Map()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const name = (node) => {
    const { functionName, url, lineNumber } = node.callFrame
    const where = url ? `${path.basename(url.replace(/^file:\/\//, ''))}:${lineNumber + 1}` : ''
    return `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`
  }
  const self = new Map()
  const total = new Map()
  const deltas = profile.timeDeltas
  let all = 0
  profile.samples.forEach((id, n) => {
    const ms = (deltas[n + 1] ?? deltas[n] ?? 0) / 1000
    all += ms
    const leaf = byId.get(id)
    self.set(name(leaf), (self.get(name(leaf)) ?? 0) + ms)
    const seen = new Set()
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const node = byId.get(at)
      if (node.callFrame.functionName === '(root)') continue
      seen.add(name(node))
    }
    for (const key of seen) total.set(key, (total.get(key) ?? 0) + ms)
  })
  const lines = (map, title) => [
    title,
    ...[...map.entries()]
      .sort((x, y) => y[1] - x[1])
      .slice(0, top)
      .map(([key, ms]) => `  ${ms.toFixed(1).padStart(8)} ms ${((100 * ms) / all).toFixed(1).padStart(5)}%  ${key}`),
  ]
  return [
    `node CPU profile (node:inspector, ${all.toFixed(0)} ms sampled):`,
    ...lines(self, 'by self time:'),
    ...lines(total, 'by total time:'),
  ].join('\n')
}

async function profile({ backend, role, op, arrival, count }) {
  const call = operation(find(backend, role), op, `profile-${performance.now()}`)
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: 200 })
  await session.post('Profiler.start')
  const { seconds } = await timed(call, arrival, 0, count)
  const result = await session.post('Profiler.stop')
  session.disconnect()
  return `${backend} ${op} ${arrival}: ${count} ops in ${seconds.toFixed(2)}s under the profiler\n${cpuSummary(result.profile)}`
}

async function close(backend, role) {
  const key = `${backend}\t${role}`
  const entry = stores.get(key)
  if (!entry) return
  stores.delete(key)
  if (backend === 'node-motia-redis') await entry.store.clear('g')
  await entry.store.cleanup()
}

async function handle(request) {
  const { cmd, backend, role } = request
  if (cmd === 'open') {
    await open(backend, role, request.stored, request.filled ?? false)
    return { ok: true }
  }
  if (cmd === 'measure') {
    const call = operation(find(backend, role), request.op, request.tag)
    return timed(call, request.arrival, request.start, request.count)
  }
  if (cmd === 'profile') return { text: await profile(request) }
  if (cmd === 'close') {
    await close(backend, role)
    return { ok: true }
  }
  throw new Error(`unknown command ${cmd}`)
}

const versions = {}
for (const name of ['@motiadev/core', '@motiadev/adapter-redis-state', 'redis']) {
  versions[name] = JSON.parse(readFileSync(path.join('node_modules', name, 'package.json'), 'utf8')).version
}
mkdirSync(config.folder, { recursive: true })
process.stdout.write(`${JSON.stringify({ node: process.version, versions })}\n`)
try {
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue
    const request = JSON.parse(line)
    let answer
    try {
      answer = { id: request.id, ...(await handle(request)) }
    } catch (error) {
      answer = { id: request.id, error: String(error?.stack ?? error) }
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`)
  }
} finally {
  for (const key of [...stores.keys()]) {
    const [backend, role] = key.split('\t')
    await close(backend, role).catch(() => {})
  }
  rmSync(config.folder, { recursive: true, force: true })
  // A client library may keep a handle (a socket, a timer) after its store closed: leave anyway.
  process.exit(0)
}

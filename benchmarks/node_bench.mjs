// The Node side of the benchmark (benchmarks/run.py runs it; not meant to be run by hand).
//
// From one Node process, the same workloads against motia-state-sql's SqlStateAdapter (SQLite,
// through its Python serve process), Motia's own FileStateAdapter (@motiadev/core) and Motia's own
// RedisStateAdapter (@motiadev/adapter-redis-state), every store holding `stored` items in group
// `g`: sequential `set` and `get`, one `Promise.all` of `burst` sets, and `getGroup` of `g`.
// Each pair (candidate, baseline) is measured alternately, `rounds` times each (A B, B A, ...),
// every measurement after a discarded warm-up of a tenth of its count; a pair's figure is the
// median of its per-round ratios. A target that misses is profiled at once: a CPU profile of this
// Node process (node:inspector) running the candidate's workload again, and for SqlStateAdapter a
// pyinstrument profile of a Python serve process started for it (MOTIA_STATE_SQL_PROFILE); each
// baseline is profiled once, at its first miss.
//
// Usage: node node_bench.mjs CONFIG_JSON; run from a folder whose node_modules holds the Motia
// packages (run.py copies this file there). One JSON object on stdout's last line.

import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'

import { FileStateAdapter } from '@motiadev/core'
import { RedisStateAdapter } from '@motiadev/adapter-redis-state'

const config = JSON.parse(process.argv[2])
const { SqlStateAdapter } = await import(pathToFileURL(config.index).href)
const VALUE = { id: 'order-0', status: 'pending', total: 99.99, items: [{ sku: 'A-1', qty: 2 }] }
const stored = config.stored
let tags = 0

// -- stores -----------------------------------------------------------------------------------

const sqlUrl = (role) => `sqlite:///${path.join(config.folder, `node-${role}.db`)}` // folder is absolute

function sqlite(role, env = {}) {
  return new SqlStateAdapter({
    url: sqlUrl(role),
    python: config.python,
    env: { ...config.env, ...env },
    log: null,
  })
}

async function open(backend, role, env) {
  let store
  if (backend === 'node-sqlite') store = sqlite(role, env)
  else if (backend === 'node-motia-redis') {
    store = new RedisStateAdapter({ url: config.redisUrl }, { keyPrefix: `${config.prefix}node-${role}:` })
    await store.ensureConnected()
  } else if (backend === 'node-motia-file') {
    const folder = path.join(config.folder, `node-file-${role}`)
    mkdirSync(folder, { recursive: true })
    store = new FileStateAdapter({ filePath: folder })
  } else throw new Error(`unknown backend ${backend}`)
  // Fill group g with `stored` items: in one transaction on SQLite, 500 at once on Redis, one
  // after another on the file (it has nothing else).
  if (backend === 'node-sqlite') {
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
  return store
}

async function close(backend, store) {
  if (backend === 'node-motia-redis') {
    await store.clear('g')
    await store.clear('burst')
  }
  await store.cleanup()
}

// -- workloads --------------------------------------------------------------------------------

// A workload: `count` operations per measurement; `concurrent` ones start all at once
// (Promise.all), the others run one after another.
function workloads(backend) {
  const file = backend === 'node-motia-file'
  const ops = file ? config.fileOps : config.ops
  return {
    set: { name: `set x1 @${stored}`, count: ops, op: (s, i) => s.set('g', `k${i % stored}`, VALUE) },
    get: { name: `get x1 @${stored}`, count: ops, op: (s, i) => s.get('g', `k${i % stored}`) },
    burst: {
      name: `set Promise.all x${config.burst}`,
      count: config.burst,
      concurrent: true,
      op: (s, i, tag) => s.set('burst', `t${tag}-${i}`, VALUE),
    },
    group: { name: `getGroup ${stored}`, count: config.groupReads, op: (s) => s.getGroup('g') },
  }
}

async function timed(store, work, start, count) {
  const tag = tags++
  const latencies = new Float64Array(count)
  const began = performance.now()
  if (work.concurrent) {
    const all = []
    for (let i = 0; i < count; i++) {
      all.push(work.op(store, start + i, tag).then(() => (latencies[i] = performance.now() - began)))
    }
    await Promise.all(all)
  } else {
    for (let i = 0; i < count; i++) {
      const t = performance.now()
      await work.op(store, start + i, tag)
      latencies[i] = performance.now() - t
    }
  }
  return { seconds: (performance.now() - began) / 1000, latencies }
}

const samples = new Map() // "backend\tworkload" -> {backend, workload, ops, rates, latencies[]}

async function once(side) {
  const { backend, store, work } = side
  await timed(store, work, work.count, Math.max(1, Math.floor(work.count / 10))) // warm-up
  const { seconds, latencies } = await timed(store, work, 0, work.count)
  const rate = work.count / seconds
  const id = `${backend}\t${work.name}`
  if (!samples.has(id)) samples.set(id, { backend, workload: work.name, ops: work.count, rates: [], latencies: [] })
  const sample = samples.get(id)
  sample.rates.push(rate)
  sample.latencies.push(latencies)
  return rate
}

async function pair(a, b) {
  const ratios = []
  for (let n = 0; n < config.rounds; n++) {
    let rateA, rateB
    if (n % 2 === 0) {
      rateA = await once(a)
      rateB = await once(b)
    } else {
      rateB = await once(b)
      rateA = await once(a)
    }
    ratios.push(rateA / rateB)
  }
  return ratios
}

const median = (values) => {
  const sorted = [...values].sort((x, y) => x - y)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

// -- profiles of a miss -----------------------------------------------------------------------

// The top functions of a V8 CPU profile, by self time and by total time (a function counted once
// per sample however deep it recurses); `(idle)` is time this process waited (for Python, Redis).
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

async function profileSide(backend, workName) {
  const role = `profile-${tags++}`
  const pyProfile = path.join(config.folder, `${role}-serve.txt`)
  const store = await open(backend, role, { MOTIA_STATE_SQL_PROFILE: pyProfile })
  const base = workloads(backend)[workName]
  const work = { ...base, count: Math.min(base.count, config.profileOps) }
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: 200 })
  await timed(store, work, work.count, Math.max(1, Math.floor(work.count / 10))) // warm-up, unprofiled
  await session.post('Profiler.start')
  const { seconds } = await timed(store, work, 0, work.count)
  const { profile } = await session.post('Profiler.stop')
  session.disconnect()
  await close(backend, store)
  const parts = [
    `${backend} ${work.name}: ${work.count} ops in ${seconds.toFixed(2)}s under the profilers`,
    cpuSummary(profile),
  ]
  if (backend === 'node-sqlite') {
    const text = existsSync(pyProfile) ? readFileSync(pyProfile, 'utf8') : '(no profile was written)'
    const lines = text.split('\n').filter((line) => line.trim())
    const start = lines.findIndex((line) => line.startsWith('Profile at')) + 1
    parts.push(
      'Python serve process (pyinstrument, the whole process life: opening, filling, warm-up included):',
      ...lines.slice(start, start + 40),
    )
  }
  return parts.join('\n')
}

// -- the run ----------------------------------------------------------------------------------

const backends = ['node-sqlite', 'node-motia-redis', 'node-motia-file']
const stores = {}
const targets = []
const profiled = new Map()
mkdirSync(config.folder, { recursive: true })
try {
  for (const backend of backends) stores[backend] = await open(backend, 'main')
  const side = (backend, work) => ({ backend, store: stores[backend], work: workloads(backend)[work] })

  async function target(text, a, b, workName, want) {
    const sideA = side(a, workName)
    const sideB = side(b, workName)
    const ratios = await pair(sideA, sideB)
    const entry = { text, a: [a, sideA.work.name], b: [b, sideB.work.name], want, ratios, profile: '' }
    if (want !== null && !(median(ratios) >= want)) {
      const trees = [await profileSide(a, workName)]
      const key = `${b}\t${sideB.work.name}`
      if (profiled.has(key)) trees.push(`${b} ${sideB.work.name}: profiled above, at the miss of ${JSON.stringify(profiled.get(key))}`)
      else {
        profiled.set(key, text)
        trees.push(await profileSide(b, workName))
      }
      entry.profile = trees.join('\n\n')
    }
    targets.push(entry)
  }

  const [sql, redis, file] = backends
  await target('Node: SqlStateAdapter set from one caller vs Motia RedisStateAdapter', sql, redis, 'set', 0.8)
  await target('Node: SqlStateAdapter get from one caller vs Motia RedisStateAdapter', sql, redis, 'get', 0.8)
  await target(
    `Node: SqlStateAdapter Promise.all of ${config.burst} sets vs Motia RedisStateAdapter`,
    sql,
    redis,
    'burst',
    0.5,
  )
  for (const work of ['set', 'get']) {
    await target(
      `Node: SqlStateAdapter ${work} from one caller vs Motia FileStateAdapter, both holding ${stored} items`,
      sql,
      file,
      work,
      100,
    )
  }
  // No target: figures for reference.
  await target(`Node: SqlStateAdapter getGroup of ${stored} items vs Motia RedisStateAdapter`, sql, redis, 'group', null)
  await target(`Node: SqlStateAdapter getGroup of ${stored} items vs Motia FileStateAdapter`, sql, file, 'group', null)
} finally {
  for (const [backend, store] of Object.entries(stores)) await close(backend, store).catch(() => {})
}

const rows = [...samples.values()].map((s) => {
  const all = Float64Array.from(s.latencies.flatMap((l) => [...l])).sort()
  return {
    backend: s.backend,
    workload: s.workload,
    ops: s.ops,
    rates: s.rates,
    p50_us: all[Math.floor(all.length / 2)] * 1000,
    p99_us: all[Math.max(0, Math.floor(all.length * 0.99) - 1)] * 1000,
  }
})
const versions = {}
for (const name of ['@motiadev/core', '@motiadev/adapter-redis-state', 'redis']) {
  versions[name] = JSON.parse(readFileSync(path.join('node_modules', name, 'package.json'), 'utf8')).version
}
rmSync(config.folder, { recursive: true, force: true })
console.log(JSON.stringify({ node: process.version, versions, rows, targets }))

// The Python process behind the adapter: errors at start, a process killed mid-run, an idle
// adapter and a Node process ending without cleanup().

import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'

import { SqlStateAdapter } from '../index.js'
import { PYTHON, alive, openStore, python, rejectsWith, sqlitePath, storeUrl, tempDir, waitUntil } from './helpers.js'

const T = { timeout: 30_000 }
const INDEX = fileURLToPath(new URL('../index.js', import.meta.url))

// An adapter that is never started at construction, so each test sees the error at its first call.
function adapter(t, options) {
  const state = new SqlStateAdapter({ python: PYTHON, log: false, lazy: true, ...options })
  t.after(() => state.cleanup())
  return state
}

describe('errors at start: the first call rejects with our error, saying what to fix', { concurrency: true }, () => {
  test('python names a missing interpreter', T, async (t) => {
    const missing = path.join(tempDir(), 'no-such-python')
    const state = adapter(t, { url: await storeUrl('sqlite'), python: missing })
    const told = new RegExp(`${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*not found.*MOTIA_STATE_PYTHON`)
    await rejectsWith(assert, state.get('g', 'k'), 'StoreUnavailableError', told)
    await rejectsWith(assert, state.set('g', 'k', 1), 'StoreUnavailableError', told) // again, not stuck
  })

  test('an interpreter without motia_state_sql', T, async (t) => {
    const bare = '/usr/bin/python3'
    assert.ok(fs.existsSync(bare), `${bare} is needed for this test`)
    // Without PYTHONPATH it cannot see this checkout either (and -c proves it lacks the package).
    const env = { PYTHONPATH: '', PYTHONNOUSERSITE: '1' }
    assert.throws(() =>
      execFileSync(bare, ['-c', 'import motia_state_sql'], { env: { ...process.env, ...env }, stdio: 'pipe' }),
    )
    const state = adapter(t, { url: await storeUrl('sqlite'), python: bare, env })
    await rejectsWith(
      assert,
      state.get('g', 'k'),
      'StoreUnavailableError',
      /\/usr\/bin\/python3 has no motia_state_sql module: install it there \(\/usr\/bin\/python3 -m pip install motia-state-sql\)/,
    )
  })

  test('an interpreter that sees motia_state_sql but not its dependencies', T, async (t) => {
    const bare = '/usr/bin/python3'
    const checkout = fileURLToPath(new URL('../..', import.meta.url)) // holds motia_state_sql/
    const env = { PYTHONPATH: checkout, PYTHONNOUSERSITE: '1' }
    const state = adapter(t, { url: await storeUrl('sqlite'), python: bare, env })
    await rejectsWith(
      assert,
      state.get('g', 'k'),
      'StoreUnavailableError',
      /motia_state_sql in \/usr\/bin\/python3 cannot import \w+, one of its dependencies: reinstall it there/,
    )
  })

  test('a bad URL: ConfigError or InvalidKeyError naming what is wrong', T, async (t) => {
    const folder = tempDir()
    const cases = [
      [`sqlite:///${folder}/a.db?busy_timeout=inf`, 'ConfigError', /busy_timeout/],
      [`sqlite:///${folder}/b.db?bogus=1`, 'InvalidKeyError', /unknown parameter 'bogus'.*accepted/],
      ['nosuch://x', 'InvalidKeyError', /unknown state URL scheme 'nosuch'.*accepted/],
      ['redis://127.0.0.1:1/0?layout=weird', 'ConfigError', /layout.*native or motia/],
    ]
    await Promise.all(
      cases.map(async ([url, name, told]) => {
        const state = adapter(t, { url })
        await rejectsWith(assert, state.get('g', 'k'), name, told)
      }),
    )
    assert.deepEqual(fs.readdirSync(folder), [], 'no database was created')
  })

  test('a database with a newer schema: SchemaError, the file left as it was', T, async (t) => {
    const url = await storeUrl('sqlite')
    const file = sqlitePath(url)
    const first = adapter(t, { url })
    await first.set('g', 'k', 'kept')
    await first.cleanup()
    execFileSync('sqlite3', [file, "UPDATE alembic_version SET version_num = 'ffffffffffff'"])
    const before = fs.readFileSync(file)
    const state = adapter(t, { url })
    await rejectsWith(assert, state.get('g', 'k'), 'SchemaError', /'ffffffffffff'.*newer version.*Upgrade motia_state_sql/)
    assert.ok(fs.readFileSync(file).equals(before), 'the database is untouched')
    assert.equal(execFileSync('sqlite3', [file, 'SELECT version_num FROM alembic_version'], { encoding: 'utf8' }).trim(), 'ffffffffffff')
  })
})

describe('the Python process killed mid-run', () => {
  test('pending calls reject, the next call starts a new process, no write is retried', T, async (t) => {
    const state = await openStore(t, 'sqlite')
    await state.set('kill', 'n', { c: 0 })
    const killed = state.pid
    const calls = Array.from({ length: 200 }, () =>
      state.update('kill', 'n', [{ type: 'increment', path: 'c', by: 1 }]),
    )
    process.kill(killed, 'SIGKILL') // while all 200 are in flight: none is answered yet
    const outcomes = await Promise.allSettled(calls)
    const rejected = outcomes.filter((outcome) => outcome.status === 'rejected')
    assert.equal(rejected.length, 200)
    for (const { reason } of rejected) {
      assert.equal(reason.name, 'StoreUnavailableError')
      assert.match(
        reason.message,
        new RegExp(`\\(pid ${killed}\\) was killed by SIGKILL while update was in flight: whether it took effect is unknown, and it was not retried`),
      )
    }
    await waitUntil(() => !alive(killed), `pid ${killed} to end`)
    const landed = (await state.get('kill', 'n')).c // a new process
    assert.notEqual(state.pid, killed)
    assert.ok(alive(state.pid))
    assert.ok(landed >= 0 && landed <= 200, `${landed}`)
    await new Promise((resolve) => setTimeout(resolve, 300))
    assert.equal((await state.get('kill', 'n')).c, landed, 'nothing was sent again')
    assert.deepEqual(await state.update('kill', 'n', [{ type: 'increment', path: 'c', by: 1 }]), {
      oldValue: { c: landed },
      newValue: { c: landed + 1 },
    })
  })

  test('a transaction whose process died commits nothing', T, async (t) => {
    const state = await openStore(t, 'sqlite')
    await state.set('tx', 'k', 'before')
    await rejectsWith(
      assert,
      state.transaction(async (tx) => {
        await tx.set('tx', 'k', 'inside')
        await tx.set('tx', 'other', 1)
        process.kill(state.pid, 'SIGKILL')
        await tx.get('tx', 'k')
      }),
      'StoreUnavailableError',
      /killed by SIGKILL|exited; nothing of the transaction was committed/,
    )
    assert.equal(await state.get('tx', 'k'), 'before')
    assert.equal(await state.get('tx', 'other'), null)
  })
})

describe('Node exiting', () => {
  test('an idle adapter lets Node exit; Python then closes the database cleanly', T, async () => {
    const url = await storeUrl('sqlite')
    const file = sqlitePath(url)
    const script = path.join(tempDir(), 'idle.mjs')
    fs.writeFileSync(
      script,
      `import { SqlStateAdapter } from ${JSON.stringify(INDEX)}
const state = new SqlStateAdapter({ url: ${JSON.stringify(url)}, python: ${JSON.stringify(PYTHON)}, log: false })
await state.set('exit', 'k', { n: 1 })
await state.update('exit', 'k', [{ type: 'increment', path: 'n', by: 41 }])
console.log(JSON.stringify({ pid: state.pid }))
// no cleanup(): the script just ends, as a Motia process does
`,
    )
    const started = Date.now()
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (chunk) => (out += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk) => (err += chunk))
    const code = await new Promise((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      child.on('close', (exitCode, signal) => {
        clearTimeout(timer)
        resolve(exitCode ?? signal)
      })
    })
    assert.equal(code, 0, `node exited with ${code}: ${err}`)
    const { pid } = JSON.parse(out)
    assert.ok(Date.now() - started < 12_000, 'Node ended by itself') // startup included
    await waitUntil(() => !alive(pid), `the Python process ${pid} to close the store and exit`)
    assert.ok(!fs.existsSync(`${file}-wal`), 'the -wal file is gone: SQLite was closed cleanly')
    const check = await python(
      `
import asyncio, sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])
from motia_state_sql import open_state
async def main():
    async with open_state(URL) as state:
        print((await state.get("exit", "k"))["n"])
asyncio.run(main())
`,
      { url, args: [file] },
    )
    assert.deepEqual(check.trim().split('\n'), ['ok', '42'])
  })
})

describe('moving an existing Motia app', () => {
  test("the default store beside Motia's .motia/motia.state.json imports it once", T, async (t) => {
    // An app folder as Motia's FileStateAdapter leaves it: one JSON text per "group:key".
    const app = tempDir()
    fs.mkdirSync(path.join(app, '.motia'))
    const motia = {
      'orders:o-1': JSON.stringify({ id: 'o-1', status: 'paid', total: 9.5 }),
      'orders:o-2': JSON.stringify({ id: 'o-2', status: 'pending', total: 0 }),
      'trace:run:1': JSON.stringify(null),
    }
    fs.writeFileSync(path.join(app, '.motia', 'motia.state.json'), JSON.stringify(motia, null, 2))
    const first = adapter(t, { cwd: app, url: undefined })
    assert.deepEqual(await first.getGroup('orders'), [
      { id: 'o-1', status: 'paid', total: 9.5 },
      { id: 'o-2', status: 'pending', total: 0 },
    ])
    assert.equal(await first.get('trace', 'run:1'), null)
    assert.deepEqual(await first.traceIds(), ['orders', 'trace'])
    await first.set('orders', 'o-3', { id: 'o-3', status: 'pending', total: 1 })
    await first.cleanup()
    assert.ok(fs.existsSync(path.join(app, '.motia', 'motia.state.db')), 'the default SQLite file')
    // Imported once: a second adapter sees the SQLite store, not the JSON file again.
    fs.writeFileSync(path.join(app, '.motia', 'motia.state.json'), '{}')
    const second = adapter(t, { cwd: app, url: undefined })
    assert.deepEqual(await second.keys('orders'), ['o-1', 'o-2', 'o-3'])
  })
})

// motia-state-sql: a Motia StateAdapter whose state lives in motia_state_sql (Python).
//
// Every call is forwarded to one long-lived Python process (`python -m motia_state_sql serve
// --stdio --url URL`) over a line-delimited JSON RPC: many requests in flight, answered by id in
// any order, so concurrent steps share SQLite's group commit. Nothing about storage is decided
// here; this file only moves values across and turns answers back into promises.
// The protocol is described in motia_state_sql/serve.py; what crosses how in docs/motia.md.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { AsyncLocalStorage } from 'node:async_hooks'
import { randomUUID } from 'node:crypto'

export const DEFAULT_URL = 'sqlite:///.motia/motia.state.db'

// -- errors: the same names as motia_state_sql.errors ----------------------------------------

export class StateError extends Error {
  constructor(message) {
    super(message)
    this.name = new.target.name
  }
}
export class InvalidKeyError extends StateError {}
export class ConfigError extends StateError {}
export class InvalidValueError extends StateError {}
export class InvalidOperationError extends StateError {}
export class ConflictError extends StateError {}
export class SchemaError extends StateError {}
export class StoreUnavailableError extends StateError {}
export class UnsupportedError extends StateError {}

const ERRORS = {
  StateError,
  InvalidKeyError,
  ConfigError,
  InvalidValueError,
  InvalidOperationError,
  ConflictError,
  SchemaError,
  StoreUnavailableError,
  UnsupportedError,
}

function errorFrom(payload) {
  const Kind = ERRORS[payload.name] ?? StateError
  const error = new Kind(payload.message)
  error.name = payload.name // an error class this version does not know keeps its name
  return error
}

// -- values: what JSON.stringify makes, minus its silent changes we refuse --------------------

const where = (groupId, key) => `${JSON.stringify(groupId)}/${JSON.stringify(key)}`

// Markers for what JSON text cannot say the JS way: a string no caller can guess (it holds a
// NUL and a random id) stands in for the value while JSON.stringify / JSON.parse run.
const NONCE = randomUUID()
const MINUS_ZERO = `\u0000motia-state-sql:-0:${NONCE}`
const BIG_INT = `\u0000motia-state-sql:int:${NONCE}:`

// NaN, Infinity and an Invalid Date would become null and BigInt would throw a bare TypeError:
// refuse them by name. -0 would become 0 (JSON.stringify(-0) is "0"): it is sent as -0.0, which Python keeps.
function stringify(value) {
  let minusZero = false
  const text = JSON.stringify(value, function (name, item) {
    if (item === null && this[name] instanceof Date) {
      throw new InvalidValueError('Invalid Date is not a JSON value (JSON.stringify would store null)')
    }
    if (typeof item === 'number' && !Number.isFinite(item)) {
      throw new InvalidValueError(`${item} is not a JSON number (JSON.stringify would store null)`)
    }
    if (typeof item === 'bigint') {
      throw new InvalidValueError(`BigInt ${item}n is not a JSON value: convert it to a Number or a String`)
    }
    if (Object.is(item, -0)) {
      minusZero = true
      return MINUS_ZERO
    }
    return item
  })
  return minusZero ? text.replaceAll(JSON.stringify(MINUS_ZERO), '-0.0') : text
}

function valueText(value, groupId, key) {
  let text
  try {
    text = stringify(value)
  } catch (error) {
    const reason = error instanceof InvalidValueError ? error.message : `${error.name}: ${error.message}`
    throw new InvalidValueError(`value of ${where(groupId, key)} cannot be stored: ${reason}`)
  }
  if (text === undefined) {
    throw new InvalidValueError(
      `value of ${where(groupId, key)} is ${typeof value}: not a JSON value (store null to mean nothing)`,
    )
  }
  return text
}

function headerText(request) {
  try {
    return stringify(request)
  } catch (error) {
    if (error instanceof StateError) throw new InvalidOperationError(`${request.m}: ${error.message}`)
    throw new InvalidOperationError(`${request.m}: arguments cannot be sent: ${error.message}`)
  }
}

// An integer literal stays a Number when that Number is exactly it, or when it is how JS writes
// that Number (JSON.stringify(2 ** 60) is "1152921504606847000", stored as such and read back as
// 2 ** 60). Any other integer (Python wrote 2 ** 53 + 1) would silently become another number,
// so it comes back as a BigInt, exact. Only lines holding 16 digits in a row are looked at.
const LONG_DIGITS = /\d{16}/
const TOKENS = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g

function exactNumber(token) {
  if (token.startsWith('"') || /[.eE]/.test(token)) return true
  const number = Number(token)
  return String(number) === token || (Number.isFinite(number) && BigInt(number) === BigInt(token))
}

function parseAnswer(line) {
  if (!LONG_DIGITS.test(line)) return JSON.parse(line)
  let inexact = false
  const marked = line.replace(TOKENS, (token) => {
    if (exactNumber(token)) return token
    inexact = true
    return JSON.stringify(BIG_INT + token)
  })
  if (!inexact) return JSON.parse(line)
  return JSON.parse(marked, (_name, item) =>
    typeof item === 'string' && item.startsWith(BIG_INT) ? BigInt(item.slice(BIG_INT.length)) : item,
  )
}

// -- the Python process -----------------------------------------------------------------------

function defaultPython(cwd) {
  if (process.env.MOTIA_STATE_PYTHON) return process.env.MOTIA_STATE_PYTHON
  const local = path.join(cwd, 'python_modules', 'bin', 'python')
  return existsSync(local) ? local : 'python3'
}

function startError(python, connection, code, signal) {
  const stderr = connection.stderr.trim()
  const fix = `set the python option or $MOTIA_STATE_PYTHON to an interpreter that has it`
  if (connection.spawnError?.code === 'ENOENT') {
    return new StoreUnavailableError(
      `motia-state-sql: cannot start Python: ${JSON.stringify(python)} was not found; ` +
        `install Python 3.11+ with motia_state_sql (pip install motia-state-sql), or ${fix}`,
    )
  }
  if (connection.spawnError) {
    return new StoreUnavailableError(
      `motia-state-sql: cannot start ${JSON.stringify(python)}: ${connection.spawnError.message}; ${fix}`,
    )
  }
  if (/No module named '?motia_state_sql/.test(stderr)) {
    return new StoreUnavailableError(
      `motia-state-sql: ${python} has no motia_state_sql module: install it there ` +
        `(${python} -m pip install motia-state-sql), or ${fix}`,
    )
  }
  const dependency = /No module named '([^']+)'/.exec(stderr)
  if (dependency) {
    return new StoreUnavailableError(
      `motia-state-sql: motia_state_sql in ${python} cannot import ${dependency[1]}, one of its dependencies: ` +
        `reinstall it there (${python} -m pip install --force-reinstall motia-state-sql), or ${fix}`,
    )
  }
  if (/No such command 'serve'/.test(stderr)) {
    return new StoreUnavailableError(
      `motia-state-sql: the motia_state_sql installed in ${python} is too old (no serve command): upgrade it`,
    )
  }
  const how = signal ? `was killed by ${signal}` : `exited with code ${code}`
  return new StoreUnavailableError(
    `motia-state-sql: the Python process (${python}) ${how} before opening the store` +
      (stderr ? `; its last output:\n${stderr.slice(-4000)}` : ''),
  )
}

class Connection {
  constructor(adapter) {
    this.adapter = adapter
    this.pending = new Map()
    this.nextId = 1
    this.stderr = ''
    this.buffer = ''
    this.ready = false
    this.dead = false
    this.refd = true
    this.closed = new Promise((resolve) => {
      this.markClosed = resolve
    })
    this.opened = new Promise((resolve, reject) => {
      this.hello = { resolve, reject }
    })
    this.opened.catch(() => {}) // observed by the calls that wait for it
    const { python, url, cwd, env } = adapter.options
    this.proc = spawn(python, ['-m', 'motia_state_sql', 'serve', '--stdio', '--url', url], {
      cwd,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    this.pid = this.proc.pid
    this.proc.on('error', (error) => {
      this.spawnError = error
      this.finish(null, null)
    })
    this.proc.stdin.on('error', () => {}) // EPIPE once the process died: reported by 'close'
    this.proc.stdout.setEncoding('utf8')
    this.proc.stdout.on('data', (chunk) => this.onData(chunk))
    this.proc.stderr.setEncoding('utf8')
    this.proc.stderr.on('data', (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-16000)
      if (this.ready) process.stderr.write(chunk)
    })
    this.proc.on('close', (code, signal) => this.finish(code, signal))
    if (adapter.options.startTimeout > 0) {
      this.startTimer = setTimeout(() => {
        this.hello.reject(
          new StoreUnavailableError(
            `motia-state-sql: the Python process did not open ${url} within ${adapter.options.startTimeout} ms`,
          ),
        )
        this.proc.kill('SIGKILL')
      }, adapter.options.startTimeout)
      this.startTimer.unref()
    }
  }

  // Keep Node's event loop alive only while calls are waiting on this process.
  setRef(on) {
    if (on === this.refd || this.dead) return
    this.refd = on
    for (const handle of [this.proc, this.proc.stdin, this.proc.stdout, this.proc.stderr]) {
      if (on) handle.ref?.()
      else handle.unref?.()
    }
  }

  onData(chunk) {
    this.buffer += chunk
    let end
    while ((end = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, end)
      this.buffer = this.buffer.slice(end + 1)
      if (line.trim()) this.onAnswer(parseAnswer(line))
    }
  }

  onAnswer(answer) {
    if (answer.id === 0) {
      clearTimeout(this.startTimer)
      if (answer.error) {
        this.hello.reject(errorFrom(answer.error))
        return
      }
      this.ready = true
      this.info = answer.ok
      this.adapter.announce(answer.ok)
      this.hello.resolve(this)
      return
    }
    const call = this.pending.get(answer.id)
    if (call === undefined) return // timed out already
    this.pending.delete(answer.id)
    clearTimeout(call.timer)
    if (answer.error) call.reject(errorFrom(answer.error))
    else call.resolve(answer.ok)
  }

  send(method, args, text, tx) {
    const id = this.nextId++
    const request = tx === undefined ? { id, m: method, a: args } : { id, m: method, a: args, tx }
    const line = headerText(request) + (text === undefined ? '\n' : `\t${text}\n`)
    return new Promise((resolve, reject) => {
      const call = { resolve, reject, method }
      const timeout = this.adapter.options.timeout
      if (timeout > 0) {
        call.timer = setTimeout(() => {
          this.pending.delete(id)
          reject(
            new StoreUnavailableError(
              `motia-state-sql: no answer to ${method} within ${timeout} ms from the Python process ` +
                `(pid ${this.pid}); a write may still land; it is not retried`,
            ),
          )
        }, timeout)
      }
      this.pending.set(id, call)
      this.write(line)
    })
  }

  // The requests of one tick leave in one write: Promise.all of many calls is one pipe write,
  // not one each (a lone call waits only for the end of the current tick).
  write(line) {
    if (this.outgoing === undefined) {
      this.outgoing = [line]
      process.nextTick(() => this.flush())
    } else this.outgoing.push(line)
  }

  flush() {
    const lines = this.outgoing
    if (lines === undefined) return
    this.outgoing = undefined
    this.proc.stdin.write(lines.length === 1 ? lines[0] : lines.join(''))
  }

  finish(code, signal) {
    if (this.dead) return
    this.dead = true
    clearTimeout(this.startTimer)
    if (!this.ready) this.hello.reject(startError(this.adapter.options.python, this, code, signal))
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`
    const stderr = this.stderr.trim()
    for (const call of this.pending.values()) {
      clearTimeout(call.timer)
      call.reject(
        new StoreUnavailableError(
          `motia-state-sql: the Python process (pid ${this.pid}) ${how} while ${call.method} was in flight: ` +
            `whether it took effect is unknown, and it was not retried; the next call starts a new process` +
            (stderr ? `. Its last output:\n${stderr.slice(-2000)}` : ''),
        ),
      )
    }
    this.pending.clear()
    this.adapter.forget(this)
    this.markClosed()
  }
}

// -- the adapter ------------------------------------------------------------------------------

class Operations {
  get(groupId, key) {
    return this._call('get', [groupId, key])
  }

  async set(groupId, key, value, options) {
    const text = valueText(value, groupId, key)
    await this._call('set', [groupId, key, options ?? null], text)
    return JSON.parse(text)
  }

  delete(groupId, key, options) {
    return this._call('delete', [groupId, key, options ?? null])
  }

  update(groupId, key, ops, options) {
    return this._call('update', [groupId, key, ops, options ?? null])
  }

  getItem(groupId, key) {
    return this._call('getItem', [groupId, key])
  }

  getGroup(groupId) {
    return this._call('getGroup', [groupId])
  }

  clear(groupId) {
    return this._call('clear', [groupId])
  }

  keys(groupId) {
    return this._call('keys', [groupId])
  }

  traceIds() {
    return this._call('traceIds', [])
  }

  items(input = {}) {
    return this._call('items', [input ?? {}])
  }
}

export class SqlStateTransaction extends Operations {
  constructor(adapter, connection, id) {
    super()
    this._adapter = adapter
    this._connection = connection
    this._id = id
    this._open = true
  }

  async _call(method, args, text) {
    if (!this._open) throw new StateError('this transaction has ended; start a new one')
    return this._adapter._run(method, args, text, this)
  }
}

export class SqlStateAdapter extends Operations {
  constructor(options = {}) {
    super()
    const cwd = options.cwd ?? process.cwd()
    this.options = {
      url: options.url ?? process.env.MOTIA_STATE_URL ?? DEFAULT_URL,
      cwd,
      python: options.python ?? defaultPython(cwd),
      env: { ...process.env, ...(options.env ?? {}) },
      timeout: options.timeout ?? 60_000,
      startTimeout: options.startTimeout ?? 60_000,
      log: options.log === undefined ? (line) => console.log(line) : options.log,
    }
    this._connection = null
    this._active = 0
    this._inTransaction = new AsyncLocalStorage()
    if (options.lazy !== true) {
      // Start now, so a broken setup shows when Motia starts, not at the first step.
      this._connect().opened.catch((error) => {
        process.stderr.write(`motia-state-sql: ${error.name}: ${error.message}\n`)
      })
    }
  }

  announce(info) {
    if (this.options.log) this.options.log(`motia-state-sql: state in ${info.url}`)
  }

  forget(connection) {
    if (this._connection === connection) this._connection = null
  }

  _connect() {
    if (this._connection === null) {
      this._connection = new Connection(this)
      this._connection.setRef(this._active > 0)
    }
    return this._connection
  }

  _track(delta) {
    this._active += delta
    if (this._active > 0) this._connection?.setRef(true)
    else if (!this._unrefSoon) {
      // Unref once nothing is waiting after this turn of the event loop, so sequential calls do
      // not ref and unref the process's four handles on every call.
      this._unrefSoon = true
      setImmediate(() => {
        this._unrefSoon = false
        if (this._active === 0) this._connection?.setRef(false)
      }).unref()
    }
  }

  _call(method, args, text) {
    const tx = this._inTransaction.getStore()
    if (tx?._open) {
      return Promise.reject(
        new StateError(
          'this call is inside a transaction of this adapter: call the transaction object ' +
            '(`await state.transaction(async (tx) => tx.get(...))`), not the adapter',
        ),
      )
    }
    return this._run(method, args, text, undefined)
  }

  async _run(method, args, text, tx) {
    this._track(+1)
    try {
      let connection
      if (tx === undefined) {
        connection = await this._connect().opened
      } else {
        connection = tx._connection
        if (connection.dead) {
          throw new StoreUnavailableError(
            `motia-state-sql: the Python process holding this transaction (pid ${connection.pid}) exited; ` +
              'nothing of the transaction was committed',
          )
        }
      }
      return await connection.send(method, args, text, tx?._id)
    } finally {
      this._track(-1)
    }
  }

  /**
   * Run `work(tx)` in a transaction: all its writes land together or none does. On a
   * ConflictError at commit (Redis, optimistic) `work` runs again, up to `attempts` times.
   */
  async transaction(work, { attempts = 10 } = {}) {
    for (let attempt = 1; ; attempt++) {
      const connection = await (async () => {
        this._track(+1)
        try {
          return await this._connect().opened
        } finally {
          this._track(-1)
        }
      })()
      const begun = new SqlStateTransaction(this, connection, undefined)
      begun._id = await this._run('begin', [], undefined, { _connection: connection, _id: undefined })
      let result
      try {
        result = await this._inTransaction.run(begun, () => work(begun))
      } catch (error) {
        begun._open = false
        await this._run('rollback', [], undefined, begun).catch(() => {})
        throw error
      }
      begun._open = false
      try {
        await this._run('commit', [], undefined, begun)
        return result
      } catch (error) {
        if (error.name !== 'ConflictError' || attempt >= attempts) throw error
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 2 * 2 ** attempt))
      }
    }
  }

  /** Close the store: the Python process finishes what is in flight, closes it and exits. */
  async cleanup() {
    const connection = this._connection
    if (connection === null) return
    this._connection = null
    connection.setRef(true) // until it has closed the store
    connection.flush() // requests of this tick go before the end
    connection.proc.stdin.end()
    await connection.closed
  }

  /** The pid of the Python process serving this adapter, or null when none runs. */
  get pid() {
    return this._connection?.pid ?? null
  }
}

export default SqlStateAdapter

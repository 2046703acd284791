// Every StateAdapter method and every extra of SqlStateAdapter, over SQLite, Redis (native) and
// PostgreSQL (when $POSTGRES_URL is set, as tests/test_node_adapter.py does).

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { BACKENDS, openStore, rejectsWith } from './helpers.js'

const T = { timeout: 30_000 }
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
// Waits until the item's expiry (as the store reports it) has passed. TTLs are 1.5 s so a slow
// machine still reads the item before it expires.
const TTL = 1.5
async function pastExpiry(state, groupId, key) {
  const { expiresAt } = await state.getItem(groupId, key)
  await sleep(Math.max(0, expiresAt - Date.now()) + 150)
}

// set returns the value, get reads it, delete returns the old value
async function setGetDelete(state) {
  const value = { name: 'Ada', tags: ['x', 'y'], nested: { n: 1.5 } }
  const stored = await state.set('orders', 'o1', value)
  assert.deepEqual(stored, value)
  assert.notEqual(stored, value) // the value as stored, not the caller's object
  assert.deepEqual(await state.get('orders', 'o1'), value)
  assert.equal(await state.get('orders', 'missing'), null)
  assert.equal(await state.get('nobody', 'o1'), null)
  assert.deepEqual(await state.set('orders', 'o1', 'second'), 'second') // overwrite
  assert.equal(await state.delete('orders', 'o1'), 'second')
  assert.equal(await state.get('orders', 'o1'), null)
  assert.equal(await state.delete('orders', 'o1'), null)
}

// falsy values are values: 0, "", false, null, [] and {}
async function falsy(state) {
  const falsy = { zero: 0, empty: '', no: false, nothing: null, list: [], object: {} }
  for (const [key, value] of Object.entries(falsy)) {
    assert.deepEqual(await state.set('g', key, value), value)
  }
  for (const [key, value] of Object.entries(falsy)) {
    assert.deepEqual(await state.get('g', key), value, key)
    const item = await state.getItem('g', key)
    assert.notEqual(item, null, `${key} is stored`)
    assert.deepEqual(item.value, value)
  }
  assert.deepEqual(await state.keys('g'), Object.keys(falsy).sort())
  assert.deepEqual(await state.getGroup('g'), Object.keys(falsy).sort().map((key) => falsy[key]))
  assert.equal(await state.delete('g', 'zero'), 0)
  assert.equal(await state.delete('g', 'no'), false)
  assert.equal(await state.getItem('g', 'zero'), null) // deleted, unlike a stored null
}

// groups are exact; getGroup and keys are ordered by key; clear removes one group
async function groups(state) {
  const groups = ['order', 'orders', 'order:1', 'ord*', 'a/b', 'spaced out', 'üñí', '"quoted"']
  for (const group of groups) {
    await state.set(group, 'k2', `${group}-2`)
    await state.set(group, 'k1', `${group}-1`)
  }
  await state.set('order', 'b', 'b')
  await state.set('order', 'A', 'A')
  for (const group of groups) {
    const own = group === 'order' ? ['A', 'b', 'k1', 'k2'] : ['k1', 'k2']
    assert.deepEqual(await state.keys(group), own, group)
    const values = await state.getGroup(group)
    assert.deepEqual(values, own.map((key) => (key.length === 1 ? key : `${group}-${key.slice(1)}`)))
  }
  assert.deepEqual(await state.keys('ord'), [])
  assert.deepEqual(await state.getGroup('missing'), [])
  assert.equal(await state.clear('order'), null)
  assert.deepEqual(await state.keys('order'), [])
  assert.deepEqual(await state.keys('orders'), ['k1', 'k2'])
  assert.deepEqual(await state.keys('order:1'), ['k1', 'k2'])
  await state.clear('never-written') // clearing nothing is fine
}

// traceIds lists the groups holding items, ordered
async function traceIds(state) {
  assert.deepEqual(await state.traceIds(), [])
  for (const group of ['trace-b', 'trace-a', 'trace-c', 'trace-a']) await state.set(group, 'k', 1)
  await state.set('trace-c', 'other', 2)
  assert.deepEqual(await state.traceIds(), ['trace-a', 'trace-b', 'trace-c'])
  await state.delete('trace-b', 'k') // its last item
  await state.clear('trace-c')
  assert.deepEqual(await state.traceIds(), ['trace-a'])
  await state.set('trace-e', 'short', 'lived', { ttl: TTL })
  assert.deepEqual(await state.traceIds(), ['trace-a', 'trace-e'])
  await pastExpiry(state, 'trace-e', 'short')
  assert.deepEqual(await state.traceIds(), ['trace-a'], 'an expired item holds no group')
}

// items: every item with its type as Motia reports it, by group
async function itemsTyped(state) {
  const values = { a: 'text', b: 42, c: 1.5, d: true, e: { x: 1 }, f: [1, 2], g: null }
  const types = { a: 'string', b: 'number', c: 'number', d: 'boolean', e: 'object', f: 'array', g: 'null' }
  for (const [key, value] of Object.entries(values)) await state.set('typed', key, value)
  await state.set('other', 'z', 'elsewhere')
  const expected = Object.entries(values).map(([key, value]) => ({
    groupId: 'typed',
    key,
    type: types[key],
    value,
  }))
  assert.deepEqual(await state.items({ groupId: 'typed' }), expected)
  assert.deepEqual(await state.items({}), [
    { groupId: 'other', key: 'z', type: 'string', value: 'elsewhere' },
    ...expected,
  ])
  assert.deepEqual(await state.items(), await state.items({}))
  assert.deepEqual(await state.items({ groupId: 'nothing' }), [])
}

// items: Motia's filters, all of them holding
async function itemsFiltered(state) {
  const people = {
    ada: { name: 'Ada', age: 36, city: 'London', tags: ['math', 'code'], admin: true },
    bob: { name: 'Bob', age: 25, city: null, tags: ['code'], admin: false },
    cy: { name: 'Cyrille', age: 41, tags: [] },
    num: 7, // not an object: has no fields
  }
  for (const [key, value] of Object.entries(people)) await state.set('people', key, value)
  const found = async (...filter) =>
    (await state.items({ groupId: 'people', filter })).map((item) => item.key)
  const f = (valueKey, operation, value) => ({ valueKey, operation, value })
  assert.deepEqual(await found(f('name', 'eq', 'Ada')), ['ada'])
  assert.deepEqual(await found(f('name', 'neq', 'Ada')), ['bob', 'cy', 'num'])
  assert.deepEqual(await found(f('age', 'gt', '36')), ['cy'])
  assert.deepEqual(await found(f('age', 'gte', '36')), ['ada', 'cy'])
  assert.deepEqual(await found(f('age', 'lt', '36')), ['bob'])
  assert.deepEqual(await found(f('age', 'lte', '36')), ['ada', 'bob'])
  assert.deepEqual(await found(f('age', 'eq', '25')), ['bob'])
  assert.deepEqual(await found(f('name', 'contains', 'y')), ['cy'])
  assert.deepEqual(await found(f('tags', 'contains', 'code')), ['ada', 'bob'])
  assert.deepEqual(await found(f('tags', 'notContains', 'code')), ['cy', 'num'])
  assert.deepEqual(await found(f('name', 'startsWith', 'B')), ['bob'])
  assert.deepEqual(await found(f('name', 'endsWith', 'le')), ['cy'])
  assert.deepEqual(await found(f('city', 'isNull')), ['bob', 'cy', 'num'])
  assert.deepEqual(await found(f('city', 'isNotNull')), ['ada'])
  assert.deepEqual(await found(f('admin', 'eq', 'true')), ['ada'])
  assert.deepEqual(await found(f('age', 'gte', '30'), f('tags', 'contains', 'code')), ['ada'])
  const [item] = await state.items({ groupId: 'people', filter: [f('name', 'eq', 'Bob')] })
  assert.deepEqual(item, { groupId: 'people', key: 'bob', type: 'object', value: people.bob })
  await rejectsWith(assert, found(f('age', 'between', '1')), 'InvalidOperationError', /between/)
}

// update: ops apply in order and return old and new value
async function update(state) {
  assert.deepEqual(await state.update('u', 'counter', [{ type: 'increment', path: 'n', by: 1 }]), {
    oldValue: null,
    newValue: { n: 1 },
  })
  const result = await state.update('u', 'counter', [
    { type: 'increment', path: 'n', by: 4 },
    { type: 'decrement', path: 'n', by: 2 },
    { type: 'set', path: 'label', value: 'hits' },
    { type: 'merge', value: { extra: [1], more: { deep: true } } },
    { type: 'set', path: ['more', 'deeper'], value: 0 },
    { type: 'remove', path: 'extra' },
  ])
  assert.deepEqual(result, {
    oldValue: { n: 1 },
    newValue: { n: 3, label: 'hits', more: { deep: true, deeper: 0 } },
  })
  assert.deepEqual(await state.get('u', 'counter'), result.newValue)
  await rejectsWith(
    assert,
    state.update('u', 'counter', [{ type: 'increment', path: 'label', by: 1 }]),
    'InvalidOperationError',
  )
  await rejectsWith(assert, state.update('u', 'counter', [{ type: 'explode' }]), 'InvalidOperationError')
  await rejectsWith(
    assert,
    state.update('u', 'counter', [{ type: 'increment', path: 'n', by: NaN }]),
    'InvalidOperationError',
    /NaN/,
  )
  assert.deepEqual(await state.get('u', 'counter'), result.newValue, 'a failed update writes nothing')
}

// getItem: version as a decimal string, times in ms, ttl as expiresAt
async function getItem(state) {
  const before = Date.now()
  await state.set('meta', 'k', { a: 1 })
  const first = await state.getItem('meta', 'k')
  assert.equal(first.groupId, 'meta')
  assert.equal(first.key, 'k')
  assert.deepEqual(first.value, { a: 1 })
  assert.equal(typeof first.version, 'string')
  assert.match(first.version, /^[1-9]\d*$/)
  assert.ok(BigInt(first.version) < 2n ** 63n)
  assert.ok(first.createdAt >= before - 1000 && first.createdAt <= Date.now() + 1000, `${first.createdAt}`)
  assert.equal(first.expiresAt, null)
  await state.set('meta', 'k', { a: 2 }, { ttl: 60 })
  const second = await state.getItem('meta', 'k')
  assert.equal(BigInt(second.version), BigInt(first.version) + 1n, 'exact, even beyond 2^53')
  assert.equal(second.createdAt, first.createdAt)
  assert.ok(second.updatedAt >= first.updatedAt)
  assert.ok(Math.abs(second.expiresAt - (second.updatedAt + 60_000)) < 1000, `${second.expiresAt}`)
  assert.equal(await state.getItem('meta', 'absent'), null)
}

// ttl: an expired item is gone for every read
async function ttl(state) {
  await state.set('ttl', 'short', 'soon gone', { ttl: TTL })
  await state.set('ttl', 'long', 'stays')
  assert.equal(await state.get('ttl', 'short'), 'soon gone')
  await pastExpiry(state, 'ttl', 'short')
  assert.equal(await state.get('ttl', 'short'), null)
  assert.equal(await state.getItem('ttl', 'short'), null)
  assert.deepEqual(await state.keys('ttl'), ['long'])
  assert.deepEqual(await state.getGroup('ttl'), ['stays'])
  assert.deepEqual((await state.items({ groupId: 'ttl' })).map((item) => item.key), ['long'])
  await rejectsWith(assert, state.set('ttl', 'bad', 1, { ttl: -1 }), 'InvalidKeyError', /ttl/)
  await rejectsWith(assert, state.set('ttl', 'bad', 1, { tll: 5 }), 'InvalidOperationError', /tll/)
}

// conditions: ifVersion and ifAbsent on set, delete and update
async function conditions(state) {
  await state.set('cas', 'k', 1, { ifAbsent: true })
  await rejectsWith(assert, state.set('cas', 'k', 2, { ifAbsent: true }), 'ConflictError')
  const { version } = await state.getItem('cas', 'k')
  assert.equal(await state.set('cas', 'k', 3, { ifVersion: version }), 3)
  await rejectsWith(assert, state.set('cas', 'k', 4, { ifVersion: version }), 'ConflictError')
  await rejectsWith(assert, state.delete('cas', 'k', { ifVersion: version }), 'ConflictError')
  await rejectsWith(
    assert,
    state.update('cas', 'k', [{ type: 'set', path: '', value: 5 }], { ifVersion: version }),
    'ConflictError',
  )
  assert.equal(await state.get('cas', 'k'), 3, 'failed conditions change nothing')
  const now = (await state.getItem('cas', 'k')).version
  assert.deepEqual(await state.update('cas', 'k', [{ type: 'set', path: '', value: 6 }], { ifVersion: now }), {
    oldValue: 3,
    newValue: 6,
  })
  const last = (await state.getItem('cas', 'k')).version
  await rejectsWith(
    assert,
    state.set('cas', 'k', 7, { ifVersion: last, ifAbsent: true }),
    'InvalidOperationError',
  )
  await rejectsWith(assert, state.set('cas', 'k', 7, { ifAbsent: 'yes' }), 'InvalidOperationError')
  assert.equal(await state.delete('cas', 'k', { ifVersion: last }), 6)
  assert.equal(await state.get('cas', 'k'), null)
}

// transaction: all writes land together, reads see them, a throw rolls back
async function transaction(state) {
  await state.set('acct', 'a', 100)
  await state.set('acct', 'b', 0)
  const result = await state.transaction(async (tx) => {
    const a = await tx.get('acct', 'a')
    await tx.set('acct', 'a', a - 30)
    await tx.update('acct', 'b', [{ type: 'set', path: '', value: 30 }])
    assert.equal(await tx.get('acct', 'a'), 70, 'the transaction reads its own writes')
    assert.deepEqual(await tx.keys('acct'), ['a', 'b'])
    return 'moved'
  })
  assert.equal(result, 'moved')
  assert.deepEqual(await state.getGroup('acct'), [70, 30])
  const boom = new Error('boom')
  await assert.rejects(
    state.transaction(async (tx) => {
      await tx.set('acct', 'a', 0)
      await tx.delete('acct', 'b')
      await tx.set('acct', 'c', 'new')
      throw boom
    }),
    (error) => error === boom,
  )
  assert.deepEqual(await state.getGroup('acct'), [70, 30], 'nothing of it landed')
  await rejectsWith(
    assert,
    state.transaction(async () => state.get('acct', 'a')),
    'StateError',
    /transaction object/,
  )
  let kept
  await state.transaction(async (tx) => {
    kept = tx
  })
  await rejectsWith(assert, kept.get('acct', 'a'), 'StateError', /ended/)
}

// cleanup closes the store and ends the Python process; a later call starts a new one
async function cleanup(state) {
  await state.set('c', 'k', 'kept')
  const pid = state.pid
  assert.equal(typeof pid, 'number')
  await state.cleanup()
  assert.equal(state.pid, null)
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' })
  await state.cleanup() // twice is harmless
  assert.equal(await state.get('c', 'k'), 'kept')
  assert.notEqual(state.pid, pid)
}

// After traceIds (which leaves trace-a) and groups (which clears "order"): every group left.
async function traceIdsAfterGroups(state) {
  const left = ['trace-a', 'orders', 'order:1', 'ord*', 'a/b', 'spaced out', 'üñí', '"quoted"']
  assert.deepEqual(await state.traceIds(), left.sort())
}

// Each test has a store of its own (a new SQLite file, a new Redis key prefix) and one Python
// process; its subtests run in order on it, so whole-store reads (traceIds, items) know it all.
const STORES = {
  'one item at a time': [setGetDelete, falsy, getItem, conditions, cleanup],
  'groups and traceIds': [traceIds, groups, traceIdsAfterGroups],
  'items, filters and expiry': [itemsTyped, itemsFiltered, ttl],
  'update and transactions': [update, transaction],
}
const NAMES = {
  setGetDelete: 'set returns the value, get reads it, delete returns the old value',
  falsy: 'falsy values are values: 0, "", false, null, [] and {}',
  getItem: 'getItem: version as a decimal string, times in ms, ttl as expiresAt',
  conditions: 'conditions: ifVersion and ifAbsent on set, delete and update',
  cleanup: 'cleanup closes the store and ends the Python process; a later call starts a new one',
  traceIds: 'traceIds lists the groups holding items, ordered',
  groups: 'groups are exact; getGroup and keys are ordered by key; clear removes one group',
  traceIdsAfterGroups: 'traceIds after clear: every group still holding items',
  itemsTyped: 'items: every item with its type as Motia reports it, by group',
  itemsFiltered: "items: Motia's filters, all of them holding",
  ttl: 'ttl: an expired item is gone for every read',
  update: 'update: ops apply in order and return old and new value',
  transaction: 'transaction: all writes land together, reads see them, a throw rolls back',
}

for (const backend of BACKENDS) {
  describe(`contract over ${backend}`, { concurrency: true }, () => {
    for (const [name, checks] of Object.entries(STORES)) {
      test(name, T, async (t) => {
        const state = await openStore(t, backend)
        for (const check of checks) await t.test(NAMES[check.name], () => check(state))
      })
    }
  })
}

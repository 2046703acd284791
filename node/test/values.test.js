// Values crossing JS <-> Python: each case either arrives exactly or is refused by name.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { BACKENDS, openStore, python, rejectsWith } from './helpers.js'

const T = { timeout: 30_000 }

// Python's side, in one process: reads back what JS wrote (the type name and repr of each
// leaf of num/list and z/nested), then writes integers no JS number holds (py/ints).
const PYTHON_SIDE = `
import asyncio, json
from motia_state_sql import open_state
def leaves(value):
    if isinstance(value, list):
        return [leaves(v) for v in value]
    if isinstance(value, dict):
        return {k: leaves(v) for k, v in value.items()}
    return [type(value).__name__, repr(value)]
async def main():
    async with open_state(URL) as state:
        read = {"list": leaves(await state.get("num", "list")), "zero": leaves(await state.get("z", "nested"))}
        await state.set("py", "ints", {"a": 2**53 + 1, "b": 2**60, "c": 2**63 - 1, "d": -(2**63),
                                       "e": 1152921504606847000, "f": 12345, "s": "9007199254740993",
                                       "l": [2**53 + 1, 2**53]})
        print(json.dumps(read))
asyncio.run(main())
`

const NUMBERS = [
  2 ** 53 + 2,
  Number.MAX_SAFE_INTEGER,
  -(2 ** 53) - 2,
  2 ** 60,
  2 ** 63 - 1024,
  2 ** 63,
  -(2 ** 63),
  1e19,
  -1e19,
  2 ** 64,
  1e21,
  1e300,
  Number.MAX_VALUE,
  5e-324,
  0.1 + 0.2,
]

const INT64_MAX = 2n ** 63n - 1n
const INT64_MIN = -(2n ** 63n)

// numbers JS sends beyond 2^53 and beyond 64-bit come back as the same Number
async function jsNumbers(state) {
  assert.equal(JSON.stringify(1e19), '10000000000000000000') // the case in question
  const same = (got, what) =>
    got.forEach((n, i) => assert.ok(Object.is(n, NUMBERS[i]), `${what}[${i}]: ${n} is not ${NUMBERS[i]}`))
  same(await state.set('num', 'list', NUMBERS), 'set')
  same(await state.get('num', 'list'), 'get')
  same((await state.getItem('num', 'list')).value, 'getItem')
  same((await state.getGroup('num'))[0], 'getGroup')
  same((await state.items({ groupId: 'num' }))[0].value, 'items')
  for (const n of [1e19, 2 ** 64, -(2 ** 63)]) {
    assert.ok(Object.is(await state.set('num', 'top', n), n))
    assert.ok(Object.is(await state.get('num', 'top'), n))
  }
}

// what Python reads of the numbers JS wrote, then writes
async function pythonSide(state) {
  const read = JSON.parse(await python(PYTHON_SIDE, { url: state.options.url }))
  // Python holds each as the double JS meant: an int while the literal fits signed 64-bit.
  read.list.forEach(([type, repr], i) => {
    const literal = JSON.stringify(NUMBERS[i])
    const fits = /^-?\d+$/.test(literal) && BigInt(literal) >= INT64_MIN && BigInt(literal) <= INT64_MAX
    assert.equal(type, fits ? 'int' : 'float', `${literal} -> ${type} ${repr}`)
    assert.ok(Object.is(Number(repr), NUMBERS[i]), `${literal} -> ${repr}`)
  })
  assert.deepEqual(read.zero.m, ['float', '-0.0'])
  assert.deepEqual(read.zero.p, ['int', '0'])
}

// integers Python wrote that no JS number equals come back as BigInt; the others as Number
async function pythonInts(state) {
  const got = await state.get('py', 'ints')
  assert.equal(got.a, 9007199254740993n)
  assert.equal(got.b, 2 ** 60) // exactly a double
  assert.equal(got.c, 9223372036854775807n)
  assert.equal(got.d, -(2 ** 63)) // exactly a double
  assert.equal(got.e, 2 ** 60) // how JS writes 2 ** 60, so the Number JS would have sent
  assert.equal(got.f, 12345)
  assert.equal(got.s, '9007199254740993') // strings are never touched
  assert.deepEqual(got.l, [9007199254740993n, 2 ** 53])
  const [item] = await state.items({ groupId: 'py' })
  assert.equal(item.value.a, 9007199254740993n)
  const { oldValue, newValue } = await state.update('py', 'ints', [{ type: 'increment', path: 'a', by: 1 }])
  assert.equal(oldValue.a, 9007199254740993n)
  assert.equal(newValue.a, 2 ** 53 + 2) // 9007199254740994 is a double: a Number again
  await rejectsWith(assert, state.set('py', 'back', got), 'InvalidValueError', /BigInt 9007199254740993n/)
  assert.equal(await state.get('py', 'back'), null)
}

// versions are decimal strings beyond 2^53; a rounded Number is refused
async function versions(state) {
  // Fresh versions start at a random point of 2^62 per process: below 2^53 one time in 512.
  let key
  let version
  for (let attempt = 0; attempt < 8; attempt++) {
    key = `k${attempt}`
    await state.set('v', key, attempt)
    version = (await state.getItem('v', key)).version
    if (BigInt(version) > 2n ** 53n) break
    await state.cleanup() // the next call starts another process: another random start
  }
  assert.equal(typeof version, 'string')
  assert.ok(BigInt(version) > 2n ** 53n, version)
  await rejectsWith(
    assert,
    state.set('v', key, 'x', { ifVersion: Number(version) }),
    'InvalidOperationError',
    /decimal string/,
  )
  await state.set('v', key, 'y', { ifVersion: version })
  const next = (await state.getItem('v', key)).version
  assert.equal(BigInt(next), BigInt(version) + 1n)
  assert.equal(await state.get('v', key), 'y')
}

// -0 is kept, at the top, in objects, in arrays and in update ops
async function minusZero(state) {
  assert.ok(Object.is(await state.set('z', 'top', -0), -0))
  assert.ok(Object.is(await state.get('z', 'top'), -0))
  const nested = await state.set('z', 'nested', { m: -0, p: 0, l: [-0, 0, '-0'] })
  const read = await state.get('z', 'nested')
  for (const value of [nested, read]) {
    assert.ok(Object.is(value.m, -0))
    assert.ok(Object.is(value.p, 0))
    assert.ok(Object.is(value.l[0], -0) && Object.is(value.l[1], 0) && value.l[2] === '-0')
  }
  const { newValue } = await state.update('z', 'u', [{ type: 'set', path: 'x', value: -0 }])
  assert.ok(Object.is(newValue.x, -0))
}

// lone surrogates are refused by name, in values and in names; pairs are kept
async function surrogates(state) {
  const lone = '\ud83d'
  await rejectsWith(assert, state.set('s', 'k', lone), 'InvalidValueError', /surrogate/)
  await rejectsWith(assert, state.set('s', 'k', { t: `a${lone}b` }), 'InvalidValueError', /surrogate/)
  await rejectsWith(assert, state.set('s', 'k', ['ok', '\udc00']), 'InvalidValueError', /surrogate/)
  await rejectsWith(assert, state.set('s', lone, 1), 'InvalidKeyError')
  await rejectsWith(assert, state.set(lone, 'k', 1), 'InvalidKeyError')
  await rejectsWith(assert, state.get('s', `x${lone}`), 'InvalidKeyError')
  await rejectsWith(
    assert,
    state.update('s', 'k', [{ type: 'set', path: 'x', value: lone }]),
    'InvalidOperationError', // a bad op, like NaN in one
    /surrogate/,
  )
  assert.deepEqual(await state.keys('s'), [])
  const pair = 'emoji 😀 \ud83d\ude00'
  assert.equal(await state.set('s', pair, pair), pair)
  assert.equal(await state.get('s', pair), pair)
  assert.deepEqual(await state.keys('s'), [pair])
}

// undefined inside objects is dropped, inside arrays null, as JSON.stringify writes; at the top refused
async function undefinedDropped(state) {
  const given = { a: 1, b: undefined, f() {}, s: Symbol('x'), list: [1, undefined, () => 1] }
  const expected = { a: 1, list: [1, null, null] }
  assert.deepEqual(await state.set('u', 'k', given), expected) // set says what was stored
  assert.deepEqual(await state.get('u', 'k'), expected)
  assert.ok(!('b' in (await state.get('u', 'k'))))
  await rejectsWith(assert, state.set('u', 'top', undefined), 'InvalidValueError', /undefined/)
  await rejectsWith(assert, state.set('u', 'fn', () => 1), 'InvalidValueError', /function/)
  assert.equal(await state.getItem('u', 'top'), null)
}

// Date objects are stored as their ISO text (toJSON), and set says so
async function dates(state) {
  const when = new Date(Date.UTC(2024, 1, 29, 12, 30, 45, 678))
  assert.equal(await state.set('d', 'top', when), when.toISOString())
  assert.equal(await state.get('d', 'top'), '2024-02-29T12:30:45.678Z')
  assert.deepEqual(await state.set('d', 'obj', { at: when, custom: { toJSON: () => 'mine' } }), {
    at: when.toISOString(),
    custom: 'mine',
  })
  assert.deepEqual(await state.get('d', 'obj'), { at: when.toISOString(), custom: 'mine' })
  // An invalid Date, which JSON.stringify would write as null, is refused like NaN.
  await rejectsWith(assert, state.set('d', 'bad', new Date(NaN)), 'InvalidValueError', /Invalid Date/)
  await rejectsWith(assert, state.set('d', 'bad', { at: new Date('nope') }), 'InvalidValueError', /Invalid Date/)
  assert.equal(await state.getItem('d', 'bad'), null)
}

// NaN, Infinity and BigInt are refused by name, wherever they are
async function refused(state) {
  for (const [bad, name] of [
    [NaN, /NaN/],
    [Infinity, /Infinity/],
    [-Infinity, /-Infinity/],
    [10n, /BigInt 10n/],
  ]) {
    await rejectsWith(assert, state.set('n', 'k', bad), 'InvalidValueError', name)
    await rejectsWith(assert, state.set('n', 'k', { deep: [1, { x: bad }] }), 'InvalidValueError', name)
    await rejectsWith(
      assert,
      state.update('n', 'k', [{ type: 'set', path: 'x', value: bad }]),
      'InvalidOperationError',
      name,
    )
  }
  const circular = { a: 1 }
  circular.self = circular
  await rejectsWith(assert, state.set('n', 'k', circular), 'InvalidValueError', /circular/)
  assert.deepEqual(await state.keys('n'), [])
}

// a value over max_value_bytes is refused with our error, naming the limit
async function maxBytes(state) {
  assert.equal((await state.set('big', 'fits', 'x'.repeat(990))).length, 990)
  await rejectsWith(assert, state.set('big', 'over', 'x'.repeat(1001)), 'InvalidValueError', /1000/)
  await rejectsWith(
    assert,
    state.update('big', 'fits', [{ type: 'set', path: '', value: 'y'.repeat(2000) }]),
    'InvalidValueError',
    /1000/,
  )
  assert.equal(await state.get('big', 'over'), null)
  assert.equal((await state.get('big', 'fits')).length, 990)
}

// the default max_value_bytes, 16 MiB, over the pipe both ways
async function defaultMaxBytes(state) {
  // The default limit, 16 MiB.
  const huge = 'z'.repeat(16 * 1024 * 1024 + 1)
  await rejectsWith(assert, state.set('big', 'huge', huge), 'InvalidValueError', /16777216|16 MiB/)
  const large = 'z'.repeat(4 * 1024 * 1024)
  assert.equal(await state.set('big', 'large', large), large)
  assert.equal(await state.get('big', 'large'), large)
}

// Each test has a store of its own and one Python process; its subtests run in order on it.
const STORES = {
  'numbers and versions': [jsNumbers, minusZero, pythonSide, pythonInts, versions],
  'what JSON.stringify would change or refuse': [surrogates, undefinedDropped, dates, refused, defaultMaxBytes],
}
const NAMES = {
  jsNumbers: 'numbers JS sends beyond 2^53 and beyond 64-bit come back as the same Number',
  pythonSide: 'what Python reads of the numbers JS wrote, then writes',
  pythonInts: 'integers Python wrote that no JS number equals come back as BigInt, the others as Number',
  versions: 'versions are decimal strings beyond 2^53; a rounded Number is refused',
  minusZero: '-0 is kept, at the top, in objects, in arrays and in update ops',
  surrogates: 'lone surrogates are refused by name, in values and in names; pairs are kept',
  undefinedDropped: 'undefined inside objects is dropped, inside arrays null, as JSON.stringify writes; at the top refused',
  dates: 'Date objects are stored as their ISO text (toJSON), and set says so',
  refused: 'NaN, Infinity and BigInt are refused by name, wherever they are',
  maxBytes: 'a value over max_value_bytes is refused with our error, naming the limit',
  defaultMaxBytes: 'the default max_value_bytes, 16 MiB, over the pipe both ways',
}

for (const backend of BACKENDS) {
  describe(`values over ${backend}`, { concurrency: true }, () => {
    for (const [name, checks] of Object.entries(STORES)) {
      test(name, T, async (t) => {
        const state = await openStore(t, backend)
        for (const check of checks) await t.test(NAMES[check.name], () => check(state))
      })
    }
    test('max_value_bytes from the URL', T, async (t) => {
      const state = await openStore(t, backend, { query: { max_value_bytes: 1000 } })
      await maxBytes(state)
    })
  })
}

// Drives Motia's own @motiadev/adapter-redis-state for tests/test_interop_node.py.
// Usage: node interop.mjs URL PREFIX COMMAND JSON
//   write [[group, key, value], ...]   -> state.set for each
//   read  [group, ...]                 -> prints {group: {values: getGroup, keys: keys, items: {key: get}}}
//   delete [[group, key], ...]         -> prints the deleted values
//   clear [group, ...]
import { RedisStateAdapter } from '@motiadev/adapter-redis-state'

const [url, keyPrefix, command, payload] = process.argv.slice(2)
const args = JSON.parse(payload)
const state = new RedisStateAdapter({ url }, { keyPrefix })
await state.ensureConnected()
let out = null
if (command === 'write') {
  for (const [group, key, value] of args) await state.set(group, key, value)
} else if (command === 'read') {
  out = {}
  for (const group of args) {
    const keys = (await state.keys(group)).sort()
    const items = {}
    for (const key of keys) items[key] = await state.get(group, key)
    out[group] = { values: await state.getGroup(group), keys, items }
  }
} else if (command === 'delete') {
  out = []
  for (const [group, key] of args) out.push(await state.delete(group, key))
} else if (command === 'clear') {
  for (const group of args) await state.clear(group)
} else {
  throw new Error(`unknown command ${command}`)
}
console.log(JSON.stringify(out))
await state.cleanup()

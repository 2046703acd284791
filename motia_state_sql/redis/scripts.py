"""Lua scripts: each runs atomically on the server. None of them decodes or encodes a value.

Values stay opaque JSON text inside Lua (Redis's cjson bends ``[]``, big integers and ``false``);
scripts only parse our own record headers and compare versions, and every new value is computed
in Python by the shared ``ops`` module.

Native layout: a group is one hash ``data`` (field = key, value = record) plus a sorted set ``exp``
(field -> expiry) used to reclaim expired fields; both carry the group's hash tag. A record is
``"<version>|<created>|<updated>|<expires or empty>|<json>"``.

Motia layout: one string per item, exactly as Motia's Node adapter writes it; expiry is the key's
own PEXPIRETIME, and the version is the first 13 hex digits of the value's SHA-1.
"""

from __future__ import annotations

from typing import Final

# Shared Lua helpers (prepended to the native scripts).
_NATIVE_HELPERS: Final = """
local function live_header(rec, now)
  if not rec then return nil end
  local v, c, e = string.match(rec, '^(%d+)|([^|]*)|[^|]*|([^|]*)|')
  if e ~= '' and tonumber(e) <= now then return nil end
  return v, c
end
local function reclaim(data, exp, now)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 16)
  for _, f in ipairs(gone) do
    if not live_header(redis.call('HGET', data, f), now) then redis.call('HDEL', data, f) end
    redis.call('ZREM', exp, f)
  end
end
"""

#: Set or delete one field, under an optional condition.
#: KEYS: data, exp. ARGV: field, condition ('' | 'absent' | '=' .. version, '=' alone = absent),
#: now, tail ('<updated>|<expires>|<json>', or '' to delete), fresh version, expires ('' = none).
#: Returns {1, old record or false, new record} or {0, current record or false} on a failed condition.
NATIVE_WRITE: Final = (
    _NATIVE_HELPERS
    + """
local data, exp = KEYS[1], KEYS[2]
local field, cond, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cur = redis.call('HGET', data, field)
local ver, created = live_header(cur, now)
if not ver then cur = false end
if cond == 'absent' then
  if ver then return {0, cur} end
elseif cond ~= '' then
  if (ver or '') ~= string.sub(cond, 2) then return {0, cur} end
end
reclaim(data, exp, now)
if ARGV[4] == '' then
  if ver then
    redis.call('HDEL', data, field)
    redis.call('ZREM', exp, field)
  end
  return {1, cur}
end
local newver = ARGV[5]
if ver then newver = string.format('%d', tonumber(ver) + 1) end
local rec = newver .. '|' .. (created or ARGV[3]) .. '|' .. ARGV[4]
redis.call('HSET', data, field, rec)
if ARGV[6] ~= '' then redis.call('ZADD', exp, ARGV[6], field) else redis.call('ZREM', exp, field) end
return {1, cur, rec}
"""
)

#: Count live fields of several groups. KEYS: data1, exp1, data2, exp2, ... ARGV: now.
NATIVE_LIVE_COUNTS: Final = """
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('HLEN', KEYS[i]) - redis.call('ZCOUNT', KEYS[i + 1], '-inf', ARGV[1])
end
return out
"""

#: Commit a transaction: check every read, then apply every write, or apply nothing.
#: KEYS: data1, exp1, data2, exp2, ... (one pair per group).
#: ARGV: now, then sections each led by a count:
#:   row checks   (group index, field, version or '' for absent)
#:   group checks (group index, n, then n pairs field, version): the group's live fields are exactly these
#:   clears       (group index)
#:   writes       (group index, field, record or '' to delete, expires or '')
#: Returns 1, or {0, description of the first conflict}.
NATIVE_COMMIT: Final = (
    _NATIVE_HELPERS
    + """
local now = tonumber(ARGV[1])
local i = 2
local function data(g) return KEYS[2 * tonumber(g) - 1] end
local function exp(g) return KEYS[2 * tonumber(g)] end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local g, field, want = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  local v = live_header(redis.call('HGET', data(g), field), now)
  if (v or '') ~= want then return {0, 'key ' .. field .. ' changed'} end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local g, m = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  local want = {}
  for _ = 1, m do want[ARGV[i]] = ARGV[i + 1]; i = i + 2 end
  local all = redis.call('HGETALL', data(g))
  local seen = 0
  for j = 1, #all, 2 do
    local v = live_header(all[j + 1], now)
    if v then
      if want[all[j]] ~= v then return {0, 'group changed at ' .. all[j]} end
      seen = seen + 1
    end
  end
  if seen ~= m then return {0, 'group lost items'} end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('DEL', data(ARGV[i]), exp(ARGV[i])); i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local g, field, rec, expires = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]; i = i + 4
  if rec == '' then
    redis.call('HDEL', data(g), field)
    redis.call('ZREM', exp(g), field)
  else
    redis.call('HSET', data(g), field, rec)
    if expires ~= '' then
      redis.call('ZADD', exp(g), expires, field)
    else
      redis.call('ZREM', exp(g), field)
    end
  end
end
return 1
"""
)

_MOTIA_HELPERS: Final = """
local function live_value(key, now_ms)
  local cur = redis.call('GET', key)
  if not cur then return false, -1 end
  local at = redis.call('PEXPIRETIME', key)
  if at > 0 and at <= now_ms then return false, -1 end
  return cur, at
end
local function version(cur)
  if not cur then return '' end
  return string.sub(redis.sha1hex(cur), 1, 13)
end
"""

#: Read one item. KEYS: key. ARGV: now_ms. Returns {value or false, expire time ms or -1}.
MOTIA_GET: Final = (
    _MOTIA_HELPERS
    + """
local cur, at = live_value(KEYS[1], tonumber(ARGV[1]))
return {cur, at}
"""
)

#: Set or delete one item. KEYS: key. ARGV: condition ('' | 'absent' | '=' .. version), now_ms,
#: value ('' to delete), expire-at ms ('' = none), keep ('1': keep the current expiry).
#: Returns {1, old value or false} or {0, current value or false}.
MOTIA_WRITE: Final = (
    _MOTIA_HELPERS
    + """
local cur, at = live_value(KEYS[1], tonumber(ARGV[2]))
local cond = ARGV[1]
if cond == 'absent' then
  if cur then return {0, cur} end
elseif cond ~= '' then
  if version(cur) ~= string.sub(cond, 2) then return {0, cur} end
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  return {1, cur}
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[1], ARGV[3], 'PXAT', ARGV[4])
elseif ARGV[5] == '1' and cur and at > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return {1, cur}
"""
)

#: Scan keys matching a pattern inside the script, so the result is one atomic snapshot.
_MOTIA_SCAN: Final = """
local function scan(pattern)
  local keys, cursor = {}, '0'
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = r[1]
    for _, k in ipairs(r[2]) do keys[#keys + 1] = k end
  until cursor == '0'
  return keys
end
"""

#: Delete every key matching ARGV[1] atomically. Returns how many were deleted.
MOTIA_CLEAR: Final = (
    _MOTIA_SCAN
    + """
local keys = scan(ARGV[1])
for _, k in ipairs(keys) do redis.call('DEL', k) end
return #keys
"""
)

#: Commit a transaction (motia layout, standalone Redis). KEYS: every single key checked or written.
#: ARGV: now_ms, then sections each led by a count:
#:   key checks   (key index, version or '' for absent)
#:   group checks (pattern, n, then n pairs key index, version): live keys matching are exactly these
#:   clears       (pattern)
#:   writes       (key index, value or '' to delete, expire-at ms or '', keep '1'/'0')
MOTIA_COMMIT: Final = (
    _MOTIA_HELPERS
    + _MOTIA_SCAN
    + """
local now = tonumber(ARGV[1])
local i = 2
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local k, want = KEYS[tonumber(ARGV[i])], ARGV[i + 1]; i = i + 2
  if version((live_value(k, now))) ~= want then return {0, 'key ' .. k .. ' changed'} end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local pattern, m = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  local want = {}
  for _ = 1, m do want[KEYS[tonumber(ARGV[i])]] = ARGV[i + 1]; i = i + 2 end
  local seen = 0
  for _, k in ipairs(scan(pattern)) do
    local cur = live_value(k, now)
    if cur then
      if want[k] ~= version(cur) then return {0, 'group changed at ' .. k} end
      seen = seen + 1
    end
  end
  if seen ~= m then return {0, 'group lost items'} end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  for _, k in ipairs(scan(ARGV[i])) do redis.call('DEL', k) end
  i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local k, value, at, keep = KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]; i = i + 4
  if value == '' then
    redis.call('DEL', k)
  elseif at ~= '' then
    redis.call('SET', k, value, 'PXAT', at)
  elseif keep == '1' and redis.call('PEXPIRETIME', k) > 0 then
    redis.call('SET', k, value, 'KEEPTTL')
  else
    redis.call('SET', k, value)
  end
end
return 1
"""
)

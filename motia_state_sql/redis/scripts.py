"""Lua scripts: each runs atomically on the server. None of them decodes or encodes a value.

Values stay opaque JSON text inside Lua (Redis's cjson bends ``[]``, big integers and ``false``);
scripts only parse our own record headers and compare versions, and every new value is computed
in Python by the shared ``ops`` module. Scripts return raw value strings.

Native layout: a group is one hash ``data`` (field = key, value = record) plus a sorted set ``exp``
(field -> expiry) used to reclaim expired fields; both carry the group's hash tag. A record is
``"<version>|<created>|<updated>|<expires or empty>|<json>"``. When every field of a group
expires, both keys get a Redis expiry (the last item's expiry plus a margin), so a group nobody
touches again is reclaimed by Redis itself; otherwise neither key has one.

Motia layout: one string per item, exactly as Motia's Node adapter writes it; expiry is the key's
own PEXPIRETIME, and the version is the first 13 hex digits of the value's SHA-1.

Errors a script raises on purpose start with ``WRONGTYPE`` (a key holds data of another kind;
the key follows as hex after ``key:``) or ``BADRECORD`` (a native field that is not our record).
"""

from __future__ import annotations

from typing import Final

_HEX: Final = """
local function hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
local function wrongtype(k)
  error({err = 'WRONGTYPE key:' .. hex(k)})
end
"""

#: Scan keys matching a pattern inside the script, so the result is one atomic snapshot.
_SCAN: Final = """
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

# Shared Lua helpers of the native scripts. ``now`` is seconds (the adapter's clock); ``margin``
# is milliseconds added to a group's Redis expiry.
_NATIVE_HELPERS: Final = (
    _HEX
    + """
-- a decimal version plus one, exactly (versions may exceed the 2^53 a Lua number holds)
local function incr(v)
  local i = #v
  while i > 0 and string.sub(v, i, i) == '9' do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #v) end
  return string.sub(v, 1, i - 1) .. string.char(string.byte(v, i) + 1) .. string.rep('0', #v - i)
end
-- version and created of a live record (nil when absent or expired), and its expiry text
local function header(rec, now, data)
  if not rec then return nil end
  local v, c, e = string.match(rec, '^(%d+)|([^|]*)|[^|]*|([^|]*)|')
  if not v then error({err = 'BADRECORD key:' .. hex(data)}) end
  if e ~= '' and tonumber(e) <= now then return nil, nil, e end
  return v, c, e
end
-- drop up to ``limit`` fields whose expiry is due; returns how many expiring fields remain
local function reclaim(data, exp, now, limit)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, limit)
  for _, f in ipairs(gone) do
    if not header(redis.call('HGET', data, f), now, data) then redis.call('HDEL', data, f) end
    redis.call('ZREM', exp, f)
  end
  return redis.call('ZCARD', exp)
end
-- give both keys a Redis expiry when every field expires, else none
local function settle(data, exp, now, margin)
  local n = redis.call('ZCARD', exp)
  if n > 0 and redis.call('HLEN', data) == n then
    local last = redis.call('ZRANGE', exp, -1, -1, 'WITHSCORES')
    local ms = math.ceil((tonumber(last[2]) - now) * 1000) + margin
    if ms < 1 then ms = 1 end
    if ms < 1e15 then
      ms = string.format('%d', ms)
      redis.call('PEXPIRE', data, ms)
      redis.call('PEXPIRE', exp, ms)
      return
    end
  end
  redis.call('PERSIST', data)
  redis.call('PERSIST', exp)
end
"""
)

#: Set or delete one field, under an optional condition.
#: KEYS: data, exp. ARGV: field, condition ('' | 'absent' | '=' .. version, '=' alone = absent),
#: now, tail ('<updated>|<expires>|<json>', or '' to delete), fresh version, expires ('' = none),
#: margin ms, want ('1': return the old record on success too).
#: Returns, on success: the new version alone for a set (want '0'), {1, old record or false,
#: new version} for a set (want '1'), {1, old record or false} for a delete; or
#: {0, current record or false} on a failed condition.
NATIVE_WRITE: Final = (
    _NATIVE_HELPERS
    + """
local data, exp = KEYS[1], KEYS[2]
local field, cond, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local raw = redis.call('HGET', data, field)
local ver, created, had = header(raw, now, data)
local cur = ver and raw or false
if cond == 'absent' then
  if ver then return {0, cur} end
elseif cond ~= '' then
  if (ver or '') ~= string.sub(cond, 2) then return {0, cur} end
end
local expiring = redis.call('ZCARD', exp)
if expiring > 0 then expiring = reclaim(data, exp, now, 16) end
if ARGV[4] == '' then
  if raw then
    redis.call('HDEL', data, field)
    if had ~= '' then redis.call('ZREM', exp, field) end
  end
  if expiring > 0 then settle(data, exp, now, tonumber(ARGV[7])) end
  return {1, cur}
end
local newver = ARGV[5]
if ver then newver = incr(ver) end
redis.call('HSET', data, field, newver .. '|' .. (created or ARGV[3]) .. '|' .. ARGV[4])
if ARGV[6] ~= '' then
  redis.call('ZADD', exp, ARGV[6], field)
elseif raw and had ~= '' then
  redis.call('ZREM', exp, field)
end
if expiring > 0 or ARGV[6] ~= '' then settle(data, exp, now, tonumber(ARGV[7])) end
if ARGV[8] == '1' then return {1, cur, newver} end
return newver
"""
)

#: Drop the due fields of one group and settle its expiry (reads call it when they meet one).
#: KEYS: data, exp. ARGV: now, margin ms. Returns how many expiring fields remain.
NATIVE_RECLAIM: Final = (
    _NATIVE_HELPERS
    + """
local now = tonumber(ARGV[1])
local left = reclaim(KEYS[1], KEYS[2], now, 1000)
settle(KEYS[1], KEYS[2], now, tonumber(ARGV[2]))
return left
"""
)

#: Count the live fields of one group, reclaiming due ones. KEYS: data, exp. ARGV: now, margin ms.
NATIVE_LIVE_COUNT: Final = (
    _NATIVE_HELPERS
    + """
local now = tonumber(ARGV[1])
if redis.call('ZCOUNT', KEYS[2], '-inf', now) > 0 then
  reclaim(KEYS[1], KEYS[2], now, 1000)
  settle(KEYS[1], KEYS[2], now, tonumber(ARGV[2]))
end
return redis.call('HLEN', KEYS[1]) - redis.call('ZCOUNT', KEYS[2], '-inf', now)
"""
)

#: Counts and times of one group, from the record headers (values are not read). KEYS: data.
#: ARGV: now. Returns {live, expired, oldest updated_at text or '', newest or ''}.
NATIVE_INFO: Final = """
local now, live, expired, lo, hi, lo_s, hi_s = tonumber(ARGV[1]), 0, 0, nil, nil, '', ''
for _, rec in ipairs(redis.call('HVALS', KEYS[1])) do
  local u, e = string.match(rec, '^%d+|[^|]*|([^|]*)|([^|]*)|')
  if u then
    if e ~= '' and tonumber(e) <= now then
      expired = expired + 1
    else
      live = live + 1
      local t = tonumber(u)
      if not lo or t < lo then lo, lo_s = t, u end
      if not hi or t > hi then hi, hi_s = t, u end
    end
  end
end
return {live, expired, lo_s, hi_s}
"""

# The groups holding a live field, found by scanning the keyspace (standalone Redis only: keys of
# other slots are not declared). ``prefix`` is the key prefix, ``pattern`` its glob plus
# '{*}:d:*'. Returns a set (table group -> true) and the count.
_NATIVE_GROUPS: Final = (
    _SCAN
    + """
local function live_groups(prefix, pattern, now)
  local found, count = {}, 0
  local head = #prefix + 18
  for _, k in ipairs(scan(pattern)) do
    local g = string.sub(k, head + 4)
    if g ~= '' and k == prefix .. '{' .. string.sub(redis.sha1hex(g), 1, 16) .. '}:d:' .. g then
      local e = string.sub(k, 1, head) .. ':e:' .. g
      if redis.call('HLEN', k) - redis.call('ZCOUNT', e, '-inf', now) > 0 then
        found[g] = true
        count = count + 1
      end
    end
  end
  return found, count
end
"""
)

#: The live groups, in one atomic scan (standalone). ARGV: prefix, pattern, now. Returns group ids.
NATIVE_GROUPS: Final = (
    _NATIVE_GROUPS
    + """
local found = live_groups(ARGV[1], ARGV[2], tonumber(ARGV[3]))
local out = {}
for g in pairs(found) do out[#out + 1] = g end
return out
"""
)

#: Commit scripts: why the live groups found now (a set and its size) differ from the ``m``
#: group ids in ``ARGV[i ..]`` that the transaction read, or nil when they are the same.
_SAME_GROUPS: Final = """
local function same_groups(found, count, m, i)
  for j = i, i + m - 1 do
    if not found[ARGV[j]] then return 'group ' .. ARGV[j] .. ' is gone' end
  end
  if count ~= m then return 'a new group appeared' end
  return nil
end
"""

#: Commit a transaction: check every read, then apply every write, or apply nothing.
#: KEYS: data1, exp1, data2, exp2, ... (one pair per group).
#: ARGV: now, margin ms, then sections each led by a count:
#:   row checks   (group index, field, version or '' for absent)
#:   group checks (group index, n, then n pairs field, version): the group's live fields are exactly these
#:   all-groups check (0, or 1 then prefix, pattern, n, then n group ids): the live groups are
#:                 exactly these (standalone only: scans the keyspace)
#:   clears       (group index)
#:   writes       (group index, field, record or '' to delete, expires or '')
#: Returns 1, or {0, description of the first conflict}.
NATIVE_COMMIT: Final = (
    _SAME_GROUPS
    + _NATIVE_HELPERS
    + _NATIVE_GROUPS
    + """
local now, margin = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 3
local function data(g) return KEYS[2 * tonumber(g) - 1] end
local function exp(g) return KEYS[2 * tonumber(g)] end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local g, field, want = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
  local v = header(redis.call('HGET', data(g), field), now, data(g))
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
    local v = header(all[j + 1], now, data(g))
    if v then
      if want[all[j]] ~= v then return {0, 'group changed at ' .. all[j]} end
      seen = seen + 1
    end
  end
  if seen ~= m then return {0, 'group lost items'} end
end
if ARGV[i] == '1' then
  local prefix, pattern, m = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]); i = i + 4
  local found, count = live_groups(prefix, pattern, now)
  local why = same_groups(found, count, m, i)
  if why then return {0, why} end
  i = i + m
else
  i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('DEL', data(ARGV[i]), exp(ARGV[i])); i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
local touched = {}
for _ = 1, n do
  local g, field, rec, expires = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]; i = i + 4
  touched[g] = true
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
for g in pairs(touched) do
  reclaim(data(g), exp(g), now, 16)
  settle(data(g), exp(g), now, margin)
end
return 1
"""
)

_MOTIA_HELPERS: Final = (
    _HEX
    + """
local function live_value(key, now_ms)
  local cur = redis.pcall('GET', key)
  if type(cur) == 'table' then wrongtype(key) end
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
)

#: Read one item. KEYS: key. ARGV: now_ms. Returns {value or false, expire time ms or -1}.
MOTIA_GET: Final = (
    _MOTIA_HELPERS
    + """
local cur, at = live_value(KEYS[1], tonumber(ARGV[1]))
return {cur, at}
"""
)

#: Read many items of one group (streaming a group in batches). KEYS: keys. ARGV: now_ms.
#: Returns {value or false, expire time ms or -1} flattened, one pair per key.
MOTIA_MGET: Final = (
    _MOTIA_HELPERS
    + """
local now, out = tonumber(ARGV[1]), {}
for i, k in ipairs(KEYS) do
  out[2 * i - 1], out[2 * i] = live_value(k, now)
end
return out
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

#: Live items of one group in one atomic snapshot. ARGV: pattern, now_ms.
#: Returns {key, value, expire time ms or -1, key, value, ...}.
MOTIA_GROUP: Final = (
    _MOTIA_HELPERS
    + _SCAN
    + """
local now, out = tonumber(ARGV[2]), {}
for _, k in ipairs(scan(ARGV[1])) do
  local cur, at = live_value(k, now)
  if cur then
    out[#out + 1] = k
    out[#out + 1] = cur
    out[#out + 1] = at
  end
end
return out
"""
)

# The groups holding a live key: the text between the prefix (``skip`` bytes) and the first ':'.
_MOTIA_GROUPS: Final = """
local function live_groups(pattern, skip, now)
  local found, count = {}, 0
  for _, k in ipairs(scan(pattern)) do
    local colon = string.find(k, ':', skip + 1, true)
    if colon and colon > skip + 1 then
      local at = redis.call('PEXPIRETIME', k)
      if at ~= -2 and not (at > 0 and at <= now) then
        local g = string.sub(k, skip + 1, colon - 1)
        if not found[g] then
          if redis.call('TYPE', k)['ok'] ~= 'string' then wrongtype(k) end
          found[g] = true
          count = count + 1
        end
      end
    end
  end
  return found, count
end
"""

#: The live groups in one atomic snapshot. ARGV: pattern (prefix glob + '*'), prefix bytes, now_ms.
MOTIA_GROUPS: Final = (
    _MOTIA_HELPERS
    + _SCAN
    + _MOTIA_GROUPS
    + """
local found = live_groups(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local out = {}
for g in pairs(found) do out[#out + 1] = g end
return out
"""
)

#: Delete every key matching ARGV[1] atomically. Returns how many were deleted.
MOTIA_CLEAR: Final = (
    _SCAN
    + """
local keys = scan(ARGV[1])
for _, k in ipairs(keys) do redis.call('DEL', k) end
return #keys
"""
)

# Seconds since a key was last read or written (Redis's OBJECT IDLETIME), 0 when Redis cannot
# tell: a small integer value (0-9999) is one object shared by every key holding it, whose idle
# time is nobody's (its refcount is INT_MAX). Neither OBJECT nor PEXPIRETIME touches the key.
_IDLE: Final = """
local function idle(k)
  if redis.call('OBJECT', 'REFCOUNT', k) >= 2147483647 then return 0 end
  return redis.call('OBJECT', 'IDLETIME', k)
end
"""

#: Idle seconds of items (pruning). KEYS: item keys. ARGV: now_ms. Returns, per key, its idle
#: seconds, or -1 when absent or expired.
MOTIA_IDLE: Final = (
    _IDLE
    + """
local now, out = tonumber(ARGV[1]), {}
for i, k in ipairs(KEYS) do
  local at = redis.call('PEXPIRETIME', k)
  if at == -2 or (at > 0 and at <= now) then
    out[i] = -1
  else
    out[i] = idle(k)
  end
end
return out
"""
)

#: Remove a group whose every live item is idle for more than ARGV[2] seconds, atomically.
#: ARGV: the group's pattern, age seconds, now_ms. Returns {live items removed, least idle
#: seconds}, or {-1, 0} when an item was used within the age (the group stays whole).
MOTIA_PRUNE: Final = (
    _SCAN
    + _IDLE
    + """
local now, age, live, least = tonumber(ARGV[3]), tonumber(ARGV[2]), 0, -1
local keys = scan(ARGV[1])
for _, k in ipairs(keys) do
  local at = redis.call('PEXPIRETIME', k)
  if at ~= -2 and not (at > 0 and at <= now) then
    local seconds = idle(k)
    if seconds <= age then return {-1, 0} end
    if least < 0 or seconds < least then least = seconds end
    live = live + 1
  end
end
for _, k in ipairs(keys) do redis.call('DEL', k) end
return {live, least}
"""
)

#: Commit a transaction (motia layout, standalone Redis). KEYS: every single key checked or written.
#: ARGV: now_ms, then sections each led by a count:
#:   key checks   (key index, version or '' for absent)
#:   group checks (pattern, n, then n pairs key index, version): live keys matching are exactly these
#:   all-groups check (0, or 1 then pattern, prefix bytes, n, then n group ids): the live groups
#:                 are exactly these
#:   clears       (pattern)
#:   writes       (key index, value or '' to delete, expire-at ms or '', keep '1'/'0')
MOTIA_COMMIT: Final = (
    _SAME_GROUPS
    + _MOTIA_HELPERS
    + _SCAN
    + _MOTIA_GROUPS
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
if ARGV[i] == '1' then
  local pattern, skip, m = ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]); i = i + 4
  local found, count = live_groups(pattern, skip, now)
  local why = same_groups(found, count, m, i)
  if why then return {0, why} end
  i = i + m
else
  i = i + 1
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

-- Admit one request against every scope, all or nothing, in one atomic step.
-- Mirrors auth/ratelimit/memory.py; see auth/ratelimit/storage.py for the data layout.
--
-- KEYS, 5 per scope: log (zset id -> admitted ms), weights (hash id -> tokens, plus the
--   running total under '#total'), slots (zset id -> deadline ms), bookings (hash
--   id -> "tokens:month"), month (hash used/reserved of the current month)
-- ARGV: now_ms, window_ms, request_id, tokens, deadline_ms, month, month_reset_ms, keep_ms,
--   seed_required (0/1), dry_run (0/1), then 4 per scope: rpm, tpm, concurrency, quota
--   (0 = unlimited)
-- Returns {code, kind, scope, limit, used, retry_at_ms, booked, then 5 per scope:
--   requests, window_tokens, newest_ms, slots, month_tokens}; code 1 admitted, 0 refused,
--   2 needs seed (scope = the scope to seed), 3 duplicate id; -1 stands for "none".

local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local rid = ARGV[3]
local tokens = tonumber(ARGV[4])
local deadline = tonumber(ARGV[5])
local month = ARGV[6]
local month_reset = tonumber(ARGV[7])
local keep = tonumber(ARGV[8])
local seed_required = ARGV[9] == '1'
local dry_run = ARGV[10] == '1'
local nscopes = #KEYS / 5
local TOTAL = '#total'

-- unpack() has a stack limit, so long id lists go to Redis in slices
local function each_slice(items, fn)
  for i = 1, #items, 1000 do
    fn(unpack(items, i, math.min(i + 999, #items)))
  end
end

local function prune_window(log, weights)
  local cutoff = now - window
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
  if #expired == 0 then return end
  local freed = 0
  each_slice(expired, function(...)
    for _, w in ipairs(redis.call('HMGET', weights, ...)) do
      freed = freed + (tonumber(w) or 0)
    end
    redis.call('HDEL', weights, ...)
  end)
  redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
  if redis.call('ZCARD', log) == 0 then
    redis.call('DEL', weights)
  else
    redis.call('HINCRBY', weights, TOTAL, 0 - freed)  -- not -freed: Redis refuses '-0'
  end
end

-- a booking past its deadline is a request whose process never settled: release it
local function prune_bookings(slots, bookings, mon)
  local expired = redis.call('ZRANGEBYSCORE', slots, '-inf', now)
  if #expired == 0 then return end
  local released = 0
  each_slice(expired, function(...)
    for _, entry in ipairs(redis.call('HMGET', bookings, ...)) do
      if entry then
        local booked, booked_month = string.match(entry, '^(%d+):(.*)$')
        if booked_month == month then released = released + tonumber(booked) end
      end
    end
    redis.call('HDEL', bookings, ...)
  end)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  if released > 0 and redis.call('EXISTS', mon) == 1 then
    redis.call('HINCRBY', mon, 'reserved', 0 - released)
  end
end

-- when enough of the window has expired that what stays is at most `allowed`
local function tokens_retry_at(log, weights, total, allowed)
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    total = total - (tonumber(redis.call('HGET', weights, entries[i])) or 0)
    if total <= allowed then return tonumber(entries[i + 1]) + window end
  end
  return now + window
end

local refusal = nil
local function consider(kind, scope, limit, used, retry_at)
  -- report the refusal lifting last (-1: never), so waiting it out is enough
  local function key(r) if r == -1 then return math.huge end return r end
  if refusal == nil or key(retry_at) > key(refusal[6]) then
    refusal = {0, kind, scope, limit, used, retry_at}
  end
end

local scopes = {}
for s = 1, nscopes do
  local k = (s - 1) * 5
  local a = 10 + (s - 1) * 4
  scopes[s] = {
    log = KEYS[k + 1], weights = KEYS[k + 2], slots = KEYS[k + 3], bookings = KEYS[k + 4],
    mon = KEYS[k + 5], rpm = tonumber(ARGV[a + 1]), tpm = tonumber(ARGV[a + 2]),
    conc = tonumber(ARGV[a + 3]), quota = tonumber(ARGV[a + 4]),
  }
end

if not dry_run then
  for _, sc in ipairs(scopes) do
    if redis.call('ZSCORE', sc.log, rid) or redis.call('HEXISTS', sc.bookings, rid) == 1 then
      return {3, '', -1, -1, -1, -1, 0}
    end
  end
end

for s, sc in ipairs(scopes) do
  prune_window(sc.log, sc.weights)
  prune_bookings(sc.slots, sc.bookings, sc.mon)
  sc.tracked = sc.quota > 0 or redis.call('EXISTS', sc.mon) == 1
  sc.month_total = 0
  if sc.tracked then
    local m = redis.call('HMGET', sc.mon, 'used', 'reserved')
    if not m[1] and not dry_run then
      if seed_required then return {2, '', s, -1, -1, -1, 0} end
      redis.call('HSETNX', sc.mon, 'used', 0)
      redis.call('PEXPIRE', sc.mon, keep)
    end
    sc.month_total = (tonumber(m[1]) or 0) + (tonumber(m[2]) or 0)
  end
end

for s, sc in ipairs(scopes) do
  local count = redis.call('ZCARD', sc.log)
  local wtok = tonumber(redis.call('HGET', sc.weights, TOTAL) or '0')
  local nslots = redis.call('ZCARD', sc.slots)
  if sc.rpm > 0 and count + 1 > sc.rpm then
    local blocking = redis.call('ZRANGE', sc.log, count - sc.rpm, count - sc.rpm, 'WITHSCORES')
    consider('requests', s, sc.rpm, count, tonumber(blocking[2]) + window)
  end
  if sc.tpm > 0 and wtok + tokens > sc.tpm then
    local retry_at = -1
    if tokens <= sc.tpm then
      retry_at = tokens_retry_at(sc.log, sc.weights, wtok, sc.tpm - tokens)
    end
    consider('tokens', s, sc.tpm, wtok, retry_at)
  end
  if sc.conc > 0 and nslots + 1 > sc.conc then
    local first = redis.call('ZRANGE', sc.slots, 0, 0, 'WITHSCORES')
    consider('concurrency', s, sc.conc, nslots, tonumber(first[2]))
  end
  if sc.quota > 0 and sc.month_total + tokens > sc.quota then
    local retry_at = -1
    if tokens <= sc.quota then retry_at = month_reset end
    consider('month', s, sc.quota, sc.month_total, retry_at)
  end
end

local booked = 0
if refusal == nil and not dry_run then
  for _, sc in ipairs(scopes) do
    if sc.rpm > 0 or sc.tpm > 0 then
      redis.call('ZADD', sc.log, now, rid)
      redis.call('HSET', sc.weights, rid, tokens)
      redis.call('HINCRBY', sc.weights, TOTAL, tokens)
      -- every entry is pruned by now + window; the slack covers clock skew between replicas
      redis.call('PEXPIRE', sc.log, window + 60000)
      redis.call('PEXPIRE', sc.weights, window + 60000)
    end
    if sc.conc > 0 or sc.tpm > 0 or sc.tracked then
      local booked_month = ''
      if sc.tracked then booked_month = month end
      redis.call('ZADD', sc.slots, deadline, rid)
      redis.call('HSET', sc.bookings, rid, tokens .. ':' .. booked_month)
      redis.call('PEXPIRE', sc.slots, keep)
      redis.call('PEXPIRE', sc.bookings, keep)
      booked = 1
    end
    if sc.tracked then
      redis.call('HINCRBY', sc.mon, 'reserved', tokens)
      redis.call('PEXPIRE', sc.mon, keep)
      sc.month_total = sc.month_total + tokens
    end
  end
end

local result = refusal or {1, '', -1, -1, -1, -1}
result[7] = booked
for _, sc in ipairs(scopes) do
  local newest = redis.call('ZRANGE', sc.log, -1, -1, 'WITHSCORES')
  local month_tokens = -1
  if sc.tracked then month_tokens = sc.month_total end
  table.insert(result, redis.call('ZCARD', sc.log))
  table.insert(result, tonumber(redis.call('HGET', sc.weights, TOTAL) or '0'))
  table.insert(result, tonumber(newest[2]) or -1)
  table.insert(result, redis.call('ZCARD', sc.slots))
  table.insert(result, month_tokens)
end
return result

-- Admit a batch of requests, one after the other, each against all its scopes, all or
-- nothing. The whole batch is one atomic step; concurrent callers share a round trip.
-- Mirrors auth/ratelimit/memory.py; see auth/ratelimit/storage.py for the data layout.
--
-- KEYS, per request 5 per scope: log (zset id -> admitted ms), weights (hash id -> tokens,
--   plus the running total under '#total'), slots (zset id -> deadline ms), bookings (hash
--   id -> "tokens:month"), month (hash used/reserved of the current month)
-- ARGV: count, then per request: now_ms, window_ms, request_id, tokens, deadline_ms, month,
--   month_reset_ms, keep_ms, seed_required (0/1), dry_run (0/1), nscopes, then 4 per scope:
--   rpm, tpm, concurrency, quota (0 = unlimited)
-- Returns one reply per request: {code, kind, scope, limit, used, retry_at_ms, booked, then
--   5 per scope: requests, window_tokens, newest_ms, slots, month_tokens}; code 1 admitted,
--   0 refused, 2 needs seed (scope = the scope to seed), 3 duplicate id; -1 means "none".

local TOTAL = '#total'

-- unpack() has a stack limit, so long id lists go to Redis in slices
local function each_slice(items, fn)
  for i = 1, #items, 1000 do
    fn(unpack(items, i, math.min(i + 999, #items)))
  end
end

local function prune_window(r, log, weights)
  local cutoff = r.now - r.window
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
local function prune_bookings(r, slots, bookings, mon)
  local expired = redis.call('ZRANGEBYSCORE', slots, '-inf', r.now)
  if #expired == 0 then return end
  local released = 0
  each_slice(expired, function(...)
    for _, entry in ipairs(redis.call('HMGET', bookings, ...)) do
      if entry then
        local booked, booked_month = string.match(entry, '^(%d+):(.*)$')
        if booked_month == r.month then released = released + tonumber(booked) end
      end
    end
    redis.call('HDEL', bookings, ...)
  end)
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', r.now)
  if released > 0 and redis.call('EXISTS', mon) == 1 then
    redis.call('HINCRBY', mon, 'reserved', 0 - released)
  end
end

-- when enough of the window has expired that what stays is at most `allowed`
local function tokens_retry_at(r, sc, total, allowed)
  local entries = redis.call('ZRANGE', sc.log, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    total = total - (tonumber(redis.call('HGET', sc.weights, entries[i])) or 0)
    if total <= allowed then return tonumber(entries[i + 1]) + r.window end
  end
  return r.now + r.window
end

-- every refusal of every scope; the one lifting last (-1: never) is reported
local function check(r, scopes)
  local refusal = nil
  local function consider(kind, s, limit, used, retry_at)
    local function key(t) if t == -1 then return math.huge end return t end
    if refusal == nil or key(retry_at) > key(refusal[6]) then
      refusal = {0, kind, s, limit, used, retry_at}
    end
  end
  for s, sc in ipairs(scopes) do
    local count = redis.call('ZCARD', sc.log)
    local wtok = tonumber(redis.call('HGET', sc.weights, TOTAL) or '0')
    local nslots = redis.call('ZCARD', sc.slots)
    sc.count, sc.wtok, sc.nslots = count, wtok, nslots  -- kept up to date by reserve()
    if sc.rpm > 0 and count + 1 > sc.rpm then
      local blocking = redis.call('ZRANGE', sc.log, count - sc.rpm, count - sc.rpm, 'WITHSCORES')
      consider('requests', s, sc.rpm, count, tonumber(blocking[2]) + r.window)
    end
    if sc.tpm > 0 and wtok + r.tokens > sc.tpm then
      local retry_at = -1
      if r.tokens <= sc.tpm then
        retry_at = tokens_retry_at(r, sc, wtok, sc.tpm - r.tokens)
      end
      consider('tokens', s, sc.tpm, wtok, retry_at)
    end
    if sc.conc > 0 and nslots + 1 > sc.conc then
      local first = redis.call('ZRANGE', sc.slots, 0, 0, 'WITHSCORES')
      consider('concurrency', s, sc.conc, nslots, tonumber(first[2]))
    end
    if sc.quota > 0 and sc.month_total + r.tokens > sc.quota then
      local retry_at = -1
      if r.tokens <= sc.quota then retry_at = r.month_reset end
      consider('month', s, sc.quota, sc.month_total, retry_at)
    end
  end
  return refusal
end

local function reserve(r, scopes)
  local booked = 0
  for _, sc in ipairs(scopes) do
    if sc.rpm > 0 or sc.tpm > 0 then
      redis.call('ZADD', sc.log, r.now, r.rid)
      redis.call('HSET', sc.weights, r.rid, r.tokens)
      redis.call('HINCRBY', sc.weights, TOTAL, r.tokens)
      -- every entry is pruned by now + window; the slack covers clock skew between replicas
      redis.call('PEXPIRE', sc.log, r.window + 60000)
      redis.call('PEXPIRE', sc.weights, r.window + 60000)
      sc.count, sc.wtok = sc.count + 1, sc.wtok + r.tokens
    end
    if sc.conc > 0 or sc.tpm > 0 or sc.tracked then
      local booked_month = ''
      if sc.tracked then booked_month = r.month end
      redis.call('ZADD', sc.slots, r.deadline, r.rid)
      redis.call('HSET', sc.bookings, r.rid, r.tokens .. ':' .. booked_month)
      redis.call('PEXPIRE', sc.slots, r.keep)
      redis.call('PEXPIRE', sc.bookings, r.keep)
      sc.nslots = sc.nslots + 1
      booked = 1
    end
    if sc.tracked then
      redis.call('HINCRBY', sc.mon, 'reserved', r.tokens)
      redis.call('PEXPIRE', sc.mon, r.keep)
      sc.month_total = sc.month_total + r.tokens
    end
  end
  return booked
end

-- one request whose keys start after KEYS[k] and arguments after ARGV[a]
local function admit(k, a)
  local r = {
    now = tonumber(ARGV[a + 1]), window = tonumber(ARGV[a + 2]), rid = ARGV[a + 3],
    tokens = tonumber(ARGV[a + 4]), deadline = tonumber(ARGV[a + 5]), month = ARGV[a + 6],
    month_reset = tonumber(ARGV[a + 7]), keep = tonumber(ARGV[a + 8]),
    seed_required = ARGV[a + 9] == '1', dry_run = ARGV[a + 10] == '1',
  }
  local nscopes = tonumber(ARGV[a + 11])
  local next_k, next_a = k + 5 * nscopes, a + 11 + 4 * nscopes
  local scopes = {}
  for s = 1, nscopes do
    local ks, as = k + (s - 1) * 5, a + 11 + (s - 1) * 4
    scopes[s] = {
      log = KEYS[ks + 1], weights = KEYS[ks + 2], slots = KEYS[ks + 3],
      bookings = KEYS[ks + 4], mon = KEYS[ks + 5], rpm = tonumber(ARGV[as + 1]),
      tpm = tonumber(ARGV[as + 2]), conc = tonumber(ARGV[as + 3]), quota = tonumber(ARGV[as + 4]),
    }
  end

  if not r.dry_run then
    for _, sc in ipairs(scopes) do
      if redis.call('ZSCORE', sc.log, r.rid) or redis.call('HEXISTS', sc.bookings, r.rid) == 1 then
        return {3, '', -1, -1, -1, -1, 0}, next_k, next_a
      end
    end
  end

  for s, sc in ipairs(scopes) do
    prune_window(r, sc.log, sc.weights)
    prune_bookings(r, sc.slots, sc.bookings, sc.mon)
    sc.tracked = sc.quota > 0 or redis.call('EXISTS', sc.mon) == 1
    sc.month_total = 0
    if sc.tracked then
      local m = redis.call('HMGET', sc.mon, 'used', 'reserved')
      if not m[1] and not r.dry_run then
        if r.seed_required then return {2, '', s, -1, -1, -1, 0}, next_k, next_a end
        redis.call('HSETNX', sc.mon, 'used', 0)
        redis.call('PEXPIRE', sc.mon, r.keep)
      end
      sc.month_total = (tonumber(m[1]) or 0) + (tonumber(m[2]) or 0)
    end
  end

  local refusal = check(r, scopes)
  local booked = 0
  if refusal == nil and not r.dry_run then booked = reserve(r, scopes) end

  local reply = refusal or {1, '', -1, -1, -1, -1}
  reply[7] = booked
  for _, sc in ipairs(scopes) do
    local newest = redis.call('ZRANGE', sc.log, -1, -1, 'WITHSCORES')
    local month_tokens = -1
    if sc.tracked then month_tokens = sc.month_total end
    table.insert(reply, sc.count)
    table.insert(reply, sc.wtok)
    table.insert(reply, tonumber(newest[2]) or -1)
    table.insert(reply, sc.nslots)
    table.insert(reply, month_tokens)
  end
  return reply, next_k, next_a
end

local replies = {}
local k, a = 0, 1
for i = 1, tonumber(ARGV[1]) do
  replies[i], k, a = admit(k, a)
end
return replies

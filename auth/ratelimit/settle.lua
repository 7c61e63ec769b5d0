-- Settle a batch of requests: each one's actual tokens replace its reservation and its
-- slot is freed. A request with no booking (already settled, or expired) changes nothing:
-- settling is idempotent.
--
-- KEYS, per request 4 per scope: weights, slots, bookings, month (of the reservation; see
--   admit.lua)
-- ARGV: count, then per request: request_id, actual_tokens, month ('YYYY-MM'), nscopes
-- Returns one integer per request: 1 if a booking was settled in any scope, else 0.

local function settle(k, rid, actual, month, nscopes)
  local settled = 0
  for ks = k, k + 4 * (nscopes - 1), 4 do
    local weights, slots, bookings, mon = KEYS[ks + 1], KEYS[ks + 2], KEYS[ks + 3], KEYS[ks + 4]
    local entry = redis.call('HGET', bookings, rid)
    if entry then
      settled = 1
      local reserved, booked_month = string.match(entry, '^(%d+):(.*)$')
      redis.call('HDEL', bookings, rid)
      redis.call('ZREM', slots, rid)
      -- the window keeps charging this request until its entry expires, now at actual size
      local charged = redis.call('HGET', weights, rid)
      if charged then
        redis.call('HSET', weights, rid, actual)
        redis.call('HINCRBY', weights, '#total', actual - tonumber(charged))
      end
      if booked_month == month and redis.call('EXISTS', mon) == 1 then
        -- not -x: Redis refuses '-0'
        redis.call('HINCRBY', mon, 'reserved', 0 - tonumber(reserved))
        redis.call('HINCRBY', mon, 'used', actual)
      end
    end
  end
  return settled
end

local replies = {}
local k, a = 0, 1
for i = 1, tonumber(ARGV[1]) do
  local nscopes = tonumber(ARGV[a + 4])
  replies[i] = settle(k, ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], nscopes)
  k, a = k + 4 * nscopes, a + 4
end
return replies

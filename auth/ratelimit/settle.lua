-- Settle one request: its actual tokens replace the reservation, its slot is freed.
-- A request with no booking (already settled, or expired) changes nothing: idempotent.
--
-- KEYS, 4 per scope: weights, slots, bookings, month (of the reservation; see admit.lua)
-- ARGV: request_id, actual_tokens, month of the reservation ('YYYY-MM')
-- Returns 1 if a booking was settled in any scope, else 0.

local rid = ARGV[1]
local actual = tonumber(ARGV[2])
local month = ARGV[3]
local settled = 0

for k = 0, #KEYS - 1, 4 do
  local weights, slots, bookings, mon = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
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
      redis.call('HINCRBY', mon, 'reserved', 0 - tonumber(reserved))  -- not -x: Redis refuses '-0'
      redis.call('HINCRBY', mon, 'used', actual)
    end
  end
end
return settled

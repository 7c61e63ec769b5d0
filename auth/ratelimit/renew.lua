-- Renew the leases of live requests: each booked slot's deadline moves out to the new
-- deadline (never earlier). A request whose slot is gone (settled, or expired because its
-- process stopped renewing) is not brought back. Mirrors MemoryStorage.renew.
--
-- KEYS, per request 1 per scope: slots (see admit.lua)
-- ARGV: deadline_ms, count, then per request: request_id, nscopes
-- Returns how many requests still held a slot in some scope.

local deadline = tonumber(ARGV[1])
local renewed = 0
local k, a = 0, 3
for _ = 1, tonumber(ARGV[2]) do
  local rid, nscopes = ARGV[a], tonumber(ARGV[a + 1])
  local held = 0
  for s = 1, nscopes do
    local score = redis.call('ZSCORE', KEYS[k + s], rid)
    if score then
      held = 1
      if tonumber(score) < deadline then redis.call('ZADD', KEYS[k + s], deadline, rid) end
    end
  end
  renewed = renewed + held
  k, a = k + nscopes, a + 2
end
return renewed

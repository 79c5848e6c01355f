-- Renew a run's lease while its worker lives, and reset the work item's idle
-- time so XAUTOCLAIM leaves it alone. Refused once the token is stale.
-- KEYS: 1 run hash, 2 work stream
-- ARGV: 1 token, 2 lease ms, 3 worker name, 4 work item id
-- Returns {1, cancel flag} while the lease is ours, {0, ""} once it is not.
local state = redis.call("HMGET", KEYS[1], "token", "cancel")
if state[1] ~= ARGV[1] then return {0, ""} end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("HSET", KEYS[1], "lease_until", now + tonumber(ARGV[2]))
redis.call("XCLAIM", KEYS[2], "workers", ARGV[3], 0, ARGV[4], "JUSTID")
return {1, state[2] or "0"}

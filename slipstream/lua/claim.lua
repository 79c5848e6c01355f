-- Take a run's lease: a new fencing token and attempt, unless the run is
-- finished or another worker's lease is still alive. Server time is the one
-- clock, so workers never compare their own clocks. Taking over from a
-- worker that still owned the run (it died or hung) counts as a failure,
-- so a run that keeps killing its workers ends. A resent call (the same
-- claim id, worker and item, the lease it took still live) changes nothing.
-- KEYS: 1 run hash
-- ARGV: 1 worker name, 2 lease ms, 3 the work item's id, 4 this call's claim id
-- Returns {"OK", token, attempt, cancel, failures, agent, since} | {"NORUN"}
--       | {"FINISHED", status} | {"DUPLICATE"} (this worker runs it from another item)
--       | {"BUSY", owner, ms left}
local state = redis.call("HMGET", KEYS[1], "status", "owner", "lease_until", "cancel", "item")
local status, owner = state[1], state[2]
if not status then return {"NORUN"} end
if status == "completed" or status == "cancelled" or status == "failed" then
  return {"FINISHED", status}
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ = tonumber(state[3] or "0") or 0
if owner and owner ~= "" and until_ > now then
  if owner ~= ARGV[1] then return {"BUSY", owner, until_ - now} end
  if state[5] and state[5] ~= ARGV[3] then return {"DUPLICATE"} end
  -- This very call again (redis-py resends a call whose connection dropped,
  -- even once it was applied): answer what it was answered, count nothing.
  local held = redis.call("HMGET", KEYS[1], "claim", "token", "attempt", "failures", "agent", "since")
  if ARGV[4] and ARGV[4] ~= "" and held[1] == ARGV[4] and state[5] == ARGV[3] then
    return {"OK", tonumber(held[2]), tonumber(held[3]), state[4] or "0", tonumber(held[4] or "0"),
            held[5] or "", held[6] or ""}
  end
end
local failures = tonumber(redis.call("HGET", KEYS[1], "failures") or "0")
if owner and owner ~= "" then
  failures = redis.call("HINCRBY", KEYS[1], "failures", 1)
end
local token = redis.call("HINCRBY", KEYS[1], "token", 1)
local attempt = redis.call("HINCRBY", KEYS[1], "attempt", 1)
redis.call("HSET", KEYS[1], "owner", ARGV[1], "lease_until", now + tonumber(ARGV[2]),
           "status", "running", "item", ARGV[3], "claim", ARGV[4] or "")
local about = redis.call("HMGET", KEYS[1], "agent", "since")
return {"OK", token, attempt, state[4] or "0", failures, about[1] or "", about[2] or ""}

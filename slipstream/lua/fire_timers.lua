-- Put every run whose timer is due back on the work stream, exactly once:
-- ZREM decides, so of several workers firing the same timer only one wins.
-- The caller's clock says what is due, so tests can move time forward.
-- KEYS: 1 timers (sorted set of run ids by due ms), 2 work stream
-- ARGV: 1 most timers to fire in this call, 2 now (ms)
-- Returns the run ids fired.
local now = tonumber(ARGV[2])
local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, tonumber(ARGV[1]))
local fired = {}
for _, run_id in ipairs(due) do
  if redis.call("ZREM", KEYS[1], run_id) == 1 then
    -- Run ids are "<thread>.<hex>": the thread is everything before the last dot.
    local thread_id = string.match(run_id, "^(.*)%.[^.]+$")
    -- The run hash shares the timers' hash tag: same slot.
    local run_key = string.gsub(KEYS[1], "timers$", "run:" .. run_id)
    local status = redis.call("HGET", run_key, "status")
    if status == "waiting" or status == "retrying" then
      -- Queued now, so a signal arriving next does not add a second work item.
      redis.call("HSET", run_key, "status", "queued", "waiting_for", "")
    end
    redis.call("XADD", KEYS[2], "*", "run", run_id, "thread", thread_id)
    fired[#fired + 1] = run_id
  end
end
return fired

-- Put every run whose timer is due back on the work stream, exactly once:
-- ZREM decides, so of several workers firing the same timer only one wins.
-- The caller's clock says what is due, so tests can move time forward.
-- The caller reads the due run ids first (ZRANGEBYSCORE) and names each one's run
-- hash here, so the script touches no key it was not given (on a cluster a script
-- cannot follow a slot that is moving); each is checked again here, atomically.
-- KEYS: 1 timers (sorted set of run ids by due ms), 2 work stream, 3.. the run
--       hashes of the run ids in ARGV[2..], in their order
-- ARGV: 1 now (ms), 2.. the run ids read as due
-- Returns the run ids fired.
local now = tonumber(ARGV[1])
local fired = {}
for i = 2, #ARGV do
  local run_id, run_key = ARGV[i], KEYS[i + 1]
  local due = redis.call("ZSCORE", KEYS[1], run_id)
  -- Still due: another worker may have fired it, or it may have been put off since.
  if due and tonumber(due) <= now and redis.call("ZREM", KEYS[1], run_id) == 1 then
    -- Run ids are "<thread>.<hex>": the thread is everything before the last dot.
    local thread_id = string.match(run_id, "^(.*)%.[^.]+$")
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

-- Delete a thread and every key of it in its partition, atomically, if the thread
-- is still as the caller read it (so every run, member and word it names is all
-- there is): its stream, view, queue, access, search doc and run hashes; its
-- entries in the partition's thread index, summaries, active lanes, timers, run
-- summaries and run indexes, its members' thread sets, the search posting sets
-- and the compaction schedule; the dedupe keys of its messages' client ids. Each
-- run id is announced on the cancels channel, so a worker streaming one stops at
-- once (its next write is refused: the thread is gone).
-- KEYS: 1 thread stream, 2 view, 3 thread summaries, 4 threads by activity,
--       5 active run per lane (hash), 6 the thread's queue, 7 access, 8 timers,
--       9 run summaries, 10 runs by requested time, 11 finished runs by end time,
--       12 search doc, 13 compaction schedule, 14.. runs by status (ARGV[4] of
--       them), then ARGV[5] run hashes, ARGV[6] member thread sets, ARGV[7] dedupe
--       keys, then the search posting sets (the rest)
-- ARGV: 1 thread id, 2 the stream's last id as read, 3 the view's `last` as read
--       ("" for none), 4..7 the counts above, 8 the cancels channel (sharded), then the run
--       ids (in the order of their hashes)
-- Returns "DELETED", "GONE" (there is no such thread) or "MOVED" (it changed
-- since it was read: read it again).
local stream, view = KEYS[1], KEYS[2]
if redis.call("EXISTS", stream) == 0 then return "GONE" end
local newest = redis.call("XREVRANGE", stream, "+", "-", "COUNT", 1)
if (newest[1] and newest[1][1] or "") ~= ARGV[2] then return "MOVED" end
if (redis.call("HGET", view, "last") or "") ~= ARGV[3] then return "MOVED" end

local thread_id = ARGV[1]
local statuses, runs, members, dedupes =
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local first_status = 14
local first_run = first_status + statuses
local first_member = first_run + runs
local first_dedupe = first_member + members
local first_posting = first_dedupe + dedupes

for i = 0, runs - 1 do
  local run_id = ARGV[9 + i]
  redis.call("DEL", KEYS[first_run + i])
  redis.call("ZREM", KEYS[8], run_id)
  redis.call("HDEL", KEYS[9], run_id)
  redis.call("ZREM", KEYS[10], run_id)
  redis.call("ZREM", KEYS[11], run_id)
  for s = 0, statuses - 1 do redis.call("ZREM", KEYS[first_status + s], run_id) end
  redis.call("SPUBLISH", ARGV[8], run_id)
end
-- The thread's lanes ("<thread>:<agent>"; the thread's id alone from before lanes).
local lanes = thread_id .. ":"
for _, field in ipairs(redis.call("HKEYS", KEYS[5])) do
  if field == thread_id or string.sub(field, 1, #lanes) == lanes then
    redis.call("HDEL", KEYS[5], field)
  end
end
for i = first_member, first_dedupe - 1 do redis.call("ZREM", KEYS[i], thread_id) end
for i = first_dedupe, first_posting - 1 do redis.call("DEL", KEYS[i]) end
for i = first_posting, #KEYS do redis.call("ZREM", KEYS[i], thread_id) end
redis.call("HDEL", KEYS[3], thread_id)
redis.call("ZREM", KEYS[4], thread_id)
redis.call("ZREM", KEYS[13], thread_id)
redis.call("DEL", stream, view, KEYS[6], KEYS[7], KEYS[12])
return "DELETED"

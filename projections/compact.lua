-- Compact one thread: remove the deltas the caller found it can spare from the
-- thread stream (which, when small, is then written again, smaller), and say when
-- to look at the thread again.
-- KEYS: 1 the thread stream, 2 the partition's compaction schedule (sorted set)
-- ARGV: 1 thread id, 2 the stream's last id as the caller read it, 3 when its next
--       answer falls due (ms; "" for none), 4 when to look again should the thread
--       have moved on since it was read (ms), 5 the most entries and 6 the most
--       bytes (MEMORY USAGE) of a stream written again, 7.. the entry ids to remove
-- Returns how many entries were removed; -1 when the thread is gone (deleted).
-- The ids removed are deltas before a completion, which nothing writes again, so
-- they need no check; the schedule does: an answer completed after the read is not
-- in the plan, so a thread that moved on is looked at again, not forgotten.
local stream, schedule, thread_id = KEYS[1], KEYS[2], ARGV[1]
if redis.call("EXISTS", stream) == 0 then
  redis.call("ZREM", schedule, thread_id)
  return -1
end
local removed = 0
local batch = 500 -- unpack() has a limit on how many values it spreads
for first = 7, #ARGV, batch do
  local last = math.min(first + batch - 1, #ARGV)
  removed = removed + redis.call("XDEL", stream, unpack(ARGV, first, last))
end
-- XDEL only marks entries deleted: a node's memory is freed once every entry of it
-- is gone, and the nodes the removed deltas share with kept entries stay. So the
-- stream is written again, the same entries under the same ids, with its counters
-- (XSETID) and lifetime: only a small one, as Redis does nothing else meanwhile
-- (2,000 entries take about 15 ms, 20,000 of 4 kB over a second). A longer one
-- keeps what XDEL alone freed: every node the removed deltas filled on their own.
local function small()
  if redis.call("XLEN", stream) > tonumber(ARGV[5]) then return false end
  local known, bytes = pcall(redis.call, "MEMORY", "USAGE", stream, "SAMPLES", "0")
  return not known or bytes <= tonumber(ARGV[6]) -- (fakeredis has no MEMORY)
end
if removed > 0 and small() then
  local info = redis.call("XINFO", "STREAM", stream)
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  local ttl = redis.call("PTTL", stream)
  local entries = redis.call("XRANGE", stream, "-", "+")
  redis.call("DEL", stream)
  for _, entry in ipairs(entries) do
    redis.call("XADD", stream, entry[1], unpack(entry[2]))
  end
  redis.call("XSETID", stream, fields["last-generated-id"],
    "ENTRIESADDED", fields["entries-added"], "MAXDELETEDID", fields["max-deleted-entry-id"])
  if ttl > 0 then redis.call("PEXPIRE", stream, ttl) end
end
local newest = redis.call("XREVRANGE", stream, "+", "-", "COUNT", 1)
local moved = (newest[1] and newest[1][1] or "") ~= ARGV[2]
local due = tonumber(ARGV[3])
if moved then
  local again = tonumber(ARGV[4])
  if due == nil or again < due then due = again end
end
if due == nil then
  redis.call("ZREM", schedule, thread_id)
else
  redis.call("ZADD", schedule, due, thread_id)
end
return removed

-- Store what a fold changed in a thread view, only if the view is still the
-- one it was folded from (compare-and-set on the id of the last event folded
-- in, and on the schema version), with the thread's summary, the summaries
-- and index entries of the runs it changed, and a bounded trim of the runs
-- that finished before the retention cutoff.
-- KEYS: 1 view hash, 2 thread summaries hash, 3 run summaries hash,
--       4 runs by requested time, 5 finished runs by end time,
--       6.. runs by status (one sorted set per status, in ARGV's status order)
-- ARGV: 1 expected last id ("" when there was no view), 2 new last id,
--       3 schema version, 4 "replace" (rewrite the whole hash) or "update",
--       5 thread id, 6 thread summary JSON, 7 retention cutoff ms ("" for none),
--       8 how many runs to trim at most, 9 n view fields,
--       then n field / value pairs,
--       then per changed run: id, summary JSON, requested ms, status number
--       (1-based, into KEYS[6..]), ended ms ("" while it is not finished)
local current = redis.call("HGET", KEYS[1], "last")
if (current or "") ~= ARGV[1] then return 0 end
if ARGV[4] == "replace" then
  redis.call("DEL", KEYS[1])
elseif redis.call("HGET", KEYS[1], "schema") ~= ARGV[3] then
  return 0
end

local fields = {"last", ARGV[2], "schema", ARGV[3]}
local n = tonumber(ARGV[9])
local i = 10
for _ = 1, n do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  i = i + 2
end
redis.call("HSET", KEYS[1], unpack(fields))
redis.call("HSET", KEYS[2], ARGV[5], ARGV[6])

local statuses = #KEYS - 5
local function unindex(run)
  redis.call("ZREM", KEYS[4], run)
  redis.call("ZREM", KEYS[5], run)
  for s = 1, statuses do redis.call("ZREM", KEYS[5 + s], run) end
end

while i + 4 <= #ARGV do
  local run, summary, requested, status, ended =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
  unindex(run)
  redis.call("HSET", KEYS[3], run, summary)
  redis.call("ZADD", KEYS[4], requested, run)
  redis.call("ZADD", KEYS[5 + status], requested, run)
  if ended ~= "" then redis.call("ZADD", KEYS[5], ended, run) end
  i = i + 5
end

if ARGV[7] ~= "" then
  local expired = redis.call(
    "ZRANGEBYSCORE", KEYS[5], "-inf", ARGV[7], "LIMIT", 0, tonumber(ARGV[8]))
  for _, run in ipairs(expired) do
    unindex(run)
    redis.call("HDEL", KEYS[3], run)
  end
end
return 1

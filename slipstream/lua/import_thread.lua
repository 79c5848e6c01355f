-- Import a thread exported from another deployment (service/transfer.py), in two steps.
--
-- "stage": add a batch of its entries, with their own stream ids, to a staging stream
-- of this import's own (`ss:{pNN}:import:<thread>:<nonce>`, expiring in ARGV[3] ms
-- unless the import finishes), so a thread of any length is written in bounded calls
-- and nothing of it is seen until it is whole.
-- KEYS: 1 thread stream, 2 staging stream
-- ARGV: 1 "stage", 2 the staging stream's last id so far ("" for the first batch),
--       3 ttl ms, 4 n entries, then per entry: id, c, then c field/value strings
-- Returns {"OK", last id} | {"EXISTS"} (the thread is there already: stop)
--       | {"MOVED", last id} (the staging stream is not where this import left it:
--         it expired, or another call wrote to it)
--
-- "finish": the staging stream becomes the thread stream (RENAME), with the thread's
-- access hash, its entries in its users' thread indexes and the activity index, the
-- compaction schedule, and the hashes of its (finished) runs; refused if the thread, its view or its access
-- hash exists already (the staging stream is dropped then).
-- KEYS: 1 thread stream, 2 staging stream, 3 view hash, 4 access hash, 5 activity
--       index (sorted set), 6 compaction schedule (sorted set), then one thread index
--       per user (ARGV's users, in order), then one run hash per run (ARGV's runs)
-- ARGV: 1 "finish", 2 the staging stream's last id, 3 thread id, 4 activity score,
--       5 a access field/value pairs, then those pairs, then u users: score each
--       (after the count), then r runs: per run c field/value pairs, the pairs, and
--       its ttl ms ("" for none)
-- Returns {"OK"} | {"EXISTS"} | {"MOVED", last id}
local thread, staging = KEYS[1], KEYS[2]
local mode = ARGV[1]

local function last_id(key)
  local last = redis.call("XREVRANGE", key, "+", "-", "COUNT", 1)[1]
  if last then return last[1] end
  return ""
end

if mode == "stage" then
  if redis.call("EXISTS", thread) == 1 then
    redis.call("DEL", staging)
    return {"EXISTS"}
  end
  if last_id(staging) ~= ARGV[2] then return {"MOVED", last_id(staging)} end
  local i = 5
  for _ = 1, tonumber(ARGV[4]) do
    local id, c = ARGV[i], tonumber(ARGV[i + 1])
    local fields = {}
    for j = 1, c do fields[j] = ARGV[i + 1 + j] end
    redis.call("XADD", staging, id, unpack(fields))
    i = i + 2 + c
  end
  redis.call("PEXPIRE", staging, ARGV[3])
  return {"OK", last_id(staging)}
end

-- finish
if redis.call("EXISTS", thread, KEYS[3], KEYS[4]) > 0 then
  redis.call("DEL", staging)
  return {"EXISTS"}
end
if last_id(staging) ~= ARGV[2] then return {"MOVED", last_id(staging)} end
local thread_id, score = ARGV[3], ARGV[4]
redis.call("RENAME", staging, thread)
redis.call("PERSIST", thread)  -- RENAME carries the staging stream's expiry
local i = 5
local a = tonumber(ARGV[i])
-- In slices: unpack() spreads at most ~8,000 values, and members are not bounded.
for first = i + 1, i + 2 * a, 2000 do
  redis.call("HSET", KEYS[4], unpack(ARGV, first, math.min(first + 1999, i + 2 * a)))
end
i = i + 1 + 2 * a
redis.call("ZADD", KEYS[5], score, thread_id)
-- Compaction schedules a thread when its pass reaches the thread's activity in the
-- index, from a cursor that is past this old activity already: the thread is put in
-- the schedule itself. Due at its activity, not SLIPSTREAM_COMPACT_AFTER later (the
-- projector's setting, not the import's): the first look compacts what is old
-- enough and sets the next look as for any thread (projections/compaction.py).
redis.call("ZADD", KEYS[6], "NX", score, thread_id)
local u = tonumber(ARGV[i])
for n = 1, u do redis.call("ZADD", KEYS[6 + n], ARGV[i + n], thread_id) end
i = i + 1 + u
local r = tonumber(ARGV[i])
i = i + 1
for n = 1, r do
  local key, c = KEYS[6 + u + n], tonumber(ARGV[i])
  redis.call("DEL", key)
  for first = i + 1, i + 2 * c, 2000 do  -- in slices, as the access hash
    redis.call("HSET", key, unpack(ARGV, first, math.min(first + 1999, i + 2 * c)))
  end
  local ttl = ARGV[i + 1 + 2 * c]
  if ttl ~= "" then redis.call("PEXPIRE", key, ttl) end
  i = i + 2 + 2 * c
end
return {"OK"}

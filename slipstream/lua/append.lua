-- Append a batch of events to one thread, atomically, behind its guards.
--
-- KEYS: 1 thread stream, 2 partition feed, 3 work stream, 4 run hash,
--       5 dedupe key, 6 thread activity index (sorted set)
-- ARGV: 1 thread id
--       2 existence: "new" (thread must not exist) | "exists" | "any"
--       3 expected version (stream length) or ""
--       4 fencing token or ""             (run hash field "token" must equal it)
--       5 "1" refuses the batch when the run is cancelled
--       6 "1" refuses the batch when the run is finished
--       7 dedupe: "" none; "0" keep forever; N keep N ms (KEYS[5])
--       8 batch id remembered in the run hash ("" none): a retried call is a no-op
--       9 feed max length (approximate trim)
--      10 work item id to ack and delete ("" none); group "workers"
--      11 N events, 12 M run hash fields, 13 W work item fields
--      then N times: field count c, c strings (name, value, ...)
--      then M pairs for the run hash, then W pairs for the work item
-- Returns {"OK"|"DUP", version, id...} or {code, detail} for a refused guard.

local thread, feed, work, run, dedupe, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local function split(s)
  local out = {}
  for id in string.gmatch(s, "[^,]+") do out[#out + 1] = id end
  return out
end

local function dup(ids)
  local reply = {"DUP", redis.call("XLEN", thread)}
  for _, id in ipairs(ids) do reply[#reply + 1] = id end
  return reply
end

if ARGV[7] ~= "" then
  local seen = redis.call("GET", dedupe)
  if seen then return dup(split(seen)) end
end
if ARGV[8] ~= "" and redis.call("HGET", run, "last_batch") == ARGV[8] then
  return dup(split(redis.call("HGET", run, "last_ids") or ""))
end

local exists = redis.call("EXISTS", thread) == 1
if ARGV[2] == "new" and exists then return {"EXISTS", ARGV[1]} end
if ARGV[2] == "exists" and not exists then return {"NOTHREAD", ARGV[1]} end

local version = redis.call("XLEN", thread)
if ARGV[3] ~= "" and tonumber(ARGV[3]) ~= version then
  return {"CONFLICT", version}
end

if ARGV[4] ~= "" or ARGV[5] == "1" or ARGV[6] == "1" then
  local state = redis.call("HMGET", run, "token", "cancel", "status")
  if state[3] == false then return {"NORUN", ""} end
  if ARGV[4] ~= "" and state[1] ~= ARGV[4] then return {"STALE", state[1] or ""} end
  if ARGV[5] == "1" and state[2] == "1" then return {"CANCELLED", state[3]} end
  if ARGV[6] == "1" and (state[3] == "completed" or state[3] == "cancelled"
      or state[3] == "failed") then
    return {"FINISHED", state[3]}
  end
end

local n, m, w = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local pos = 14
local ids = {}
local last_ms = nil
for i = 1, n do
  local count = tonumber(ARGV[pos])
  local fields = {}
  for j = 1, count do fields[j] = ARGV[pos + j] end
  pos = pos + count + 1
  local id = redis.call("XADD", thread, "*", unpack(fields))
  ids[#ids + 1] = id
  fields[#fields + 1] = "thread"
  fields[#fields + 1] = ARGV[1]
  fields[#fields + 1] = "tid"
  fields[#fields + 1] = id
  redis.call("XADD", feed, "MAXLEN", "~", ARGV[9], "*", unpack(fields))
  last_ms = tonumber(string.match(id, "^(%d+)"))
end

if m > 0 then
  local pairs_ = {}
  for j = 1, 2 * m do pairs_[j] = ARGV[pos + j - 1] end
  pos = pos + 2 * m
  redis.call("HSET", run, unpack(pairs_))
end
if w > 0 then
  local item = {}
  for j = 1, 2 * w do item[j] = ARGV[pos + j - 1] end
  redis.call("XADD", work, "*", unpack(item))
end
if ARGV[10] ~= "" then
  redis.call("XACK", work, "workers", ARGV[10])
  redis.call("XDEL", work, ARGV[10])
end

local joined = table.concat(ids, ",")
if ARGV[7] == "0" then
  redis.call("SET", dedupe, joined)
elseif ARGV[7] ~= "" then
  redis.call("SET", dedupe, joined, "PX", ARGV[7])
end
if ARGV[8] ~= "" then
  redis.call("HSET", run, "last_batch", ARGV[8], "last_ids", joined)
end
if last_ms then redis.call("ZADD", index, last_ms, ARGV[1]) end

local reply = {"OK", version + n}
for _, id in ipairs(ids) do reply[#reply + 1] = id end
return reply

-- Take a run's lease: a new fencing token and attempt, unless the run is
-- finished or another worker's lease is still alive. Server time is the one
-- clock, so workers never compare their own clocks. Taking over from a
-- worker that still owned the run (it died or hung) counts as a failure,
-- so a run that keeps killing its workers ends. A resent call (the same
-- claim id, worker and item, the lease it took still live) changes nothing.
--
-- With the start keys and arguments it also starts the run, in the same round trip
-- (a worker's hot path): it appends `run.started` as append.lua would (to the thread
-- stream and the partition feed), unless a cancel waits or the run is out of attempts
-- (the worker ends it then), and gives back the stored view of the thread with the
-- events after it, for a chat run's prompt.
-- KEYS: 1 run hash; to start: 2 thread stream, 3 partition feed, 4 the thread's view
-- ARGV: 1 worker name, 2 lease ms, 3 the work item's id, 4 this call's claim id;
--       to start: 5 thread id, 6 run id, 7 run.started's event id, 8 the worker name
--       as JSON, 9 feed maxlen, 10 max attempts, 11 the agents whose runs read no
--       view (workflows; comma-separated), 12 events to give at most
-- Returns {"OK", token, attempt, cancel, failures, agent, since, trace} | {"NORUN"}
--       | {"FINISHED", status} | {"DUPLICATE"} (this worker runs it from another item)
--       | {"BUSY", owner, ms left} | {"NOTHREAD"} (starting: the thread is gone)
-- (trace: the run's W3C traceparent, "" when untraced.)
-- Starting, "OK" goes on: started ("1" appended now, "0" not appended, "again" by the
-- call this one resends), then the view's fields (flat) and the events after the view
-- (XRANGE's reply); for the agents of ARGV[11], no view and the events from the run's
-- `since` on.
-- Each redis.call costs a few microseconds of its own, more than most commands it
-- runs: this is a worker's hot path, so the run hash is read once and written once.
local starting = KEYS[2] ~= nil
local state = redis.call("HMGET", KEYS[1], "status", "owner", "lease_until", "cancel", "item",
                         "claim", "token", "attempt", "failures", "agent", "since", "trace")
local status, owner = state[1], state[2]
-- A deleted thread's run hashes go with it, in the same script: NORUN covers it.
if not status then return {"NORUN"} end
if status == "completed" or status == "cancelled" or status == "failed" then
  return {"FINISHED", status}
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ = tonumber(state[3] or "0") or 0
local token, attempt = tonumber(state[7] or "0"), tonumber(state[8] or "0")
local failures = tonumber(state[9] or "0")
local agent, since, trace = state[10] or "", state[11] or "", state[12] or ""
if owner and owner ~= "" and until_ > now then
  if owner ~= ARGV[1] then return {"BUSY", owner, until_ - now} end
  if state[5] and state[5] ~= ARGV[3] then return {"DUPLICATE"} end
  -- This very call again (redis-py resends a call whose connection dropped,
  -- even once it was applied): answer what it was answered, count nothing.
  if ARGV[4] and ARGV[4] ~= "" and state[6] == ARGV[4] and state[5] == ARGV[3] then
    local reply = {"OK", token, attempt, state[4] or "0", failures, agent, since, trace}
    if starting then reply[#reply + 1] = "again" end
    return reply
  end
end
if owner and owner ~= "" then failures = failures + 1 end
token, attempt = token + 1, attempt + 1
redis.call("HSET", KEYS[1], "owner", ARGV[1], "lease_until", now + tonumber(ARGV[2]),
           "status", "running", "item", ARGV[3], "claim", ARGV[4] or "", "token", token,
           "attempt", attempt, "failures", failures)
local reply = {"OK", token, attempt, state[4] or "0", failures, agent, since, trace}
if not starting then return reply end

local started = "0"
if state[4] ~= "1" and failures < tonumber(ARGV[10]) then
  -- As append.lua writes an event: the same fields, the feed's copy naming its thread.
  -- (Not the thread's activity index: its message moved it a moment ago, and its
  -- answer moves it again.)
  local body = '{"attempt":' .. attempt .. ',"worker":' .. ARGV[8] .. ',"token":' .. token .. '}'
  local fields = {"type", "run.started", "v", "1", "eid", ARGV[7], "run", ARGV[6], "body", body}
  local id = redis.call("XADD", KEYS[2], "NOMKSTREAM", "*", unpack(fields))
  if not id then return {"NOTHREAD"} end  -- not reached (NORUN above); never recreate it
  fields[#fields + 1] = "thread"
  fields[#fields + 1] = ARGV[5]
  fields[#fields + 1] = "tid"
  fields[#fields + 1] = id
  redis.call("XADD", KEYS[3], "MAXLEN", "~", ARGV[9], "*", unpack(fields))
  started = "1"
end
reply[#reply + 1] = started

for name in string.gmatch(ARGV[11], "[^,]+") do
  if name == agent then
    -- A workflow's run reads only its own part of the thread: its question and journal.
    if since == "" then return reply end
    reply[#reply + 1] = {}
    reply[#reply + 1] = redis.call("XRANGE", KEYS[2], since, "+", "COUNT", tonumber(ARGV[12]))
    return reply
  end
end
local view = redis.call("HGETALL", KEYS[4])
reply[#reply + 1] = view
local last = nil
for i = 1, #view, 2 do
  if view[i] == "last" then last = view[i + 1] end
end
local from = "-"
if last and last ~= "" then from = "(" .. last end
reply[#reply + 1] = redis.call("XRANGE", KEYS[2], from, "+", "COUNT", tonumber(ARGV[12]))
return reply

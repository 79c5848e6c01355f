-- Append a batch of events to one thread, atomically, behind its guards, and
-- keep the write-side run state (run hashes, per-thread queue, work, timers,
-- dead letters) in step with it.
--
-- Admission is per lane: a thread has one lane per agent (a workflow's name is
-- its agent), and each lane has at most one active run. Runs of different
-- agents run at once; runs of one agent run in order. A run's lane is its
-- agent when it was admitted, kept as `lane` in its hash (a hand-off does not
-- move it). The active hash's field for a lane is "<thread>:<agent>"; the
-- runs waiting for any lane of the thread share the thread's queue, oldest first.
--
-- KEYS: 1 thread stream, 2 partition feed, 3 work stream, 4 run hash,
--       5 dedupe key, 6 thread activity index, 7 active run per lane (hash),
--       8 the thread's queue of waiting runs (list), 9 timers (sorted set),
--       10 dead letters (stream), 11 the thread's access (hash: owner, m:<user>),
--       12 the threads of the user named by an access option (sorted set),
--       13.. other runs' hashes, of the run ids in option `runs`, in their order
-- Other runs' hashes (the holder of a lane, the queued runs, `more_runs`) are given
-- in KEYS like every other key: on a cluster a script cannot follow a slot that is
-- moving to a key it names itself. Which runs a call touches is known only inside
-- (who holds a lane, who waits in the queue), so before writing anything the script
-- looks, and when a run it would touch was not given it writes nothing and answers
-- {"KEYS", run id...}: the caller calls again with those runs' hashes too.
-- ARGV: 1 thread id, 2 run id ("" none), 3 K option pairs, then K pairs,
--       then N events as: field count c, then c strings.
-- Options (all optional):
--   existence new|exists|any     expected_version n     fence token
--   refuse_cancelled 1           refuse_finished 1      expect_status s1,s2
--   dedupe_ms n (the resend window, > 0)   reply s (kept with the dedupe key, given back
--     to a resend)               batch_id id            feed_maxlen n
--   dead_maxlen n                retention_ms n (a run hash's life once its run ended)
--   queue_max n (refuse QUEUEFULL rather than make the thread's queue longer than n)
--   ack work-item-id             work 1 (admit the run) admit queue|interrupt|reject
--     (interrupt: the lane's holder is flagged to cancel, for its worker to see; one
--     waiting for an approval has no worker, so it is cancelled at once)
--   interrupt_eid id             timer_at ms            dead reason
--   release_thread 1 (a suspended run lets the thread's next run go)
--   wake_if_waiting_for name (a signal: count it, and put the run back to work if it
--     waits for it)
--   signals_seen name:n (parking to wait for `name` with n such signals in its journal:
--     if more have arrived meanwhile, go back to work instead of waiting)
--   publish channel (sharded)    run.<field> value (set in the run hash)
--   runs id,id... (the run ids of KEYS[13..])
--   access_owner user | access_add user | access_remove user (who may use the thread:
--     its owner, a member added, a member removed; with the user's thread index)
-- Returns {"OK"|"DUP", version, reply, id...} (reply: what the first call stored, or ""),
-- {code, detail} for a refused guard, or {"KEYS", run id...} (nothing written: call
-- again with these runs' hashes in KEYS too).

local thread, feed, work, run, dedupe, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local active, queue, timers, dead = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local access, users_threads = KEYS[11], KEYS[12]
local thread_id, run_id = ARGV[1], ARGV[2]

local opt, run_set = {}, {}
local k = tonumber(ARGV[3])
for i = 0, k - 1 do
  local name, value = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  if string.sub(name, 1, 4) == "run." then
    run_set[#run_set + 1] = string.sub(name, 5)
    run_set[#run_set + 1] = value
  else
    opt[name] = value
  end
end
local pos = 4 + 2 * k

local function split(s)
  local out = {}
  for item in string.gmatch(s or "", "[^,]+") do out[#out + 1] = item end
  return out
end

local function reply_with(code, version, stored, ids)
  local reply = {code, version, stored}
  for _, id in ipairs(ids) do reply[#reply + 1] = id end
  return reply
end

local function terminal(status)
  return status == "completed" or status == "cancelled" or status == "failed"
end

-- A retried call (same batch) is answered with what the first one wrote.
-- A dedupe key holds the ids written, then (after a newline) the reply the caller stored.
if opt.dedupe_ms then
  local seen = redis.call("GET", dedupe)
  if seen then
    local written, stored = string.match(seen, "^([^\n]*)\n?(.*)$")
    return reply_with("DUP", redis.call("XLEN", thread), stored, split(written))
  end
end
-- Each redis.call costs a few microseconds of its own (more than most commands here),
-- and a run's every delta comes this way: what the run hash holds is read once.
local guarded = opt.fence or opt.refuse_cancelled or opt.refuse_finished or opt.expect_status
local state = nil
if guarded or opt.batch_id then
  state = redis.call("HMGET", run, "token", "cancel", "status", "last_batch", "last_ids")
end
if opt.batch_id and state[4] == opt.batch_id then
  return reply_with("DUP", redis.call("XLEN", thread), "", split(state[5]))
end

-- A thread stream is never empty: it begins with thread.created, and goes as a whole.
local version = redis.call("XLEN", thread)
local exists = version > 0
if opt.existence == "new" and exists then return {"EXISTS", thread_id} end
if (opt.existence or "exists") == "exists" and not exists then return {"NOTHREAD", thread_id} end

if opt.expected_version and tonumber(opt.expected_version) ~= version then
  return {"CONFLICT", version}
end

if guarded then
  if not state[3] then return {"NORUN", ""} end
  if opt.fence and state[1] ~= opt.fence then return {"STALE", state[1] or ""} end
  if opt.refuse_cancelled and state[2] == "1" then return {"CANCELLED", state[3]} end
  if opt.refuse_finished and terminal(state[3]) then return {"FINISHED", state[3]} end
  if opt.expect_status then
    local ok = false
    for _, s in ipairs(split(opt.expect_status)) do ok = ok or s == state[3] end
    if not ok then return {"STATUS", state[3]} end
  end
end

local function lane_field(lane)
  return thread_id .. ":" .. lane
end

-- The hashes of the runs given: this call's own run and KEYS[13..].
local run_keys = {}
if run_id ~= "" then run_keys[run_id] = run end
do
  local i = 13
  for id in string.gmatch(opt.runs or "", "[^,]+") do
    run_keys[id] = KEYS[i]
    i = i + 1
  end
end

local function run_key(id)
  -- Never reached for a run that was not given: the look below asked for every run the
  -- call can touch. Named as before rather than failing half-way through the writes.
  return run_keys[id] or (string.gsub(run, "[^:]+$", id))
end

local function new_status_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == "status" then return fields[i + 1] end
  end
  return nil
end
local new_status = new_status_of(run_set)
local ending = new_status and terminal(new_status)

-- The lane this call's own run is admitted to.
local function admitted_lane()
  for i = 1, #run_set, 2 do
    if run_set[i] == "agent" then return run_set[i + 1] end
  end
  local kept = redis.call("HMGET", run, "lane", "agent")
  return kept[1] or kept[2] or ""
end

local own_lane = nil  -- this run's lane once the call's fields are set (when it ends)

-- Before any write: every run this call can touch (the holders of the lanes it admits
-- to, and when it gives a lane up, the queued runs and the holders of their lanes) must
-- be among those given. A superset of what the writes below touch, read-only.
do
  local missing, asked = {}, {}
  local function need(id)
    if id and id ~= "" and not run_keys[id] and not asked[id] then
      asked[id] = true
      missing[#missing + 1] = id
    end
  end
  local lanes = {}
  if opt.work then
    lanes[#lanes + 1] = admitted_lane()
    for item in string.gmatch(opt.more_runs or "", "[^,]+") do
      local id, agent = string.match(item, "^(.-)=(.*)$")
      need(id)
      lanes[#lanes + 1] = agent
    end
  end
  if ending or opt.release_thread then
    for _, id in ipairs(redis.call("LRANGE", queue, 0, -1)) do
      need(id)
      if run_keys[id] then
        local kept = redis.call("HMGET", run_keys[id], "lane", "agent")
        lanes[#lanes + 1] = kept[1] or kept[2] or ""
      end
    end
    -- This run's own lane as its fields below leave it, should it wait in the queue too.
    local kept = redis.call("HMGET", run, "lane", "agent")
    local lane, agent = kept[1], kept[2]
    for i = 1, #run_set, 2 do
      if run_set[i] == "lane" then lane = run_set[i + 1] end
      if run_set[i] == "agent" then agent = run_set[i + 1] end
    end
    own_lane = lane or agent or ""
    lanes[#lanes + 1] = own_lane
  end
  if opt.work or ending or opt.release_thread then
    need(redis.call("HGET", active, thread_id))  -- a holder from before lanes
    for _, lane in ipairs(lanes) do need(redis.call("HGET", active, lane_field(lane))) end
  end
  if #missing > 0 then
    table.insert(missing, 1, "KEYS")
    return missing
  end
end

-- Admission: one active run per lane; the others wait in the thread's queue.

-- The run that has `lane` now, if any (nil when it is `self_id`).
local function holder_of(lane, self_id)
  local holder = redis.call("HGET", active, lane_field(lane))
  if not holder then
    -- Before lanes, one run had the whole thread, under the thread's id: it holds its
    -- agent's lane until it ends.
    local legacy = redis.call("HGET", active, thread_id)
    if legacy and redis.call("HGET", run_key(legacy), "agent") == lane then holder = legacy end
  end
  if holder == self_id then return nil end
  -- A holder whose run hash is gone would never hand the lane on: it holds nothing.
  if holder and redis.call("EXISTS", run_key(holder)) == 0 then return nil end
  return holder
end

local admits = {}
if opt.work then
  admits[1] = {id = run_id, key = run, lane = admitted_lane()}
  for item in string.gmatch(opt.more_runs or "", "[^,]+") do
    local id, agent = string.match(item, "^(.-)=(.*)$")
    admits[#admits + 1] = {id = id, key = run_key(id), lane = agent}
  end
  local taken, waiting_more = {}, 0
  for _, a in ipairs(admits) do
    -- A second run of one lane in this very call waits for the first.
    a.in_batch = taken[a.lane] ~= nil
    a.holder = taken[a.lane] or holder_of(a.lane, a.id)
    taken[a.lane] = a.holder or a.id
    if a.holder then
      if opt.admit == "reject" and not a.in_batch then return {"BUSY", a.holder} end
      waiting_more = waiting_more + 1
    end
  end
  if waiting_more > 0 and opt.queue_max then
    local waiting = redis.call("LLEN", queue)
    if waiting + waiting_more > tonumber(opt.queue_max) then return {"QUEUEFULL", waiting} end
  end
end

local function add(fields)
  local id = redis.call("XADD", thread, "*", unpack(fields))
  fields[#fields + 1] = "thread"
  fields[#fields + 1] = thread_id
  fields[#fields + 1] = "tid"
  fields[#fields + 1] = id
  redis.call("XADD", feed, "MAXLEN", "~", opt.feed_maxlen or "100000", "*", unpack(fields))
  return id
end

local ids = {}
local n = tonumber(ARGV[pos])
pos = pos + 1
for _ = 1, n do
  local count = tonumber(ARGV[pos])
  local fields = {}
  for j = 1, count do fields[j] = ARGV[pos + j] end
  pos = pos + count + 1
  ids[#ids + 1] = add(fields)
end

local function enqueue_work(which, lane)
  redis.call("HSET", active, lane_field(lane), which)
  redis.call("XADD", work, "*", "run", which, "thread", thread_id)
end

local INTERRUPTED = '{"reason":"interrupted by a newer message"}'

-- An interrupted holder that no worker holds: cancelled, its lane given up.
local function end_holder(id, key, lane)
  redis.call("HSET", key, "cancel", "1", "status", "cancelled", "waiting_for", "")
  redis.call("ZREM", timers, id)
  if opt.retention_ms then redis.call("PEXPIRE", key, opt.retention_ms) end
  if redis.call("HGET", active, lane_field(lane)) == id then
    redis.call("HDEL", active, lane_field(lane))
  elseif redis.call("HGET", active, thread_id) == id then
    redis.call("HDEL", active, thread_id)  -- admitted before lanes
  end
end

-- The batch's ids go with the run's fields in one HSET, unless admitting (work), which
-- may add events of its own below.
local batch_noted = false
if opt.batch_id and not opt.work then
  run_set[#run_set + 1] = "last_batch"
  run_set[#run_set + 1] = opt.batch_id
  run_set[#run_set + 1] = "last_ids"
  run_set[#run_set + 1] = table.concat(ids, ",")
  batch_noted = true
end
if #run_set > 0 then redis.call("HSET", run, unpack(run_set)) end
if opt.work then
  for i, a in ipairs(admits) do
    if i > 1 then
      -- A further run of this message: the run's fields, with its own agent.
      local fields = {}
      for j = 1, #run_set, 2 do
        if run_set[j] ~= "agent" then
          fields[#fields + 1] = run_set[j]
          fields[#fields + 1] = run_set[j + 1]
        end
      end
      fields[#fields + 1] = "agent"
      fields[#fields + 1] = a.lane
      redis.call("HSET", a.key, unpack(fields))
    end
    redis.call("HSET", a.key, "lane", a.lane)
    -- Where a run's own events begin: a worker reads its journal from there.
    if #ids > 0 then redis.call("HSETNX", a.key, "since", ids[1]) end
    if not a.holder then
      enqueue_work(a.id, a.lane)
    elseif opt.admit == "interrupt" and not a.in_batch then
      local holder_key = run_key(a.holder)
      local holder_status = redis.call("HGET", holder_key, "status")
      local eid = opt.interrupt_eid
      if i > 1 then eid = eid .. "-" .. i end
      if holder_status == "waiting" then
        -- Parked (for an approval): no worker holds it to see a cancel flag, so it
        -- ends here, as a cancel ends it, and its lane is the new run's at once.
        ids[#ids + 1] = add({"type", "run.cancel_requested", "v", "1", "eid", eid,
                             "run", a.holder, "body", INTERRUPTED})
        ids[#ids + 1] = add({"type", "run.cancelled", "v", "1", "eid", eid .. "-cancelled",
                             "run", a.holder, "body", INTERRUPTED})
        end_holder(a.holder, holder_key, a.lane)
        enqueue_work(a.id, a.lane)
      else
        -- Its worker sees the flag (a queued or retrying run when it is claimed).
        redis.call("LPUSH", queue, a.id)
        if not terminal(holder_status) then
          redis.call("HSET", holder_key, "cancel", "1")
          ids[#ids + 1] = add({"type", "run.cancel_requested", "v", "1", "eid", eid,
                               "run", a.holder, "body", INTERRUPTED})
          if opt.publish then redis.call("SPUBLISH", opt.publish, a.holder) end
        end
      end
    else
      redis.call("RPUSH", queue, a.id)
    end
  end
end

-- A lane given up lets the first waiting run of every free lane go: its own next
-- run, and any run left waiting for a lane that is free (by a holder from before
-- lanes, or one whose hash was lost). The queue is bounded (queue_max), so is this.
local function hand_on()
  local decided = {}
  for _, id in ipairs(redis.call("LRANGE", queue, 0, -1)) do
    local key = run_key(id)
    local kept = redis.call("HMGET", key, "lane", "agent", "status")
    local lane = kept[1] or kept[2] or ""
    if not kept[3] then
      redis.call("LREM", queue, 1, id)  -- its hash is gone: nothing to run
    elseif not decided[lane] then
      decided[lane] = true
      if not holder_of(lane, nil) then
        redis.call("LREM", queue, 1, id)
        enqueue_work(id, lane)
      end
    end
  end
end

-- A run that ends (or suspends) hands its lane to the next run waiting for it.
if ending then redis.call("ZREM", timers, run_id) end
-- A finished run's hash lives on for the retention (cancel, retry and signal read it);
-- a restarted one lives again until it ends.
if new_status and opt.retention_ms then
  if ending then
    redis.call("PEXPIRE", run, opt.retention_ms)
  else
    redis.call("PERSIST", run)
  end
end
if ending or opt.release_thread then
  local lane = own_lane  -- as the look above found it; admitting (work) may move it
  if opt.work or lane == nil then
    local kept = redis.call("HMGET", run, "lane", "agent")
    lane = kept[1] or kept[2] or ""
  end
  local field = lane_field(lane)
  local held = nil
  if redis.call("HGET", active, field) == run_id then
    held = field
  elseif redis.call("HGET", active, thread_id) == run_id then
    held = thread_id  -- admitted before lanes
  end
  if held then
    redis.call("HDEL", active, held)
    hand_on()
  else
    redis.call("LREM", queue, 0, run_id)
  end
end

-- A signal wakes a run that waits for exactly that signal.
local function wake()
  redis.call("HSET", run, "status", "queued", "waiting_for", "")
  redis.call("ZREM", timers, run_id)
  redis.call("XADD", work, "*", "run", run_id, "thread", thread_id)
end
if opt.wake_if_waiting_for then
  redis.call("HINCRBY", run, "signals:" .. opt.wake_if_waiting_for, 1)
  local state = redis.call("HMGET", run, "status", "waiting_for")
  if state[1] == "waiting" and state[2] == opt.wake_if_waiting_for then wake() end
end
local parked_on_signal = false
if opt.signals_seen then
  local name, seen = string.match(opt.signals_seen, "^(.*):(%d+)$")
  -- A signal that arrived while the run was busy would otherwise wait for ever.
  if tonumber(redis.call("HGET", run, "signals:" .. name) or "0") > tonumber(seen) then
    wake()
    parked_on_signal = true
  end
end
if opt.timer_at and not parked_on_signal then redis.call("ZADD", timers, opt.timer_at, run_id) end
if opt.dead then
  redis.call("XADD", dead, "MAXLEN", "~", opt.dead_maxlen or "10000", "*",
             "run", run_id, "thread", thread_id, "reason", opt.dead)
end
if opt.ack then
  redis.call("XACK", work, "workers", opt.ack)
  redis.call("XDEL", work, opt.ack)
end
if opt.publish and not opt.work then redis.call("SPUBLISH", opt.publish, run_id) end

local joined = table.concat(ids, ",")
if opt.dedupe_ms then
  local value = joined
  if opt.reply then value = joined .. "\n" .. opt.reply end
  redis.call("SET", dedupe, value, "PX", opt.dedupe_ms)
end
if opt.batch_id and not batch_noted then
  redis.call("HSET", run, "last_batch", opt.batch_id, "last_ids", joined)
end
if #ids > 0 then
  redis.call("ZADD", index, tonumber(string.match(ids[#ids], "^(%d+)")), thread_id)
end
if opt.access_owner or opt.access_add then
  local now = tonumber(string.match(ids[#ids] or "0", "^(%d+)")) or 0
  if opt.access_owner then
    redis.call("HSET", access, "owner", opt.access_owner)
  else
    redis.call("HSET", access, "m:" .. opt.access_add, now)
  end
  redis.call("ZADD", users_threads, now, thread_id)
elseif opt.access_remove then
  redis.call("HDEL", access, "m:" .. opt.access_remove)
  redis.call("ZREM", users_threads, thread_id)
end

return reply_with("OK", version + #ids, opt.reply or "", ids)

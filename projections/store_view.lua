-- Store what a fold changed in a thread view, only if the view is still the
-- one it was folded from (compare-and-set on the id of the last event folded
-- in, and on the schema version) and its thread still exists (a thread deleted
-- meanwhile is not brought back), with the thread's summary, the summaries
-- and index entries of the runs it changed, the search index's entries of the
-- sources (title, messages) it changed, and a bounded trim of the runs that
-- finished before the retention cutoff.
-- KEYS: 1 view hash, 2 thread summaries hash, 3 run summaries hash,
--       4 runs by requested time, 5 finished runs by end time, 6 thread stream,
--       7.. runs by status (one sorted set per status, in ARGV's status order,
--       ARGV[10] of them), then, only when the save indexes (ARGV[11] > 0), the
--       thread's search doc (hash) and one search posting set per word in ARGV's
--       word list (a delta's save sends none of them)
-- ARGV: 1 expected last id ("" when there was no view), 2 new last id,
--       3 schema version, 4 "replace" (rewrite the whole hash) or "update",
--       5 thread id, 6 thread summary JSON, 7 retention cutoff ms ("" for none),
--       8 how many runs to trim at most, 9 n view fields, 10 s statuses,
--       11 k search sources, 12 search index version to record ("" to leave it),
--       then n field / value pairs,
--       then k search sources: name ("t" or a message position), "word:points ...",
--       then the words of the posting sets (as many as KEYS after the statuses),
--       then per changed run: id, summary JSON, requested ms, status number
--       (1-based, into the status keys), ended ms ("" while it is not finished)
-- Returns 1 when stored, 0 when refused (the view moved on, the thread is gone,
-- or a source held a word whose posting set was not passed: read it again).
local view, stream = KEYS[1], KEYS[6]
local current = redis.call("HGET", view, "last")
if (current or "") ~= ARGV[1] then return 0 end
if redis.call("EXISTS", stream) == 0 then return 0 end
if ARGV[4] ~= "replace" and redis.call("HGET", view, "schema") ~= ARGV[3] then
  return 0
end

local thread_id = ARGV[5]
local n, statuses, k = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local first_status = 7
local doc = KEYS[first_status + statuses]  -- nil when the save does not index
local first_posting = first_status + statuses + 1
local fields_at = 13
local sources_at = fields_at + 2 * n
local words_at = sources_at + 2 * k
local posting_count = math.max(#KEYS - first_posting + 1, 0)
local runs_at = words_at + posting_count

-- The search sources: each replaces what the doc held for it.
local function parse(encoded)
  local out = {}
  for word, points in string.gmatch(encoded or "", "(%S+):(%d+)") do out[word] = tonumber(points) end
  return out
end
local posting = {}
for j = 0, posting_count - 1 do posting[ARGV[words_at + j]] = KEYS[first_posting + j] end
local changes = {}
for s = 0, k - 1 do
  local name, encoded = ARGV[sources_at + 2 * s], ARGV[sources_at + 2 * s + 1]
  local old, new = parse(redis.call("HGET", doc, "s:" .. name)), parse(encoded)
  for word in pairs(old) do
    if not posting[word] then return 0 end
  end
  for word in pairs(new) do
    if not posting[word] then return 0 end
  end
  changes[#changes + 1] = {name = name, encoded = encoded, old = old, new = new}
end

if ARGV[4] == "replace" then redis.call("DEL", view) end
redis.call("HSET", view, "last", ARGV[2], "schema", ARGV[3])
-- In slices: unpack() spreads at most ~8,000 values, and a rebuild writes every
-- message and run (a thread of 4,000 messages would fail to save at all).
local slice = 1000  -- field/value pairs per HSET
for i = fields_at, sources_at - 1, 2 * slice do
  local last = math.min(i + 2 * slice - 1, sources_at - 1)
  redis.call("HSET", view, unpack(ARGV, i, last))
end
redis.call("HSET", KEYS[2], thread_id, ARGV[6])

for _, change in ipairs(changes) do
  for word, points in pairs(change.new) do
    local delta = points - (change.old[word] or 0)
    if delta ~= 0 then redis.call("ZINCRBY", posting[word], delta, thread_id) end
  end
  for word, points in pairs(change.old) do
    if not change.new[word] then
      local left = tonumber(redis.call("ZINCRBY", posting[word], -points, thread_id))
      if left <= 0 then redis.call("ZREM", posting[word], thread_id) end
    end
  end
  if change.encoded == "" then
    redis.call("HDEL", doc, "s:" .. change.name)
  else
    redis.call("HSET", doc, "s:" .. change.name, change.encoded)
  end
end
if ARGV[12] ~= "" and doc then redis.call("HSET", doc, "v", ARGV[12]) end

local function unindex(run)
  redis.call("ZREM", KEYS[4], run)
  redis.call("ZREM", KEYS[5], run)
  for s = 0, statuses - 1 do redis.call("ZREM", KEYS[first_status + s], run) end
end

local i = runs_at
while i + 4 <= #ARGV do
  local run, summary, requested, status, ended =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
  unindex(run)
  redis.call("HSET", KEYS[3], run, summary)
  redis.call("ZADD", KEYS[4], requested, run)
  redis.call("ZADD", KEYS[first_status + status - 1], requested, run)
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

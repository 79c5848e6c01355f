-- One partition's best matches of a search: the threads in every posting set
-- (all the words: AND) and among those the caller may see, by weighted points,
-- ties by the most recent activity. Every key is the partition's (one slot).
-- KEYS: 1 the partition's threads by last activity, 2 the threads the caller may
--       see (a sorted set; KEYS[1] itself when that is every thread),
--       3.. one posting set per word
-- ARGV: 1 how many to return at most, 2.. each posting set's weight
-- Returns {thread id, points, activity ms, ...}, best first.
local words = #KEYS - 2
local call = {"ZINTER", words + 1}
for i = 3, #KEYS do call[#call + 1] = KEYS[i] end
call[#call + 1] = KEYS[2]
call[#call + 1] = "WEIGHTS"
for i = 1, words do call[#call + 1] = ARGV[i + 1] end
call[#call + 1] = "0"  -- the caller's set only filters
call[#call + 1] = "WITHSCORES"
local found = redis.call(unpack(call))
if #found == 0 then return {} end

local hits = {}
for i = 1, #found, 2 do
  hits[#hits + 1] = {id = found[i], points = found[i + 1], score = tonumber(found[i + 1])}
end
-- Activity in pages: unpack has a bound on how many values it passes.
local PAGE = 500
for first = 1, #hits, PAGE do
  local ids = {}
  for i = first, math.min(first + PAGE - 1, #hits) do ids[#ids + 1] = hits[i].id end
  local scores = redis.call("ZMSCORE", KEYS[1], unpack(ids))
  for j = 1, #ids do hits[first + j - 1].activity = tonumber(scores[j]) or 0 end
end
table.sort(hits, function(a, b)
  if a.score ~= b.score then return a.score > b.score end
  if a.activity ~= b.activity then return a.activity > b.activity end
  return a.id < b.id
end)
local reply = {}
for i = 1, math.min(#hits, tonumber(ARGV[1])) do
  reply[#reply + 1] = hits[i].id
  reply[#reply + 1] = hits[i].points
  reply[#reply + 1] = string.format("%d", hits[i].activity)
end
return reply

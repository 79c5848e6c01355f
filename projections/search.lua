-- One partition's best matches of a search: the threads in every posting set
-- (all the words: AND) and among those the caller may see, by weighted points,
-- ties by the most recent activity. Every key is the partition's (one slot).
-- KEYS: 1 the partition's threads by last activity, 2 the threads the caller may
--       see (a sorted set; KEYS[1] itself when that is every thread),
--       3.. one posting set per word
-- ARGV: 1 how many to return at most, 2.. each posting set's weight
-- Returns one string, a line per match, best first: "<thread id> <points> <activity ms>"
-- (one bulk string, not three per match: parsing the reply was most of a query's cost).
local threads, visible = KEYS[1], KEYS[2]
local words = #KEYS - 2
local limit = tonumber(ARGV[1])
local everyone = visible == threads

-- Candidates: the best `limit`, and every other match with as many points as the
-- last of them (which of those tied go first is the activity's to say).
local hits = {}
local function take(id, score)
  hits[#hits + 1] = {id = id, score = score}
end

if words == 1 and (everyone or redis.call("ZCARD", visible) * 4 > redis.call("ZCARD", KEYS[3])) then
  -- One word: its posting set is already in order. Walk it from the top, keeping what
  -- the caller may see, until past the points of the `limit`-th: no intersection is
  -- built, so a word in every thread costs about `limit`, not every thread.
  local weight, threshold, offset, PAGE = tonumber(ARGV[2]), nil, 0, 200
  while true do
    local page = redis.call("ZREVRANGE", KEYS[3], offset, offset + PAGE - 1, "WITHSCORES")
    local ids = {}
    for i = 1, #page, 2 do ids[#ids + 1] = page[i] end
    if #ids == 0 then break end
    local seen = everyone and {} or redis.call("ZMSCORE", visible, unpack(ids))
    local past = false
    for j = 1, #ids do
      local score = tonumber(page[2 * j]) * weight
      if threshold and score < threshold then
        past = true
        break
      end
      if everyone or seen[j] then
        take(ids[j], score)
        if #hits == limit then threshold = score end
      end
    end
    if past or #ids < PAGE then break end
    offset = offset + PAGE
  end
else
  -- Several words (or a caller who sees few of the threads): the intersection, with
  -- the caller's threads as a filter (weight 0) unless they may see every thread.
  local call = {"ZINTER", everyone and words or words + 1}
  for i = 3, #KEYS do call[#call + 1] = KEYS[i] end
  if not everyone then call[#call + 1] = visible end
  call[#call + 1] = "WEIGHTS"
  for i = 1, words do call[#call + 1] = ARGV[i + 1] end
  if not everyone then call[#call + 1] = "0" end
  call[#call + 1] = "WITHSCORES"
  -- A sorted set's reply: ascending by points, so the best are at its end.
  local found = redis.call(unpack(call))
  local count = #found / 2
  if count > 0 then
    local first = math.max(1, count - limit + 1)
    local threshold = tonumber(found[2 * first])
    while first > 1 and tonumber(found[2 * (first - 1)]) == threshold do first = first - 1 end
    for n = count, first, -1 do take(found[2 * n - 1], tonumber(found[2 * n])) end
  end
end
if #hits == 0 then return "" end

-- Activity in pages: unpack has a bound on how many values it passes.
local PAGE = 500
for start = 1, #hits, PAGE do
  local ids = {}
  for i = start, math.min(start + PAGE - 1, #hits) do ids[#ids + 1] = hits[i].id end
  local scores = redis.call("ZMSCORE", threads, unpack(ids))
  for j = 1, #ids do hits[start + j - 1].activity = tonumber(scores[j]) or 0 end
end
table.sort(hits, function(a, b)
  if a.score ~= b.score then return a.score > b.score end
  if a.activity ~= b.activity then return a.activity > b.activity end
  return a.id < b.id
end)
local lines = {}
for i = 1, math.min(#hits, limit) do
  local hit = hits[i]
  lines[i] = hit.id .. " " .. string.format("%.6f %d", hit.score, hit.activity)
end
return table.concat(lines, "\n")

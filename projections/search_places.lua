-- Where to show each of a partition's search hits: which of the thread's indexed
-- sources holds the query's words, read from its search doc here rather than
-- sent to the client (a doc holds the words of every message).
-- KEYS: the hits' search docs (one partition's)
-- ARGV: the query's words
-- Returns, per doc, the newest message position holding every word; else "t" if the
-- title holds them all; else the newest message holding the most of them; else "t"
-- if the title holds one; else "". At most MAX_SOURCES messages are looked at per
-- doc, newest first, so a very long thread costs no more than that.
local MAX_SOURCES = 512
-- How many of the words a source holds ("word:points word:points ...").
local function held(encoded)
  if not encoded then return 0 end
  local padded = " " .. encoded
  local n = 0
  for _, word in ipairs(ARGV) do
    if string.find(padded, " " .. word .. ":", 1, true) then n = n + 1 end
  end
  return n
end

local places = {}
for i, doc in ipairs(KEYS) do
  local numbers = {}
  for _, field in ipairs(redis.call("HKEYS", doc)) do
    local n = string.match(field, "^s:(%d+)$")
    if n then numbers[#numbers + 1] = tonumber(n) end
  end
  table.sort(numbers, function(a, b) return a > b end)
  local best, best_count = "", 0
  for j = 1, math.min(#numbers, MAX_SOURCES) do
    local count = held(redis.call("HGET", doc, "s:" .. numbers[j]))
    if count == #ARGV then
      best, best_count = tostring(numbers[j]), count
      break
    end
    if count > best_count then best, best_count = tostring(numbers[j]), count end
  end
  if best_count < #ARGV then
    local title = held(redis.call("HGET", doc, "s:t"))
    if title == #ARGV or (best_count == 0 and title > 0) then best = "t" end
  end
  places[i] = best
end
return places

-- Store a thread view with the id of the last event folded into it, only if
-- nobody stored a newer one meanwhile (compare-and-set on that id), with the
-- thread's summary and its runs' summaries for the lists.
-- KEYS: 1 view hash, 2 thread summaries hash, 3 run summaries hash
-- ARGV: 1 expected last id ("" when there was no view), 2 new last id,
--       3 view JSON, 4 thread id, 5 summary JSON, then run id / run summary pairs
local current = redis.call("HGET", KEYS[1], "last")
if (current or "") ~= ARGV[1] then return 0 end
redis.call("HSET", KEYS[1], "last", ARGV[2], "view", ARGV[3])
redis.call("HSET", KEYS[2], ARGV[4], ARGV[5])
if #ARGV > 5 then
  local runs = {}
  for i = 6, #ARGV do runs[#runs + 1] = ARGV[i] end
  redis.call("HSET", KEYS[3], unpack(runs))
end
return 1

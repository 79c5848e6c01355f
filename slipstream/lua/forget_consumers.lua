-- Delete consumers of a group that hold no pending entries, atomically: a
-- consumer that took an entry since the caller looked keeps it (DELCONSUMER
-- would drop its pending entries, and they would never be delivered again).
-- KEYS: 1 stream   ARGV: 1 group, then consumer names
local forgotten = 0
for i = 2, #ARGV do
  local held = redis.call("XPENDING", KEYS[1], ARGV[1], "-", "+", 1, ARGV[i])
  if #held == 0 then
    redis.call("XGROUP", "DELCONSUMER", KEYS[1], ARGV[1], ARGV[i])
    forgotten = forgotten + 1
  end
end
return forgotten

-- Say a process is alive: its name scored with Redis's time (ms), the one clock
-- every process agrees on, so a host whose own clock is behind never looks dead.
-- KEYS: 1 registry (sorted set)   ARGV: 1 name
local t = redis.call("TIME")
redis.call("ZADD", KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1

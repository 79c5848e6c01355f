-- Put work items a worker read but has no room for back at the end of their
-- stream, for any worker to read: a fresh entry with the same fields, and the
-- original acked and deleted, atomically.
-- KEYS: 1 work stream
-- ARGV: 1 group, then the entry ids
local given = 0
for i = 2, #ARGV do
  local entry = redis.call("XRANGE", KEYS[1], ARGV[i], ARGV[i])[1]
  if entry then
    redis.call("XADD", KEYS[1], "*", unpack(entry[2]))
    given = given + 1
  end
  redis.call("XACK", KEYS[1], ARGV[1], ARGV[i])
  redis.call("XDEL", KEYS[1], ARGV[i])
end
return given

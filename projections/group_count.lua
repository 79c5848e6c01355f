-- Set the projectors group's count of entries read, if its position is still ARGV[2].
--
-- Redis counts one per entry a group reads, even across entries trimmed
-- before it read them; after such a gap the count is put right, so the next
-- look at the feed does not see the same gap again. Only if nobody read on
-- meanwhile: moving a group's position back would deliver entries twice.
--
-- KEYS[1] feed; ARGV: group, expected position, new position, entries read.
for _, group in ipairs(redis.call("XINFO", "GROUPS", KEYS[1])) do
  local fields = {}
  for i = 1, #group, 2 do
    fields[group[i]] = group[i + 1]
  end
  if fields["name"] == ARGV[1] then
    if fields["last-delivered-id"] ~= ARGV[2] then
      return 0
    end
    redis.call("XGROUP", "SETID", KEYS[1], ARGV[1], ARGV[3], "ENTRIESREAD", ARGV[4])
    return 1
  end
end
return 0

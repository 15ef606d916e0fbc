-- Remove names from a server incarnation's index, each only if it still
-- indexes that session (a newer login of the name on the same incarnation
-- re-indexed it, and stays). The index maps name -> session.
-- KEYS[1] index hash; ARGV: name, session, name, session, ...
-- Returns how many were removed.
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    removed = removed + 1
  end
end
return removed

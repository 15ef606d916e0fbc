-- Newest-wins login of one name. Touches only that name's keys (one hash
-- slot, by the {name} tag); the caller indexes the session before and
-- unindexes the displaced one after (their index is in another slot).
-- KEYS[1] user hash, KEYS[2] the session's retraction mark (logout.lua)
-- ARGV: name, server, incarnation, session, since_ms, publish
-- With publish = 1 (one Redis, Sentinel) the kick notice to the displaced
-- session's server is published here, in the same step; on a cluster the
-- caller publishes it (sharded) after this script.
-- Returns the replaced entry {server, incarnation, session, since}, nil,
-- or -1 if the login was retracted before it ran (nothing written).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local old = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session', 'since')
redis.call('HSET', KEYS[1], 'server', ARGV[2], 'inc', ARGV[3], 'session', ARGV[4], 'since', ARGV[5])
if not old[1] then
  return false
end
if ARGV[6] == '1' and old[1] ~= ARGV[2] then
  redis.call('PUBLISH', 'sb:kick:{' .. old[1] .. '}', ARGV[1] .. ' ' .. old[2] .. ' ' .. old[3])
end
return old

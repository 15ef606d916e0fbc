-- Newest-wins login, atomically, with the kick notice in the same step.
-- KEYS[1] user hash, KEYS[2] index set of the new server incarnation,
-- KEYS[3] the session's retraction mark (see logout.lua)
-- ARGV: name, server, incarnation, session, since_ms
-- Returns the replaced entry {server, incarnation, session, since}, nil,
-- or -1 if the login was retracted before it ran (nothing written).
if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
local old = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session', 'since')
redis.call('HSET', KEYS[1], 'server', ARGV[2], 'inc', ARGV[3], 'session', ARGV[4], 'since', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
if not old[1] then
  return false
end
if old[1] ~= ARGV[2] or old[2] ~= ARGV[3] then
  redis.call('SREM', 'sb:idx:' .. old[1] .. ':' .. old[2], ARGV[1])
end
if old[1] ~= ARGV[2] then
  redis.call('PUBLISH', 'sb:kick:' .. old[1], ARGV[1] .. ' ' .. old[2] .. ' ' .. old[3])
end
return old

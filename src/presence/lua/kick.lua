-- An operator's kick: remove the entry and notify its server, atomically.
-- KEYS[1] user hash; ARGV: name
-- Returns the removed entry {server, incarnation, session, since} or nil.
local cur = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session', 'since')
if not cur[1] then
  return false
end
redis.call('DEL', KEYS[1])
redis.call('SREM', 'sb:idx:' .. cur[1] .. ':' .. cur[2], ARGV[1])
redis.call('PUBLISH', 'sb:kick:' .. cur[1], ARGV[1] .. ' ' .. cur[2] .. ' ' .. cur[3] .. ' admin')
-- Remembered for a while, so that a server that missed the notice does not
-- re-create the entry when it reconciles (reassert.lua refuses).
redis.call('SET', 'sb:kicked:' .. cur[1] .. ':' .. cur[2] .. ':' .. cur[3], '1', 'EX', 300)
return cur

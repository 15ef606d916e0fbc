-- Compare-and-delete: remove the entry only if it is still this session.
-- KEYS[1] user hash, KEYS[2] index set of the session's server incarnation
-- ARGV: server, incarnation, session, name
local cur = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] and cur[3] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[4])
  return 1
end
return 0

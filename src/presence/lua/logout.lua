-- Compare-and-delete: remove the entry only if it is still this session.
-- With a third key (a retraction), also mark the session so that a login
-- of it that has not run yet writes nothing when it does (login.lua).
-- KEYS[1] user hash, KEYS[2] index set of the session's server incarnation,
-- [KEYS[3] the retraction mark]
-- ARGV: server, incarnation, session, name, [mark TTL in seconds]
if KEYS[3] then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[5])
end
local cur = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] and cur[3] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[4])
  return 1
end
return 0

-- Compare-and-delete: remove the entry only if it is still this session.
-- With a second key (a retraction), also mark the session so that a login
-- of it that has not run yet writes nothing when it does (login.lua).
-- KEYS[1] user hash, [KEYS[2] the retraction mark]
-- ARGV: server, incarnation, session, [mark TTL in seconds]
if KEYS[2] then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[4])
end
local cur = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] and cur[3] == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0

-- Purge one entry: delete it if it still points at the purged server
-- incarnation (a re-login elsewhere stays). Driven by that incarnation's
-- index, one name per call: the entries are in as many slots as names.
-- KEYS[1] user hash; ARGV: server, incarnation
-- Returns 1 if deleted.
local cur = redis.call('HMGET', KEYS[1], 'server', 'inc')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0

-- Remove a server from the registry if it is still this incarnation.
-- KEYS[1] server hash, KEYS[2] set of server ids (one slot: {registry})
-- ARGV: server, incarnation. Returns 1 if removed.
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1

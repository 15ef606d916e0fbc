-- Remove a server from the registry if it is still that incarnation.
-- KEYS[1] server hash, KEYS[2] the set of server ids; ARGV: incarnation, id
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1

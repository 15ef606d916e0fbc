-- Refresh a server's registry entry if it is still this incarnation.
-- KEYS[1] server hash; ARGV: incarnation, connections, now_ms, links, then
-- counter name/value pairs stored as stat:<name>.
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'connections', ARGV[2], 'heartbeat_ms', ARGV[3], 'links', ARGV[4])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'stat:' .. ARGV[i], ARGV[i + 1])
end
return 1

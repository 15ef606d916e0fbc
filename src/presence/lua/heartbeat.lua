-- Refresh a server's registry entry if it is still this incarnation.
-- KEYS[1] server hash; ARGV: incarnation, connections, now_ms, links, then
-- counter name/value pairs stored as stat:<name>. One HSET for all.
if redis.call('HGET', KEYS[1], 'inc') ~= ARGV[1] then
  return 0
end
local fields = {'connections', ARGV[2], 'heartbeat_ms', ARGV[3], 'links', ARGV[4]}
for i = 5, #ARGV, 2 do
  fields[#fields + 1] = 'stat:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
return 1

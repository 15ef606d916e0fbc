-- An operator's kick: remove the entry, mark the session kicked and (with
-- publish = 1) notify its server, atomically. One slot: the mark carries
-- the same {name} tag as the entry.
-- KEYS[1] user hash; ARGV: name, publish, mark TTL in seconds
-- Returns the removed entry {server, incarnation, session, since} or nil.
local cur = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session', 'since')
if not cur[1] then
  return false
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then
  redis.call('PUBLISH', 'sb:kick:{' .. cur[1] .. '}', ARGV[1] .. ' ' .. cur[2] .. ' ' .. cur[3] .. ' admin')
end
-- Remembered for a while, so that a server that missed the notice does not
-- re-create the entry when it reconciles (reassert.lua refuses).
redis.call('SET', 'sb:kicked:{' .. ARGV[1] .. '}:' .. cur[1] .. ':' .. cur[2] .. ':' .. cur[3], '1', 'EX', ARGV[3])
return cur

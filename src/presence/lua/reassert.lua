-- Re-create a live session's entry if its name has none; never displace,
-- and never bring back a session an operator kicked.
-- KEYS[1] user hash, KEYS[2] the session's kicked mark (kick.lua)
-- ARGV: name, server, incarnation, session, since_ms (as login.lua)
-- Returns 1 re-created, -1 the session was kicked, or the entry that holds
-- the name {server, incarnation, session, since}: the caller's session
-- lost it, decided in this one step (no window between look and write).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local cur = redis.call('HMGET', KEYS[1], 'server', 'inc', 'session', 'since')
if cur[1] then
  return cur
end
redis.call('HSET', KEYS[1], 'server', ARGV[2], 'inc', ARGV[3], 'session', ARGV[4], 'since', ARGV[5])
return 1

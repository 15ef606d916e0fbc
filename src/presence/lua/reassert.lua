-- Re-create a live session's entry if its name has none; never displace,
-- and never bring back a session an operator kicked.
-- KEYS[1] user hash, KEYS[2] index set; ARGV: name, server, incarnation, session, since_ms
-- Returns 1 re-created, 0 the name is taken, -1 the session was kicked.
if redis.call('EXISTS', 'sb:kicked:' .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4]) == 1 then
  return -1
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'server', ARGV[2], 'inc', ARGV[3], 'session', ARGV[4], 'since', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
return 1

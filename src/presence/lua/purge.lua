-- Purge one batch of a server incarnation's index: delete the entries that
-- still point at that incarnation, leave re-logins elsewhere alone.
-- Batches keep each call short so Redis never stalls on a big server.
-- KEYS[1] index set; ARGV: server, incarnation, batch size
-- Returns {deleted, remaining in the index}.
local names = redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
local deleted = 0
for _, name in ipairs(names) do
  local key = 'sb:user:' .. name
  local cur = redis.call('HMGET', key, 'server', 'inc')
  if cur[1] == ARGV[1] and cur[2] == ARGV[2] then
    redis.call('DEL', key)
    deleted = deleted + 1
  end
end
return {deleted, redis.call('SCARD', KEYS[1])}

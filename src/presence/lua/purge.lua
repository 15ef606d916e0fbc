-- Purge one batch of a server incarnation's index: delete the entries that
-- still point at that incarnation, leave re-logins elsewhere alone.
-- Batches keep each call short so Redis never stalls on a big server.
-- With ARGV[4] = 1 (retire, the first batch) the incarnation also leaves
-- the registry, in this same step: a failure later can leave entries to
-- purge, never a registered server without its users. Without it the
-- batch is fenced: if that incarnation is registered (it came back, and
-- re-asserts its sessions) nothing is deleted.
-- KEYS[1] index set, KEYS[2] server hash, KEYS[3] set of server ids
-- ARGV: server, incarnation, batch size, retire (1/0)
-- Returns {deleted, remaining in the index, deregistered (1/0)},
-- remaining -1 if fenced off. Of concurrent retires of one incarnation
-- (several relays) exactly one deregisters it.
local deregistered = 0
if redis.call('HGET', KEYS[2], 'inc') == ARGV[2] then
  if ARGV[4] ~= '1' then
    return {0, -1, 0}
  end
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[1])
  deregistered = 1
end
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
return {deleted, redis.call('SCARD', KEYS[1]), deregistered}

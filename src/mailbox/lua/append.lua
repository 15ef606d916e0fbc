-- Appends one message unless the mailbox is full: the cap check and the
-- append are one step, so concurrent senders cannot overshoot the cap.
-- KEYS[1] stream, KEYS[2] byte count
-- ARGV: max messages, max bytes, ttl ms, bytes of this message, id, from,
--       ts, content
-- Returns {1 stored | 0 full, expired}
local expired = expire_head(tonumber(ARGV[3]))
local size = tonumber(ARGV[4])
local count = redis.call('XLEN', KEYS[1])
local bytes = tonumber(redis.call('GET', KEYS[2]) or '0')
if count >= tonumber(ARGV[1]) or bytes + size > tonumber(ARGV[2]) then
  return {0, expired}
end
redis.call('XADD', KEYS[1], '*', 'id', ARGV[5], 'from', ARGV[6], 'ts', ARGV[7], 'content', ARGV[8])
redis.call('INCRBY', KEYS[2], size)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, expired}

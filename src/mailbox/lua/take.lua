-- Removes the entries already written, drops expired ones, and returns
-- the next page: one round trip per page of a login's drain.
-- KEYS[1] stream, KEYS[2] byte count
-- ARGV: ttl ms, page size, keys of the entries written...
-- Returns {expired, {{key, {fields}}, ...}}
local freed = 0
for i = 3, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if e[1] then
    freed = freed + entry_bytes(e[1][2])
    redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
if freed > 0 then
  redis.call('DECRBY', KEYS[2], freed)
end
local expired = expire_head(tonumber(ARGV[1]))
local page = {}
local count = tonumber(ARGV[2])
if count > 0 then
  page = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', count)
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return {expired, page}

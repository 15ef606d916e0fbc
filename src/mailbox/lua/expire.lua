-- Shared by the mailbox scripts (prepended to each): KEYS[1] is a user's
-- mailbox stream, KEYS[2] the count of its bytes. An entry's fields are,
-- in order: id, from, ts, content; its bytes are those of id, from and
-- content (the recipient is the mailbox's name).
local function entry_bytes(fields)
  return #fields[2] + #fields[4] + #fields[8]
end

-- Removes entries older than ttl_ms from the head of the stream (their
-- stream id is their append time), at most 100 per call, keeping the
-- byte count in step. Returns how many were removed.
local function expire_head(ttl_ms)
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ttl_ms
  if cutoff <= 0 then
    return 0
  end
  local old = redis.call('XRANGE', KEYS[1], '-', tostring(cutoff - 1), 'COUNT', 100)
  local freed = 0
  for _, e in ipairs(old) do
    freed = freed + entry_bytes(e[2])
    redis.call('XDEL', KEYS[1], e[1])
  end
  if freed > 0 then
    redis.call('DECRBY', KEYS[2], freed)
  end
  return #old
end

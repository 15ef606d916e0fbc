-- Empties a mailbox (operator); returns how many messages it held.
-- KEYS[1] stream, KEYS[2] byte count
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return n

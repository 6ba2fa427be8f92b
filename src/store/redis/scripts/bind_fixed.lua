-- Reserves a slot on an account for a new fixed key.
-- ARGV: prefix, tier, key_id, account, slots
local tier, id, account, slots = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('SISMEMBER', k_accounts(tier), account) == 0 then return {'unknown'} end
local used = redis.call('SCARD', k_slots(tier, account))
if used >= slots then return {'full', tostring(used)} end
rebind(tier, id, account)
return {'ok'}

-- A key leaves the pool: revoked, expired, or its slot simply freed.
-- ARGV: prefix, tier, key_id, new status ('' = keep)
local tier, id, status = ARGV[2], ARGV[3], ARGV[4]
if status ~= '' and redis.call('EXISTS', k_key(id)) == 1 then
  redis.call('HSET', k_key(id), 'status', status)
end
rebind(tier, id, false)
return 1

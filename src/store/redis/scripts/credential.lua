-- Writes a credential unless the stored one is newer (a later expiresAt): no instance ever
-- puts an older token over a newer one. Answers the credential now stored.
-- ARGV: prefix, tier, account, access, refresh, expires ('' = none)
local ck = k_cred(ARGV[2], ARGV[3])
local have = redis.call('HMGET', ck, 'access', 'refresh', 'expires')
local function ms(v) if v == nil or v == false or v == '' then return -1 end return tonumber(v) end
if have[1] and ms(have[3]) >= ms(ARGV[6]) then
  return {'kept', have[1], have[2] or '', have[3] or ''}
end
redis.call('HSET', ck, 'access', ARGV[4], 'refresh', ARGV[5], 'expires', ARGV[6])
return {'written', ARGV[4], ARGV[5], ARGV[6]}

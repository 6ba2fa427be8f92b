-- Sync: an account file is present. Adds the account and reconciles its credential.
-- ARGV: prefix, tier, account, access, refresh, expires
-- Answers {'added'|'updated'|'store_newer'|'same', access, refresh, expires (stored)}
local tier, account = ARGV[2], ARGV[3]
local added = redis.call('SADD', k_accounts(tier), account) == 1
local ck = k_cred(tier, account)
local have = redis.call('HMGET', ck, 'access', 'refresh', 'expires')
local function ms(v) if v == nil or v == false or v == '' then return -1 end return tonumber(v) end
-- The file wins with a later expiry, or without one (a setup token) when its token differs:
-- the operator put a new credential there (see Credential::supersedes).
local file_wins = ms(ARGV[6]) > ms(have[3]) or (ARGV[6] == '' and ARGV[4] ~= have[1])
if not have[1] or file_wins then
  redis.call('HSET', ck, 'access', ARGV[4], 'refresh', ARGV[5], 'expires', ARGV[6])
  if added or not have[1] then return {'added', ARGV[4], ARGV[5], ARGV[6]} end
  return {'updated', ARGV[4], ARGV[5], ARGV[6]}
end
if added then return {'added', have[1], have[2] or '', have[3] or ''} end
if ms(have[3]) > ms(ARGV[6]) then return {'store_newer', have[1], have[2] or '', have[3] or ''} end
return {'same', have[1], have[2] or '', have[3] or ''}

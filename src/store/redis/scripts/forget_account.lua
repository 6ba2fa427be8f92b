-- Sync: an account's file is gone. Everything held for it goes; its keys re-bind later.
-- ARGV: prefix, tier, account
local tier, account = ARGV[2], ARGV[3]
local ids = redis.call('SMEMBERS', k_slots(tier, account))
for _, id in ipairs(ids) do redis.call('HDEL', k_bindings(tier), id) end
redis.call('DEL', k_slots(tier, account), k_cred(tier, account), k_account_usage(tier, account),
  k_refresh_cooldown(tier, account), k_refresh_failures(tier, account), k_refresh_error(tier, account))
redis.call('HDEL', k_blacklist(tier), account)
redis.call('HDEL', k_limited(tier), account)
redis.call('SREM', k_accounts(tier), account)
return #ids

-- Blacklists an account, in one step with the check that the tier still has it: a sync
-- removing the account in between would otherwise leave an orphan entry that a re-added
-- account would inherit.
-- ARGV: prefix, tier, account, entry ("<since ms>|<reason>")
local tier, account = ARGV[2], ARGV[3]
if redis.call('SISMEMBER', k_accounts(tier), account) == 0 then return 0 end
redis.call('HSET', k_blacklist(tier), account, ARGV[4])
return 1

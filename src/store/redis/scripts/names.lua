-- Key names, mirroring src/store/redis/keys.rs. Every script gets the prefix as ARGV[1].
local P = ARGV[1]
local function k_key(id) return P .. ':key:' .. id end
local function k_accounts(tier) return P .. ':accounts:' .. tier end
local function k_bindings(tier) return P .. ':bindings:' .. tier end
local function k_slots(tier, account) return P .. ':slots:' .. tier .. ':' .. account end
local function k_blacklist(tier) return P .. ':blacklist:' .. tier end
local function k_limited(tier) return P .. ':limited:' .. tier end
local function k_cred(tier, account) return P .. ':cred:' .. tier .. ':' .. account end
local function k_window(id, family) return P .. ':window:' .. id .. ':' .. family end
local function k_withdrawn(count_id) return P .. ':withdrawn:' .. count_id end
local function k_settled(settle_id) return P .. ':settled:' .. settle_id end
local function k_key_usage(id) return P .. ':usage:key:' .. id end
local function k_account_usage(tier, account) return P .. ':usage:acct:' .. tier .. ':' .. account end
local function k_refresh_lock() return P .. ':refresh:lock' end
local function k_refresh_mutex() return P .. ':refresh:mutex' end
local function k_refresh_paused() return P .. ':refresh:paused' end
local function k_refresh_cooldown(tier, account) return P .. ':refresh:cooldown:' .. tier .. ':' .. account end
local function k_refresh_failures(tier, account) return P .. ':refresh:failures:' .. tier .. ':' .. account end
local function k_refresh_error(tier, account) return P .. ':refresh:error:' .. tier .. ':' .. account end

-- Moves a key's slot to `account` (or frees it when account is false).
local function rebind(tier, id, account)
  local old = redis.call('HGET', k_bindings(tier), id)
  if old then redis.call('SREM', k_slots(tier, old), id) end
  if account then
    redis.call('HSET', k_bindings(tier), id, account)
    redis.call('SADD', k_slots(tier, account), id)
  else
    redis.call('HDEL', k_bindings(tier), id)
  end
end

local function usable(tier, account)
  return redis.call('SISMEMBER', k_accounts(tier), account) == 1
    and redis.call('HEXISTS', k_blacklist(tier), account) == 0
end

-- Gives one count back to a request window (never below zero).
local function give_back_count(wk)
  if tonumber(redis.call('HGET', wk, 'count') or '0') > 0 then
    redis.call('HINCRBY', wk, 'count', -1)
  end
end

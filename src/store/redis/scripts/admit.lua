-- Checks the key, binds it if needed (least-loaded usable account with a free slot, ties by
-- name), checks the token, counts the request in its window: one round trip, atomic.
-- ARGV: prefix, tier, key_id, family ('' = uncounted), limit (0 = unlimited), window_ms, now, slots,
--       count_id (names the count in the window hash as field 'a:<count_id>'; '' = none)
local tier, id, family = ARGV[2], ARGV[3], ARGV[4]
local limit, window_ms, now, slots = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local count_id = ARGV[9] or ''

-- The proxy gave up waiting for this admission (its client has had a 503): never count it.
if count_id ~= '' and redis.call('EXISTS', k_withdrawn(count_id)) == 1 then return {'withdrawn'} end

local rec = redis.call('HMGET', k_key(id), 'status', 'expires', 'fixed')
if not rec[1] then return {'unknown'} end
if rec[1] == 'revoked' then return {'revoked'} end
if rec[1] == 'expired' or (rec[2] and rec[2] ~= '' and tonumber(rec[2]) <= now) then return {'expired'} end
local fixed = rec[3]
if fixed == '' then fixed = false end

local current = redis.call('HGET', k_bindings(tier), id)
local account, newly = false, 0
if fixed then
  if not usable(tier, fixed) then return {'fixed_unavailable', fixed} end
  account = fixed
  if current ~= fixed then
    -- No sequence may overfill an account, a fixed key's own included.
    if redis.call('SCARD', k_slots(tier, fixed)) >= slots then return {'fixed_full', fixed} end
    rebind(tier, id, fixed); newly = 1
  end
elseif current and usable(tier, current) then
  account = current
else
  local names = redis.call('SMEMBERS', k_accounts(tier))
  table.sort(names)
  local best, best_n, any = false, false, false
  for _, name in ipairs(names) do
    if redis.call('HEXISTS', k_blacklist(tier), name) == 0 then
      any = true
      local n = redis.call('SCARD', k_slots(tier, name))
      if n < slots and (not best_n or n < best_n) then best, best_n = name, n end
    end
  end
  if not any then return {'no_accounts'} end
  if not best then return {'capacity'} end
  account = best
  rebind(tier, id, account)
  newly = 1
end

local used = redis.call('SCARD', k_slots(tier, account))
local cred = redis.call('HMGET', k_cred(tier, account), 'access', 'refresh', 'expires')
if not cred[1] then return {'fixed_unavailable', account} end
local expires = cred[3] or ''
if expires ~= '' and tonumber(expires) <= now then
  return {'token_expired', account}
end

local started, count = '', ''
if family ~= '' and limit > 0 then
  local wk = k_window(id, family)
  local w = redis.call('HMGET', wk, 'started', 'count')
  local s, c = tonumber(w[1]), tonumber(w[2]) or 0
  if not s or now >= s + window_ms then
    -- A new window: counts of the old one (and their names) are gone with it.
    s = now; c = 0
    redis.call('DEL', wk)
  end
  if c >= limit then return {'rate_limited', tostring(s + window_ms), account} end
  c = c + 1
  if count_id ~= '' then
    redis.call('HSET', wk, 'started', s, 'count', c, 'a:' .. count_id, '1')
  else
    redis.call('HSET', wk, 'started', s, 'count', c)
  end
  redis.call('PEXPIREAT', wk, s + window_ms + 60000)
  started, count = tostring(s), tostring(c)
end
return {'ok', account, tostring(newly), tostring(used), cred[1], cred[2] or '', expires, started, count}

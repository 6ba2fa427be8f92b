-- Ends a served request: its usage added to the key's and the account's totals, once per
-- settle id however often it is sent (a settle whose answer was lost is sent again); its
-- count stays, its name goes (nothing can give it back any more). Refunds go through give_back.lua.
-- ARGV: prefix, tier, key_id, account, family, count_id ('' = uncounted),
--       input, output, cache_creation, cache_read,
--       settle_id, keep_ms (how long the settle is remembered; longer than it is sent again)
local tier, id, account, family, count_id = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local settle_id, keep_ms = ARGV[11], ARGV[12]
if not redis.call('SET', k_settled(settle_id), '1', 'NX', 'PX', keep_ms) then return 0 end
if count_id ~= '' then redis.call('HDEL', k_window(id, family), 'a:' .. count_id) end
local fields = {'input_tokens', 'output_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'}
for _, hk in ipairs({k_key_usage(id), k_account_usage(tier, account)}) do
  redis.call('HINCRBY', hk, 'requests', 1)
  for i, f in ipairs(fields) do
    local n = tonumber(ARGV[6 + i])
    if n > 0 then redis.call('HINCRBY', hk, f, n) end
  end
end
return 1

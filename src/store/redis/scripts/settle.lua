-- Ends a request: usage added when served, the window given back when refunded (a refund of
-- a named count goes through give_back.lua instead).
-- ARGV: prefix, tier, key_id, account, family, window_started ('' = none), refund (0/1),
--       input, output, cache_creation, cache_read, count_id ('' = none)
local tier, id, account, family, started = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local count_id = ARGV[12] or ''
if ARGV[7] == '1' then
  if started ~= '' then
    local wk = k_window(id, family)
    local w = redis.call('HMGET', wk, 'started', 'count')
    if w[1] == started and tonumber(w[2] or '0') > 0 then
      redis.call('HINCRBY', wk, 'count', -1)
    end
  end
  return 0
end
-- Served: the count stays, its name goes (nothing can give it back any more).
if count_id ~= '' then redis.call('HDEL', k_window(id, family), 'a:' .. count_id) end
local fields = {'input_tokens', 'output_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens'}
for _, hk in ipairs({k_key_usage(id), k_account_usage(tier, account)}) do
  redis.call('HINCRBY', hk, 'requests', 1)
  for i, f in ipairs(fields) do
    local n = tonumber(ARGV[7 + i])
    if n > 0 then redis.call('HINCRBY', hk, f, n) end
  end
end
return 1

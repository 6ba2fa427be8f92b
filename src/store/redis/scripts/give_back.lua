-- Gives a named count back, once: if the admission ran (its name is still in the window), its
-- count comes back; otherwise (not run yet, already settled, or its window is over) an
-- admission under that name refuses itself should it still run. Used to withdraw an
-- admission whose answer never reached the proxy, and for refunds on Redis.
-- ARGV: prefix, tier, key_id, family, count_id, keep_ms (how long a late admission is refused)
local id, family, count_id, keep_ms = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local wk = k_window(id, family)
if redis.call('HDEL', wk, 'a:' .. count_id) == 1 then
  give_back_count(wk)
  return 'given_back'
end
redis.call('SET', k_withdrawn(count_id), '1', 'PX', keep_ms)
return 'refused'

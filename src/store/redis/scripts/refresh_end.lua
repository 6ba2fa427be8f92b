-- Records a refresh attempt's outcome for every instance and frees the mutex.
-- ARGV: prefix, tier, account, now, outcome (success|failure|paused|skipped), lock_ms,
--       cooldown_ms, pause_ms, error text, owner
local tier, account, now, outcome = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if redis.call('GET', k_refresh_mutex()) == ARGV[10] then redis.call('DEL', k_refresh_mutex()) end
if outcome == 'success' then
  redis.call('SET', k_refresh_lock(), '1', 'PX', tonumber(ARGV[6]))
  redis.call('DEL', k_refresh_failures(tier, account), k_refresh_cooldown(tier, account), k_refresh_error(tier, account))
elseif outcome == 'failure' then
  redis.call('ZADD', k_refresh_failures(tier, account), now, tostring(now) .. ':' .. ARGV[10])
  redis.call('SET', k_refresh_cooldown(tier, account), '1', 'PX', tonumber(ARGV[7]))
  redis.call('SET', k_refresh_error(tier, account), ARGV[9])
elseif outcome == 'paused' then
  redis.call('SET', k_refresh_paused(), '1', 'PX', tonumber(ARGV[8]))
end
return 1

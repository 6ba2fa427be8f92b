-- May this instance refresh this account now? Holds every rule shared by all instances:
-- the success lock, the endpoint pause, the account's cooldown and failure cap, and one
-- refresh at a time anywhere. Answers {'ok'} or {reason, wait_ms}.
-- ARGV: prefix, tier, account, now, failure_window_ms, max_failures, mutex_ms, owner
local tier, account = ARGV[2], ARGV[3]
local now, window, max, mutex_ms = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function wait(key) local t = redis.call('PTTL', key); if t > 0 then return t end return false end
local w = wait(k_refresh_paused()); if w then return {'paused', tostring(w)} end
w = wait(k_refresh_lock()); if w then return {'locked', tostring(w)} end
w = wait(k_refresh_cooldown(tier, account)); if w then return {'cooldown', tostring(w)} end
redis.call('ZREMRANGEBYSCORE', k_refresh_failures(tier, account), '-inf', now - window)
if redis.call('ZCARD', k_refresh_failures(tier, account)) >= max then return {'exhausted', '0'} end
-- Our own mutex (an answer lost to a timeout left it behind) is ours to take again.
local holder = redis.call('GET', k_refresh_mutex())
if holder and holder ~= ARGV[8] then
  -- Someone else is refreshing: look again soon (the mutex only bounds a crashed holder).
  return {'busy', tostring(math.min(math.max(wait(k_refresh_mutex()) or 50, 1), 250))}
end
redis.call('SET', k_refresh_mutex(), ARGV[8], 'PX', mutex_ms)
return {'ok', '0'}

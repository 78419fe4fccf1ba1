"""The Lua script behind the shared (Redis) breaker state; one atomic step per call.

KEYS[1] state hash {st, gen, opened, succ}; KEYS[2] probe slots (sorted set token -> expiry);
window buckets are ARGV[1] .. epoch (hashes {c, f, s}); every key shares one hash tag.
Time is Redis's own (TIME), so processes with unrelated clocks agree.
"""

from __future__ import annotations

BREAKER_LUA = r"""
local skey, pkey = KEYS[1], KEYS[2]
local wprefix, op = ARGV[1], ARGV[2]
local threshold, period, nbuckets = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local reset, maxprobes, needed = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local rate, mincalls, slowrate = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local ttl, probettl = tonumber(ARGV[12]), tonumber(ARGV[13])
local a1, a2, a3, a4 = ARGV[14], ARGV[15], ARGV[16], ARGV[17]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local width = math.max(1, math.floor(period / nbuckets))
local epoch = math.floor(now / width)

local st = redis.call('HGET', skey, 'st') or 'closed'
local gen = tonumber(redis.call('HGET', skey, 'gen') or '0')
local opened = tonumber(redis.call('HGET', skey, 'opened') or '0')

local function window()
  local c, f, s = 0, 0, 0
  for e = epoch - nbuckets + 1, epoch do
    local v = redis.call('HMGET', wprefix .. e, 'c', 'f', 's')
    c = c + tonumber(v[1] or '0'); f = f + tonumber(v[2] or '0'); s = s + tonumber(v[3] or '0')
  end
  return c, f, s
end

local function clear_window()
  for e = epoch - nbuckets + 1, epoch do redis.call('DEL', wprefix .. e) end
end

local function set_state(new)
  st = new
  gen = gen + 1
  redis.call('HSET', skey, 'st', st, 'gen', gen, 'succ', 0)
  redis.call('DEL', pkey)
  if new == 'open' then
    opened = now
    redis.call('HSET', skey, 'opened', now)
  elseif new == 'closed' or new == 'forced_closed' then
    clear_window()
  end
end

local function retry_after()
  if st == 'open' then return math.max(0, opened + reset - now) end
  if st == 'forced_open' then return reset end
  return 0
end

local function should_trip(c, f, s)
  if rate < 0 then
    if f >= threshold then return true end
  elseif c >= mincalls and f / c >= rate then
    return true
  end
  return slowrate >= 0 and c >= mincalls and s / c >= slowrate
end

local granted = 0
if op == 'sync' then
  local dc, df, ds = tonumber(a1), tonumber(a2), tonumber(a3)
  if (st == 'closed' or st == 'forced_closed') and dc > 0 then
    local key = wprefix .. epoch
    redis.call('HINCRBY', key, 'c', dc)
    if df > 0 then redis.call('HINCRBY', key, 'f', df) end
    if ds > 0 then redis.call('HINCRBY', key, 's', ds) end
    redis.call('PEXPIRE', key, period * 2)
    if st == 'closed' then
      local c, f, s = window()
      if should_trip(c, f, s) then set_state('open') end
    end
  end
elseif op == 'probe' then
  if st == 'open' and now >= opened + reset then set_state('half_open') end
  if st == 'half_open' then
    redis.call('ZREMRANGEBYSCORE', pkey, '-inf', now)
    if redis.call('ZCARD', pkey) < maxprobes then
      redis.call('ZADD', pkey, now + probettl, a1)
      redis.call('PEXPIRE', pkey, probettl * 2)
      granted = 1
    end
  end
elseif op == 'done' then
  local removed = redis.call('ZREM', pkey, a1)
  if st == 'half_open' and tonumber(a2) == gen and removed == 1 then
    if a3 == '1' then
      local succ = redis.call('HINCRBY', skey, 'succ', 1)
      if succ >= needed then set_state('closed') end
    else
      set_state('open')
    end
  end
elseif op == 'release' then
  redis.call('ZREM', pkey, a1)
elseif op == 'force' then
  if st ~= a1 or a1 == 'closed' then set_state(a1) end
end
redis.call('PEXPIRE', skey, ttl)
local c, f, s = window()
return {st, gen, retry_after(), granted, c, f, s}
"""

"""The Lua script behind the shared (Redis) breaker state, one atomic step per call, and
what the sync and async stores share around it: its keys and arguments, their settings,
and how a failed call is told apart (Redis refused the script, or could not answer).

KEYS[1] state hash {st, gen, opened, succ}; KEYS[2] probe slots (sorted set token -> expiry);
KEYS[3] the rolling window, one hash with fields ``<epoch>:c|f|s`` (calls, failures, slow
calls per bucket), from which buckets that left the window are dropped. The script touches
only the keys it is given, and the three share one hash tag, so it runs on Redis Cluster too.
Time is Redis's own (TIME), so processes with unrelated clocks agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core.exceptions import ConfigError
from .._core.validate import check_float

if TYPE_CHECKING:
    from .._config.policy import BreakerConfig

__all__ = ["BREAKER_LUA", "check_store_args", "probe_ttl", "script_call", "store_failure"]

BREAKER_LUA = r"""
local skey, pkey, wkey = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]
local threshold, period, nbuckets = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local reset, maxprobes, needed = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local rate, mincalls, slowrate = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local ttl, probettl = tonumber(ARGV[11]), tonumber(ARGV[12])
local a1, a2, a3 = ARGV[13], ARGV[14], ARGV[15]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local width = math.max(1, math.floor(period / nbuckets))
local epoch = math.floor(now / width)
local oldest = epoch - nbuckets + 1

local st = redis.call('HGET', skey, 'st') or 'closed'
local gen = tonumber(redis.call('HGET', skey, 'gen') or '0')
local opened = tonumber(redis.call('HGET', skey, 'opened') or '0')

local function window()
  local c, f, s = 0, 0, 0
  local flat = redis.call('HGETALL', wkey)
  local stale = {}
  for i = 1, #flat, 2 do
    local field = flat[i]
    local sep = string.find(field, ':', 1, true)
    local e = sep and tonumber(string.sub(field, 1, sep - 1))
    if e == nil or e < oldest then
      table.insert(stale, field)
    elseif e <= epoch then
      local kind, v = string.sub(field, sep + 1), tonumber(flat[i + 1]) or 0
      if kind == 'c' then c = c + v elseif kind == 'f' then f = f + v else s = s + v end
    end
  end
  for i = 1, #stale, 500 do
    redis.call('HDEL', wkey, unpack(stale, i, math.min(i + 499, #stale)))
  end
  return c, f, s
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
    redis.call('DEL', wkey)
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
    redis.call('HINCRBY', wkey, epoch .. ':c', dc)
    if df > 0 then redis.call('HINCRBY', wkey, epoch .. ':f', df) end
    if ds > 0 then redis.call('HINCRBY', wkey, epoch .. ':s', ds) end
    redis.call('PEXPIRE', wkey, period * 2)
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


def check_store_args(
    cls: str, prefix: object, sync_interval: float, recheck_interval: float
) -> tuple[str, float, float]:
    """A store's validated ``prefix``, ``sync_interval`` and ``recheck_interval``."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(
            f"{cls}(prefix=...) must be a non-empty string, got {prefix!r}", field="prefix"
        )
    sync_interval = check_float(f"{cls}(sync_interval=...)", sync_interval, 0, 3600)
    recheck_interval = check_float(
        f"{cls}(recheck_interval=...)", recheck_interval, 0, 3600, low_open=True
    )
    return prefix, sync_interval, recheck_interval


def script_call(
    prefix: str, config: BreakerConfig, name: str, op: str, args: tuple[str | int, ...]
) -> tuple[list[str], list[str | int | float]]:
    """KEYS and ARGV of one step of breaker ``name``: its three keys share the hash tag
    ``{name}``, so they live in one cluster slot."""
    base = f"{prefix}:{{{name}}}"
    rate = -1.0 if config.failure_rate_threshold is None else config.failure_rate_threshold
    slow = -1.0 if config.slow_call_rate_threshold is None else config.slow_call_rate_threshold
    longest = max(config.monitoring_period, config.reset_timeout)
    argv: list[str | int | float] = [
        op, config.failure_threshold, int(config.monitoring_period * 1000),
        config.window_buckets, int(config.reset_timeout * 1000), config.half_open_max_calls,
        config.success_threshold, rate, config.minimum_calls, slow, int(longest * 10_000),
        int(probe_ttl(config) * 1000), *args,
    ]  # fmt: skip
    argv += [""] * (15 - len(argv))
    return [base + ":s", base + ":p", base + ":w"], argv


def probe_ttl(config: BreakerConfig) -> float:
    """Seconds a probe slot is held in Redis before it expires unreleased."""
    return max(config.call_timeout or 0.0, config.reset_timeout, 1.0)


def store_failure(error: BaseException) -> str | None:
    """``"refused"`` when Redis answered with an error reply to the script (a
    misconfiguration), ``"unreachable"`` when it could not answer (down, timing out, failing
    over, a cluster without a primary for the slot), ``None`` for anything else."""
    from redis import exceptions as rex

    failing_over = (
        rex.ReadOnlyError, rex.ClusterDownError, rex.TryAgainError, rex.AskError,
    )  # fmt: skip
    if isinstance(error, rex.ResponseError) and not isinstance(error, failing_over):
        return "refused"
    if isinstance(error, rex.RedisError | rex.RedisClusterException | OSError):
        return "unreachable"
    return None

"""State shared across processes through Redis: the fleet-wide breaker store and its Lua scripts."""

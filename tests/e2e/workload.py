"""A workload process for the end-to-end alerting test: calls an upstream (and Redis) through
resilience-otel and exposes /metrics, until its stdin closes.

    python tests/e2e/workload.py QUOTE_URL

Prints one JSON line ``{"metrics_port": N}`` once serving.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import threading
import time

import httpx
import redis

from resilience_otel import (
    BreakerConfig,
    CircuitOpenError,
    HealthConfig,
    HealthMonitor,
    InMemoryDeadLetterQueue,
    Policy,
    ResilientTransport,
    RetryConfig,
)
from resilience_otel import redis as resilient_redis
from resilience_otel.prometheus import setup_prometheus

POLICY = Policy(
    service="quotes",
    breaker=BreakerConfig(failure_threshold=5, monitoring_period=5.0, reset_timeout=1.0),
    retry=RetryConfig(max_attempts=2, base_delay=0.01, max_delay=0.02, budget=None),
)


def main() -> int:
    upstream = sys.argv[1]
    prom = setup_prometheus(port=0)
    monitor = HealthMonitor(
        HealthConfig(window=10.0, minimum_calls=5), meter_provider=prom.meter_provider
    )
    # A small queue so the dead-letter drops panel and alert see data too.
    dead = InMemoryDeadLetterQueue(maxlen=5)
    transport = ResilientTransport(policy=POLICY, dead_letters=dead, observers=[monitor])
    client = httpx.Client(transport=transport, timeout=2.0)
    cache = resilient_redis.instrument(
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1.0),
        policy=Policy(service="cache"),
        observers=[monitor],
    )
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"metrics_port": prom.port}), flush=True)
    cache.set("resilience-e2e:quote", "187.2")
    for number in itertools.count():
        if stop.is_set():
            break
        with contextlib.suppress(CircuitOpenError, httpx.HTTPError):
            client.get(upstream)
        cache.get("resilience-e2e:quote")
        if number % 10 == 0:  # a wrong-type command now and then: database error panels get data
            with contextlib.suppress(redis.exceptions.ResponseError):
                cache.lpush("resilience-e2e:quote", "x")
        time.sleep(0.02)
    prom.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

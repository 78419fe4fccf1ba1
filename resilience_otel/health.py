"""Per-service health: status, score, response time and error rate, from every call through
the engine (passive) and optional active checks (HTTP GET, Redis PING, PostgreSQL
``SELECT 1`` or any callable).

    monitor = HealthMonitor(HealthConfig.from_env())
    client = httpx.Client(transport=ResilientTransport(policy=p, observers=[monitor]))
    monitor.add_check("quotes", http_check("http://quotes.internal/health"))
    monitor.start()                           # or: await monitor.astart() inside a running loop
    serve_health(monitor, port=8081)          # /health /health/{service} /breakers /livez ...
"""

from __future__ import annotations

from ._health.http import HealthServer, health_app, serve_health
from ._health.monitor import (
    HealthCheck,
    HealthMonitor,
    HealthStatus,
    ResponseTime,
    SystemHealth,
    http_check,
    postgres_check,
    redis_check,
)

__all__ = [
    "HealthCheck",
    "HealthMonitor",
    "HealthServer",
    "HealthStatus",
    "ResponseTime",
    "SystemHealth",
    "health_app",
    "http_check",
    "postgres_check",
    "redis_check",
    "serve_health",
]

"""Attempt deadlines for the sync Redis Cluster client, as for the single-server client.

The sync cluster client reads each node's replies through that node's own ``redis.Redis``
(``redis_node.parse_response(connection, ...)``, also what its pipelines read with), which
redis-py creates per node, and again after a topology refresh. :func:`bound_cluster` hooks
``get_redis_connection(node)``, the one place the client (and its pipelines, on the nodes they
share) takes a node's ``redis.Redis``: the first time a node is seen, its ``parse_response`` is
bounded by the running attempt's deadline (the socket timeout is cut to the time left, as
:mod:`.deadline` does) and its pool's connect timeout is capped to the policy's attempt
timeout. Outside our attempts nothing changes, and neither does a topology refresh redis-py
runs after a failed attempt (it asks the healthy nodes first; an attempt cut at its deadline
must not make the refresh fail too).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from ..._config.policy import Policy
from .deadline import _on_connection

__all__ = ["bound_cluster"]

_refreshing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "resilience_otel_redis_cluster_refreshing", default=False
)


def bound_cluster(client: Any, policy: Policy) -> None:
    """Bound reads and connects of every node ``client`` (a sync cluster client) talks to."""
    limits = [t for t in (policy.breaker.call_timeout, policy.retry.total_timeout) if t]
    limit = min(limits) if limits else None
    get = client.get_redis_connection

    def get_redis_connection(node: Any) -> Any:
        redis_node = get(node)
        if redis_node is not None and not getattr(redis_node, "_resilience_bounded", False):
            _bound_node(redis_node, limit)
        return redis_node

    client.get_redis_connection = get_redis_connection
    _unbound_refresh(client.nodes_manager)


def _unbound_refresh(nodes_manager: Any) -> None:
    initialize = nodes_manager.initialize
    if getattr(initialize, "_resilience_unbound", False):
        return  # the nodes manager is shared with the client's pipelines

    def unbound_initialize(*args: Any, **kwargs: Any) -> Any:
        token = _refreshing.set(True)
        try:
            return initialize(*args, **kwargs)
        finally:
            _refreshing.reset(token)

    unbound_initialize._resilience_unbound = True  # type: ignore[attr-defined]
    nodes_manager.initialize = unbound_initialize


def _bound_node(redis_node: Any, limit: float | None) -> None:
    parse: Callable[..., Any] = redis_node.parse_response

    def parse_response(connection: Any, *args: Any, **options: Any) -> Any:
        if _refreshing.get():
            return parse(connection, *args, **options)
        return _on_connection(parse, connection, *args, **options)

    redis_node.parse_response = parse_response
    kwargs = getattr(redis_node.connection_pool, "connection_kwargs", None)
    if limit is not None and isinstance(kwargs, dict):
        current = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout")
        if current is None or (isinstance(current, int | float) and current > limit):
            kwargs["socket_connect_timeout"] = limit
    redis_node._resilience_bounded = True

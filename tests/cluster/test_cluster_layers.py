"""Which layer retries on a cluster client, and how cluster replies are classified (no sockets)."""

from __future__ import annotations

import pytest
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from resilience_otel import ErrorClass
from resilience_otel._clients.redis.cluster_retry import ClusterRetry, cluster_classifier
from resilience_otel._clients.redis.guard import in_single_try
from resilience_otel.redis import classify_redis

classify = cluster_classifier(classify_redis)


def failing(*errors: Exception) -> tuple[list[int], object]:
    """A ``do`` that raises ``errors`` in turn, then returns "ok"; and its call counter."""
    calls = [0]

    def do() -> str:
        calls[0] += 1
        if calls[0] <= len(errors):
            raise errors[calls[0] - 1]
        return "ok"

    return calls, do


def test_inside_our_attempts_the_cluster_retry_makes_no_whole_command_retries() -> None:
    """get_retries() is 0 inside an attempt and the replaced count outside it."""
    retry = ClusterRetry(Retry(NoBackoff(), 10))
    assert retry.get_retries() == 10
    assert in_single_try(retry.get_retries)() == 0


def test_inside_our_attempts_a_connection_error_is_tried_once() -> None:
    """A connection error inside our attempt is not retried by redis-py (the failure handler
    still runs, so redis-py can drop the connection)."""
    retry = ClusterRetry(Retry(NoBackoff(), 10, (rex.ConnectionError, rex.MovedError)))
    calls, do = failing(rex.ConnectionError("reset"))
    handled: list[Exception] = []
    with pytest.raises(rex.ConnectionError):
        in_single_try(retry.call_with_retry)(do, handled.append)
    assert (calls[0], len(handled)) == (1, 1)


def test_inside_our_attempts_redirects_in_a_transaction_are_still_followed() -> None:
    """MOVED, ASK and TRYAGAIN keep being followed by redis-py inside our attempts."""
    errors = (rex.ConnectionError, rex.MovedError, rex.AskError, rex.TryAgainError)
    retry = ClusterRetry(Retry(NoBackoff(), 0, errors))
    calls, do = failing(rex.MovedError("1 127.0.0.1:1"), rex.AskError("1 127.0.0.1:1"),
                        rex.TryAgainError())  # fmt: skip
    assert in_single_try(retry.call_with_retry)(do, lambda error: None) == "ok"
    assert calls[0] == 4


def test_outside_our_attempts_the_replaced_retry_runs_as_before() -> None:
    """Outside our attempts the scoped retry retries as the retry it replaced."""
    retry = ClusterRetry(Retry(NoBackoff(), 2))
    calls, do = failing(rex.ConnectionError("a"), rex.ConnectionError("b"))
    assert retry.call_with_retry(do, lambda error: None) == "ok"
    assert calls[0] == 3


@pytest.mark.parametrize(
    "error",
    [
        rex.ClusterDownError("CLUSTERDOWN The cluster is down"),
        rex.TryAgainError("TRYAGAIN"),
        rex.SlotNotCoveredError("slot 12 not covered"),
        rex.ClusterError("TTL exhausted."),
    ],
)
def test_what_a_cluster_refuses_is_transient_and_safe_to_resend(error: Exception) -> None:
    """CLUSTERDOWN, TRYAGAIN, an uncovered slot and a redirect loop out of hops: transient,
    and not sent (the command did not run), so even a write may be resent."""
    failure = classify(None, error)
    assert failure is not None
    assert (failure.error_class, failure.sent) == (ErrorClass.TRANSIENT, False)


def test_other_replies_keep_the_standalone_classification() -> None:
    """A WRONGTYPE reply stays permanent on a cluster client."""
    error = rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    assert classify(None, error) == classify_redis(None, error)


def test_a_cluster_with_no_reachable_node_is_a_transient_connection_failure() -> None:
    """redis-py's "cannot be connected" after a refused connect: transient, counted by the
    breaker, and not sent (the command never left)."""
    refused = rex.ConnectionError("Error 111 connecting to 127.0.0.1:7000. Connection refused.")
    error = rex.RedisClusterException(
        f"Redis Cluster cannot be connected. Please provide at least one reachable node: {refused}"
    )
    error.__context__ = refused  # raised while handling the refused connect, as redis-py does
    failure = classify(None, error)
    assert failure is not None
    assert (failure.error_class, failure.counts_as_failure, failure.sent) == (
        ErrorClass.TRANSIENT, True, False,
    )  # fmt: skip


def test_other_cluster_client_errors_stay_permanent() -> None:
    """A client-side cluster error that is not about reachability stays permanent."""
    failure = classify(None, rex.RedisClusterException("Cluster mode is not enabled on this node"))
    assert failure is not None
    assert failure.error_class is ErrorClass.PERMANENT

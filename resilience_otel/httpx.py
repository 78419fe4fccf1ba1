"""Resilient httpx transports: breaker, safe retries, timeouts and dead letters for any
``httpx.BaseTransport`` / ``httpx.AsyncBaseTransport``.

Usage::

    client = httpx.Client(transport=ResilientTransport(policy=Policy(service="alpaca")))

Retry safety: a request is resent after it may have reached the server only when its method
is idempotent (GET HEAD OPTIONS PUT DELETE TRACE) or it carries an ``Idempotency-Key``
header, and its body can be re-read (not a one-shot stream). Failures that certainly happened
before sending (connection refused, connect or pool timeout) are retried for every method.
After the last retryable *response* the caller gets that response; after an *exception*
that was retried it gets a :class:`RetriesExhaustedError` that is also of the exception's own
type, and when no resend was made, the exception itself.

Response bodies are read inside the attempt for ``client.get()`` and friends, and reach the
caller unread for ``client.stream()``: a stream is
never resent once its head arrived, and its call ends when its body does.
"""

from __future__ import annotations

from ._clients.http.transport import (
    IDEMPOTENT_METHODS,
    AsyncResilientTransport,
    HttpClassifier,
    ResilientTransport,
    classify_http,
)

__all__ = [
    "IDEMPOTENT_METHODS",
    "AsyncResilientTransport",
    "HttpClassifier",
    "ResilientTransport",
    "classify_http",
]

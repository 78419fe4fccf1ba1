"""Observers: how telemetry, health and the demo learn what the engine does.

The engine calls these methods with plain values (no event objects are built when nobody
listens). An observer must be quick and must not raise; exceptions are logged and ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._core.breaker import CircuitBreaker, StateChange
    from .._core.classify import ErrorClass, FailureKind
    from .._deadletters.base import DeadLetter

__all__ = ["Observer"]


class Observer:
    """Base class with no-op hooks; override the ones you need.

    ``outcome`` is ``"success"``, ``"failure"`` or ``"rejected"``; ``client`` is ``"http"``,
    ``"redis"`` or ``"postgresql"``.
    """

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        """Attempt ``attempt`` failed with ``reason``; the next starts after ``delay`` seconds."""

    def call_rejected(self, service: str, client: str, retry_after: float) -> None:
        """An open breaker rejected a call before it reached the upstream."""

    def call_finished(
        self,
        service: str,
        client: str,
        outcome: str,
        error_class: ErrorClass | None,
        attempts: int,
        duration: float,
    ) -> None:
        """A logical call ended (after all its attempts); ``duration`` covers them all."""

    def failover(self, service: str, client: str, error_type: str) -> None:
        """An attempt found that its node is no longer the primary (``error_type``: the reply
        code or SQLSTATE, e.g. ``READONLY``, ``25006``); its connection is being retired."""

    def retries_exhausted(self, service: str, client: str, attempts: int) -> None:
        """A retryable failure ended the call because no further attempt was allowed."""

    def dead_lettered(self, letter: DeadLetter) -> None:
        """``letter`` was put in the dead-letter queue."""

    def dead_letter_dropped(self, service: str) -> None:
        """A full dead-letter queue dropped an entry of ``service`` to make room."""

    def state_changed(self, service: str, change: StateChange) -> None:
        """A breaker of ``service`` changed state."""

    def breaker_added(self, service: str, breaker: CircuitBreaker) -> None:
        """A client of ``service`` now uses ``breaker`` (endpoints list breakers this way)."""

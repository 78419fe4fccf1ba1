"""OpenTelemetry emission: attempt spans, span events and the resilience metrics.

Only the OTel API is used here; with no SDK configured every call lands on the API's no-op
implementations. Instruments are created once per (tracer provider, meter provider) pair.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import context, metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import semconv as sc
from .errortext import ErrorText, error_text, record_error
from .events import Observer

if TYPE_CHECKING:
    from .._core.breaker import CircuitBreaker, StateChange
    from .._core.classify import ErrorClass, Failure, FailureKind
    from .._deadletters.base import DeadLetter

_log = logging.getLogger("resilience_otel")

__all__ = ["AttemptTrace", "MetricsObserver", "Telemetry", "instrumentation_suppressed"]

# The keys the OTel contrib instrumentations read to stay quiet (opentelemetry.context).
SUPPRESS_INSTRUMENTATION_KEY: str = context._SUPPRESS_INSTRUMENTATION_KEY
SUPPRESS_HTTP_INSTRUMENTATION_KEY: str = context._SUPPRESS_HTTP_INSTRUMENTATION_KEY

_VERSION = "0.1.0"


def instrumentation_suppressed() -> bool:
    """Whether the caller asked OTel instrumentations to stay quiet."""
    return bool(context.get_value(SUPPRESS_INSTRUMENTATION_KEY))


class AttemptTrace:
    """The span an attempt reports to, and what its HTTP duration metric is labelled with.

    ``owned``: the span is this attempt's and ends with it (HTTP). Otherwise someone else
    ends it: opentelemetry-instrumentation-httpx (its own attempt span), or a database shell
    whose one span covers the whole operation (``per_call``; failed attempts become events
    and the shell sets the final status). ``describe`` gives the safe text of an error.
    """

    __slots__ = ("describe", "metric_attributes", "owned", "per_call", "span")

    def __init__(
        self,
        span: Span,
        metric_attributes: dict[str, Any] | None,
        owned: bool,
        per_call: bool = False,
        describe: ErrorText = error_text,
    ) -> None:
        self.span = span
        self.metric_attributes = metric_attributes
        self.owned = owned
        self.per_call = per_call
        self.describe = describe


class _Tally:
    """A monotonic counter kept in this process and reported through an observable counter.

    Bounded: at most ``_MAX_SERIES`` label sets (label values come from fixed sets and the
    policies' service names); beyond that new label sets are dropped and logged once.
    """

    _MAX_SERIES = 10_000
    __slots__ = ("_counts", "_labels", "_lock", "_warned")

    def __init__(self, meter: Any, spec: tuple[str, str, str], labels: tuple[str, ...]) -> None:
        self._labels = labels
        self._counts: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()
        self._warned = False
        meter.create_observable_counter(
            spec[0], callbacks=[self._observe], unit=spec[1], description=spec[2]
        )

    def add(self, *values: str) -> None:
        """Count one event with these label values (in the order of ``labels``)."""
        with self._lock:
            count = self._counts.get(values)
            if count is None and len(self._counts) >= self._MAX_SERIES:
                if not self._warned:
                    self._warned = True
                    _log.warning("metric series limit reached; new label sets are dropped")
                return
            self._counts[values] = (count or 0) + 1

    def value(self, *values: str) -> int:
        """The count so far for these label values."""
        with self._lock:
            return self._counts.get(values, 0)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._counts.items())
        labels = self._labels
        return [Observation(n, dict(zip(labels, key, strict=True))) for key, n in items]


class Telemetry:
    """A tracer plus every resilience instrument, for one provider pair.

    Use :meth:`get`, which caches per provider pair, rather than the constructor.
    """

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._own_tracer_provider = tracer_provider is not None
        self._own_meter_provider = meter_provider is not None
        self.tracer = trace.get_tracer(sc.SCOPE_NAME, _VERSION, tracer_provider)
        meter = metrics.get_meter(sc.SCOPE_NAME, _VERSION, meter_provider)
        # Counters are tallied in process and read at collection time: counting a call is a
        # dict update instead of an SDK measurement (which hashes its attributes every time).
        self.calls = _Tally(meter, sc.CALLS, (sc.SERVICE, sc.CLIENT, sc.OUTCOME, sc.ERROR_CLASS))
        self.call_duration = meter.create_histogram(
            sc.CALL_DURATION[0],
            sc.CALL_DURATION[1],
            sc.CALL_DURATION[2],
            explicit_bucket_boundaries_advisory=sc.CALL_DURATION_BUCKETS,
        )
        self.retries = _Tally(meter, sc.RETRIES, (sc.SERVICE, sc.CLIENT, sc.REASON))
        self.retries_exhausted = _Tally(meter, sc.RETRIES_EXHAUSTED, (sc.SERVICE, sc.CLIENT))
        self.transitions = _Tally(
            meter, sc.BREAKER_TRANSITIONS, (sc.SERVICE, sc.FROM_STATE, sc.TO_STATE)
        )
        self.dead_letters = _Tally(meter, sc.DEAD_LETTERS, (sc.SERVICE, sc.REASON))
        self.dead_letters_dropped = _Tally(meter, sc.DEAD_LETTERS_DROPPED, (sc.SERVICE,))
        self.failovers = _Tally(meter, sc.FAILOVERS, (sc.SERVICE, sc.DB_SYSTEM_NAME))
        self.http_duration = meter.create_histogram(
            sc.HTTP_CLIENT_REQUEST_DURATION[0],
            sc.HTTP_CLIENT_REQUEST_DURATION[1],
            sc.HTTP_CLIENT_REQUEST_DURATION[2],
            explicit_bucket_boundaries_advisory=sc.HTTP_DURATION_BUCKETS,
        )
        self.db_duration = meter.create_histogram(
            sc.DB_CLIENT_OPERATION_DURATION[0],
            sc.DB_CLIENT_OPERATION_DURATION[1],
            sc.DB_CLIENT_OPERATION_DURATION[2],
            explicit_bucket_boundaries_advisory=sc.DB_DURATION_BUCKETS,
        )
        self._breakers: list[tuple[str, weakref.ref[CircuitBreaker]]] = []
        self._lock = threading.Lock()
        meter.create_observable_gauge(
            sc.BREAKER_STATE[0],
            callbacks=[self._observe_breakers],
            unit=sc.BREAKER_STATE[1],
            description=sc.BREAKER_STATE[2],
        )

    def tracing_live(self) -> bool:
        """Whether spans can go anywhere: a provider was given or the global one is set.

        Until an SDK is installed the API hands out proxies that record nothing; skipping
        the span work then keeps telemetry nearly free.
        """
        return self._own_tracer_provider or not isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider
        )

    def metrics_live(self) -> bool:
        """Whether measurements can go anywhere (see :meth:`tracing_live`)."""
        return self._own_meter_provider or not isinstance(
            metrics.get_meter_provider(), _ProxyMeterProvider
        )

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def get(tracer_provider: Any = None, meter_provider: Any = None) -> Telemetry:
        """The shared :class:`Telemetry` of a provider pair (``None``: the global providers)."""
        return Telemetry(tracer_provider, meter_provider)

    def watch_breaker(self, service: str, breaker: CircuitBreaker) -> None:
        """Report ``breaker``'s state in the state gauge for as long as it lives."""
        with self._lock:
            self._breakers = [(s, r) for s, r in self._breakers if r() not in (None, breaker)]
            self._breakers.append((service, weakref.ref(breaker)))

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        counts: dict[str, dict[str, int]] = {}
        with self._lock:
            alive = [(s, r()) for s, r in self._breakers]
        for service, breaker in alive:
            if breaker is None:
                continue
            per_state = counts.setdefault(service, dict.fromkeys(sc.BREAKER_STATE_VALUES, 0))
            per_state[breaker.state.value] += 1
        return list(_state_observations(counts))


def _state_observations(counts: dict[str, dict[str, int]]) -> Iterator[Observation]:
    for service, per_state in counts.items():
        for state, value in per_state.items():
            yield Observation(value, {sc.SERVICE: service, sc.STATE: state})


class MetricsObserver(Observer):
    """Turns engine events into the resilience metrics and span events."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._attributes: dict[tuple[str, ...], dict[str, str]] = {}

    def _attrs(self, *pairs: str) -> dict[str, str]:
        # Label sets are few and fixed; build each dict once.
        cached = self._attributes.get(pairs)
        if cached is None:
            cached = dict(zip(pairs[::2], pairs[1::2], strict=True))
            if len(self._attributes) < 4096:
                self._attributes[pairs] = cached
        return cached

    def call_finished(
        self,
        service: str,
        client: str,
        outcome: str,
        error_class: ErrorClass | None,
        attempts: int,
        duration: float,
    ) -> None:
        t = self.telemetry
        if not t.metrics_live():
            return
        t.calls.add(service, client, outcome, "none" if error_class is None else error_class.value)
        t.call_duration.record(
            duration, self._attrs(sc.SERVICE, service, sc.CLIENT, client, sc.OUTCOME, outcome)
        )

    def retry_scheduled(
        self, service: str, client: str, attempt: int, delay: float, reason: FailureKind
    ) -> None:
        self.telemetry.retries.add(service, client, reason.value)

    def retries_exhausted(self, service: str, client: str, attempts: int) -> None:
        self.telemetry.retries_exhausted.add(service, client)

    def failover(self, service: str, client: str, error_type: str) -> None:
        self.telemetry.failovers.add(service, client)
        span = trace.get_current_span()  # the database operation's span
        if span.is_recording():
            attributes = {sc.DB_SYSTEM_NAME: client, sc.ERROR_TYPE: error_type}
            span.add_event(sc.EVENT_FAILOVER, attributes)

    def call_rejected(self, service: str, client: str, retry_after: float) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                sc.EVENT_REJECTED,
                {sc.RESILIENCE_SERVICE: service, sc.RESILIENCE_RETRY_AFTER: retry_after},
            )

    def dead_lettered(self, letter: DeadLetter) -> None:
        self.telemetry.dead_letters.add(letter.service, letter.reason.value)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                sc.EVENT_DEAD_LETTER,
                {
                    sc.RESILIENCE_SERVICE: letter.service,
                    sc.RESILIENCE_DEAD_LETTER_REASON: letter.reason.value,
                },
            )

    def dead_letter_dropped(self, service: str) -> None:
        self.telemetry.dead_letters_dropped.add(service)

    def state_changed(self, service: str, change: StateChange) -> None:
        self.telemetry.transitions.add(service, change.from_state.value, change.to_state.value)


def finish_attempt(
    telemetry: Telemetry,
    trace_: AttemptTrace,
    *,
    attempt: int,
    error: BaseException | None,
    failure: Failure | None,
    duration: float,
    retry: tuple[float, FailureKind] | None,
    change: StateChange | None,
) -> None:
    """Label, annotate and end an attempt span; record the HTTP duration metric.

    ``change`` is the breaker transition this attempt's outcome caused, if any.
    """
    span = trace_.span
    attrs = trace_.metric_attributes
    if failure is not None and attrs is not None:
        attrs[sc.ERROR_TYPE] = failure.error_type
    if attrs is not None:
        telemetry.http_duration.record(duration, attrs)
    if not span.is_recording():
        return
    if failure is not None:
        if trace_.per_call:
            _attempt_failed_event(span, attempt, error, failure)
        else:
            _label_failed_attempt(span, error, failure, trace_.describe)
        if failure.error_class.value == "critical":
            span.add_event(sc.EVENT_CRITICAL, {sc.ERROR_TYPE: failure.error_type})
        if retry is not None:
            span.add_event(
                sc.EVENT_RETRY,
                {
                    sc.RESILIENCE_ATTEMPT: attempt,
                    sc.RESILIENCE_RETRY_DELAY: retry[0],
                    sc.RESILIENCE_RETRY_REASON: retry[1].value,
                },
            )
    if change is not None:
        span.add_event(
            sc.EVENT_STATE_CHANGE,
            {
                sc.RESILIENCE_FROM_STATE: change.from_state.value,
                sc.RESILIENCE_TO_STATE: change.to_state.value,
            },
        )
    if trace_.owned:
        span.end()


def _label_failed_attempt(
    span: Span, error: BaseException | None, failure: Failure, describe: ErrorText
) -> None:
    span.set_attribute(sc.RESILIENCE_ERROR_CLASS, failure.error_class.value)
    span.set_attribute(sc.ERROR_TYPE, failure.error_type)
    if error is not None:
        record_error(span, error, describe)  # never span.record_exception: it keeps raw text
    # The description names the type only: messages may quote URLs and values.
    span.set_status(
        Status(StatusCode.ERROR, failure.error_type if error is None else type(error).__name__)
    )


def _attempt_failed_event(
    span: Span, attempt: int, error: BaseException | None, failure: Failure
) -> None:
    span.add_event(
        sc.EVENT_ATTEMPT_FAILED,
        {
            sc.RESILIENCE_ATTEMPT: attempt,
            sc.ERROR_TYPE: failure.error_type,
            sc.RESILIENCE_ERROR_CLASS: failure.error_class.value,
        },
    )


def start_span(telemetry: Telemetry, name: str, attributes: dict[str, Any]) -> Span:
    """Start a CLIENT span (not made current)."""
    return telemetry.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

"""HTTP attempt spans, and cooperation with opentelemetry-instrumentation-httpx.

Exactly one CLIENT span per physical attempt, whichever way the user enabled tracing:

- our transport alone: we start the attempt span, make it current, inject ``traceparent``
  and call the inner transport with HTTP instrumentation suppressed;
- ``HTTPXClientInstrumentor().instrument()`` (patches ``httpx.HTTPTransport``): the same
  suppression keeps it from adding a second span under ours;
- ``HTTPXClientInstrumentor.instrument_client(client)`` (wraps *our* ``handle_request``):
  :class:`InstrumentationAwareMethod` catches that wrapper and applies it around each
  attempt instead of around the whole call, so its span is the attempt span and we only add
  our attributes to it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind

from ..._telemetry import semconv as sc
from ..._telemetry.errortext import ErrorText, error_text
from ..._telemetry.otel import SUPPRESS_HTTP_INSTRUMENTATION_KEY, AttemptTrace, Telemetry
from ..._telemetry.redact import DEFAULT_REDACTOR, REDACTED, Redactor

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context

    from ..._core.engine import Attempt

__all__ = [
    "InstrumentationAwareMethod",
    "acall_borrowed",
    "call_borrowed",
    "stand_in_for",
    "start_attempt_span",
    "suppressed_http",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _metric_attributes(request: httpx.Request) -> dict[str, Any]:
    """The attributes of the duration metric (and the start of the span's)."""
    url = request.url
    method = request.method
    return {
        sc.HTTP_REQUEST_METHOD: method if method in sc.HTTP_METHODS else "_OTHER",
        sc.SERVER_ADDRESS: url.host,
        sc.SERVER_PORT: url.port or _DEFAULT_PORTS.get(url.scheme, 0),
        sc.URL_SCHEME: url.scheme,
    }


def _attempt_attributes(
    request: httpx.Request,
    step: Attempt,
    service: str,
    metric: dict[str, Any],
    redactor: Redactor,
) -> dict[str, Any]:
    method = request.method
    attributes: dict[str, Any] = {
        **metric,
        sc.URL_FULL: redactor.url(str(request.url)),
        sc.RESILIENCE_SERVICE: service,
        sc.RESILIENCE_ATTEMPT: step.number,
        sc.RESILIENCE_BREAKER_STATE: step.breaker_state.value,
    }
    if method not in sc.HTTP_METHODS:
        attributes[sc.HTTP_REQUEST_METHOD_ORIGINAL] = method
    if step.number > 1:
        attributes[sc.HTTP_REQUEST_RESEND_COUNT] = step.number - 1
    return attributes


def start_attempt_span(
    telemetry: Telemetry,
    request: httpx.Request,
    step: Attempt,
    service: str,
    redactor: Redactor = DEFAULT_REDACTOR,
    describe: ErrorText = error_text,
) -> Token[Context]:
    """Start the attempt's span, make it current with HTTP instrumentation suppressed, and
    inject the trace context into the request headers. ``redactor`` redacts ``url.full``;
    ``describe`` gives the safe text of the attempt's error.

    Returns:
        The context token to hand to ``opentelemetry.context.detach`` after the attempt.
    """
    metric = _metric_attributes(request)
    attributes = _attempt_attributes(request, step, service, metric, redactor)
    name = request.method if request.method in sc.HTTP_METHODS else "HTTP"
    links = None
    if step.previous is not None:
        links = [Link(step.previous.span.get_span_context())]
    span = telemetry.tracer.start_span(
        name, kind=SpanKind.CLIENT, attributes=attributes, links=links
    )
    step.trace = AttemptTrace(span, dict(metric), owned=True, describe=describe)
    ctx = trace.set_span_in_context(span)
    ctx = context.set_value(SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, ctx)
    propagate.inject(request.headers, context=ctx)
    return context.attach(ctx)


def metrics_only_trace(telemetry: Telemetry, request: httpx.Request, step: Attempt) -> bool:
    """Without a tracer provider, still label the attempt for the duration metric.

    Returns whether there is anything to record (a meter provider is live).
    """
    if not telemetry.metrics_live():
        return False
    step.trace = AttemptTrace(trace.INVALID_SPAN, _metric_attributes(request), owned=False)
    return True


def note_response(step: Attempt, response: httpx.Response) -> None:
    """Put the status code on the attempt's span and duration metric."""
    trace_ = step.trace
    if trace_ is None:
        return
    if trace_.metric_attributes is not None:
        trace_.metric_attributes[sc.HTTP_RESPONSE_STATUS_CODE] = response.status_code
    if trace_.span.is_recording():
        trace_.span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, response.status_code)


def adopt_current_span(
    step: Attempt,
    service: str,
    request: httpx.Request,
    redactor: Redactor = DEFAULT_REDACTOR,
    describe: ErrorText = error_text,
) -> None:
    """Inside a span opentelemetry-instrumentation-httpx started for this attempt: add our
    attributes to it; it stays theirs to end (and they record the duration metric)."""
    span = trace.get_current_span()
    step.trace = AttemptTrace(span, None, owned=False, describe=describe)
    if span.is_recording():
        # Their URL redaction knows fewer sensitive query keys than ours: overwrite it.
        existing = getattr(span, "attributes", None) or {}
        for key in ("url.full", "http.url"):
            if key in existing:
                span.set_attribute(key, redactor.url(str(request.url)))
        _redact_captured_headers(span, existing, redactor)
        span.set_attributes(
            {
                sc.RESILIENCE_SERVICE: service,
                sc.RESILIENCE_ATTEMPT: step.number,
                sc.RESILIENCE_BREAKER_STATE: step.breaker_state.value,
            }
        )
        if step.number > 1:
            span.set_attribute(sc.HTTP_REQUEST_RESEND_COUNT, step.number - 1)
        if step.after_retry is not None:
            # The failed attempt's span had ended before the retry was decided: say it here.
            delay, reason = step.after_retry
            span.add_event(
                sc.EVENT_RETRY,
                {
                    sc.RESILIENCE_ATTEMPT: step.number - 1,
                    sc.RESILIENCE_RETRY_DELAY: delay,
                    sc.RESILIENCE_RETRY_REASON: reason.value,
                },
            )


_REQUEST_HEADER = "http.request.header."


def _redact_captured_headers(span: trace.Span, existing: Any, redactor: Redactor) -> None:
    """Overwrite request headers the instrumentation captured (its
    ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST``) that are sensitive to us.

    Response headers are captured after the attempt returns: out of our reach (use its
    ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS`` for those).
    """
    for key in list(existing):
        if key.startswith(_REQUEST_HEADER) and redactor.header_is_sensitive(
            key[len(_REQUEST_HEADER) :]
        ):
            span.set_attribute(key, (REDACTED,))


def suppressed_http() -> Token[Context]:
    """Attach a context that keeps HTTP instrumentations quiet; returns the token."""
    return context.attach(context.set_value(SUPPRESS_HTTP_INSTRUMENTATION_KEY, True))


# -- the instrumentation's span and our error texts ------------------------------------------------
# opentelemetry-instrumentation-httpx ends its attempt span in a ``start_as_current_span``
# block, which records the raw ``str(exc)`` (event and status) of whatever leaves it. What
# leaves it is a stand-in: typed like the error, its text the safe one; the caller gets the
# original back once outside the instrumentation's wrapper.
_ORIGINAL = "_resilience_original"
_MARK = "_resilience_stand_in"


_STAND_IN_TYPES: dict[type[Exception], type[Exception]] = {}  # bounded: error types are few


def _stand_in_type(cls: type[Exception]) -> type[Exception]:
    known = _STAND_IN_TYPES.get(cls)
    if known is None:
        namespace = {"__qualname__": cls.__qualname__, "__module__": cls.__module__, _MARK: True}
        known = type(cls.__name__, (cls,), namespace)
        if len(_STAND_IN_TYPES) < 256:
            _STAND_IN_TYPES[cls] = known
    return known


def stand_in_for(error: Exception, describe: ErrorText) -> Exception | None:
    """An exception typed like ``error`` whose text is ``describe(error)``, carrying ``error``
    to give back; ``None`` when the type cannot be copied safely (``error`` is then raised)."""
    safe = describe(error)
    try:
        cls = _stand_in_type(type(error))
        stand_in = cls.__new__(cls)
        stand_in.args = (safe,)
        for name in ("_request", "response"):  # what the instrumentation reads
            if name in getattr(error, "__dict__", {}):
                setattr(stand_in, name, error.__dict__[name])
        setattr(stand_in, _ORIGINAL, error)
        if str(stand_in) != safe:
            return None  # a __str__ of its own: cannot vouch for what it would print
    except Exception:  # an exception type that cannot be subclassed or built bare
        return None
    return stand_in


def _original(error: Exception) -> BaseException | None:
    if not type(error).__dict__.get(_MARK, False):
        return None
    original: BaseException = error.__dict__[_ORIGINAL]
    return original


def call_borrowed(
    wrapper: Callable[..., httpx.Response],
    exchange: Callable[[httpx.Request], httpx.Response],
    transport: Any,
    request: httpx.Request,
) -> httpx.Response:
    """Call the instrumentation's wrapper around ``exchange``; give back the original error."""
    try:
        return wrapper(exchange, transport, (request,), {})
    except Exception as exc:
        original = _original(exc)
        if original is None:
            raise
    raise original  # outside the handler: the original keeps its own cause and context


async def acall_borrowed(
    wrapper: Callable[..., Awaitable[httpx.Response]],
    exchange: Callable[[httpx.Request], Awaitable[httpx.Response]],
    transport: Any,
    request: httpx.Request,
) -> httpx.Response:
    """Async :func:`call_borrowed`."""
    try:
        return await wrapper(exchange, transport, (request,), {})
    except Exception as exc:
        original = _original(exc)
        if original is None:
            raise
    raise original


def _is_httpx_instrumentation(wrapper: object) -> bool:
    function = getattr(wrapper, "func", wrapper)  # instrument_client passes a partial
    module = getattr(function, "__module__", "") or ""
    return module.startswith("opentelemetry.instrumentation.httpx")


@functools.cache
def _passthrough_type() -> type[Any]:
    import wrapt  # present whenever an OTel instrumentation could have wrapped us

    class Passthrough(wrapt.ObjectProxy):  # type: ignore[type-arg]
        """Looks wrapped to ``unwrap`` of the OTel instrumentations; calls straight through."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self.__wrapped__(*args, **kwargs)

    return Passthrough


class InstrumentationAwareMethod:
    """A data descriptor standing in for ``handle_request`` / ``handle_async_request``.

    Reading it gives the real method. When opentelemetry-instrumentation-httpx's
    ``instrument_client`` assigns its wrapper, the wrapper is kept for per-attempt use and
    reads return a pass-through proxy (so ``uninstrument_client`` can unwrap it). Any other
    assigned value is honoured as a normal instance attribute would be.
    """

    def __init__(self, real: str) -> None:
        self.real = real
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return getattr(objtype, self.real)
        patched = obj.__dict__.get(self.name)
        return patched if patched is not None else getattr(obj, self.real)

    def __set__(self, obj: Any, value: Any) -> None:
        real: Callable[..., Any] = getattr(obj, self.real)
        wrapper = getattr(value, "_self_wrapper", None)
        if wrapper is not None and _is_httpx_instrumentation(wrapper):
            obj._otel_attempt_wrapper = wrapper
            obj.__dict__[self.name] = _passthrough_type()(real)
        elif getattr(value, "__func__", None) is getattr(real, "__func__", None):
            obj.__dict__.pop(self.name, None)  # unwrapped: back to the plain method
            obj._otel_attempt_wrapper = None
        else:
            obj.__dict__[self.name] = value

    def __delete__(self, obj: Any) -> None:
        obj.__dict__.pop(self.name, None)
        obj._otel_attempt_wrapper = None

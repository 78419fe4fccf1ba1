"""What every failover scenario asserts, collected so one failed run names every broken promise.

A failover is seconds of servers being started and switched; rather than stopping at the first
failed expectation, a scenario checks them all and fails once, listing each.
"""

from __future__ import annotations

from resilience_otel._telemetry import semconv

from .conftest import RECOVERY_BOUND, Otel
from .servers import admin, wait_until
from .workload import Ledger, Switch, error_kinds

__all__ = [
    "COUNTER",
    "INCR",
    "Checks",
    "check_recovery",
    "check_redis",
    "check_retired",
    "check_telemetry",
]

INCR = "INCR"
"""The ledger identifier of an acknowledged ``INCR`` of the counter."""
COUNTER = "failover:counter"


class Checks:
    """Expectations of one scenario; :meth:`verify` fails listing every one that did not hold."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.problems: list[str] = []

    def expect(self, holds: bool, problem: str) -> None:
        """Record ``problem`` unless ``holds``."""
        if not holds:
            self.problems.append(problem)

    def verify(self) -> None:
        """Fail the test if any expectation did not hold."""
        assert not self.problems, f"{self.scenario}:\n- " + "\n- ".join(self.problems)


def check_recovery(
    checks: Checks, ledger: Ledger, switch: Switch, *, breaker_opens: bool = False
) -> None:
    """The writers were back within the bound and nothing failed after the recovery; unless
    the breaker was meant to open, every refused write was resent (none failed at all)."""
    print(f"{checks.scenario}: {ledger.summary(switch)}")  # the measured numbers, with -s
    switched = switch.ended
    recovery = ledger.recovery(switched)
    checks.expect(
        recovery is not None and recovery <= RECOVERY_BOUND,
        f"no write succeeded within {RECOVERY_BOUND} s of the switchover "
        f"({ledger.summary(switch)})",
    )
    late = [w for w in ledger.failures if w.ended > switched + RECOVERY_BOUND]
    checks.expect(
        not late, f"{len(late)} writes still failed after the recovery: {error_kinds(late)}"
    )
    failures = ledger.failures
    if breaker_opens:
        checks.expect(bool(failures), "no write was rejected: the breaker never opened")
        return
    checks.expect(
        not failures,
        f"{len(failures)} writes failed at the caller instead of being resent to the new "
        f"primary: {error_kinds(failures)}",
    )


def check_telemetry(
    checks: Checks, otel: Otel, ledger: Ledger, system: str, error_type: str | None
) -> None:
    """The failover was counted and shows as a span event naming the database system, and
    ``resilience_calls_total`` tells what the callers saw: one success per acknowledged write,
    one failure or rejection per failed call, refusals under ``error_class="failover"``."""
    calls = semconv.CALLS[0]
    succeeded = otel.counter_total(calls, outcome="success")
    checks.expect(
        succeeded == len(ledger.acked),
        f"{succeeded} successful calls counted, {len(ledger.acked)} writes acknowledged",
    )
    failed = otel.counter_total(calls, outcome="failure")
    failed += otel.counter_total(calls, outcome="rejected")
    failures = ledger.failures
    checks.expect(
        failed == len(failures), f"{failed} failed calls counted, {len(failures)} writes failed"
    )
    refused = otel.counter_total(calls, outcome="failure", error_class="failover")
    other = [w for w in failures if not w.error or not w.error.startswith("CircuitOpenError")]
    checks.expect(
        refused == len(other),
        f"{refused} calls counted as failover failures, {len(other)} writes refused",
    )
    counted = otel.failovers()
    checks.expect(counted > 0, f"resilience_failovers_total is {counted}, expected > 0")
    events = otel.failover_events()
    checks.expect(bool(events), "no span has a resilience.failover event")
    systems = {event.get("db.system.name") for event in events}
    checks.expect(not events or systems == {system}, f"failover events name {systems}")
    if error_type is not None and events:
        types = {event.get("error.type") for event in events}
        checks.expect(error_type in types, f"failover events have error.type {types}")


def check_redis(checks: Checks, port: int, ledger: Ledger) -> None:
    """The new primary at ``port`` holds every acknowledged key, and the counter equals the
    number of acknowledged INCRs (no INCR lost, none applied twice)."""
    incrs = ledger.acked.count(INCR)
    keys = [ident for ident in ledger.acked if ident != INCR]
    checks.expect(incrs > 0 and bool(keys), f"too few writes acknowledged: {len(ledger.acked)}")
    with admin(port) as primary:
        counter = int(primary.get(COUNTER) or 0)
        found = [value is not None for value in primary.mget(keys)] if keys else []
    missing = [key for key, present in zip(keys, found, strict=True) if not present]
    checks.expect(not missing, f"{len(missing)} acknowledged keys are missing: {missing[:3]}")
    checks.expect(counter == incrs, f"counter is {counter} but {incrs} INCRs were acknowledged")


def check_retired(checks: Checks, port: int) -> None:
    """No client connection is left open on the demoted node at ``port``."""

    def left() -> int:
        with admin(port) as node:
            clients = node.client_list(_type="normal")
            # neither the one asking nor the Sentinels' command links
            return sum(
                1
                for client in clients
                if client["id"] != str(node.client_id())
                and not client["name"].startswith("sentinel-")
            )

    try:
        wait_until(lambda: left() == 0, 2.0, "connections to the demoted node closed")
    except AssertionError:
        checks.expect(False, f"{left()} connections are still open on the demoted node")

"""The policy core: engine, flow steps, breaker, rolling window, retry and budget, failure
classification, clock, deadlines, errors.

It knows nothing of the clients it protects, of health, of the monitoring assets or of any
telemetry backend (it speaks the OpenTelemetry API only).
"""

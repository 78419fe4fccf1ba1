"""Telemetry: spans and metrics through the OpenTelemetry API, semantic-convention names,
redaction, safe error text, observer events.
"""

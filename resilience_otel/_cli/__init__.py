"""The ``resilience-otel`` command line: shared argument handling and the alerts and grafana
commands.
"""

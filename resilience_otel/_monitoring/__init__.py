"""Monitoring assets: Prometheus alert rules, Grafana dashboards and their import, Prometheus
exposition set-up.
"""

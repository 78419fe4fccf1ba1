"""Benchmark harness: per-request overhead of the resilient httpx transports against raw httpx
and the alternatives people use today. Run ``python -m bench --help``."""

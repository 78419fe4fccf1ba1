"""Compatibility suite: httpx's and redis-py's own tests, run plain and through our wrappers.

``make compat`` (``python -m compat.run``) downloads the pinned sdists, runs their client-facing
tests twice and fails when a test passes plain but not wrapped, unless
``compat/known-differences.txt`` explains why.
"""

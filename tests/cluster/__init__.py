"""Tests against a test-owned Redis Cluster (six nodes: three primaries, three replicas)."""

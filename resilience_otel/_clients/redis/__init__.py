"""redis-py instrumentation: command guard, deadlines, retries, pipelines, pub/sub, blocking
commands.
"""

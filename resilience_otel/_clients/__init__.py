"""Client shells: the glue between each client library (httpx, redis-py, asyncpg) and the policy
core.
"""

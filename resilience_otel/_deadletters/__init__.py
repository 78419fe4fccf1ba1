"""Dead letters: the record, the queue protocol, the in-memory queue, the Redis stream and
PostgreSQL queues, and their replay outbox.
"""

"""The httpx transports: request shell, streamed bodies, HTTP classification, sync deadlines, HTTP
telemetry.
"""

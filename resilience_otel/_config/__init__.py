"""Configuration: the policy dataclasses, their validation, and loading them from the environment,
a mapping or TOML.
"""

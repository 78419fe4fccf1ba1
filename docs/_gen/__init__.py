"""Reference pages generated from the code at `mkdocs build` time (see docs/hooks.py)."""

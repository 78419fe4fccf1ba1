"""mkdocs hooks: the configuration and telemetry references are generated from the code.

A page holds a marker line (``<!-- generated: configuration -->``); the hook replaces it with
tables built from the package itself, so the published reference cannot drift from it. Any
problem found while generating is logged as a warning, which fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# mkdocs imports this file by path: make its sibling package importable.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # mkdocs serve loads the hooks again on every rebuild
    sys.path.insert(0, _HERE)

from _gen import configuration, telemetry  # noqa: E402

log = logging.getLogger("mkdocs.hooks.reference")


def _telemetry() -> str:
    text, problems = telemetry.markdown()
    for problem in problems:
        log.warning("telemetry reference: %s", problem)
    return text


GENERATORS: dict[str, Callable[[], str]] = {
    "configuration": configuration.markdown,
    "telemetry": _telemetry,
}
PAGES = {"reference/configuration.md": "configuration", "reference/telemetry.md": "telemetry"}


def marker(name: str) -> str:
    """The line a page carries where the generated reference goes."""
    return f"<!-- generated: {name} -->"


def on_page_markdown(markdown: str, *, page: Any, **_: Any) -> str:
    """Replace a page's marker with the reference generated from the code."""
    name = PAGES.get(page.file.src_uri)
    if name is None:
        return markdown
    if marker(name) not in markdown:
        log.warning("%s lacks the line %s", page.file.src_uri, marker(name))
        return markdown
    return markdown.replace(marker(name), GENERATORS[name]())

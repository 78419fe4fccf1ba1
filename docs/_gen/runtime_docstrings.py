"""A griffe extension that adapts the package's docstrings to the API reference.

- Classes that build ``__doc__`` at import time keep their docstring. griffe reads the source
  without running it, so ``__doc__ = "..." + ARGS_DOC`` (how the two httpx transports share
  their argument documentation) would leave them undocumented; the docstring is taken from
  the imported class instead.
- Sphinx roles (``:class:`Policy```, ``:func:`classify_http```) become code spans, as
  markdown has no roles.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`~?\.?([^`]+)`")


class RuntimeDocstrings(griffe.Extension):
    """Fill in class docstrings built at import time; turn Sphinx roles into code spans."""

    def on_class_instance(self, *, node: Any, cls: griffe.Class, agent: Any, **_: Any) -> None:
        if cls.docstring is not None:
            return
        try:
            runtime = getattr(importlib.import_module(cls.module.path), cls.name)
        except (ImportError, AttributeError):
            return
        text = vars(runtime).get("__doc__") if isinstance(runtime, type) else None
        if isinstance(text, str) and text.strip():
            cls.docstring = griffe.Docstring(
                _ROLE.sub(r"`\1`", inspect.cleandoc(text)),
                parent=cls,
                parser=getattr(agent, "docstring_parser", None),
                parser_options=getattr(agent, "docstring_options", None),
            )

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **_: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)

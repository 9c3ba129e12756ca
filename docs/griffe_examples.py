"""Griffe extension for the API reference: read an ``Example:`` section as ``Examples:``.

Google-style parsing in griffe only knows the plural title; with the singular one, a
doctest would be rendered as plain Markdown (where ``x[0]["b"]`` reads as a link).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headers to ``Examples:`` before docstrings are parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)

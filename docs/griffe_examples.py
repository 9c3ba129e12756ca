"""Griffe extension for the API reference: adapt reST habits of the docstrings to Markdown.

* An ``Example:`` section is read as ``Examples:``: griffe's Google-style parser only
  knows the plural title, and would otherwise render a doctest as plain Markdown (where
  ``x[0]["b"]`` reads as a link).
* Sphinx roles such as ``:func:`chain``` are shown as inline code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|mod|data|attr|meth|obj|exc):`~?([^`]+)`")


class DocstringMarkdown(griffe.Extension):
    """Rewrite ``Example:`` headers and Sphinx roles before docstrings are parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", value)

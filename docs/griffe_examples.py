"""Griffe extension for the API reference: adapt reST habits of the docstrings to Markdown.

* An ``Example:`` section is read as ``Examples:``: griffe's Google-style parser only
  knows the plural title, and would otherwise render a doctest as plain Markdown (where
  ``x[0]["b"]`` reads as a link).
* Sphinx roles such as ``:func:`chain``` are shown as inline code.
* funcopt's transforms and schedules are dataclasses made when their class is defined
  (by ``funcopt.values.Value``), which static analysis cannot see: each gets the
  ``__init__`` signature of the real class, so its page shows its arguments and griffe
  can check the ``Args:`` section against them.
"""

from __future__ import annotations

import importlib
import inspect
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


class ValueSignatures(griffe.Extension):
    """Give each ``funcopt.values.Value`` subclass the ``__init__`` of the real class."""

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        try:
            obj = getattr(importlib.import_module(cls.module.path), cls.name)
            from funcopt.values import Value
        except (ImportError, AttributeError):
            return
        if not (isinstance(obj, type) and issubclass(obj, Value)) or obj is Value:
            return
        params = [
            griffe.Parameter(
                p.name,
                annotation=None if p.annotation is p.empty else str(p.annotation),
                kind=griffe.ParameterKind(p.kind.description),
                default=None if p.default is p.empty else repr(p.default),
            )
            for p in inspect.signature(obj).parameters.values()
        ]
        init = griffe.Function("__init__", parameters=griffe.Parameters(*params))
        cls.set_member("__init__", init)

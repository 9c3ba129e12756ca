"""Every docstring example (``>>>``) in funcopt runs and prints what it shows.

Docstrings state each transform's equation, arguments and a short example; running the
examples here keeps them from rotting as the code changes.
"""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import funcopt

MODULES = [
    "base",
    "primitives",
    "transforms",
    "optimizers",
    "modern",
    "schedules",
    "clipping",
    "wrappers",
    "stepping",
    "train",
    "packing",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"funcopt.{name}")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in funcopt.{name}"


def _public_factories():
    for name in sorted(funcopt.__all__):
        obj = getattr(funcopt, name)
        if inspect.isfunction(obj) and not name.startswith("check_"):
            yield name, obj


FACTORIES = dict(_public_factories())


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_public_functions_document_their_arguments(name):
    """A public function with parameters has an ``Args:`` section naming each of them."""
    obj = FACTORIES[name]
    doc = inspect.getdoc(obj) or ""
    params = [
        p
        for p in inspect.signature(obj).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not params:
        return
    assert "Args:" in doc, f"funcopt.{name} has no Args: section"
    args = doc[doc.index("Args:") :]
    missing = [p.name for p in params if f"{p.name}:" not in args and f"{p.name} " not in args]
    assert not missing, f"funcopt.{name} does not document {missing}"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_public_functions_show_an_example(name):
    """A public function's docstring has a runnable ``>>>`` example (run by the test above)."""
    assert ">>>" in (inspect.getdoc(FACTORIES[name]) or ""), f"funcopt.{name} has no example"

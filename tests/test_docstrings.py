"""Every docstring example (``>>>``) in funcopt runs and prints what it shows.

Docstrings state each transform's equation, arguments (or refer to the argument glossary)
and a short example; running the examples here keeps them from rotting.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import funcopt

MODULES = sorted(
    m.name
    for m in pkgutil.iter_modules(funcopt.__path__)
    if not m.name.startswith("_") and m.name not in {"viz", "viz_studies", "bench"}
)
GLOSSARY = set(
    re.findall(
        r"^\| `(\w+)` \|",
        (Path(__file__).resolve().parent.parent / "docs" / "glossary.md").read_text(),
        re.M,
    )
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"funcopt.{name}")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in funcopt.{name}"


def _public_factories():
    """Public functions and transform classes (the factories users call)."""
    for name in sorted(funcopt.__all__):
        obj = getattr(funcopt, name)
        transform = inspect.isclass(obj) and issubclass(obj, funcopt.GradientTransformation)
        if (inspect.isfunction(obj) or transform) and not name.startswith("check_"):
            yield name, obj


FACTORIES = dict(_public_factories())


def _documented(doc: str) -> set[str]:
    """The argument names an ``Args:`` section of ``doc`` describes."""
    if "Args:" not in doc:
        return set()
    return set(re.findall(r"^\s{4}(\w+):", doc[doc.index("Args:") :], re.M))


def test_the_glossary_is_not_empty():
    assert {"learning_rate", "b1", "b2", "eps", "mu_dtype", "mask"} <= GLOSSARY


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_public_functions_document_their_arguments(name):
    """Each argument is described: in the function's ``Args:``, in a function its
    docstring refers to (``:func:`x```), or in the glossary (``docs/glossary.md``)."""
    obj = FACTORIES[name]
    doc = inspect.getdoc(obj) or ""
    params = [
        p.name
        for p in inspect.signature(obj).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    known = _documented(doc) | GLOSSARY
    for ref in re.findall(r":(?:func|class):`~?(?:funcopt\.)?(\w+)`", doc):
        if ref in FACTORIES and ref != name:
            known |= _documented(inspect.getdoc(FACTORIES[ref]) or "")
    missing = [p for p in params if p not in known]
    assert not missing, f"funcopt.{name} does not document {missing}"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_public_functions_show_an_example(name):
    """A public function's docstring has a runnable ``>>>`` example (run by the test above)."""
    assert ">>>" in (inspect.getdoc(FACTORIES[name]) or ""), f"funcopt.{name} has no example"

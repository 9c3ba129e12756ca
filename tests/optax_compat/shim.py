"""Run optax's own test files against funcopt, substituting by name only.

Mechanism
---------
``run.py`` copies the selected ``*_test.py`` files of the installed optax wheel into a
temporary directory (nothing of optax's is committed here) and rewrites **only their
``import`` / ``from ... import`` statements that name ``optax``**, via :func:`rewrite`.
Each such statement becomes, on the same line (so tracebacks keep optax's line
numbers), assignments from this module (``S`` is ``import shim as _funcopt_shim``)::

    from optax._src import alias       ->  S; alias = _funcopt_shim.from_import(
                                               "optax._src", "alias")
    import optax.tree                  ->  S; optax = _funcopt_shim.module("optax");
                                               _funcopt_shim.module("optax.tree")
    from optax._src import alias_test  ->  S; import alias_test as alias_test
                                               (the rewritten copy)

Every other line, assertions and tolerances included, is byte-for-byte optax's (run.py
checks this). Nothing is patched globally: optax itself, and the optax helpers the tests
call, keep importing the real optax, so no helper ever runs on a proxy.

The substitution rule
---------------------
:func:`module` returns a :class:`Proxy` for a *substituted* optax module (the ones that
define optimizers, transforms, wrappers, schedules, base types and ``apply_updates``:
:data:`SUBSTITUTED_MODULES` and everything under :data:`SUBSTITUTED_PACKAGES`) and the
real module for every other (``optax._src.test_utils``, ``numerics``, ``utils``,
``linear_algebra``, ``optax.tree``, ``optax.tree_utils``, ``optax.losses``, ...).
``getattr(proxy, name)`` looks ``name`` up on the real optax module, then gives:

1. a module                      -> :func:`module` of it (proxy or real, by the list);
2. defined in a non-substituted module (its class/function ``__module__``: numerics,
   tree utilities, chex, jax, typing, ...) -> optax's (or jax's) own object;
3. otherwise (defined in a substituted module; plain values such as type aliases count
   as defined where they are found) -> ``getattr(funcopt, name)`` when funcopt has a
   non-module attribute of that name, else optax's own object (what funcopt's
   migration guide says to do with a name funcopt does not provide: keep optax's, in
   the same chain).

Private names (a leading underscore) are optax's implementation and never substituted.
A name optax lacks raises ``AttributeError`` as it would against optax. Each look-up of
rule 3 is recorded (:data:`RESOLVED`), so that the report can tell the tests that ran
funcopt's names only from those that also used optax's own for a name funcopt lacks.

Which files and tests run: every ``*_test.py`` of the optax wheel, less what
``EXCLUDED.md`` lists (read by :func:`exclusions`): files and tests not run, each with
its reason, slow tests left to ``run.py --all``, and the known, deliberate differences.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib
import inspect
import types
from pathlib import Path
from typing import Any

# Modules whose names are substituted (exact names) ...
SUBSTITUTED_MODULES = frozenset(
    {
        "optax",
        "optax._src.alias",
        "optax._src.base",
        "optax._src.clipping",
        "optax._src.combine",
        "optax._src.constrain",
        "optax._src.factorized",
        "optax._src.linesearch",
        "optax._src.lookahead",
        "optax._src.schedule",
        "optax._src.transform",
        "optax._src.update",
        "optax._src.wrappers",
    }
)
# ... and packages substituted with every module under them.
SUBSTITUTED_PACKAGES = ("optax.transforms", "optax.schedules", "optax.contrib")

EXCLUDED_MD = Path(__file__).with_name("EXCLUDED.md")
SECTIONS = {
    "Files not run": "files",
    "Tests not run": "tests",
    "Slow tests": "slow",
    "Known differences": "differences",
}


@functools.cache
def exclusions() -> dict[str, dict[str, str]]:
    """``EXCLUDED.md``'s tables: section -> {pattern: reason}.

    Each row of a table under a ``## <section>`` heading is `` | `pattern` | reason | ``:
    a path relative to the optax package (a file), or an ``fnmatch`` pattern of pytest
    node ids (``_src/alias_test.py::LBFGSTest::*``), see :func:`matching`.
    """
    out: dict[str, dict[str, str]] = {key: {} for key in SECTIONS.values()}
    section = None
    for line in EXCLUDED_MD.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            section = next((v for k, v in SECTIONS.items() if title.startswith(k)), None)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section and line.startswith("| `") and len(cells) >= 2:
            out[section][cells[0].strip("`")] = cells[-1]
    return out


def matching(nodeid: str, section: str, params: str = "") -> str | None:
    """The reason ``EXCLUDED.md``'s ``section`` gives for the test ``nodeid``, or None.

    A pattern without ``::`` names a file; any other is matched against the node id and
    against the node id followed by a space and ``params``, the parameters absl's
    ``parameterized`` shows for the test (``(opt_name='sm3', opt_kwargs={...})``).
    """
    path = nodeid.split("::")[0]
    for pattern, reason in exclusions()[section].items():
        if "::" not in pattern:
            if path == pattern:
                return reason
        elif fnmatch.fnmatchcase(nodeid, pattern) or (
            params and fnmatch.fnmatchcase(f"{nodeid} {params}", pattern)
        ):
            return reason
    return None


# Names resolved by rule 3 during the current test: [("funcopt" | "optax", name), ...].
RESOLVED: list[tuple[str, str]] = []


def is_substituted(module_name: str) -> bool:
    return module_name in SUBSTITUTED_MODULES or any(
        module_name == p or module_name.startswith(p + ".") for p in SUBSTITUTED_PACKAGES
    )


def _defined_in(value: Any) -> str | None:
    """The module a class or function was defined in; None for plain values (type aliases
    such as ``ScalarOrSchedule`` included: ``typing`` is not where they are defined)."""
    if isinstance(value, functools.partial):
        value = value.func
    if callable(value) and hasattr(value, "__wrapped__"):  # a jitted or wrapped function
        value = inspect.unwrap(value)
    if isinstance(value, type) or inspect.isroutine(value):
        return getattr(value, "__module__", None)
    return None


class Proxy(types.ModuleType):
    """A substituted optax module: attribute look-ups follow the rule in the docstring."""

    def __init__(self, real: types.ModuleType):
        super().__init__(real.__name__, real.__doc__)
        self.__dict__["_shim_real"] = real
        self.__dict__["_shim_cache"] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        cache = self.__dict__["_shim_cache"]
        if name not in cache:
            cache[name] = _resolve(self.__dict__["_shim_real"], name)
        kind, value = cache[name]
        if kind is not None:
            RESOLVED.append((kind, name))
        return value

    def __repr__(self) -> str:
        return f"<funcopt proxy for module {self.__name__!r}>"


def _resolve(real: types.ModuleType, name: str) -> tuple[str | None, Any]:
    value = getattr(real, name)  # AttributeError where optax itself has no such name
    if isinstance(value, types.ModuleType):
        return None, module(value.__name__)
    if name.startswith("_") or not is_substituted(_defined_in(value) or real.__name__):
        return None, value
    import funcopt  # here, so that run.py can rewrite the files without importing funcopt

    ours = getattr(funcopt, name, None)
    if ours is not None and not isinstance(ours, types.ModuleType):
        return "funcopt", ours
    return "optax", value


@functools.cache
def module(name: str) -> types.ModuleType:
    """The module an optax test sees for ``import name``: a Proxy or the real module."""
    real = importlib.import_module(name)
    return Proxy(real) if is_substituted(name) else real


def from_import(package: str, name: str) -> Any:
    """What ``from package import name`` gives an optax test."""
    try:
        importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{package}.{name}":
            raise
    else:
        return module(f"{package}.{name}")
    return getattr(module(package), name)


# --- rewriting the copied test files ------------------------------------------------

_ALIAS = "_funcopt_shim"


def _replacement(node: ast.Import | ast.ImportFrom) -> list[str] | None:
    """Statements replacing one import of optax, or None when it imports no optax."""
    out: list[str] = []
    if isinstance(node, ast.Import):
        names = [a for a in node.names if a.name == "optax" or a.name.startswith("optax.")]
        if not names:
            return None
        if len(names) != len(node.names):
            raise ValueError(f"line {node.lineno}: mixed optax / non-optax import")
        for a in names:
            if a.asname:
                out.append(f"{a.asname} = {_ALIAS}.module({a.name!r})")
            else:
                out.append(f"optax = {_ALIAS}.module('optax')")
                if a.name != "optax":
                    out.append(f"{_ALIAS}.module({a.name!r})")
        return out
    package = node.module or ""
    if node.level or not (package == "optax" or package.startswith("optax.")):
        return None
    for a in node.names:
        if a.name == "*":
            raise ValueError(f"line {node.lineno}: star import from optax")
        bound = a.asname or a.name
        if a.name.endswith("_test"):  # another optax test file: its rewritten copy
            out.append(f"import {a.name} as {bound}")
        else:
            out.append(f"{bound} = {_ALIAS}.from_import({package!r}, {a.name!r})")
    return out


def rewrite(source: str) -> str:
    """``source`` with each optax import replaced in place (same line, same count)."""
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        stmts = _replacement(node)
        if stmts is None:
            continue
        first, last = node.lineno - 1, node.end_lineno - 1
        indent = lines[first][: node.col_offset]
        if indent.strip() or lines[last][node.end_col_offset :].strip():
            raise ValueError(f"line {node.lineno}: import shares its line with other code")
        lines[first] = indent + "; ".join([f"import shim as {_ALIAS}", *stmts]) + "\n"
        for i in range(first + 1, last + 1):
            lines[i] = "\n"
    return "".join(lines)


def import_lines(source: str) -> set[int]:
    """1-based numbers of the lines :func:`rewrite` may change (its optax imports)."""
    changed: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom) and _replacement(node) is not None:
            changed.update(range(node.lineno, node.end_lineno + 1))
    return changed

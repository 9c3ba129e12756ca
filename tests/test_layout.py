"""The package's layout: one concept per module, each about 500 lines at most, tests mirroring
modules, and every public name exported once from the top level."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import pytest

import funcopt

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(m.name for m in pkgutil.iter_modules(funcopt.__path__) if m.name != "__init__")
# A module's second half, tested with the first (the bench's workloads, viz's parts).
TESTED_WITH = {
    "bench_workloads": "bench",
    "surfaces": "viz",
    "viz_studies": "viz",
    "__main__": "main",
}


@pytest.mark.parametrize("name", MODULES)
def test_no_module_is_over_about_500_lines(name):
    lines = (ROOT / "funcopt" / f"{name}.py").read_text().count("\n")
    assert lines <= 520, f"funcopt/{name}.py has {lines} lines: split it by concept"


@pytest.mark.parametrize("name", MODULES)
def test_tests_mirror_modules(name):
    test = ROOT / "tests" / f"test_{TESTED_WITH.get(name, name)}.py"
    assert test.is_file(), f"funcopt/{name}.py has no {test.relative_to(ROOT)}"


def test_every_public_name_has_one_home():
    homes: dict[str, list[str]] = {}
    for module in funcopt._MODULES:
        for name in module.__all__:
            homes.setdefault(name, []).append(module.__name__)
    twice = {name: where for name, where in homes.items() if len(where) > 1}
    assert not twice, f"exported by more than one module: {twice}"
    assert sorted(homes) == funcopt.__all__

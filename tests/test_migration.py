"""docs/migrating-from-optax.md: every funcopt name it uses exists, every optax name is listed."""

from __future__ import annotations

import pathlib
import re

import optax
import optax.contrib
import optax.schedules
import pytest

import funcopt

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "migrating-from-optax.md"
ROW = re.compile(r"^\| `(optax\.[\w.]+)`[^|]*\| ([^|]*) \|")
CALLED = re.compile(r"([A-Za-z_]\w*)\s*\(")


def _rows() -> dict[str, str]:
    """optax name -> funcopt cell, for every table row of the page."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def _funcopt_names(cell: str) -> set[str]:
    """Names a funcopt cell refers to: each code span's head and everything called in it."""
    if cell.startswith("not provided"):
        return set()
    names = set()
    for span in re.findall(r"`([^`]+)`", cell):
        names.add(re.match(r"[A-Za-z_]\w*", span).group(0))
        names.update(CALLED.findall(span))
    return names


def test_table_parses():
    rows = _rows()
    assert len(rows) > 200
    assert rows["optax.adam"] == "`adam`"


@pytest.mark.parametrize("optax_name", sorted(_rows()))
def test_funcopt_names_exist(optax_name):
    missing = sorted(n for n in _funcopt_names(_rows()[optax_name]) if not hasattr(funcopt, n))
    assert not missing, f"{optax_name}: funcopt has no {missing}"


def test_every_optax_name_is_listed():
    public = set(optax.__all__) | {n for n in dir(optax.schedules) if not n.startswith("_")}
    public |= {f"contrib.{n}" for n in dir(optax.contrib) if not n.startswith("_")}
    listed = {name.removeprefix("optax.") for name in _rows()}
    assert not sorted(public - listed)


def test_no_name_funcopt_provides_is_called_not_provided():
    """A row may say "not provided" only for a name funcopt does not have."""
    stale = sorted(
        name
        for name, cell in _rows().items()
        if cell.startswith("not provided") and hasattr(funcopt, name.rsplit(".", 1)[-1])
    )
    assert not stale, f"funcopt provides these, the table says not: {stale}"

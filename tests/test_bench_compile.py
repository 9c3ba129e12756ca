"""funcopt.bench_compile: the compile-time table of ``funcopt bench --compile``."""

from __future__ import annotations

import json

import jax
import optax
import pytest

import funcopt
from funcopt import bench, bench_compile


def test_every_optimizer_is_built_the_same_by_both_libraries():
    """Each OPTIMIZERS entry builds a transform from either module with optax's names, and
    both take one step of the same size (the compiled programs compare like for like)."""
    params = {"w": jax.numpy.ones((4, 3)), "b": jax.numpy.full(3, 0.5)}
    grads = jax.tree.map(lambda p: 0.1 * p, params)
    for name, make in bench_compile.OPTIMIZERS.items():
        ours, theirs = make(funcopt), make(optax)
        u, _ = ours.update(grads, ours.init(params), params)
        v, _ = theirs.update(grads, theirs.init(params), params)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v), strict=True):
            assert jax.numpy.allclose(a, b, rtol=1e-5, atol=1e-7), name


def test_a_cell_per_optimizer_and_leaf_count_with_program_sizes():
    cells = bench_compile.run_compile("tiny", optimizers=["sgd"], rounds=1)
    assert [(c.optimizer, c.leaves) for c in cells] == [("sgd", 4), ("sgd", 8)]
    for c in cells:
        assert c.funcopt_s > 0 and c.optax_s > 0 and c.ratio == c.funcopt_s / c.optax_s
    # the HLO is deterministic: the same count as compiling once more by hand
    assert cells[0].funcopt_hlo == bench_compile.compile_once(funcopt, "sgd", 4)[1]
    assert cells[1].optax_hlo > cells[0].optax_hlo > 0  # twice the leaves, a longer program


def test_unknown_optimizer_is_an_error_naming_the_valid_ones(capsys):
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm'.*'adamw'"):
        bench_compile.run_compile("tiny", optimizers=["adamm"])
    assert bench.main(["--compile", "--tiny", "--optimizers", "adamm"]) == 2
    assert "unknown optimizer 'adamm'" in capsys.readouterr().err


def test_cli_prints_the_markdown_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "compile.json"
    argv = ["--compile", "--tiny", "--optimizers", "sgd", "--no-progress", "--markdown"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("| clip_by_global_norm + … | leaves |")
    assert "| sgd | 4 |" in text and "| sgd | 8 |" in text
    rows = json.loads(out.read_text())["compile"]
    assert [(r["optimizer"], r["leaves"]) for r in rows] == [("sgd", 4), ("sgd", 8)]

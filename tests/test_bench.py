"""funcopt bench at a tiny size: the table's structure and positive numbers (no timings)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
import shutil

import pytest

from funcopt import bench
from funcopt.__main__ import main as cli
from funcopt.bench_workloads import describe, select

IMPLS = ["funcopt tree", "funcopt packed", "optax", "optax donated", "torch fused"]
WORKLOADS = ["adam 20×1k", "train MLP"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "out.json"
    argv = ["bench", "--tiny", "--rounds", "1", "--no-progress", "--json", str(path)]
    # ASCII x for ×, and a name split over words as an unquoted shell argument is
    names = ["adam 20x1k", "train", "MLP"]
    assert cli([*argv, "--impls", *IMPLS, "--workloads", *names]) == 0
    return json.loads(path.read_text())


def test_every_cell_is_measured(results):
    cells = results["cells"]
    have_torch = importlib.util.find_spec("torch") is not None
    expected = IMPLS if have_torch else IMPLS[:4]
    assert [(c["workload"], c["impl"]) for c in cells] == [
        (w, i) for w in WORKLOADS for i in expected
    ]
    assert set(cells[0]) == set(bench.Cell._fields)


def test_numbers_are_positive_and_ratios_relative_to_the_baseline(results):
    for c in results["cells"]:
        assert c["step_ms"] > 0 and c["ratio"] > 0 and c["bandwidth_frac"] > 0
        assert c["params"] > 0 and c["peak_mib"] >= 0 and c["peak_ratio"] > 0
        if c["impl"].startswith("torch"):
            assert c["compile_s"] is None
        else:
            assert c["compile_s"] > 0
        if c["impl"] == bench.BASELINE:
            assert math.isclose(c["ratio"], 1.0)
    meta = results["meta"]
    assert meta["copy_bandwidth_GBps"] > 0 and meta["size"] == "tiny"
    assert meta["memory_source"] in {"device", "rss", "none"}


def test_table_has_one_row_per_cell(results):
    cells = [bench.Cell(**c) for c in results["cells"]]
    t = bench.table(cells, results["meta"])
    assert t.row_count == len(cells)
    assert [c.header for c in t.columns][:4] == ["workload", "impl", "ratio", "step ms"]
    md = bench.markdown(cells).splitlines()
    assert len(md) == len(cells) + 2 and md[0].startswith("| workload | impl | ratio |")
    assert all(line.count("|") == len(bench.COLUMNS) + 1 for line in md)


def test_buffer_plan_counts_donation(results):
    # An Adam step holds p, g, m, v (the live set). Donated, its outputs reuse p, m, v:
    # 1x. Not donated, XLA allocates new p, m and v beside them: 7/4 = 1.75x. (Within 1%:
    # the step counts and scalar temporaries take a few hundred aligned bytes.)
    plan = {(c["workload"], c["impl"]): c["plan_ratio"] for c in results["cells"]}
    assert plan["adam 20×1k", "optax donated"] == pytest.approx(1.0, abs=0.01)
    assert plan["adam 20×1k", "funcopt tree"] == pytest.approx(1.0, abs=0.01)
    # The packed step receives the gradient tree and packs it: one more g, 5/4 = 1.25x.
    assert plan["adam 20×1k", "funcopt packed"] == pytest.approx(1.25, abs=0.01)
    assert plan["adam 20×1k", "optax"] == pytest.approx(1.75, abs=0.01)
    assert plan.get(("adam 20×1k", "torch fused")) is None


def test_unknown_option_is_an_error():
    with pytest.raises(SystemExit) as exc:
        bench.main(["--no-such-option"])
    assert exc.value.code != 0


def test_interleaving_varies_the_neighbours():
    # Each implementation must follow several different ones across rounds; a rotated
    # fixed order (the first bench's) gives every one a single predecessor.
    names = list(bench.IMPLS)
    rounds = bench.interleaved(names, 9)
    assert all(sorted(r) == sorted(names) for r in rounds)
    flat = [name for r in rounds for name in r]
    before = {name: {a for a, b in itertools.pairwise(flat) if b == name} for name in names}
    assert all(len(p) >= 3 for p in before.values()), before
    assert bench.interleaved(names, 9) == rounds  # reproducible


def test_workload_names_accept_x_for_times_case_and_split_words():
    tiny = bench.SIZES["tiny"]["workloads"]
    names = lambda *given: [w.name for w in select(tiny, list(given))]
    assert names("adam 20x1k") == names("ADAM  20×1K") == ["adam 20×1k"]
    assert names("train", "mlp", "adam", "1x64k") == ["adam 1×64k", "train MLP"]  # table order
    assert names("train 20 leaves", "train MLP") == ["train MLP", "train 20 leaves"]
    assert select(tiny, None) == list(tiny)
    with pytest.raises(ValueError, match=r"unknown workload 'adam 1x16M' at the tiny size"):
        select(tiny, ["adam 1x16M", "train MLP"], "tiny")


def test_unknown_workload_is_a_usage_error_listing_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["bench", "--tiny", "--workloads", "adam 1x16M"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown workload 'adam 1x16M' at the tiny size" in err
    for w in bench.SIZES["tiny"]["workloads"]:
        assert repr(w.name) in err
    assert "--list-workloads" in err


def test_list_workloads_prints_every_name_with_what_it_times(capsys):
    assert cli(["bench", "--list-workloads"]) == 0
    out = capsys.readouterr().out
    for size, cfg in bench.SIZES.items():
        assert f"{size} size" in out
        for w in cfg["workloads"]:
            assert any(
                line.split("  ")[1:2] == [w.name] and line.endswith("  " + describe(w, cfg))
                for line in out.splitlines()
            ), (size, w.name)
    assert "Adam step alone (gradients given), 20 leaves of 1,024 parameters" in out
    assert "train step of an MLP 16 → 32 → 32 → 4, batch 8" in out
    assert cli(["bench", "--tiny", "--list-workloads"]) == 0
    tiny = capsys.readouterr().out
    assert "tiny size" in tiny and "full size" not in tiny


def test_bench_help_is_plain_and_lists_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["bench", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: funcopt bench")
    assert not re.search(r"``|:func:|:mod:", text), text
    flat = " ".join(text.split())
    assert "--rounds N interleaved rounds (default: 7 full, 9 quick, 2 tiny)" in flat
    assert "(default: every workload of the size)" in flat and "x may stand for ×" in flat
    assert "(default: all; torch's are skipped without torch)" in flat
    for option in (
        "--quick",
        "--tiny",
        "--json",
        "--markdown",
        "--no-progress",
        "--list-workloads",
    ):
        assert option in text


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_progress_says_torch_is_warmed_up_not_compiled():
    class Progress:
        def __init__(self):
            self.said = []

        def add_task(self, description, total):
            return 0

        def update(self, task, description):
            self.said.append(description)

        def advance(self, task):
            pass

    progress = Progress()
    bench.run("tiny", impls=["optax donated", "torch fused"], workloads=["adam 20x1k"],
              rounds=1, progress=progress)  # fmt: skip
    assert "adam 20×1k: compiling optax donated" in progress.said
    assert "adam 20×1k: warming up torch fused" in progress.said
    assert not any("compiling torch" in s for s in progress.said)


def _run_bench_script(tmp_path, name: str, *args: str) -> str:
    """Runs docs/bench/``name`` with ``args`` in ``tmp_path``; its stdout (it must succeed)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "docs" / "bench" / name
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_packed_step_benchmark_script_runs(tmp_path):
    """docs/bench/packed_step.py (the measurements behind docs/bench/packed-step.md) runs,
    at its tiny size, and prints a row per variant."""
    out = _run_bench_script(
        tmp_path, "packed_step.py", "--tiny", "--models", "many", "--optimizers", "adam"
    )
    assert "funcopt packed" in out and "optax" in out, out


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="needs a C++ compiler")
def test_fused_adam_script_runs_and_kernel_matches_xla(tmp_path):
    """docs/bench/fused_adam.py (the measurement behind item 5) checks that ten steps of
    funcopt's one-pass kernel equal ten XLA steps (relative 1e-6), and prints a row per
    variant, at a small size."""
    out = _run_bench_script(
        tmp_path, "fused_adam.py", "--size", "4096", "--rounds", "1", "--inner", "1"
    )
    diff = float(out.split("after 10 steps: ")[1].split()[0])
    assert diff < 1e-6
    assert "one-pass kernel" in out and "funcopt.adam, XLA" in out, out

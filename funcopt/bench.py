"""``funcopt bench``: Adam steps and train steps, funcopt vs optax vs torch.optim.

Workloads (rows): one big leaf, many small leaves (optimizer step only: gradients are
given), and full train steps (loss, gradient, Adam, parameter update) of a small MLP and
of a many-leaf model. Implementations (columns of each row group): funcopt on the
pytree in XLA (``tx.update`` + ``apply_updates``, ``fused=False``), funcopt's default
(``funcopt fused``: :func:`~funcopt.update_and_apply`, which runs float32 leaves of at
least 512k elements through the one-pass Adam kernel on CPU; what ``make_train_step`` does),
packed (:mod:`funcopt.packing`), optax plain and donated, and
``torch.optim.Adam`` with ``foreach`` and ``fused`` when torch is importable. In the
optimizer-only rows, ``funcopt packed`` receives the gradients as the pytree a model's
gradient is, as a real train step does (:func:`~funcopt.packed_update_and_apply`: on CPU
the Adam kernel reads them leaf by leaf; elsewhere they are packed inside the step).

Method (``docs/performance.md``): every implementation is compiled first and its
compile time measured apart (``.lower().compile()``); then the implementations run
interleaved for several rounds, in a fresh (seeded) order each round and with one
untimed step before each block, each step blocked on its outputs, and
the table shows medians and ratios to optax (donated) measured in the same run. The
machine's own in-place bandwidth is measured in the same run too, and each step's
*minimum* traffic (28 bytes per fp32 parameter for Adam: read p, g, m, v; write p, m, v)
is reported as a fraction of it. Peak memory is the device's ``peak_bytes_in_use``
where the backend reports it, else the process's peak RSS (``VmHWM`` after resetting
it through ``/proc/self/clear_refs``) above the resident set before the steps (the JSON's
``mem_source`` says which); ``plan ×`` is the same ratio from XLA's own buffer plan
(:func:`planned_bytes`), exact and repeatable, for the JAX rows.

Run ``python -m funcopt bench`` (a few minutes), ``--quick`` (about 45 s) or ``--tiny``
(seconds, for the tests); ``--json PATH`` saves the results. ``--list-workloads``
prints each size's workload names (``--workloads`` takes them, with ``x`` for ``×``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.bench_compile import OPTIMIZERS, main_compile
from funcopt.bench_workloads import (
    BASELINE,
    Impl,
    Workload,
    adam_impls,
    describe,
    select,
    train_impls,
)

__all__ = ["Cell", "Workload", "main", "run"]

ADAM_BYTES_PER_PARAM = 28  # fp32: read p, g, m, v; write p, m, v


class Cell(NamedTuple):
    """One measured (workload, implementation) pair."""

    workload: str
    impl: str
    params: int
    leaves: int
    step_ms: float
    ratio: float
    compile_s: float | None
    bandwidth_frac: float
    peak_mib: float
    peak_ratio: float
    mem_source: str
    plan_ratio: float | None = None


SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "workloads": [
            Workload("adam 1×16M", "adam", 1, 16 * 2**20),
            Workload("adam 1000×1k", "adam", 1000, 1024),
            Workload("adam 10000×100", "adam", 10_000, 100),
            Workload("train MLP", "train", 6, 0, "mlp"),
            Workload("train 1000 leaves", "train", 1000, 1024, "many"),
        ],
        "rounds": 7,
        "reps": 3,
        "mlp": (512, 1024, 1024, 10),
        "batch": 128,
    },
    "quick": {
        "workloads": [
            Workload("adam 1×1M", "adam", 1, 2**20),
            Workload("adam 200×1k", "adam", 200, 1024),
            Workload("adam 500×100", "adam", 500, 100),
            Workload("train MLP", "train", 6, 0, "mlp"),
            Workload("train 100 leaves", "train", 100, 1024, "many"),
        ],
        "rounds": 9,
        "reps": 3,
        "mlp": (128, 256, 256, 10),
        "batch": 64,
    },
    "tiny": {
        "workloads": [
            Workload("adam 1×64k", "adam", 1, 2**16),
            Workload("adam 20×1k", "adam", 20, 1024),
            Workload("train MLP", "train", 6, 0, "mlp"),
            Workload("train 20 leaves", "train", 20, 256, "many"),
        ],
        "rounds": 2,
        "reps": 1,
        "mlp": (16, 32, 32, 4),
        "batch": 8,
    },
}

IMPLS = (
    "funcopt tree",
    "funcopt fused",
    "funcopt packed",
    "optax",
    "optax donated",
    "torch foreach",
    "torch fused",
)


# ---- memory ---------------------------------------------------------------------------


def _rss_field(name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _Memory:
    """Peak memory of a few steps: device stats where reported, else peak RSS."""

    def __init__(self) -> None:
        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            self.source = "device"
        elif _rss_field("VmHWM") is not None and os.access("/proc/self/clear_refs", os.W_OK):
            self.source = "rss"
        else:
            self.source = "none"

    def measure(self, run: Callable[[], None]) -> float:
        """Bytes above the level before ``run`` at the peak during it."""
        gc.collect()
        if self.source == "device":
            stats = jax.devices()[0].memory_stats() or {}
            before = stats.get("bytes_in_use", 0)
            run()
            stats = jax.devices()[0].memory_stats() or {}
            return float(max(0, stats.get("peak_bytes_in_use", 0) - before))
        if self.source == "rss":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            before = _rss_field("VmRSS") or 0
            run()
            return float(max(0, (_rss_field("VmHWM") or 0) - before))
        run()
        return float("nan")


# ---- the run --------------------------------------------------------------------------


def copy_bandwidth(n: int = 16 * 2**20, rounds: int = 9) -> float:
    """Bytes per second of a donated in-place ``x ← 1.0001 x`` (read + write 8 B/elem)."""
    x = jnp.ones(n, jnp.float32)
    fn = jax.jit(lambda a: a * jnp.float32(1.0001), donate_argnums=0)
    c = fn.lower(x).compile()
    x = c(x)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        x = c(x)
        x.block_until_ready()
        times.append(time.perf_counter() - t0)
    return 8 * n / statistics.median(times)


def _n_params(w: Workload, cfg: dict[str, Any]) -> int:
    if w.model == "mlp":
        s = cfg["mlp"]
        return sum(a * b + b for a, b in itertools.pairwise(s))
    return w.leaves * w.leaf_size


def interleaved(items: Sequence[Any], rounds: int, seed: int = 0) -> list[list[Any]]:
    """One order of ``items`` per round, each a fresh shuffle (seeded, so reproducible).

    Rotating one fixed order does not interleave fairly: every item then always follows
    the same neighbour. In the first bench ``funcopt tree`` always ran right after
    ``torch fused`` and read 1.2-1.3x optax's time, against 1.0x when the order is
    shuffled or torch is left out.
    """
    rng = random.Random(seed)
    return [rng.sample(list(items), len(items)) for _ in range(rounds)]


def run(
    size: str = "full",
    *,
    impls: Sequence[str] = IMPLS,
    workloads: Sequence[str] | None = None,
    rounds: int | None = None,
    progress: Any = None,
) -> tuple[list[Cell], dict[str, Any]]:
    """Measure every (workload, implementation) cell; return the cells and run metadata."""
    cfg = SIZES[size]
    rounds = rounds or cfg["rounds"]
    reps = cfg["reps"]
    chosen = select(cfg["workloads"], workloads, size)  # ValueError for an unknown name
    memory = _Memory()
    n_copy = max([_n_params(w, cfg) for w in chosen] + [2**20])
    bandwidth = copy_bandwidth(min(n_copy, 16 * 2**20))
    cells = []
    task = None
    if progress is not None:
        task = progress.add_task("bench", total=len(chosen) * (rounds + 2))
    for w in chosen:
        if progress is not None:
            progress.update(task, description=f"{w.name}: building")
        built = adam_impls(w, impls) if w.kind == "adam" else train_impls(w, impls, cfg)
        compile_s = {}
        for impl in built:
            if progress is not None:
                # torch runs eagerly: its "compile" is only the warm-up step below
                verb = "warming up" if impl.name.startswith("torch") else "compiling"
                progress.update(task, description=f"{w.name}: {verb} {impl.name}")
            compile_s[impl.name] = impl.compile()
            impl.step()  # warm-up (first call allocates)
        if progress is not None:
            progress.advance(task)
        for r, blocks in enumerate(interleaved(built, rounds)):
            if progress is not None:
                progress.update(task, description=f"{w.name}: round {r + 1}/{rounds}")
            for impl in blocks:
                impl.step()  # untimed: absorbs what the previous block left running
                for _ in range(reps):
                    t0 = time.perf_counter()
                    impl.step()
                    impl.times.append(time.perf_counter() - t0)
            if progress is not None:
                progress.advance(task)
        n = _n_params(w, cfg)
        live = n * 4 * 4  # params, grads, m, v in fp32
        medians = {i.name: statistics.median(i.times) for i in built}
        base = medians.get(BASELINE)
        for impl in built:

            def three(impl: Impl = impl) -> None:
                for _ in range(3):
                    impl.step()

            extra = memory.measure(three)
            med = medians[impl.name]
            plan = impl.plan()
            cells.append(
                Cell(
                    workload=w.name,
                    impl=impl.name,
                    params=n,
                    leaves=w.leaves,
                    step_ms=med * 1e3,
                    ratio=med / base if base else float("nan"),
                    compile_s=compile_s[impl.name],
                    bandwidth_frac=ADAM_BYTES_PER_PARAM * n / med / bandwidth,
                    peak_mib=extra / 2**20,
                    peak_ratio=(impl.resident_bytes + extra) / live,
                    mem_source=memory.source,
                    plan_ratio=None if plan is None else plan / live,
                )
            )
        if progress is not None:
            progress.advance(task)
        del built
        gc.collect()
    meta = {
        "size": size,
        "rounds": rounds,
        "reps": reps,
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "memory_source": memory.source,
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    return cells, meta


COLUMNS = (
    "workload",
    "impl",
    "ratio",
    "step ms",
    "compile s",
    "BW",
    "peak MiB",
    "peak ×",
    "plan ×",
)


def _rows(cells: Sequence[Cell]) -> list[list[str]]:
    """The cells formatted as strings in :data:`COLUMNS` order, the workload name on the
    first row of its group only."""
    rows, last = [], None
    for c in cells:
        rows.append(
            [
                c.workload if c.workload != last else "",
                c.impl,
                f"{c.ratio:.2f}",
                f"{c.step_ms:.3f}",
                "—" if c.compile_s is None else f"{c.compile_s:.2f}",
                f"{c.bandwidth_frac:.2f}",
                f"{c.peak_mib:.1f}",
                f"{c.peak_ratio:.2f}",
                "—" if c.plan_ratio is None else f"{c.plan_ratio:.2f}",
            ]
        )
        last = c.workload
    return rows


def table(cells: Sequence[Cell], meta: dict[str, Any]) -> Any:
    """The results as a ``rich.table.Table``."""
    from rich.table import Table

    t = Table(
        title=f"funcopt bench ({meta['size']}, {meta['backend']}, "
        f"copy bandwidth {meta['copy_bandwidth_GBps']:.1f} GB/s)",
        caption=f"ratio: step time / {BASELINE} in the same run; BW: minimum Adam traffic "
        "(28 B/param) / step time, as a fraction of the measured in-place bandwidth; "
        "peak: extra memory during 3 steps, and (resident + extra) / (params + grads + state); "
        "plan ×: the same ratio from XLA's buffer assignment (JAX only); funcopt tree: "
        "XLA only (fused=False); funcopt fused: the default, with the one-pass Adam kernel "
        "for float32 leaves of 512k+ on CPU; funcopt packed gets the gradient as a tree in "
        "every step, in the adam rows too (read leaf by leaf by the kernel on CPU)",
    )
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in ("workload", "impl") else "right")
    for row in _rows(cells):
        t.add_row(*row, end_section=False)
    return t


def markdown(cells: Sequence[Cell]) -> str:
    """The results as a Markdown table (what ``docs/performance.md`` shows)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | --- |" + " ---: |" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(cells)]
    return "\n".join(lines)


DESCRIPTION = """\
Times Adam optimizer steps and full train steps: funcopt (on the pytree and packed)
against optax (plain and with donated buffers) and torch.optim.Adam (foreach and
fused, when torch is installed). Every JAX step is compiled first (its compile time
reported apart), then all implementations run interleaved, in a fresh order each
round; the table shows median step times and their ratio to optax donated measured
in the same run, the fraction of the machine's in-place memory bandwidth reached,
and peak memory. The full size takes a few minutes."""

EPILOG = """\
examples:
  funcopt bench --quick
  funcopt bench --list-workloads
  funcopt bench --tiny --workloads "adam 20x1k" "train MLP" --impls optax "funcopt tree"
  funcopt bench --json bench.json --markdown
  funcopt bench --compile --quick        compile times, funcopt against optax"""


def list_workloads(sizes: Sequence[str]) -> str:
    """The workload names of each size, each with what it times."""
    lines = [
        "adam: the optimizer step alone; train: loss, gradient, Adam and the parameter update",
        "in one compiled step. All fp32.",
    ]
    width = max(len(w.name) for s in sizes for w in SIZES[s]["workloads"])
    for size in sizes:
        lines.append(f"{size} size ({'the default' if size == 'full' else '--' + size}):")
        cfg = SIZES[size]
        lines += [f"  {w.name:<{width}}  {describe(w, cfg)}" for w in cfg["workloads"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``funcopt bench``; returns the exit status."""
    from funcopt.__main__ import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="funcopt bench", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help="smaller sizes, fewer rounds: about 45 s"
    )
    size.add_argument(
        "--tiny", action="store_true", help="a few seconds, for the tests (default: full size)"
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=IMPLS,
        default=list(IMPLS),
        metavar="IMPL",
        help="only these implementations, of: "
        + ", ".join(repr(i) for i in IMPLS)
        + " (default: all; torch's are skipped without torch)",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        metavar="NAME",
        help="only these workloads, as --list-workloads names them; x may stand for ×"
        " (default: every workload of the size)",
    )
    parser.add_argument(
        "--list-workloads",
        action="store_true",
        help="print the workload names with what each times, and exit",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="interleaved rounds (default: "
        + ", ".join(f"{SIZES[s]['rounds']} {s}" for s in SIZES)
        + ")",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print a Markdown table (default: a rich table)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (default: one is shown)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time compilation instead: clip_by_global_norm(1.0) chained before each optimizer,"
        " a donated tree-mode step on 100, 300 and 1000 leaves of 64x8 (--quick: 100 and 300),"
        " funcopt against optax, with the optimized HLO's size (about 10 min; --quick 1 min)",
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        metavar="NAME",
        help="with --compile, only these optimizers, of: "
        + ", ".join(repr(n) for n in OPTIMIZERS)
        + " (default: 5 of them at the full size, 3 with --quick)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    size_name = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.list_workloads:
        print(list_workloads([size_name] if args.tiny or args.quick else list(SIZES)))
        return 0
    try:
        select(SIZES[size_name]["workloads"], args.workloads, size_name)
    except ValueError as e:
        parser.error(f"{e}; --list-workloads lists every size's")

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(width=None if os.isatty(1) else 132)
    if args.compile:
        return main_compile(args, size_name, console)
    if args.no_progress:
        cells, meta = run(size_name, impls=args.impls, workloads=args.workloads, rounds=args.rounds)
    else:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            cells, meta = run(
                size_name,
                impls=args.impls,
                workloads=args.workloads,
                rounds=args.rounds,
                progress=progress,
            )
    if args.markdown:
        print(markdown(cells))
    else:
        console.print(table(cells, meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "cells": [c._asdict() for c in cells]}, f, indent=1)
        console.print(f"wrote {args.json}")
    return 0

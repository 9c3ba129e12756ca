"""What ``funcopt bench --compile`` measures: how long a tree-mode step takes to compile.

Compile time is what a JAX user feels first, and it grows with the number of leaves. For
each optimizer and each leaf count, the same donated step, ``clip_by_global_norm(1.0)``
chained before the optimizer, then ``apply_updates``, is traced, lowered and compiled from
scratch (a fresh function each time, so no cache of JAX's is hit), with funcopt and with
optax, interleaved in a fresh order each round; the table gives the median seconds, their
ratio and the optimized HLO's instruction count (deterministic, unlike the seconds:
``tests/test_program_size.py`` asserts on it). The step is the optimizer's alone, with the
gradients given: a loss would add the same compile time to both sides.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "COMPILE_SIZES",
    "OPTIMIZERS",
    "CompileCell",
    "compile_markdown",
    "main_compile",
    "run_compile",
]

OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "sgd": lambda m: m.sgd(1e-2),
    "sgd momentum": lambda m: m.sgd(1e-2, momentum=0.9),
    "adam": lambda m: m.adam(1e-3),
    "adamw": lambda m: m.adamw(1e-3, weight_decay=1e-4),
    "nadam": lambda m: m.nadam(1e-3),
    "amsgrad": lambda m: m.amsgrad(1e-3),
    "rmsprop": lambda m: m.rmsprop(1e-3),
    "adabelief": lambda m: m.adabelief(1e-3),
    "lion": lambda m: m.lion(1e-4),
    "lamb": lambda m: m.lamb(1e-3),
    "adafactor": lambda m: m.adafactor(1e-3),
}
"""Each optimizer as built from a module with optax's names (``funcopt`` or ``optax``)."""

COMPILE_SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "leaves": (100, 300, 1000),
        "rounds": 3,
        "optimizers": ("sgd momentum", "adamw", "amsgrad", "lion", "adafactor"),
    },
    "quick": {"leaves": (100, 300), "rounds": 3, "optimizers": ("sgd", "adamw", "lion")},
    "tiny": {"leaves": (4, 8), "rounds": 1, "optimizers": ("adam", "lion")},
}
"""Leaf counts, rounds and default optimizers of each size; every leaf is a 64×8 matrix."""

LEAF_SHAPE = (64, 8)
_INSTRUCTION = re.compile(r"\s+(ROOT )?%")


class CompileCell(NamedTuple):
    """One row: median compile seconds and optimized-HLO instructions, funcopt and optax."""

    optimizer: str
    leaves: int
    funcopt_s: float
    optax_s: float
    funcopt_hlo: int
    optax_hlo: int

    @property
    def ratio(self) -> float:
        return self.funcopt_s / self.optax_s


def _step_fn(tx: Any, apply: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    return step


def compile_once(module: Any, optimizer: str, leaves: int) -> tuple[float, int]:
    """Seconds to trace, lower and compile the donated clipped step afresh, and the line
    instruction count of its optimized HLO."""
    rng = np.random.default_rng(0)
    params, grads = (
        [jnp.asarray(rng.standard_normal(LEAF_SHAPE, dtype=np.float32)) for _ in range(leaves)]
        for _ in range(2)
    )
    tx = module.chain(module.clip_by_global_norm(1.0), OPTIMIZERS[optimizer](module))
    state = tx.init(params)
    t0 = time.perf_counter()
    compiled = (
        jax.jit(_step_fn(tx, module.apply_updates), donate_argnums=(0, 1))
        .lower(params, state, grads)
        .compile()
    )
    seconds = time.perf_counter() - t0
    return seconds, hlo_lines(compiled.as_text() or "")


def hlo_lines(text: str) -> int:
    """Instructions in an optimized HLO module's text: its ``%name = ...`` lines, so not the
    table of source locations XLA adds (which varies with the caller's stack)."""
    return sum(1 for line in text.splitlines() if _INSTRUCTION.match(line))


def run_compile(
    size: str = "full",
    *,
    optimizers: Sequence[str] | None = None,
    rounds: int | None = None,
    seed: int = 0,
    progress: Any = None,
) -> list[CompileCell]:
    """Median compile times over ``rounds``, funcopt and optax interleaved in a fresh
    (seeded) order each round, one :class:`CompileCell` per optimizer and leaf count."""
    import optax

    import funcopt

    cfg = COMPILE_SIZES[size]
    names = list(optimizers or cfg["optimizers"])
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        raise ValueError(
            f"unknown optimizer {', '.join(map(repr, unknown))}; "
            f"the valid names are {', '.join(map(repr, OPTIMIZERS))}"
        )
    modules = {"funcopt": funcopt, "optax": optax}
    jobs = [(n, leaves, lib) for n in names for leaves in cfg["leaves"] for lib in modules]
    rounds = rounds or cfg["rounds"]
    times: dict[tuple[str, int, str], list[float]] = {job: [] for job in jobs}
    hlo: dict[tuple[str, int, str], int] = {}
    rng = random.Random(seed)
    task = progress.add_task("compile", total=rounds * len(jobs)) if progress else None
    for _ in range(rounds):
        for job in rng.sample(jobs, len(jobs)):
            name, leaves, lib = job
            if progress is not None:
                progress.update(task, description=f"compiling {lib} {name}, {leaves} leaves")
            seconds, hlo[job] = compile_once(modules[lib], name, leaves)
            times[job].append(seconds)
            if progress is not None:
                progress.advance(task)
    return [
        CompileCell(
            name,
            leaves,
            statistics.median(times[name, leaves, "funcopt"]),
            statistics.median(times[name, leaves, "optax"]),
            hlo[name, leaves, "funcopt"],
            hlo[name, leaves, "optax"],
        )
        for name in names
        for leaves in cfg["leaves"]
    ]


COMPILE_COLUMNS = (
    "clip_by_global_norm + …",
    "leaves",
    "funcopt compile",
    "optax compile",
    "ratio",
    "HLO instructions funcopt / optax",
)


def compile_rows(cells: Sequence[CompileCell]) -> list[list[str]]:
    """The table's rows as text (shared by the rich and the Markdown table)."""
    return [
        [
            c.optimizer,
            f"{c.leaves:,}",
            f"{c.funcopt_s:.2f} s",
            f"{c.optax_s:.2f} s",
            f"{c.ratio:.2f}×",
            f"{c.funcopt_hlo:,} / {c.optax_hlo:,} ({c.funcopt_hlo / c.optax_hlo:.2f}×)",
        ]
        for c in cells
    ]


def compile_markdown(cells: Sequence[CompileCell]) -> str:
    """The compile table in Markdown (what ``docs/performance.md`` shows)."""
    lines = [
        "| " + " | ".join(COMPILE_COLUMNS) + " |",
        "| --- |" + " ---: |" * (len(COMPILE_COLUMNS) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in compile_rows(cells)]
    return "\n".join(lines)


def main_compile(args: argparse.Namespace, size: str, console: Any) -> int:
    """``funcopt bench --compile``: the compile-time table."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    unknown = [n for n in args.optimizers or () if n not in OPTIMIZERS]
    if unknown:
        print(
            f"funcopt bench: error: unknown optimizer {', '.join(map(repr, unknown))}; "
            f"the valid names are {', '.join(map(repr, OPTIMIZERS))}",
            file=sys.stderr,
        )
        return 2
    if args.no_progress:
        cells = run_compile(size, optimizers=args.optimizers, rounds=args.rounds)
    else:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            cells = run_compile(
                size, optimizers=args.optimizers, rounds=args.rounds, progress=progress
            )
    if args.markdown:
        print(compile_markdown(cells))
    else:
        t = Table(title="compile time of a donated tree-mode step (median; ratio funcopt/optax)")
        for i, col in enumerate(COMPILE_COLUMNS):
            t.add_column(col, justify="left" if i == 0 else "right")
        for row in compile_rows(cells):
            t.add_row(*row)
        console.print(t)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"compile": [c._asdict() for c in cells]}, f, indent=1)
        console.print(f"wrote {args.json}")
    return 0

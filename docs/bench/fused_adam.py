"""One large Adam leaf on CPU: funcopt's one-pass kernel against XLA and torch (issue 12, item 5).

Measures, interleaved in one process, one float32 leaf of ``--size`` parameters, every
step donated and given the same gradient:

- ``funcopt.adam, XLA``: ``update_and_apply(..., fused=False)``, ``tx.update`` +
  ``apply_updates`` as XLA compiles them (three passes over memory);
- ``funcopt.adam, one-pass kernel``: ``update_and_apply(..., fused=True)``, the C++ kernel
  shipped with funcopt (``funcopt/fused_adam.cc``, behind ``jax.ffi.ffi_call``, writing
  p, m and v in place), what ``make_train_step`` runs by default for such a leaf;
- ``interleaved [p, m, v]`` (``--interleaved``): the three buffers as one (N, 3) array
  updated by one XLA fusion (a concatenate along the minor axis);
- ``torch fused``: ``torch.optim.Adam(fused=True)``, the reference of every ratio.

Before timing, ten kernel steps are compared with ten XLA steps from the same start; the
largest relative difference is printed and must stay below 1e-6.

    python docs/bench/fused_adam.py                      # 16M parameters, 21 rounds
    python docs/bench/fused_adam.py --size 1048576 --rounds 3   # seconds
    OMP_NUM_THREADS=1 taskset -c 0 python docs/bench/fused_adam.py   # one core for all
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import funcopt
from funcopt.bench_workloads import torch_adam

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
TX = funcopt.adam(LR, b1=B1, b2=B2, eps=EPS)


def funcopt_step(fused: bool) -> Callable[..., Any]:
    def step(p: jax.Array, s: Any, g: jax.Array) -> Any:
        return funcopt.update_and_apply(TX, g, s, p, fused=fused)

    return jax.jit(step, donate_argnums=(0, 1))


@functools.partial(jax.jit, donate_argnums=(0,))
def interleaved_step(s: jax.Array, t: jax.Array, g: jax.Array) -> Any:
    t = t + 1
    tf = t.astype(jnp.float32)
    m = B1 * s[:, 1] + (1 - B1) * g
    v = B2 * s[:, 2] + (1 - B2) * g * g
    p = s[:, 0] - LR * (m / (1 - B1**tf)) / (jnp.sqrt(v / (1 - B2**tf)) + EPS)
    return jnp.stack([p, m, v], axis=1), t


def max_rel_diff(g: jax.Array, p0: np.ndarray) -> float:
    """Ten kernel steps against ten XLA steps from the same start."""
    runs = []
    for fused in (True, False):
        step, p = funcopt_step(fused), jnp.asarray(p0)
        s = TX.init(p)
        for _ in range(10):
            p, s = step(p, s, g)
        runs.append(np.asarray(p, np.float64))
    return float(np.max(np.abs(runs[0] - runs[1])) / np.max(np.abs(runs[1])))


def measure(size: int, rounds: int, inner: int, interleaved: bool) -> dict[str, float]:
    p0 = np.random.default_rng(0).standard_normal(size, dtype=np.float32) * 0.1
    g = jnp.asarray(np.random.default_rng(1).standard_normal(size, dtype=np.float32))
    diff = max_rel_diff(g, p0)
    print(f"max relative difference, kernel vs XLA after 10 steps: {diff:.1e}")
    assert diff < 1e-6, diff
    start = jnp.asarray(p0)
    st: dict[str, Any] = {
        "kernel": [jnp.asarray(p0), TX.init(start)],
        "xla": [jnp.asarray(p0), TX.init(start)],
        "interleaved": [jnp.stack([start, start * 0, start * 0], 1), jnp.zeros([], jnp.int32)],
    }

    def run(name: str, fn: Callable[..., Any]) -> Callable[[], None]:
        def go() -> None:
            st[name] = list(fn(*st[name], g))
            st[name][0].block_until_ready()

        return go

    impls: dict[str, Callable[[], None]] = {
        "funcopt.adam, XLA (donated)": run("xla", funcopt_step(False)),
        "funcopt.adam, one-pass kernel": run("kernel", funcopt_step(True)),
    }
    if interleaved:
        impls["interleaved [p, m, v], one XLA fusion"] = run("interleaved", interleaved_step)
    torch = torch_adam("torch fused", [(size,)], LR)
    if torch is not None:
        impls["torch fused"] = torch.step
    for fn in impls.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=16 * 2**20, help="parameters (default 16M)")
    ap.add_argument("--rounds", type=int, default=21, help="timed rounds (medians)")
    ap.add_argument("--inner", type=int, default=5, help="steps per timed round")
    ap.add_argument("--interleaved", action="store_true", help="also the (N, 3) layout (slow)")
    args = ap.parse_args()
    if not funcopt.fused_adam_available():
        sys.exit(f"the one-pass kernel is not available: {funcopt.fused._load()}")
    medians = measure(args.size, args.rounds, args.inner, args.interleaved)
    ref = medians.get("torch fused", medians["funcopt.adam, XLA (donated)"])
    ref_name = "torch fused" if "torch fused" in medians else "funcopt.adam, XLA"
    print(
        f"\n| {args.size} params, Adam step | ms (median) | × {ref_name} |\n| --- | ---: | ---: |"
    )
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {ms / ref:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""One large Adam leaf on CPU: what a one-pass kernel would gain (issue 12, item 5).

Measures, interleaved in one process, one float32 leaf of ``--size`` parameters, every
step donated and given the same gradient:

- ``funcopt.adam``: funcopt's step (``update`` + ``apply_updates``), what users run;
- ``FFI kernel``: Adam as one pass (``docs/bench/fused_adam.cc``, built here with the
  system C++ compiler against ``jax.ffi.include_dir()``) behind ``jax.ffi.ffi_call``,
  writing p, m and v in place: what a train step that bypasses ``update`` /
  ``apply_updates`` could call;
- ``interleaved [p, m, v]`` (``--interleaved``): the three buffers as one (N, 3) array
  updated by one XLA fusion (a concatenate along the minor axis);
- ``torch fused``: ``torch.optim.Adam(fused=True)``, the reference of every ratio.

Before timing, ten kernel steps are compared with ten ``funcopt.adam`` steps from the
same start (the kernel folds the bias corrections into two scalars, so the last bits
differ; the largest relative difference is printed and must stay below 1e-5).

    python docs/bench/fused_adam.py                      # 16M parameters, 21 rounds
    python docs/bench/fused_adam.py --size 1048576 --rounds 3   # seconds
    OMP_NUM_THREADS=1 taskset -c 0 python docs/bench/fused_adam.py   # one core for all
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import funcopt
from funcopt.bench_workloads import torch_adam

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
SOURCE = Path(__file__).with_name("fused_adam.cc")


def build_kernel(out_dir: Path) -> Path:
    """Compile fused_adam.cc into a shared library (needs a C++ compiler with OpenMP)."""
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise RuntimeError("no C++ compiler (c++ or g++) on PATH")
    lib = out_dir / "libfused_adam.so"
    flags = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
    cmd = [cxx, *flags, "-std=c++17", f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(lib)]
    subprocess.run(cmd, check=True, capture_output=True)
    return lib


def register(lib_path: Path) -> None:
    lib = ctypes.cdll.LoadLibrary(str(lib_path))
    jax.ffi.register_ffi_target("fused_adam", jax.ffi.pycapsule(lib.FusedAdam), platform="cpu")


@functools.partial(jax.jit, donate_argnums=(0, 1, 2))
def kernel_step(p: jax.Array, m: jax.Array, v: jax.Array, t: jax.Array, g: jax.Array) -> Any:
    t = t + 1
    tf = t.astype(jnp.float32)
    coef = jnp.stack([LR / (1 - B1**tf), 1 / (1 - B2**tf)])
    out = jax.ShapeDtypeStruct(p.shape, p.dtype)
    call = jax.ffi.ffi_call("fused_adam", (out, out, out), input_output_aliases={1: 0, 2: 1, 3: 2})
    p, m, v = call(g, p, m, v, coef, b1=np.float32(B1), b2=np.float32(B2), eps=np.float32(EPS))
    return p, m, v, t


@functools.partial(jax.jit, donate_argnums=(0,))
def interleaved_step(s: jax.Array, t: jax.Array, g: jax.Array) -> Any:
    t = t + 1
    tf = t.astype(jnp.float32)
    m = B1 * s[:, 1] + (1 - B1) * g
    v = B2 * s[:, 2] + (1 - B2) * g * g
    p = s[:, 0] - LR * (m / (1 - B1**tf)) / (jnp.sqrt(v / (1 - B2**tf)) + EPS)
    return jnp.stack([p, m, v], axis=1), t


TX = funcopt.adam(LR, b1=B1, b2=B2, eps=EPS)


@functools.partial(jax.jit, donate_argnums=(0, 1))
def funcopt_step(p: jax.Array, s: Any, g: jax.Array) -> Any:
    u, s = TX.update(g, s, p)
    return funcopt.apply_updates(p, u), s


def kernel_start(p0: np.ndarray) -> list[jax.Array]:
    """The kernel's p, m, v and step count at the start."""
    return [jnp.asarray(p0), jnp.zeros(p0.size), jnp.zeros(p0.size), jnp.zeros([], jnp.int32)]


def max_rel_diff(g: jax.Array, p0: np.ndarray) -> float:
    """Ten kernel steps against ten funcopt.adam steps from the same start."""
    k = kernel_start(p0)
    f, fs = jnp.asarray(p0), TX.init(jnp.asarray(p0))
    for _ in range(10):
        k = list(kernel_step(*k, g))
        f, fs = funcopt_step(f, fs, g)
    want = np.asarray(f, np.float64)
    return float(np.max(np.abs(np.asarray(k[0], np.float64) - want)) / np.max(np.abs(want)))


def measure(size: int, rounds: int, inner: int, interleaved: bool) -> dict[str, float]:
    p0 = np.random.default_rng(0).standard_normal(size, dtype=np.float32) * 0.1
    g = jnp.asarray(np.random.default_rng(1).standard_normal(size, dtype=np.float32))
    diff = max_rel_diff(g, p0)
    print(f"max relative difference, kernel vs funcopt.adam after 10 steps: {diff:.1e}")
    assert diff < 1e-5, diff
    st: dict[str, Any] = {
        "kernel": kernel_start(p0),
        "funcopt": [jnp.asarray(p0), TX.init(jnp.asarray(p0))],
        "interleaved": [jnp.stack(kernel_start(p0)[:3], 1), jnp.zeros([], jnp.int32)],
    }

    def run(name: str, fn: Callable[..., Any]) -> Callable[[], None]:
        def go() -> None:
            st[name] = list(fn(*st[name], g))
            st[name][0].block_until_ready()

        return go

    impls: dict[str, Callable[[], None]] = {
        "funcopt.adam (donated)": run("funcopt", funcopt_step),
        "FFI kernel (one pass, in place)": run("kernel", kernel_step),
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
    with tempfile.TemporaryDirectory() as tmp:
        register(build_kernel(Path(tmp)))
        medians = measure(args.size, args.rounds, args.inner, args.interleaved)
    ref = medians.get("torch fused", medians["funcopt.adam (donated)"])
    ref_name = "torch fused" if "torch fused" in medians else "funcopt.adam"
    print(
        f"\n| {args.size} params, Adam step | ms (median) | × {ref_name} |\n| --- | ---: | ---: |"
    )
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {ms / ref:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Shared machinery for comparing funcopt with independent oracles (optax, torch.optim).

``random_params`` builds nested pytrees of mixed shapes; ``quadratic_grads``,
``wavy_grads`` and ``wave_grads`` are deterministic gradient functions of the params and
the step; ``run`` drives any ``(init, update)`` pair for many steps inside one
``lax.scan`` (one compilation), ``run_side_by_side`` several in one program (and
``run_against_optax`` a funcopt transform and its optax twin);
``assert_rel_close`` compares leaf by leaf with a relative error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import funcopt

SHAPES = {"dense": {"w": (7, 5), "b": (5,)}, "scalar": (), "seq": [(3,), (2, 3, 4)], "col": (6, 1)}


def random_params(seed: int = 0, dtype: Any = jnp.float32, shapes: Any = SHAPES) -> Any:
    """A nested pytree (dicts, lists) of arrays of the given shapes, normal entries."""
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten(
        [
            jax.random.normal(k, s, dtype=jnp.float32).astype(dtype)
            for k, s in zip(keys, leaves, strict=True)
        ]
    )


def quadratic_grads(params: Any, step: jax.Array) -> Any:
    """Gradient of a stretched quadratic plus a step-dependent oscillation.

    The quadratic part contracts differences between two runs (so rounding does not
    grow chaotically); the oscillation, different for every coordinate, keeps each
    gradient changing sign and size, which exercises momentum and RMS statistics.
    (Deterministic sines rather than a PRNG inside the scan: it compiles ~5x faster.)
    """
    leaves, treedef = jax.tree.flatten(params)
    out = []
    t = step.astype(jnp.float32)
    for i, p in enumerate(leaves):
        phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)
        wave = jnp.sin(t * (0.7 + 0.13 * i) + 1.3 * phase) * (1.0 + jnp.cos(0.05 * t + phase))
        curvature = 0.5 + i
        out.append((curvature * (p - 0.3) + wave.astype(p.dtype)).astype(p.dtype))
    return treedef.unflatten(out)


def wavy_grads(params: Any, step: jax.Array) -> Any:
    """A stretched quadratic's gradient plus a deterministic wave in every coordinate.

    Like ``quadratic_grads`` (the quadratic contracts rounding differences, the wave
    keeps each coordinate's gradient changing sign and size) with other frequencies and
    phases; the wrapper tests (masked, partition, inject_hyperparams, MultiSteps,
    lookahead, ...) run on it.
    """
    leaves, treedef = jax.tree.flatten(params)
    t = step.astype(jnp.float32)
    out = []
    for i, p in enumerate(leaves):
        phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) * 0.618
        wave = jnp.sin(t * (0.37 + 0.11 * i) + phase) * (1.0 + jnp.cos(0.05 * t))
        out.append((0.5 + i) * (p - 0.3) + wave.astype(p.dtype))
    return treedef.unflatten(out)


def wave_grads(params: Any, step: jax.Array) -> Any:
    """Gradient of a stretched quadratic plus a deterministic wave per coordinate.

    Like ``quadratic_grads`` (the quadratic contracts rounding differences, the wave
    keeps every coordinate's gradient changing sign and size) with a plain sine; the
    schedule tests run optimizers holding a schedule on it.
    """
    leaves, treedef = jax.tree.flatten(params)
    t = step.astype(jnp.float32)
    out = []
    for i, p in enumerate(leaves):
        phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)
        out.append((0.5 + i) * (p - 0.3) + jnp.sin(0.7 * (i + 1) * t + phase))
    return jax.tree.unflatten(treedef, out)


Side = tuple[Any, Any, Callable[[Any, Any], Any]]  # (tx, params, apply_updates)


def run_side_by_side(
    sides: list[Side],
    steps: int,
    grad_fn: Callable[[Any, jax.Array], Any] = quadratic_grads,
) -> list[tuple[Any, Any]]:
    """``steps`` updates of every ``(tx, params, apply_updates)`` side, all in one jitted
    ``lax.scan``; returns each side's (params, state).

    Each side sees only its own parameters, state and gradients, so the runs are those
    of separate programs; one program compiles about 30% faster than two (the gradient's
    kernels, identical on both sides, are compiled once), and compiling is what the
    oracle tests spend their time on.
    """

    @jax.jit
    def go(all_params: list[Any]) -> list[tuple[Any, Any]]:
        def body(carry: list[tuple[Any, Any]], step: jax.Array) -> tuple[Any, None]:
            out = []
            for (tx, _, apply_updates), (p, s) in zip(sides, carry, strict=True):
                u, s = tx.update(grad_fn(p, step), s, p)
                out.append((apply_updates(p, u), s))
            return out, None

        start = [(p, tx.init(p)) for (tx, _, _), p in zip(sides, all_params, strict=True)]
        carry, _ = jax.lax.scan(body, start, jnp.arange(steps))
        return carry

    return [tuple(side) for side in go([params for _, params, _ in sides])]  # type: ignore[misc]


def run_against_optax(
    ours: Any,
    theirs: Any,
    params: Any,
    steps: int,
    grad_fn: Callable[[Any, jax.Array], Any] = quadratic_grads,
    theirs_params: Any = None,
) -> tuple[Any, Any]:
    """Final params of ``ours`` (stepped by ``funcopt.apply_updates``) and of the optax
    ``theirs`` (by ``optax.apply_updates``), ``steps`` updates each from ``params``
    (``theirs_params`` where optax's params are another type), side by side in one program."""
    start = params if theirs_params is None else theirs_params
    (got, _), (want, _) = run_side_by_side(
        [(ours, params, funcopt.apply_updates), (theirs, start, optax.apply_updates)],
        steps,
        grad_fn,
    )
    return got, want


def run(
    tx: Any,
    params: Any,
    steps: int,
    apply_updates: Callable[[Any, Any], Any],
    grad_fn: Callable[[Any, jax.Array], Any] = quadratic_grads,
) -> tuple[Any, Any]:
    """``steps`` updates of ``tx`` in one jitted ``lax.scan``; returns (params, state)."""
    return run_side_by_side([(tx, params, apply_updates)], steps, grad_fn)[0]


def _wide(x: Any) -> np.ndarray:
    """``x`` in float64, or complex128 for complex leaves (their imaginary parts count)."""
    return np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)


def rel_err(a: Any, b: Any) -> float:
    """Largest over leaves of ‖a − b‖ / max(‖b‖, tiny)."""
    errs = [
        float(np.linalg.norm(_wide(x) - _wide(y))) / max(float(np.linalg.norm(_wide(y))), 1e-30)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ]
    if any(e != e for e in errs):  # NaN anywhere is a failure, not something max() skips
        return float("inf")
    return max(errs, default=0.0)


def assert_rel_close(actual: Any, expected: Any, tol: float) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    err = rel_err(actual, expected)
    assert err <= tol, f"relative error {err:.3g} > {tol:.3g}"

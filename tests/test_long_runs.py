"""100 000 steps of every registry optimizer with a schedule stay finite and on track.

The problem is small (6 parameters): a quadratic with curvatures 0.5–2 plus Gaussian
noise (uniform, ±0.1, from an integer hash of the step: the same numbers in float32
and float64), so every coordinate keeps moving
for the whole run. The learning rate follows a warmup-cosine schedule (1 000 warmup
steps to 1e-2, decay to 1e-5 at step 100 000).

Each run is one ``lax.scan`` (ten checkpoints of 10 000 steps each). The float32 run
of funcopt is compared at every checkpoint with a float64 reference:

* optax's counterpart in float64 (with optax's own schedule) where one exists;
* otherwise funcopt itself in float64 (a weaker reference: it only shows float32
  rounding does not accumulate).

Tolerance: ``|θ₃₂ − θ₆₄| ≤ tol · (1 + |θ₆₄|)`` at every checkpoint, with ``tol`` 1e-5 for
the chapter's optimizers and 1e-4 for the others (observed: ≤ 1e-6 and ≤ 3e-5). Lion
and Muon get 2e-2: Lion's step is a sign and Muon orthogonalises a 2×2 momentum, both
discontinuous in their input, so float32 and float64 runs of the *same* code part
after a flipped sign (optax's own float32 and float64 runs differ by 5e-3 and 9e-3).
Distance over gradients and DoWG get their own bounds (see ``OWN_TOL``).
``noisy_sgd`` draws its noise in the parameters' dtype, so its reference is optax in
float32 with the same key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry

import funcopt

STEPS, CHUNKS = 100_000, 10
PEAK, WARMUP, END = 1e-2, 1_000, 1e-5
TOL, CORE_TOL, LOOSE_TOL = 1e-4, 1e-5, 2e-2
LOOSE = {"lion", "muon"}
# DoG's step is proportional to ‖θ_t − θ₀‖, in its first steps (r_ε = 1e-4) a difference
# of nearly equal numbers that float32 forms to ~1e-3 relative: observed 1.2e-4.
# DoWG's float32 run equals optax's, whose own float32 and float64 runs part by 3.7e-3: in
# its warm-up the moves from θ₀ are below float32's resolution next to the parameters.
OWN_TOL = {"distance_over_gradients": 3e-4, "dowg": 1e-2}
# Mechanic's float32 run equals optax's bit for bit, but both part from their own float64
# runs by ~3 (scaled) from the first checkpoint on: float32 is the reference's dtype.
SAME_DTYPE_REFERENCE = {"noisy_sgd", "mechanize"}
# optax's D-adaptation estimate is 0 / 0 = NaN at the warm-up's zero learning rate
# (funcopt keeps d there): funcopt's own float64 run is the reference.
OWN_REFERENCE = {"dadapt_adamw", "prodigy"}
ENTRIES = registry.available()


def _schedules() -> tuple[Any, Any]:
    kw = dict(
        init_value=0.0, peak_value=PEAK, warmup_steps=WARMUP, decay_steps=STEPS, end_value=END
    )
    return funcopt.warmup_cosine_decay_schedule(**kw), optax.warmup_cosine_decay_schedule(**kw)


def _noise(shape: tuple[int, ...], step: jax.Array, leaf: int) -> jax.Array:
    """Uniform in [−0.5, 0.5) from an integer hash of (step, index): exact in any dtype."""
    index = jnp.arange(int(np.prod(shape)), dtype=jnp.uint32).reshape(shape) + jnp.uint32(97 * leaf)
    h = step.astype(jnp.uint32) * jnp.uint32(2654435761) + index * jnp.uint32(40503)
    h = (h ^ (h >> 15)) * jnp.uint32(2246822519)
    return (h >> 16).astype(jnp.float32) / 65536.0 - 0.5


def _grads(params: Any, step: jax.Array) -> Any:
    leaves, treedef = jax.tree.flatten(params)
    out = []
    for i, p in enumerate(leaves):
        curvature = jnp.linspace(0.5, 2.0, p.size, dtype=p.dtype).reshape(p.shape) / (1 + i)
        noise = _noise(p.shape, step, i).astype(p.dtype)
        out.append(curvature * (p - jnp.asarray(0.3, p.dtype)) + jnp.asarray(0.2, p.dtype) * noise)
    return treedef.unflatten(out)


def _run(
    entry: registry.Entry, tx: Any, dtype: Any, *, twin: bool = False
) -> tuple[np.ndarray, Any]:
    """Params at each checkpoint (flattened, float64) and the final state."""
    params = {
        "w": jnp.asarray([[1.0, -2.0], [0.5, 3.0]], dtype),
        "b": jnp.asarray([-1.0, 2.0], dtype),
    }
    params = entry.optax_params(params) if twin else entry.params(params)

    @jax.jit
    def go(params: Any) -> tuple[Any, Any]:
        def body(carry: Any, step: jax.Array) -> tuple[Any, None]:
            p, s = carry
            at = p.fast if entry.wrap else p
            u, s = tx.update(_grads(at, step), s, p)
            return (optax.apply_updates(p, u), s), None

        def chunk(carry: Any, start: jax.Array) -> tuple[Any, Any]:
            carry, _ = jax.lax.scan(body, carry, start + jnp.arange(STEPS // CHUNKS))
            return carry, carry[0]

        (_, state), trail = jax.lax.scan(
            chunk, (params, tx.init(params)), jnp.arange(CHUNKS) * (STEPS // CHUNKS)
        )
        return trail, state

    trail, state = go(params)
    flat = np.concatenate(
        [np.asarray(x, np.float64).reshape(CHUNKS, -1) for x in jax.tree.leaves(trail)], axis=1
    )
    return flat, state


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
def test_long_run_matches_float64_reference(entry):
    fo_schedule, optax_schedule = _schedules()
    got, state = _run(entry, entry.build(fo_schedule), jnp.float32)
    assert np.all(np.isfinite(got))
    for x in jax.tree.leaves(state):
        if jnp.issubdtype(x.dtype, jnp.floating):
            assert np.all(np.isfinite(np.asarray(x, np.float64)))
    if entry.name in SAME_DTYPE_REFERENCE:
        ref, _ = _run(entry, entry.optax(optax_schedule), jnp.float32, twin=True)
    else:
        with jax.enable_x64(True):
            if entry.optax and entry.name not in OWN_REFERENCE:
                ref, _ = _run(entry, entry.optax(optax_schedule), jnp.float64, twin=True)
            else:
                ref, _ = _run(entry, entry.build(fo_schedule), jnp.float64)
    tol = LOOSE_TOL if entry.name in LOOSE else CORE_TOL if entry.name in registry.CORE else TOL
    tol = OWN_TOL.get(entry.name, tol)
    err = np.max(np.abs(got - ref) / (1 + np.abs(ref)))
    print(f"{entry.name}: {err:.3g}")
    assert err <= tol, f"{entry.name}: max scaled error {err:.3g} > {tol:g}"

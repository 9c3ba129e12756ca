"""Every optimizer against its independent oracles, driven by the one table in ``registry``.

1. optax (or optax.contrib): 1000 steps on random nested pytrees, float32 ≤ 1e-5; rows
   marked ``f64`` also in float64, ≤ 1e-10.
2. torch.optim (CPU, float64, 200 steps) where torch has the optimizer.
3. The papers' equations (the chapter's classes, Yogi's and Zeiler's algorithms),
   written out in NumPy in ``registry``, 50 steps of float64 on the same gradients.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry
from oracle import assert_rel_close, quadratic_grads, random_params, rel_err, run_against_optax

import funcopt

OPTAX32 = [e for e in registry.oracle_rows("optax") if e.f32]
OPTAX64 = [e for e in registry.oracle_rows("optax") if e.f64]
TORCH = registry.oracle_rows("torch")
PAPER = registry.oracle_rows("paper")


@pytest.mark.parametrize("entry", OPTAX32, ids=registry.ids(OPTAX32))
def test_matches_optax_float32(entry):
    params = random_params(0)
    got, want = run_against_optax(
        entry.build(entry.lr),
        entry.optax(entry.lr),
        entry.params(params),
        entry.steps32,
        theirs_params=entry.optax_params(params),
    )
    assert_rel_close(got, want, 1e-5)


@pytest.mark.parametrize("entry", OPTAX64, ids=registry.ids(OPTAX64))
def test_matches_optax_float64(entry, x64):
    params = random_params(0, jnp.float64)
    got, want = run_against_optax(entry.build(entry.lr), entry.optax(entry.lr), params, 1000)
    chex.assert_trees_all_equal_dtypes(got, params)
    assert_rel_close(got, want, 1e-10)


# The oracle's gradients evaluate their oscillation in float32: an eager call and the same
# code fused into a scan may differ in the last bit. So the float64 comparisons with torch
# and with the papers drive funcopt step by step, every side taking its gradients from
# this one compiled function.
_grads = jax.jit(quadratic_grads)


def _drive(tx, params, steps):
    """``steps`` jitted funcopt updates, gradients from :data:`_grads`."""

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return funcopt.apply_updates(p, u), s

    state = tx.init(params)
    for k in range(steps):
        params, state = step(params, state, _grads(params, jnp.asarray(k, jnp.int32)))
    return params


def _torch_run(make, lr, params, steps):
    """``steps`` torch.optim steps on the gradients of :data:`_grads`."""
    import torch

    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True) for x in leaves]
    opt = make(tensors, lr)
    for step in range(steps):
        current = treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tensors])
        grads = jax.tree.leaves(_grads(current, jnp.asarray(step, jnp.int32)))
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.from_numpy(np.array(g, dtype=np.float64))
        opt.step()
    return treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tensors])


@pytest.mark.parametrize("entry", TORCH, ids=registry.ids(TORCH))
def test_matches_torch_float64(entry, x64):
    params = random_params(0, jnp.float64)
    got = _drive(entry.build(entry.lr), params, 200)
    want = _torch_run(entry.torch, entry.lr, params, 200)
    assert_rel_close(got, want, 1e-10)


def _paper_run(entry, params, steps):
    leaves, treedef = jax.tree.flatten(params)
    refs = [entry.paper(entry.lr) for _ in leaves]
    theta = [np.asarray(x) for x in leaves]
    for k in range(steps):
        current = treedef.unflatten([jnp.asarray(x) for x in theta])
        grads = jax.tree.leaves(_grads(current, jnp.asarray(k, jnp.int32)))
        theta = [ref.step(p, np.asarray(g)) for ref, p, g in zip(refs, theta, grads, strict=True)]
    return treedef.unflatten([jnp.asarray(x) for x in theta])


@pytest.mark.parametrize("entry", PAPER, ids=registry.ids(PAPER))
def test_matches_the_papers_equations(entry, x64):
    params = random_params(1, jnp.float64)
    got = _drive(entry.build(entry.lr), params, 50)
    assert_rel_close(got, _paper_run(entry, params, 50), 1e-12)


def test_every_oracle_column_is_used():
    """The table keeps each kind of oracle busy (a refactor that empties one fails)."""
    assert len(OPTAX32) >= 40 and len(OPTAX64) >= 12 and len(TORCH) >= 10 and len(PAPER) >= 6


# ---- complex parameters -----------------------------------------------------------------

_RNG = np.random.default_rng(7)
_TARGET = {
    "w": jnp.asarray(_RNG.normal(size=(4, 3)) + 1j * _RNG.normal(size=(4, 3)), jnp.complex64),
    "b": jnp.asarray(_RNG.normal(size=3) + 1j * _RNG.normal(size=3), jnp.complex64),
}


def _complex_grads(z):
    """The descent direction of Σ|z − c|² (the conjugate of JAX's gradient)."""
    loss = lambda z: sum(jnp.sum(jnp.abs(z[k] - _TARGET[k]) ** 2) for k in z)
    return jax.tree.map(jnp.conj, jax.grad(loss)(z))


def _complex_runs(*sides, steps=300):
    """``steps`` jitted steps of every ``(tx, params, apply_updates)`` side, one program for
    all of them (each side sees only its own state); returns each side's params."""

    def fast(p):
        return p.fast if hasattr(p, "fast") else p

    @jax.jit
    def step(carry):
        out = []
        for (tx, _, apply_updates), (p, s) in zip(sides, carry, strict=True):
            u, s = tx.update(_complex_grads(fast(p)), s, p)
            out.append((apply_updates(p, u), s))
        return out

    carry = [(p, tx.init(p)) for tx, p, _ in sides]
    for _ in range(steps):
        carry = step(carry)
    return [fast(p) for p, _ in carry]


# optax's twins that are wrong on complex numbers, each checked against another oracle below
COMPLEX_ELSEWHERE = {
    "adadelta": "optax accumulates g² and Δ², complex numbers, instead of |g|² and |Δ|²",
    "MultiSteps": "optax's float32 accumulator drops the imaginary part of the gradients",
    "clip": "clipping a complex number is undefined: both refuse (jnp.clip)",
    "cocob": "optax's reward R − g(θ − θ₁) turns complex; funcopt's Re(conj(g)(θ − θ₁)) is "
    "checked by hand in test_parameter_free.py",
    "adopt": "ADOPT clips the normalised gradient, undefined for complex numbers: both refuse "
    "(test_decorrelated.py)",
    "simplified_ademamix": "optax averages g², a complex number, under a complex root; "
    "funcopt's |g|² follows the equations by hand in test_ema_mixtures.py",
    "madgrad": "optax sums g², complex, and its cube root refuses complex numbers; funcopt's "
    "|g|² follows the equations by hand in test_dual_averaging.py",
    "dadapt_adamw": "optax's v averages g·g, complex, and its estimate d turns complex; "
    "funcopt's |g|² and Re⟨·,·⟩ follow the equations by hand in test_dadaptation.py",
    "prodigy": "as dadapt_adamw (optax's g·g and complex d; by hand in test_dadaptation.py)",
    "mechanize": "optax's reward ⟨g, Δ⟩ is complex, and its run diverges; funcopt's "
    "Re⟨g, Δ⟩ follows the equations by hand in test_dadaptation.py",
    "sophia": "Sophia clips its step, undefined for complex numbers: both refuse (jnp.clip)",
    "galore": "optax casts a complex gradient to float32 for the SVD (dropping its imaginary "
    "part) and projects with Pᵀ; funcopt's Pᴴ is checked by hand in test_projection.py",
}
COMPLEX = [
    e for e in registry.available() if e.optax is not None and e.name not in COMPLEX_ELSEWHERE
]


@pytest.mark.parametrize("entry", COMPLEX, ids=registry.ids(COMPLEX))
def test_complex_parameters_match_optax(entry):
    """300 steps on min Σ|z − c|² over complex64 z: second moments use |g|², Muon the
    conjugate transpose, so every optimizer steps as optax's does."""
    zeros = jax.tree.map(jnp.zeros_like, _TARGET)
    got, want = _complex_runs(
        (entry.build(1e-2), entry.params(zeros), funcopt.apply_updates),
        (entry.optax(1e-2), entry.optax_params(zeros), optax.apply_updates),
    )
    chex.assert_trees_all_equal_dtypes(got, zeros)
    err = rel_err(got, want)
    if err > 1e-5:  # normalised steps (NovoGrad) orbit the optimum: compare with the chaos
        nudged = jax.tree.map(lambda x: x + 1e-6, zeros)  # optax against itself, nudged
        (moved,) = _complex_runs(
            (entry.optax(1e-2), entry.optax_params(nudged), optax.apply_updates)
        )
        spread = rel_err(moved, want)
        assert err <= 10 * spread, f"relative error {err:.3g}, optax's own spread {spread:.3g}"


def test_complex_adadelta_follows_zeilers_algorithm_with_moduli(x64):
    """Zeiler's Algorithm 1 with |g|² and |Δ|² (for reals, g² and Δ²), in NumPy."""
    z = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.complex128), _TARGET)
    tx = funcopt.adadelta(rho=0.95, eps=1e-6)
    state = tx.init(z)
    refs = {k: registry.ZeilerAdadelta(1.0, 0.95, 1e-6) for k in z}
    want = {k: np.zeros(x.shape, np.complex128) for k, x in z.items()}
    for _ in range(50):
        g = _complex_grads(z)
        u, state = tx.update(g, state, z)
        z = funcopt.apply_updates(z, u)
        want = {k: refs[k].step(want[k], np.asarray(g[k])) for k in want}
    assert_rel_close(z, want, 1e-10)


def test_complex_multisteps_is_the_inner_step_on_the_mean_gradient():
    """MultiSteps(adam, 2) on complex gradients: every second step, optax's Adam on the
    mean of the two gradients (with the imaginary parts)."""
    z = jax.tree.map(jnp.zeros_like, _TARGET)
    tx = funcopt.MultiSteps(funcopt.adam(1e-2), 2)
    adam = optax.adam(1e-2)
    state, inner = tx.init(z), adam.init(z)
    update = jax.jit(tx.update)  # one compile: eagerly, each step's lax.cond compiled anew
    want = z
    for t in range(40):
        g = _complex_grads(z)
        u, state = update(g, state, z)
        z = funcopt.apply_updates(z, u)
        if t % 2 == 0:
            first = g
        else:
            mean = jax.tree.map(lambda a, b: (a + b) / 2, first, g)
            step, inner = adam.update(mean, inner, want)
            want = optax.apply_updates(want, step)
        assert_rel_close(z, want, 1e-5)


def test_complex_clip_is_refused():
    with pytest.raises(ValueError, match="complex"):
        funcopt.clip(1.0).update(_TARGET, funcopt.clip(1.0).init(_TARGET))

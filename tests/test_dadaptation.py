"""D-adaptation, Prodigy and Mechanic: against optax.contrib, and the equations by hand.

DAdapt-AdamW and Prodigy match optax over 1000 steps in float32 and in float64 in the
registry's rows (``tests/registry.py``, run by ``test_oracles.py``); here with a schedule.
Mechanic's runs are chaotic (optax against itself from a start perturbed by 1e-7 differs
by 1e-3 after 1000 float32 steps), so it is compared in float64, within 10× optax's own
spread under a perturbation of the start of a few ulps. The hand-written references run
on the concatenation of the leaves (every estimate is a sum over all of them), in
float64, on real and complex parameters (optax's twins are wrong on complex ones:
``g · g`` for ``|g|²``, a complex estimate).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from oracle import assert_rel_close, quadratic_grads, random_params, rel_err, run, run_against_optax
from support import (
    assert_bfloat16_run_stays_bfloat16,
    assert_optimizer_with_schedule_matches_optax,
    assert_raises_naming,
    assert_state_buffers_donatable,
    times_value,
)

import funcopt

# ---- against optax ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dadapt_adamw", "prodigy"])
def test_a_schedule_is_read_from_count_zero_as_optax(name):
    assert_optimizer_with_schedule_matches_optax(
        getattr(funcopt, name),
        getattr(optax.contrib, name),
        lambda lib: lib.linear_schedule(1.0, 0.1, 600),
    )


MECHANIC = {
    "adam": (lambda: funcopt.mechanize(funcopt.adam(1.0)), optax.adam(1.0), {}),
    "sgd-momentum": (
        lambda: funcopt.mechanize(funcopt.sgd(0.1, 0.9), 0.05, s_init=1e-4, num_betas=4),
        optax.sgd(0.1, 0.9),
        {"weight_decay": 0.05, "s_init": 1e-4, "num_betas": 4},
    ),
}


@pytest.mark.parametrize("name", MECHANIC)
def test_mechanize_matches_optax_in_float64(name, x64):
    """Within 10× the spread of optax itself from starts moved by ±1e-15 (a few ulps)."""
    make, base, kw = MECHANIC[name]
    theirs = optax.contrib.mechanize(base, **kw)
    params = random_params(0, jnp.float64)
    starts = jax.tree.map(lambda p: jnp.stack([p, p * (1 + 1e-15), p * (1 - 1e-15)]), params)
    runs, _ = jax.vmap(lambda p: run(theirs, p, 1000, optax.apply_updates))(starts)
    want = jax.tree.map(lambda x: x[0], runs)
    spread = max([1e-14] + [rel_err(jax.tree.map(lambda x: x[i], runs), want) for i in (1, 2)])
    got, state = run(make(), params, 1000, funcopt.apply_updates)
    assert rel_err(got, want) <= 10 * spread, (rel_err(got, want), spread)
    assert got["scalar"].dtype == jnp.float64 and state.s.dtype == jnp.float64


def test_mechanize_of_an_optax_optimizer_follows_optax_until_the_chaos():
    """30 float32 steps (by step 50 rounding differences have grown to 1e-4; the registry's
    row runs Mechanic over funcopt's Adam)."""
    params = random_params(0)
    ours, theirs = funcopt.mechanize(optax.adam(1.0)), optax.contrib.mechanize(optax.adam(1.0))
    got, want = run_against_optax(ours, theirs, params, 30)
    assert_rel_close(got, want, 1e-5)


def test_mechanize_passes_extra_arguments_to_the_base(maybe_jit):
    """``value=`` reaches an optax transform that reads it inside the base, as in optax."""
    ours = funcopt.mechanize(funcopt.chain(times_value(), funcopt.sgd(0.1)))
    theirs = optax.contrib.mechanize(optax.chain(times_value(), optax.sgd(0.1)))
    update = maybe_jit(lambda g, s, p, v: ours.update(g, s, p, value=v))
    p = q = {"w": jnp.array([1.0, -2.0, 0.5])}
    s, r = ours.init(p), theirs.init(q)
    for k in range(5):
        value = jnp.asarray(1.0 + k)
        u, s = update(quadratic_grads(p, jnp.asarray(k)), s, p, value)
        v, r = theirs.update(quadratic_grads(q, jnp.asarray(k)), r, q, value=value)
        p, q = funcopt.apply_updates(p, u), optax.apply_updates(q, v)
        assert_rel_close(p, q, 1e-6)


# ---- the equations written out (NumPy, float64, on the concatenated leaves) ------------

SHAPES = {"a": (3,), "b": (2, 2)}


def _grad(theta, t):
    """A quadratic's gradient plus a wave: deterministic, real or complex."""
    k = np.arange(theta.size)
    wave = np.sin(0.7 * t + 1.3 * k)
    if np.iscomplexobj(theta):
        wave = wave + 1j * np.cos(0.4 * t + k)
    return (0.5 + 0.2 * k) * (theta - 0.3) + wave


def _inner(a, b):
    return float(np.real(np.vdot(a, b)))


def dadapt_reference(theta, steps, lr, b1, b2, eps, d, weight_decay):
    m, v, s, r, beta = 0 * theta, np.zeros(theta.shape), 0 * theta, 0.0, np.sqrt(b2)
    for t in range(1, steps + 1):
        g = _grad(theta, t)
        gamma = d * lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        r = beta * r + (1 - beta) * gamma * _inner(g, s / (np.sqrt(v) + eps))
        s = beta * s + (1 - beta) * gamma * g
        m = b1 * m + (1 - b1) * gamma * g
        v = b2 * v + (1 - b2) * np.abs(g) ** 2
        theta = theta - m / (np.sqrt(v) + eps) - weight_decay * gamma * theta
        d = max(d, r / ((1 - beta) * np.abs(s).sum()))
    return theta, d


def prodigy_reference(theta, steps, lr, b1, b2, b3, eps, d, c, weight_decay, safeguard):
    d0, theta0, r = d, theta.copy(), 0.0
    m, v, s = 0 * theta, np.zeros(theta.shape), 0 * theta
    for t in range(1, steps + 1):
        g = _grad(theta, t)
        gamma = d * lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        r = b3 * r + d / d0 * gamma * _inner(g, theta0 - theta)
        s = b3 * s + d / d0 * (d if safeguard else gamma) * g
        m = b1 * m + (1 - b1) * d * g
        v = b2 * v + (1 - b2) * d**2 * np.abs(g) ** 2
        d_new = max(d, c * r / np.abs(s).sum())
        theta = theta - gamma * (m / (np.sqrt(v) + d_new * eps) + weight_decay * theta)
        d = d_new
    return theta, d


def mechanic_reference(theta, steps, lr, weight_decay, s_init, n):
    """The paper's Mechanic with Δ stored (ε → 0, so optax's recomputed Δ is this one)."""
    betas = 1 - 0.1 ** np.arange(1, n + 1)
    theta0, delta = theta.copy(), 0 * theta
    r, m, v = np.zeros(n), np.zeros(n), np.zeros(n)
    s = np.full(n, s_init)  # as optax; unused at the first step, where Δ = 0
    for t in range(1, steps + 1):
        g = _grad(theta, t)
        norm = np.linalg.norm(g) / np.linalg.norm(theta)
        decayed = g + weight_decay * s.sum() * norm * theta
        h = _inner(decayed, delta)
        r = betas * r - np.clip(h, -m, m) * s
        m = np.maximum(betas * m, abs(h))
        v = betas**2 * v + h**2
        # (ε → 0: at the first step h = 0, and s = (s_init m / n) / √v is s_init / n)
        s = np.where(v > 0, (s_init / n * m + np.maximum(0, r)) / np.sqrt(v + (v == 0)), s_init / n)
        delta = delta - lr * g  # the base: SGD
        theta = theta0 + s.sum() * delta
    return theta


def _drive(tx, theta, steps, update):
    """``steps`` updates on the gradients of :func:`_grad`, the params split in leaves."""
    sizes = [int(np.prod(shape)) for shape in SHAPES.values()]

    def split(x):
        parts = np.split(x, np.cumsum(sizes)[:-1])
        pieces = zip(SHAPES.items(), parts, strict=True)
        return {k: jnp.asarray(p.reshape(s)) for (k, s), p in pieces}

    params = split(theta)
    state = tx.init(params)
    for t in range(1, steps + 1):
        flat = np.concatenate([np.asarray(params[k]).ravel() for k in SHAPES])
        u, state = update(split(_grad(flat, t)), state, params)
        params = funcopt.apply_updates(params, u)
    return np.concatenate([np.asarray(params[k]).ravel() for k in SHAPES]), state


def _start(dtype):
    rng = np.random.default_rng(3)
    theta = rng.normal(size=7)
    return theta + 1j * rng.normal(size=7) if dtype == "complex" else theta


@pytest.mark.parametrize("dtype", ["real", "complex"])
def test_dadapt_adamw_equations_by_hand(dtype, maybe_jit, x64):
    tx = funcopt.dadapt_adamw(0.7, betas=(0.8, 0.95), eps=1e-6, estim_lr0=1e-3, weight_decay=0.1)
    got, state = _drive(tx, _start(dtype), 12, maybe_jit(tx.update))
    want, d = dadapt_reference(_start(dtype), 12, 0.7, 0.8, 0.95, 1e-6, 1e-3, 0.1)
    np.testing.assert_allclose(got, want, rtol=1e-11)
    np.testing.assert_allclose(state.estim_lr, d, rtol=1e-11)
    assert state.estim_lr > 1e-3 and state.estim_lr.dtype == jnp.float64  # d grew, real


@pytest.mark.parametrize("dtype", ["real", "complex"])
@pytest.mark.parametrize("safeguard", [False, True])
def test_prodigy_equations_by_hand(dtype, safeguard, maybe_jit, x64):
    kw = dict(betas=(0.8, 0.95), beta3=0.9, eps=1e-6, estim_lr0=1e-3, estim_lr_coef=0.8)
    tx = funcopt.prodigy(0.7, weight_decay=0.1, safeguard_warmup=safeguard, **kw)
    got, state = _drive(tx, _start(dtype), 12, maybe_jit(tx.update))
    want, d = prodigy_reference(
        _start(dtype), 12, 0.7, 0.8, 0.95, 0.9, 1e-6, 1e-3, 0.8, 0.1, safeguard
    )
    np.testing.assert_allclose(got, want, rtol=1e-11)
    np.testing.assert_allclose(state.estim_lr, d, rtol=1e-11)
    assert state.estim_lr > 1e-3 and state.estim_lr.dtype == jnp.float64


@pytest.mark.parametrize("dtype", ["real", "complex"])
def test_mechanic_equations_by_hand(dtype, maybe_jit, x64):
    """With ε tiny, ``(θ − θ₁) / (S + ε)`` is the paper's accumulated Δ."""
    tx = funcopt.mechanize(funcopt.sgd(0.5), weight_decay=0.05, eps=1e-30, s_init=1e-3, num_betas=3)
    got, state = _drive(tx, _start(dtype), 12, maybe_jit(tx.update))
    want = mechanic_reference(_start(dtype), 12, 0.5, 0.05, 1e-3, 3)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert float(jnp.sum(state.s)) > 1e-2  # the scale grew tenfold


# ---- behaviour -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [funcopt.dadapt_adamw, funcopt.prodigy],
    ids=["dadapt_adamw", "prodigy"],
)
def test_a_zero_learning_rate_keeps_the_estimate(make, maybe_jit):
    """A warm-up from 0 leaves ‖s‖₁ = 0 at the first step: d stays (optax's is 0 / 0)."""
    tx = make(funcopt.linear_schedule(0.0, 1.0, 10), estim_lr0=1e-3)
    params = random_params(1, shapes=SHAPES)
    update = maybe_jit(tx.update)
    state = tx.init(params)
    for k in range(3):
        u, state = update(quadratic_grads(params, jnp.asarray(k)), state, params)
        params = funcopt.apply_updates(params, u)
        assert bool(jnp.isfinite(state.estim_lr)) and float(state.estim_lr) >= 1e-3
    zero = jax.tree.map(jnp.zeros_like, params)
    _, state = update(zero, tx.init(params), params)
    assert float(state.estim_lr) == pytest.approx(1e-3)


def test_state_fields_are_optax_s():
    params = {"w": jnp.ones(3)}
    for ours, theirs in [
        (funcopt.dadapt_adamw(), optax.contrib.dadapt_adamw()),
        (funcopt.prodigy(), optax.contrib.prodigy()),
        (funcopt.mechanize(funcopt.sgd(1.0)), optax.contrib.mechanize(optax.sgd(1.0))),
    ]:
        state, other = ours.init(params), theirs.init(params)
        assert type(state).__name__ == type(other).__name__
        assert type(state)._fields == type(other)._fields
    assert float(optax.tree.get(funcopt.prodigy(estim_lr0=0.5).init(params), "estim_lr")) == 0.5


ALL = {
    "dadapt_adamw": lambda: funcopt.dadapt_adamw(),
    "prodigy": lambda: funcopt.prodigy(),
    "mechanize": lambda: funcopt.mechanize(funcopt.adam(1.0)),
}


@pytest.mark.parametrize("name", ALL)
def test_bfloat16_params_keep_float32_statistics(name, strict_dtypes):
    tx = ALL[name]()
    assert_bfloat16_run_stays_bfloat16(tx, SHAPES)
    state = tx.init({"w": jnp.ones(4, jnp.bfloat16)})
    scalars = [v for v in state if jnp.issubdtype(getattr(v, "dtype", int), jnp.floating)]
    assert scalars and all(v.dtype == jnp.float32 for v in scalars)  # the estimates
    if name != "mechanize":
        assert state.exp_avg["w"].dtype == jnp.bfloat16  # a first moment, as Adam's
        assert state.exp_avg_sq["w"].dtype == state.grad_sum["w"].dtype == jnp.float32
    else:
        assert state.x0["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize("name", ALL)
def test_state_buffers_are_donatable_and_params_needed(name):
    tx = ALL[name]()
    assert_state_buffers_donatable(tx, random_params(0))
    with pytest.raises(ValueError, match="parameters"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: funcopt.dadapt_adamw(-1.0), r"learning_rate=-1.0"),
        (lambda: funcopt.dadapt_adamw(betas=(0.9, 1.0)), r"betas\[1\]=1.0"),
        (lambda: funcopt.dadapt_adamw(betas=0.9), r"betas must be a pair"),
        (lambda: funcopt.dadapt_adamw(eps=0.0), r"eps=0.0"),
        (lambda: funcopt.dadapt_adamw(estim_lr0=0.0), r"estim_lr0=0.0"),
        (lambda: funcopt.dadapt_adamw(weight_decay=-0.1), r"weight_decay=-0.1"),
        (lambda: funcopt.prodigy(betas=(1.5, 0.9)), r"betas\[0\]=1.5"),
        (lambda: funcopt.prodigy(beta3=1.0), r"beta3=1.0"),
        (lambda: funcopt.prodigy(estim_lr_coef=0.0), r"estim_lr_coef=0.0"),
        (lambda: funcopt.prodigy(safeguard_warmup=1), r"safeguard_warmup"),
        (lambda: funcopt.mechanize(funcopt.sgd(1.0), s_init=0.0), r"s_init=0.0"),
        (lambda: funcopt.mechanize(funcopt.sgd(1.0), num_betas=0), r"num_betas=0"),
        (lambda: funcopt.mechanize(funcopt.sgd(1.0), num_betas=2.5), r"num_betas=2.5"),
        (lambda: funcopt.mechanize(funcopt.sgd(1.0), eps=-1.0), r"eps=-1.0"),
    ],
)
def test_bad_hyperparameters_are_named(build, message):
    assert_raises_naming(build, message)


def test_mechanize_needs_a_transform():
    with pytest.raises(TypeError, match="base_optimizer"):
        funcopt.mechanize(3)


def test_one_trace_for_any_values():
    traces = []

    @jax.jit
    def step(tx, params):
        traces.append(None)
        return tx.update(params, tx.init(params), params)[0]

    params = {"w": jnp.ones(3)}
    for lr in (0.1, 0.2):
        step(funcopt.prodigy(lr, betas=(0.9, lr + 0.5)), params)
    assert len(traces) == 1
    assert funcopt.dadapt_adamw(1, betas=[0.9, 0.999]) == funcopt.dadapt_adamw()

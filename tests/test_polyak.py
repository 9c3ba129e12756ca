"""Polyak's step size, MoMo and MoMo-Adam: against optax, by hand, and with ``value=``.

Every one of them reads the loss passed to ``update(..., value=loss)``, which the
registry's driver does not give: the optax comparisons run here, on a loss of their own
(``_loss``) evaluated by each library along its own trajectory.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import contrib
from oracle import assert_rel_close, random_params, rel_err

import funcopt

# ---- the driver: a loss and its gradient at every step -----------------------------------


def _loss(params, step):
    """A stretched quadratic around a target that moves with the step: ≥ 0, never 0."""
    t = step.astype(jnp.float32)
    total = jnp.zeros([], jnp.result_type(*jax.tree.leaves(params)))
    for i, p in enumerate(jax.tree.leaves(params)):
        phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) * 0.618
        target = 0.3 + 0.5 * jnp.sin(t * (0.37 + 0.11 * i) + phase)
        total = total + 0.5 * (0.5 + i) * jnp.sum((p - target.astype(p.dtype)) ** 2)
    return total


def _drive(tx, params, steps, apply_updates, loss=_loss):
    """``steps`` updates in one jitted scan, each given ``value=`` the loss at its params."""

    @jax.jit
    def go(params):
        def body(carry, step):
            p, s = carry
            value, grad = jax.value_and_grad(loss)(p, step)
            u, s = tx.update(grad, s, p, value=value)
            return (apply_updates(p, u), s), value

        (p, _), values = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
        return p, values

    return go(params)


def _schedule(lib):
    return lib.linear_schedule(1.0, 0.2, 600)


CASES = {
    "polyak_sgd": (lambda lib: lib.polyak_sgd(), optax),
    "polyak_sgd-capped-sps+": (
        lambda lib: lib.polyak_sgd(0.3, scaling=0.5, f_min=0.5, eps=1e-3, variant="sps+"),
        optax,
    ),
    "polyak_sgd-schedule": (lambda lib: lib.polyak_sgd(0.8, scaling=_schedule(lib)), optax),
    "scale_by_polyak": (
        lambda lib: lib.chain(lib.scale_by_polyak(max_learning_rate=0.5), lib.scale(-1.0)),
        optax,
    ),
    "momo": (lambda lib: lib.momo(), contrib),
    "momo-weight-decay": (lambda lib: lib.momo(0.5, beta=0.8, weight_decay=0.05), contrib),
    "momo-schedule": (lambda lib: lib.momo(_schedule(optax if lib is contrib else lib)), contrib),
    "momo_adam": (lambda lib: lib.momo_adam(), contrib),
    "momo_adam-weight-decay": (
        lambda lib: lib.momo_adam(0.1, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.05),
        contrib,
    ),
    "momo_adam-adapt": (lambda lib: lib.momo_adam(0.05, adapt_lower_bound=True), contrib),
}


# Chaotic in float32: optax against itself from a start 1e-7 away differs by O(1) after
# 1000 steps (the lower bound's reset is a branch on a difference of averages).
CHAOTIC = {
    "momo-adapt": (
        lambda lib: lib.momo(adapt_lower_bound=True, weight_decay=0.01, lower_bound=-1.0),
        contrib,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_optax_for_1000_steps(name):
    """Same losses and gradients, each along its own run: float32 agree to 1e-5."""
    build, lib = CASES[name]
    params = random_params(0)
    got, got_values = _drive(build(funcopt), params, 1000, funcopt.apply_updates)
    want, want_values = _drive(build(lib), params, 1000, optax.apply_updates)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(got))
    assert_rel_close(got, want, 1e-5)
    assert_rel_close(got_values, want_values, 1e-5)
    assert float(got_values[-1]) < 0.5 * float(got_values[0])  # it does optimise


@pytest.mark.parametrize("name", sorted(CHAOTIC))
def test_chaotic_runs_match_optax_in_float64(name, x64):
    """1000 float64 steps within 10 times optax's own spread from a start 1e-12 away."""
    build, lib = CHAOTIC[name]
    params = random_params(0, jnp.float64)
    nearby = jax.tree.map(lambda x: x * (1 + 1e-12), params)
    got, _ = _drive(build(funcopt), params, 1000, funcopt.apply_updates)
    want, _ = _drive(build(lib), params, 1000, optax.apply_updates)
    spread = rel_err(_drive(build(lib), nearby, 1000, optax.apply_updates)[0], want)
    assert {x.dtype for x in jax.tree.leaves(got)} == {jnp.dtype(jnp.float64)}
    assert 0 < spread < 1e-8
    assert rel_err(got, want) <= 10 * spread


def test_momo_adam_matches_optax_in_float64(x64):
    """(No schedule here: optax's linear_schedule is float32 even under x64.)"""
    params = random_params(1, jnp.float64)
    tx = lambda lib: lib.momo_adam(0.1, weight_decay=0.01, adapt_lower_bound=True)
    got, _ = _drive(tx(funcopt), params, 200, funcopt.apply_updates)
    want, _ = _drive(tx(contrib), params, 200, optax.apply_updates)
    assert {x.dtype for x in jax.tree.leaves(got)} == {jnp.dtype(jnp.float64)}
    assert rel_err(got, want) <= 1e-12


# ---- the equations written out -------------------------------------------------------------


def _hand_polyak(x, f, g, *, f_min, gmax, eps, s, plus):
    """SPS_max on the scaled gradient, as polyak_sgd's docstring writes it."""
    step = -s * g
    gap = f - f_min
    gap = max(gap, 0.0) if plus else gap
    gamma = min(gap / (step @ step + eps), gmax)
    return x + gamma * step


def _hand_momo(xs, fun, grad, *, alpha, lam, beta, lb0, adapt, adam=False, b2=0.999, eps=1e-8):
    """MoMo (ρ = 1, averages from the first sample) or MoMo-Adam (ρ = 1 − β₁ᵗ), in NumPy."""
    x = np.array(xs, np.float64)
    d = v = np.zeros_like(x)
    fbar = gamma = 0.0
    lb = lb0
    path = []
    for t in range(1, 6):
        f, g = fun(x), grad(x)
        w = beta if adam or t > 1 else 0.0  # the weight of the past
        fbar, gamma = w * fbar + (1 - w) * f, w * gamma + (1 - w) * (g @ x)
        d = w * d + (1 - w) * g
        v = b2 * v + (1 - b2) * g * g
        D = np.sqrt(v / (1 - b2**t)) + eps if adam else np.ones_like(x)
        rho = 1 - beta**t if adam else 1.0
        c = 1 + alpha * lam
        norm2 = d @ (d / D)
        if adapt:
            cap = c * (fbar - gamma) + d @ x
            if cap < c * rho * lb:
                lb = max(cap / (2 * rho * c), lb0)
        tau = min(alpha / rho, max(c * (fbar - rho * lb - gamma) + d @ x, 0.0) / norm2)
        if adapt:
            lb = max((fbar + d @ x - gamma - 0.5 * tau * norm2) / rho, lb0)
        x = x / c - tau * d / D
        path.append(x)
    return path


def _quartic(x):
    return float(np.sum(x**2) + 0.25 * np.sum(x**4))


def _quartic_grad(x):
    return 2 * x + x**3


@pytest.mark.parametrize("plus", [False, True])
def test_polyak_sgd_written_out(maybe_jit, plus, x64):
    kw = dict(f_min=0.5, gmax=0.4, eps=1e-2, s=0.7, plus=plus)
    tx = funcopt.polyak_sgd(0.4, 0.7, 0.5, 1e-2, "sps+" if plus else "sps")
    update = maybe_jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    x = np.array([1.5, -0.4, 0.1])
    p, state = jnp.asarray(x), tx.init(jnp.zeros(3))
    for _ in range(6):
        x = _hand_polyak(x, _quartic(x), _quartic_grad(x), **kw)
        value, grad = jax.value_and_grad(lambda q: jnp.sum(q**2 + 0.25 * q**4))(p)
        u, state = update(grad, state, p, value)
        p = funcopt.apply_updates(p, u)
        np.testing.assert_allclose(p, x, rtol=1e-12, atol=1e-14)


MOMO_HAND = {
    "momo": dict(alpha=1.0, lam=0.0, beta=0.9, lb0=0.0, adapt=False),
    "momo-decay-adapt": dict(alpha=0.8, lam=0.1, beta=0.7, lb0=0.0, adapt=True),
    "momo_adam": dict(alpha=0.1, lam=0.0, beta=0.9, lb0=0.0, adapt=False, adam=True),
    "momo_adam-decay-adapt": dict(alpha=0.3, lam=0.05, beta=0.8, lb0=0.0, adapt=True, adam=True),
}


@pytest.mark.parametrize("name", sorted(MOMO_HAND))
def test_momo_written_out(maybe_jit, name, x64):
    kw = MOMO_HAND[name]
    args = dict(
        learning_rate=kw["alpha"],
        weight_decay=kw["lam"],
        lower_bound=kw["lb0"],
        adapt_lower_bound=kw["adapt"],
    )
    if kw.get("adam"):
        tx = funcopt.momo_adam(b1=kw["beta"], **args)
    else:
        tx = funcopt.momo(beta=kw["beta"], **args)
    start = [1.5, -0.4, 0.1]
    want = _hand_momo(start, _quartic, _quartic_grad, **kw)
    update = maybe_jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    p = jnp.asarray(start)
    state = tx.init(p)
    for x in want:
        value, grad = jax.value_and_grad(lambda q: jnp.sum(q**2 + 0.25 * q**4))(p)
        u, state = update(grad, state, p, value)
        p = funcopt.apply_updates(p, u)
        assert p.dtype == jnp.float64
        np.testing.assert_allclose(p, x, rtol=1e-10, atol=1e-12)


def test_momentum_from_first_starts_at_the_first_gradient(maybe_jit):
    tx = funcopt.momentum_from_first(0.6)
    update = maybe_jit(tx.update)
    state, m = tx.init(jnp.zeros(2)), None
    for g in np.random.default_rng(0).normal(size=(5, 2)):
        m = g if m is None else 0.6 * m + 0.4 * g
        u, state = update(jnp.asarray(g, jnp.float32), state)
        np.testing.assert_allclose(u, m, rtol=1e-5)


def test_no_step_on_a_zero_gradient():
    """‖g‖² = 0: no step and no NaN (Polyak's and MoMo's), also in the derivative."""
    zero = jnp.zeros(3)
    for tx in (funcopt.polyak_sgd(), funcopt.momo(), funcopt.momo_adam()):
        u, _ = tx.update(zero, tx.init(zero), zero, value=1.0)
        np.testing.assert_array_equal(u, zero)

    def first_update(lr):
        tx = funcopt.momo(lr)
        return jnp.sum(tx.update(zero, tx.init(zero), zero + 1.0, value=1.0)[0])

    assert bool(jnp.isfinite(jax.grad(first_update)(0.5)))


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: funcopt.polyak_sgd(max_learning_rate=-1.0), "max_learning_rate"),
        (lambda: funcopt.polyak_sgd(scaling=-0.1), "scaling"),
        (lambda: funcopt.polyak_sgd(f_min=float("nan")), "f_min"),
        (lambda: funcopt.polyak_sgd(eps=-1e-3), "eps"),
        (lambda: funcopt.polyak_sgd(variant="sps++"), "variant"),
        (lambda: funcopt.scale_by_polyak(variant=None), "variant"),
        (lambda: funcopt.scale_by_polyak(max_learning_rate=float("inf")), "max_learning_rate"),
        (lambda: funcopt.momo(learning_rate=-1.0), "learning_rate"),
        (lambda: funcopt.momo(beta=1.0), "beta"),
        (lambda: funcopt.momo(lower_bound=float("-inf")), "lower_bound"),
        (lambda: funcopt.momo(weight_decay=-0.1), "weight_decay"),
        (lambda: funcopt.momo(adapt_lower_bound=1), "adapt_lower_bound"),
        (lambda: funcopt.momo_adam(b1=-0.1), "b1"),
        (lambda: funcopt.momo_adam(b2=1.5), "b2"),
        (lambda: funcopt.momo_adam(eps=-1.0), "eps"),
        (lambda: funcopt.momo_adam(weight_decay="0.1"), "weight_decay"),
        (lambda: funcopt.momentum_from_first(decay=1.0), "decay"),
    ],
)
def test_bad_hyperparameters_name_the_argument(build, name):
    with pytest.raises(funcopt.HyperParameterError, match=name):
        build()


@pytest.mark.parametrize("make", [funcopt.polyak_sgd, funcopt.momo, funcopt.momo_adam])
def test_the_loss_value_is_required(make, maybe_jit):
    tx = make()
    p = jnp.ones(3)
    with pytest.raises(TypeError, match="value=loss"):
        maybe_jit(lambda g, s, p: tx.update(g, s, p))(p, tx.init(p), p)
    with pytest.raises(ValueError, match="scalar"):
        tx.update(p, tx.init(p), p, value=jnp.ones(2))


@pytest.mark.parametrize("make", [funcopt.momo, funcopt.momo_adam])
def test_momo_needs_the_params(make):
    tx = make()
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=1.0)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (funcopt.polyak_sgd, optax.polyak_sgd),
        (funcopt.scale_by_polyak, optax.scale_by_polyak),
        (funcopt.momo, contrib.momo),
        (funcopt.momo_adam, contrib.momo_adam),
    ],
)
def test_signature_matches_optax(ours, theirs):
    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(ours) == params(theirs)


# ---- composition: chains, nnx, jit, dtypes ---------------------------------------------------


@pytest.mark.parametrize(
    "make, theirs",
    [(funcopt.momo, contrib.momo), (funcopt.polyak_sgd, optax.polyak_sgd)],
)
def test_value_reaches_them_inside_chains(make, theirs):
    """funcopt.chain hands ``value=`` on; optax.chain does to a funcopt transform given as
    a ``GradientTransformationExtraArgs`` (it drops extra arguments for any other type)."""
    params = random_params(2)
    clip = optax.clip_by_global_norm(2.0)
    want, _ = _drive(optax.chain(clip, theirs()), params, 50, optax.apply_updates)
    for tx in (
        funcopt.chain(funcopt.clip_by_global_norm(2.0), make()),
        funcopt.chain(clip, make()),
        optax.chain(clip, optax.GradientTransformationExtraArgs(*make())),
    ):
        got, _ = _drive(tx, params, 50, optax.apply_updates)
        assert_rel_close(got, want, 1e-6)


def test_value_reaches_them_inside_funcopt_wrappers():
    params = random_params(3)
    inner = lambda lib: lib.masked(lib.momo(0.5), lambda p: jax.tree.map(lambda x: x.ndim > 0, p))
    got, _ = _drive(inner(funcopt), params, 50, funcopt.apply_updates)
    masked = optax.masked(contrib.momo(0.5), lambda p: jax.tree.map(lambda x: x.ndim > 0, p))
    want, _ = _drive(masked, params, 50, optax.apply_updates)
    assert_rel_close(got, want, 1e-6)


def test_flax_nnx_optimizer_passes_the_value():
    nnx = pytest.importorskip("flax.nnx")

    def train(tx):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))

        @nnx.jit
        def step(model, opt):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
            opt.update(model, grads, value=loss)

        for _ in range(20):
            step(model, opt)
        return nnx.state(model, nnx.Param)

    for ours, theirs in [
        (funcopt.momo(), contrib.momo()),
        (funcopt.momo_adam(0.1), contrib.momo_adam(0.1)),
        (funcopt.polyak_sgd(0.5), optax.polyak_sgd(0.5)),
    ]:
        chex.assert_trees_all_close(train(ours), train(theirs), rtol=1e-5, atol=1e-7)


def test_one_trace_for_any_hyperparameters():
    traces = []

    @jax.jit
    def step(tx, p):
        traces.append(None)
        return tx.update(p, tx.init(p), p, value=jnp.sum(p**2))[0]

    p = jnp.ones(3)
    for lr in (0.1, 0.2, 0.3):
        step(funcopt.momo_adam(lr, b1=lr, weight_decay=lr), p)
    assert len(traces) == 1
    assert funcopt.momo(0.5) == funcopt.momo(learning_rate=0.5)


def test_bfloat16_params_under_strict_promotion(strict_dtypes):
    """bfloat16 params stay bfloat16; MoMo's scalars are kept in float32."""
    params = random_params(4, jnp.bfloat16)
    for tx in (funcopt.polyak_sgd(), funcopt.momo(), funcopt.momo_adam()):
        got, values = _drive(tx, params, 3, funcopt.apply_updates)
        assert {x.dtype for x in jax.tree.leaves(got)} == {jnp.dtype(jnp.bfloat16)}
        assert bool(jnp.all(jnp.isfinite(values)))
    state = funcopt.momo().init(params).inner_state
    assert state.barf.dtype == state.gamma.dtype == state.lb.dtype == jnp.float32

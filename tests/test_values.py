"""What makes a transform a value (funcopt.values).

- equality and hashing by value, however the arguments are spelled, with no global cache
  (nothing retained, thread-safe);
- hyper-parameters as data: one trace for all learning rates, a vmapped sweep, a gradient
  with respect to the learning rate; no recompiles for any factory built twice;
- ``repr`` shows the composition.
"""

from __future__ import annotations

import functools
import gc
import threading
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry
from oracle import assert_rel_close, random_params, run

import funcopt

# ---- equal hyper-parameters, equal transforms ------------------------------------------

SPELLINGS = [
    (lambda: funcopt.scale_by_momentum(0.9), lambda: funcopt.scale_by_momentum()),
    (lambda: funcopt.scale_by_momentum(0.9), lambda: funcopt.scale_by_momentum(decay=0.9)),
    (lambda: funcopt.clip(1), lambda: funcopt.clip(1.0)),
    (lambda: funcopt.scale(np.float64(0.5)), lambda: funcopt.scale(0.5)),
    (lambda: funcopt.scale(np.array(0.5)), lambda: funcopt.scale(0.5)),
    (lambda: funcopt.scale(jnp.asarray(0.5)), lambda: funcopt.scale(0.5)),
    (lambda: funcopt.adam(1e-3), lambda: funcopt.adam(learning_rate=0.001)),
    (lambda: funcopt.adam(np.float64(1e-3), b2=0.999), lambda: funcopt.adam()),
    (lambda: funcopt.sgd(0.1, 0.9), lambda: funcopt.sgd(0.1, momentum=0.9, nesterov=False)),
    (
        lambda: funcopt.gdm(0.1, 0.9),
        lambda: funcopt.chain(funcopt.scale_by_momentum(0.9), funcopt.scale_by_learning_rate(0.1)),
    ),
    (
        lambda: funcopt.adamw(1e-3, mu_dtype="bfloat16"),
        lambda: funcopt.adamw(mu_dtype=jnp.bfloat16),
    ),
]


@pytest.mark.parametrize(("a", "b"), SPELLINGS)
def test_equal_hyperparameters_give_equal_transforms(a, b):
    x, y = a(), b()
    assert x is not y
    assert x == y and hash(x) == hash(y)


def test_different_hyperparameters_give_different_transforms():
    assert funcopt.adam(1e-3) != funcopt.adam(2e-3)
    assert funcopt.sgd(0.1, 0.9) != funcopt.sgd(0.1, 0.9, nesterov=True)
    assert funcopt.scale(1.0) != funcopt.scale_by_learning_rate(1.0)


def test_no_cache_retains_what_a_transform_holds():
    """Dropping a transform frees what it closed over (0.1 kept 4,096 of them alive)."""

    class Schedule:  # a weak-referenceable schedule holding a large array
        def __init__(self):
            self.table = np.ones(1 << 14)

        def __call__(self, count):
            return 1e-3

    refs = []
    for _ in range(50):
        schedule = Schedule()
        refs.append(weakref.ref(schedule))
        tx = funcopt.adam(schedule)
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))
        del tx, schedule
    gc.collect()
    assert sum(r() is not None for r in refs) == 0


def test_equality_does_not_depend_on_a_cache_or_threads():
    made = []

    def build():
        made.append(funcopt.adamw(1e-3, weight_decay=0.1))

    threads = [threading.Thread(target=build) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(tx == made[0] and hash(tx) == hash(made[0]) for tx in made)
    for lr in np.linspace(0.1, 1.0, 2000):  # thousands of other configurations later
        funcopt.scale(float(lr))
    assert funcopt.scale(0.5) == funcopt.scale(0.5)


def test_transforms_are_immutable():
    tx = funcopt.scale_by_momentum(0.9)
    with pytest.raises(AttributeError):
        tx.decay = 0.5  # type: ignore[misc]


# ---- hyper-parameters as data ------------------------------------------------------------


def test_an_optimizer_passed_to_jit_traces_once_for_all_learning_rates():
    traces = 0

    @jax.jit
    def step(tx, params, state):
        nonlocal traces
        traces += 1
        return tx.update(params, state, params)

    params = random_params(0)
    state = funcopt.adam(1e-3).init(params)
    outs = [step(funcopt.adam(lr), params, state)[0] for lr in (1e-3, 2e-3, 3e-3)]
    assert traces == 1
    # Traced, β₂ = 0.999 is a float32 leaf and 1 − β₂ is formed in float32 (1.3e-5 off),
    # as optax's inject_hyperparams does; eagerly it is formed in Python first.
    for lr, out in zip((1e-3, 2e-3, 3e-3), outs, strict=True):
        assert_rel_close(out, funcopt.adam(lr).update(params, state, params)[0], 2e-5)


def test_a_static_transform_does_not_recompile_when_rebuilt():
    traces = 0

    @functools.partial(jax.jit, static_argnums=0)
    def step(tx, g, state):
        nonlocal traces
        traces += 1
        return tx.update(g, state)

    g = jnp.ones(3)
    for _ in range(3):
        tx = funcopt.adam(1e-3)  # rebuilt each time, as in a training script
        step(tx, g, tx.init(g))
    assert traces == 1


def test_vmap_over_a_stacked_learning_rate_is_a_sweep_in_one_step():
    params = random_params(4)
    lrs = jnp.array([1e-4, 1e-3, 1e-2, 1e-1])
    stacked = jax.vmap(funcopt.adam)(lrs)  # one transform whose leaves carry the sweep axis
    assert stacked.transforms[1].learning_rate.shape == (4,)

    def train(tx):
        return run(tx, params, 20, funcopt.apply_updates)[0]

    swept = jax.jit(jax.vmap(train))(stacked)
    # The oracle: optax vmapped over the same float32 hyper-parameters (b1, b2 and eps are
    # stacked too, so 1 − β₂ is formed in float32 on both sides).
    full = lambda x: jnp.full(4, x, jnp.float32)
    want = jax.jit(jax.vmap(lambda *h: run(optax.adam(*h), params, 20, optax.apply_updates)[0]))(
        lrs, full(0.9), full(0.999), full(1e-8)
    )
    assert_rel_close(swept, want, 1e-6)


def test_vmap_over_a_learning_rate_built_inside():
    params = random_params(4)
    lrs = jnp.array([1e-4, 3e-3, 0.3])
    batched = jax.jit(
        jax.vmap(lambda lr: run(funcopt.adam(lr), params, 30, funcopt.apply_updates)[0])
    )(lrs)
    for i in range(3):
        want = run(optax.adam(float(lrs[i])), params, 30, optax.apply_updates)[0]
        assert_rel_close(jax.tree.map(lambda x, i=i: x[i], batched), want, 1e-5)


def test_gradient_with_respect_to_the_learning_rate():
    """d loss(θ₃) / dη through three Adam steps, the transform itself differentiated."""
    params = random_params(5)
    loss = lambda p: sum(jnp.sum(jnp.square(x - 1.0)) for x in jax.tree.leaves(p))

    def meta_loss(tx, apply):
        state, p = tx.init(params), params
        for _ in range(3):
            u, state = tx.update(jax.grad(loss)(p), state, p)
            p = apply(p, u)
        return loss(p)

    grad_tx = jax.jit(jax.grad(meta_loss), static_argnums=1)(
        funcopt.adam(0.05), funcopt.apply_updates
    )
    ours = grad_tx.transforms[1].learning_rate  # the cotangent of the learning rate leaf
    theirs = jax.jit(jax.grad(lambda lr: meta_loss(optax.adam(lr), optax.apply_updates)))(0.05)
    assert float(ours) != 0.0
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_traced_hyperparameters_pass_validation():
    out = jax.jit(
        lambda lr, b1: funcopt.adam(lr, b1=b1).update(
            jnp.ones(2), funcopt.adam().init(jnp.ones(2))
        )[0]
    )(0.1, 0.9)
    np.testing.assert_allclose(out, [-0.1, -0.1], rtol=1e-5)


def test_repr_shows_the_composition():
    text = repr(funcopt.adam(1e-3))
    assert text.startswith("chain(precondition(")
    for part in [
        "scale_by_momentum()",
        "bias_correction(decay=0.9)",
        "second_moment()",
        "bias_correction(decay=0.999)",
        "scale_by_learning_rate(learning_rate=0.001)",
    ]:
        assert part in text, text
    assert repr(funcopt.scale_by_momentum(0.5)) == "scale_by_momentum(decay=0.5)"


# ---- no needless recompiles, for every factory -------------------------------------------

FACTORY_ROWS = registry.available()
# The muon configurations compared with optax.contrib in test_orthogonal.py.
MUON_CONFIGS = [
    ("muon-default", dict()),
    (
        "muon-adaptive-dion-decay-rms",
        dict(adaptive=True, weight_decay=0.1, ns_coeffs="dion", consistent_rms=0.2),
    ),
    (
        "muon-everything",
        dict(
            nesterov=False,
            adaptive=True,
            weight_decay=0.1,
            adam_weight_decay=0.1,
            ns_coeffs="dion",
            consistent_rms=0.2,
            adam_learning_rate=0.003,
            preconditioning="spectral",
        ),
    ),
]
# (id, learning rate -> transform, params as the transform expects them)
FACTORIES = [(e.name, e.build, e.params) for e in FACTORY_ROWS] + [
    (name, functools.partial(lambda kw, lr: funcopt.muon(lr, **kw), kwargs), lambda p: p)
    for name, kwargs in MUON_CONFIGS
]
# Rows whose build fixes its own rate (schedule-free replaces the schedule): another
# learning rate is given here.
OTHER_RATE = {
    "schedule_free_adamw": lambda: funcopt.schedule_free_adamw(0.123, warmup_steps=1000),
}


def _matrices(params):
    """A mask of the leaves of rank ≥ 2 (module level, so equal every time)."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


def _nested(build, mask=True):
    """Chained and wrapped: a chain holding the optimizer inside a masked transform."""
    tx = build(registry.LR)
    return funcopt.chain(funcopt.scale(0.5), funcopt.masked(tx, _matrices) if mask else tx)


@pytest.mark.parametrize(("name", "build", "wrap"), FACTORIES, ids=[f[0] for f in FACTORIES])
def test_same_arguments_do_not_recompile(name, build, wrap):
    traces = 0

    @functools.partial(jax.jit, static_argnums=0)
    def step(tx, grads, params):
        nonlocal traces
        traces += 1
        return tx.update(grads, tx.init(params), params)

    grads = random_params(0, shapes={"w": (3, 2), "b": (2,)})
    params = wrap(grads)
    first, second = build(registry.LR), build(registry.LR)
    assert first == second and hash(first) == hash(second)
    step.lower(first, grads, params)
    step.lower(second, grads, params)  # hits the trace cache: no second trace
    assert traces == 1, f"{name}: equal transforms traced {traces} times"
    # Chained and nested (lowered only: tracing is what a recompile would show).
    # (lookahead's params are LookaheadParams, not the gradients' tree: one mask cannot
    # fit both, so a wrapped row is chained only.)
    nested = [_nested(build, mask=params is grads) for _ in range(2)]
    assert nested[0] == nested[1] and hash(nested[0]) == hash(nested[1])
    step.lower(nested[0], grads, params)
    step.lower(nested[1], grads, params)
    assert traces == 2
    # A different hyper-parameter is a different transform, traced again.
    other = OTHER_RATE.get(name, lambda: build(0.123))()
    assert other != first
    step.lower(other, grads, params)
    assert traces == 3

"""Combinators (funcopt.combine): chain, named_chain, precondition, rectify, one count."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import random_params
from registry import ChapterAdam
from support import assert_matches_optax, assert_value_reaches_times_value, times_value

import funcopt

G = [np.array([1.0, -2.0, 0.5]), np.array([-3.0, 0.25, 2.0]), np.array([0.5, 0.5, -1.0])]


def _steps(tx, grads, maybe_jit=lambda f: f):
    state = tx.init(jnp.zeros(3))
    update = maybe_jit(tx.update)
    outs = []
    for g in grads:
        u, state = update(jnp.asarray(g, jnp.float32), state)
        outs.append(np.asarray(u))
    return outs, state


def test_identity_passes_updates_through(maybe_jit):
    tx = funcopt.identity()
    g = {"a": jnp.arange(3.0), "b": None}
    u, state = maybe_jit(tx.update)(g, tx.init(g))
    chex.assert_trees_all_equal(u, g)
    assert state == funcopt.EmptyState()


def test_chain_applies_in_order_and_keeps_a_state_per_member(maybe_jit):
    tx = funcopt.chain(funcopt.scale(2.0), funcopt.scale_by_momentum(0.5), funcopt.scale(-1.0))
    state = tx.init(jnp.zeros(2))
    assert isinstance(state, tuple) and len(state) == 3
    u, state = maybe_jit(tx.update)(jnp.array([1.0, 3.0]), state)
    # 2 g, then m = 0.5 · 0 + 0.5 · 2 g = g, then − g
    np.testing.assert_allclose(u, [-1.0, -3.0])
    np.testing.assert_allclose(state[1].mu, [1.0, 3.0])


def test_chain_rejects_non_transforms():
    with pytest.raises(TypeError, match="argument 1: got int"):
        funcopt.chain(funcopt.identity(), 3)


def test_chain_equals_optax_chain():
    params = jnp.linspace(-1, 1, 5)
    ours = funcopt.chain(optax.clip(0.5), funcopt.scale(-0.1))
    theirs = optax.chain(optax.clip(0.5), optax.scale(-0.1))
    u1, _ = ours.update(params * 3, ours.init(params))
    u2, _ = theirs.update(params * 3, theirs.init(params))
    chex.assert_trees_all_close(u1, u2)


def test_named_chain_keys_states_by_name(maybe_jit):
    tx = funcopt.named_chain(("m", funcopt.scale_by_momentum(0.5)), ("lr", funcopt.scale(-1.0)))
    state = tx.init(jnp.zeros(2))
    assert set(state) == {"m", "lr"}
    u, state = maybe_jit(tx.update)(jnp.array([2.0, 4.0]), state)
    np.testing.assert_allclose(u, [-1.0, -2.0])
    np.testing.assert_allclose(state["m"].mu, [1.0, 2.0])
    with pytest.raises(ValueError, match="names must be unique"):
        funcopt.named_chain(("a", funcopt.identity()), ("a", funcopt.identity()))


def test_a_chain_keeps_one_count_in_its_first_counting_member(maybe_jit):
    """bias_correction and a schedule both read the step: the chain keeps one count."""
    schedule = funcopt.linear_schedule(1.0, 0.5, 4)
    tx = funcopt.chain(
        funcopt.scale(2.0), funcopt.bias_correction(0.5), funcopt.scale_by_learning_rate(schedule)
    )
    state = tx.init(jnp.zeros(1))
    assert isinstance(state[1], funcopt.CountState) and state[2] == funcopt.EmptyState()
    update = maybe_jit(tx.update)
    for t in range(1, 4):
        u, state = update(jnp.ones(1), state)
        eta = 1.0 - 0.125 * (t - 1)
        np.testing.assert_allclose(u, [-eta * 2.0 / (1 - 0.5**t)], rtol=1e-6)
    assert int(state[1].count) == 3
    assert int(optax.tree_utils.tree_get(state, "count")) == 3


def test_a_state_from_another_chain_is_refused(maybe_jit):
    tx = funcopt.chain(funcopt.bias_correction(0.9), funcopt.scale(1.0))
    with pytest.raises(funcopt.StructureError, match=r"at \[0\], state has EmptyState where"):
        maybe_jit(tx.update)(jnp.ones(1), (funcopt.EmptyState(),))


# ---- precondition: the one way statistics are combined ----------------------------------


def test_precondition_measures_both_statistics_on_the_raw_gradient():
    """v comes from g even when the numerator is a momentum average."""
    b1, b2 = 0.5, 0.9
    tx = funcopt.precondition(funcopt.scale_by_momentum(b1), funcopt.second_moment(b2))
    outs, state = _steps(tx, G)
    m, v = np.zeros(3), np.zeros(3)
    for g, u in zip(G, outs, strict=True):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        np.testing.assert_allclose(u, m / np.sqrt(v), rtol=1e-5)
    np.testing.assert_allclose(state.numerator.mu, m, rtol=1e-6)
    np.testing.assert_allclose(state.denominator.nu, v, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "denominator"),
    [
        (dict(eps=0.1, eps_root=1e-3), lambda d: np.sqrt(d + 1e-3) + 0.1),
        (dict(eps=0.2, eps_root=0.3, root=False), lambda d: d + 0.3 + 0.2),
    ],
    ids=["root", "no-root"],
)
def test_precondition_eps_and_root(kwargs, denominator, maybe_jit):
    tx = funcopt.precondition(funcopt.identity(), funcopt.sum_of_squares(0.0), **kwargs)
    outs, _ = _steps(tx, G, maybe_jit)
    total = np.zeros(3)
    for g, u in zip(G, outs, strict=True):
        total = total + g**2
        np.testing.assert_allclose(u, g / denominator(total), rtol=1e-5)


def test_the_plain_chain_of_momentum_and_rms_is_not_adam():
    """The pitfall the design avoids: RMS measured on m, not g, and no bias correction."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((3, 8))
    naive = funcopt.chain(
        funcopt.scale_by_momentum(0.9), funcopt.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False)
    )
    debiased_chain = funcopt.chain(
        funcopt.scale_by_momentum(0.9),
        funcopt.bias_correction(0.9),
        funcopt.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False, bias_correction=True),
    )
    exact = funcopt.scale_by_adam(0.9, 0.999)
    txs = (naive, debiased_chain, exact)
    states = [tx.init(jnp.zeros(8)) for tx in txs]
    opt, theta = ChapterAdam(lr=1.0), np.zeros(8)
    for g in grads:
        outs = []
        for k, tx in enumerate(txs):
            u, states[k] = tx.update(jnp.asarray(g, jnp.float32), states[k])
            outs.append(np.asarray(u))
        new_theta = opt.step(theta, g)
        want, theta = theta - new_theta, new_theta  # the chapter's Adam direction
    np.testing.assert_allclose(outs[2], want, rtol=1e-5)
    assert np.median(np.abs(outs[0] / want)) > 10  # missing bias correction: ~40x too big
    assert np.median(np.abs(outs[1] - want) / np.abs(want)) > 0.1  # v of m, not of g


def test_adam_reads_like_the_chapter():
    """scale_by_adam is the composition its docstring states, exactly."""
    assert funcopt.scale_by_adam(0.8, 0.99, 1e-6, 1e-9) == funcopt.precondition(
        funcopt.chain(funcopt.scale_by_momentum(0.8), funcopt.bias_correction(0.8)),
        funcopt.chain(funcopt.second_moment(0.99), funcopt.bias_correction(0.99)),
        eps=1e-6,
        eps_root=1e-9,
    )


def test_adam_is_rmsprop_with_the_bias_corrected_momentum_on_top():
    """The chapter: "Adam combines momentum with RMSProp". RMSProp's preconditioner with
    m̂ as its numerator is Adam's direction, as values and in numbers."""
    rmsprop = funcopt.scale_by_rms(0.999, 1e-8, eps_in_sqrt=False, bias_correction=True)
    m_hat = funcopt.chain(funcopt.scale_by_momentum(0.9), funcopt.bias_correction(0.9))
    adam = dataclasses.replace(rmsprop, numerator=m_hat)
    assert adam == funcopt.scale_by_adam(0.9, 0.999, 1e-8)
    outs, _ = _steps(adam, G)
    want, _ = _steps(optax.scale_by_adam(0.9, 0.999, 1e-8), G)
    np.testing.assert_allclose(outs, want, rtol=1e-6)


# ---- rectify -------------------------------------------------------------------------------


def test_rectify_switches_from_the_numerator_to_the_rectified_step(maybe_jit, x64):
    """ρ_t ≥ 5 first at t = 6 for β₂ = 0.999 (RAdam, Liu et al. 2020, Algorithm 2).

    In float64: ρ_t ≈ 5 is the difference of two numbers near 2000 (also in optax).
    """
    b2 = 0.999
    adaptive = funcopt.precondition(funcopt.scale(2.0), funcopt.sum_of_squares(0.0))
    tx = funcopt.rectify(adaptive, b2=b2, threshold=5.0)
    update, state = maybe_jit(tx.update), tx.init(jnp.ones(2, jnp.float64))
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, 9):
        u, state = update(jnp.ones(2, jnp.float64), state)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= 5:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            np.testing.assert_allclose(u, 2 * r / np.sqrt(t) * np.ones(2), rtol=1e-12)
        else:
            np.testing.assert_array_equal(u, 2 * np.ones(2))


def test_rectify_needs_a_precondition():
    with pytest.raises(TypeError, match="must be a precondition"):
        funcopt.rectify(funcopt.scale(1.0))


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: funcopt.precondition(funcopt.identity(), funcopt.identity(), eps=-1.0), "eps"),
        (
            lambda: funcopt.precondition(funcopt.identity(), funcopt.identity(), eps_root=-1),
            "eps_root",
        ),
        (lambda: funcopt.rectify(funcopt.scale_by_adam(), b2=1.0), "b2"),
        (lambda: funcopt.rectify(funcopt.scale_by_adam(), threshold=3.0), "threshold"),
    ],
)
def test_invalid_hyperparameters_are_named(make, argument):
    with pytest.raises(funcopt.HyperParameterError, match=argument):
        make()


def test_elementwise_declarations():
    assert funcopt.chain(funcopt.scale(1.0), funcopt.scale_by_adam()).elementwise
    assert not funcopt.chain(funcopt.scale(1.0), funcopt.scale_by_trust_ratio()).elementwise
    assert not funcopt.chain(optax.scale(1.0)).elementwise  # foreign: not known
    assert funcopt.rectify(funcopt.scale_by_adam()).elementwise


def test_extra_arguments_reach_every_member():
    seen = []

    def update(u, s, p=None, **extra):
        seen.append(extra)
        return u, s

    spy = funcopt.GradientTransformation(lambda p: (), update)
    tx = funcopt.chain(funcopt.scale(2.0), funcopt.precondition(spy, funcopt.second_moment()))
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)), value=jnp.asarray(3.0))
    assert seen and float(seen[0]["value"]) == 3.0
    jax.jit(lambda s: tx.update(jnp.ones(2), s, value=1.0))(tx.init(jnp.ones(2)))


# ---- named_chain against optax, extra arguments ------------------------------------------

# A small nested tree (dict, list, a scalar): compile time grows with the leaf count.
SHAPES = {"dense": {"w": (4, 3), "b": (3,)}, "seq": [(), (2, 3)]}


def test_named_chain_matches_optax_float32():
    ours = funcopt.named_chain(("adam", funcopt.scale_by_adam()), ("lr", funcopt.scale(-0.01)))
    theirs = optax.named_chain(("adam", optax.scale_by_adam()), ("lr", optax.scale(-0.01)))
    assert_matches_optax(ours, theirs, random_params(0, shapes=SHAPES))


def test_named_chain_state_by_name(maybe_jit):
    tx = funcopt.named_chain(
        ("double", funcopt.scale(2.0)), ("avg", funcopt.scale_by_momentum(0.5))
    )
    state = tx.init({"w": jnp.zeros(2)})
    assert list(state) == ["double", "avg"]
    u, state = maybe_jit(tx.update)({"w": jnp.ones(2)}, state)
    # double: 2 g = 2; avg: m = 0.5 · 0 + 0.5 · 2 = 1.
    chex.assert_trees_all_close(u, {"w": jnp.ones(2)})
    chex.assert_trees_all_close(state["avg"].mu, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="unique"):
        funcopt.named_chain(("a", funcopt.scale(1.0)), ("a", funcopt.scale(2.0)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.chain(funcopt.scale(1.0), times_value()),
        lambda: funcopt.named_chain(("x", times_value())),
    ],
    ids=["chain", "named_chain"],
)
def test_extra_args_reach_the_inner_transform(make, maybe_jit):
    assert_value_reaches_times_value(make(), maybe_jit)

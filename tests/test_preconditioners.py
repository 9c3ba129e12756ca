"""The adaptive directions (funcopt.preconditioners): equations by hand, optax's twins."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params, run_against_optax

import funcopt

G = [np.array([1.0, -2.0, 0.5]), np.array([-3.0, 0.25, 2.0]), np.array([0.5, 0.5, -1.0])]


def _steps(tx, grads, maybe_jit=lambda f: f):
    state = tx.init(jnp.zeros(np.shape(grads[0])))
    update = maybe_jit(tx.update)
    outs = []
    for g in grads:
        u, state = update(jnp.asarray(g, jnp.float32), state)
        outs.append(np.asarray(u, np.float64))
    return outs, state


@pytest.mark.parametrize(
    ("kwargs", "denominator"),
    [
        (dict(eps=1e-3, eps_in_sqrt=True), lambda v: np.sqrt(v + 1e-3)),
        (dict(eps=1e-3, eps_in_sqrt=False), lambda v: np.sqrt(v) + 1e-3),
        (dict(eps=0.0), np.sqrt),
    ],
    ids=["inside", "outside", "chapter"],
)
def test_scale_by_rms_eps_placement(kwargs, denominator, maybe_jit):
    beta = 0.9
    outs, state = _steps(funcopt.scale_by_rms(beta, **kwargs), G, maybe_jit=maybe_jit)
    v = np.zeros(3)
    for g, u in zip(G, outs, strict=True):
        v = beta * v + (1 - beta) * g**2
        np.testing.assert_allclose(u, g / denominator(v), rtol=1e-5)
    np.testing.assert_allclose(optax.tree_utils.tree_get(state, "nu"), v, rtol=1e-6)


def test_scale_by_rms_bias_correction_and_initial_scale():
    beta = 0.9
    outs, _ = _steps(funcopt.scale_by_rms(beta, 0.0, bias_correction=True, initial_scale=1.0), G)
    v = np.ones(3)
    for t, (g, u) in enumerate(zip(G, outs, strict=True), start=1):
        v = beta * v + (1 - beta) * g**2
        np.testing.assert_allclose(u, g / np.sqrt(v / (1 - beta**t)), rtol=1e-5)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_scale_by_stddev_is_finite_for_a_constant_gradient(bias_correction, maybe_jit):
    """v̂ − m̂² is a variance (≥ 0 exactly); rounding must not push it below 0 into NaN."""
    tx = funcopt.scale_by_stddev(0.9, 1e-8, bias_correction=bias_correction)
    g = {"w": jnp.linspace(-300.0, 300.0, 4001)}
    state = tx.init(g)
    update = maybe_jit(tx.update)
    for _ in range(30):
        u, state = update(g, state)
        assert bool(jnp.all(jnp.isfinite(u["w"])))
    assert bool(jnp.all(jnp.abs(u["w"]) <= jnp.abs(g["w"]) / jnp.sqrt(1e-8) * (1 + 1e-6)))


def test_layerwise_rms_follows_its_equation(maybe_jit, strict_dtypes):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(4, 3)) for _ in range(4)]
    outs, _ = _steps(funcopt.scale_by_layerwise_rms(0.5, 0.1, 0.01), grads, maybe_jit)
    nu = None
    for x, u in zip(grads, outs, strict=True):
        n2 = np.sum(x * x)
        nu = n2 if nu is None else 0.5 * nu + 0.5 * n2
        np.testing.assert_allclose(u, x / (np.sqrt(nu + 0.01) + 0.1), rtol=2e-6)


# Each direction alone (no learning rate) against optax's, in float64 over 300 steps.
TWINS = [
    ("rms", funcopt.scale_by_rms, optax.scale_by_rms, {}),
    ("rms-outside", funcopt.scale_by_rms, optax.scale_by_rms, dict(eps_in_sqrt=False)),
    ("rms-debiased", funcopt.scale_by_rms, optax.scale_by_rms, dict(bias_correction=True)),
    ("stddev", funcopt.scale_by_stddev, optax.scale_by_stddev, dict(initial_scale=0.5)),
    ("adam", funcopt.scale_by_adam, optax.scale_by_adam, dict(eps_root=1e-8)),
    ("nadam", funcopt.scale_by_nadam, lambda: optax.scale_by_adam(nesterov=True), {}),
    ("amsgrad", funcopt.scale_by_amsgrad, optax.scale_by_amsgrad, {}),
    ("adamax", funcopt.scale_by_adamax, optax.scale_by_adamax, {}),
    ("belief", funcopt.scale_by_belief, optax.scale_by_belief, {}),
    ("radam", funcopt.scale_by_radam, optax.scale_by_radam, {}),
    ("rss", funcopt.scale_by_rss, optax.scale_by_rss, {}),
    ("adadelta", funcopt.scale_by_adadelta, optax.scale_by_adadelta, {}),
]


@pytest.mark.parametrize(("name", "ours", "theirs", "kwargs"), TWINS, ids=[t[0] for t in TWINS])
def test_direction_equals_optax_float64(name, ours, theirs, kwargs, x64):
    params = random_params(0, jnp.float64)
    step = optax.scale(-1e-3)
    ours, theirs = funcopt.chain(ours(**kwargs), step), optax.chain(theirs(**kwargs), step)
    got, want = run_against_optax(ours, theirs, params, 300)
    assert_rel_close(got, want, 1e-10)


def test_yogi_differs_from_optax_only_in_its_first_moment_start(x64):
    """optax starts m at v₀ = 10⁻⁶; funcopt at 0 (the paper): both agree given the same m₀."""
    params = random_params(0, jnp.float64)
    got, want = run_against_optax(
        funcopt.chain(funcopt.scale_by_yogi(), optax.scale(-1e-3)),
        optax.chain(optax.scale_by_yogi(), optax.scale(-1e-3)),
        params,
        300,
    )
    assert_rel_close(got, want, 1e-5)


def test_elementwise_declarations():
    for tx in [
        funcopt.scale_by_rms(), funcopt.scale_by_stddev(), funcopt.scale_by_adam(),
        funcopt.scale_by_amsgrad(), funcopt.scale_by_adamax(), funcopt.scale_by_belief(),
        funcopt.scale_by_yogi(), funcopt.scale_by_radam(), funcopt.scale_by_rss(),
        funcopt.scale_by_adadelta(),
    ]:  # fmt: skip
        assert tx.elementwise, tx
    assert not funcopt.scale_by_layerwise_rms().elementwise


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: funcopt.scale_by_adam(b1=1.0), "b1"),
        (lambda: funcopt.scale_by_adam(eps_root=-1.0), "eps_root"),
        (lambda: funcopt.scale_by_rms(decay=2.0), "decay"),
        (lambda: funcopt.scale_by_rms(eps_in_sqrt="yes"), "eps_in_sqrt"),
        (lambda: funcopt.scale_by_radam(threshold=3.0), "threshold"),
        (
            lambda: funcopt.scale_by_yogi(initial_accumulator_value=-1.0),
            "initial_accumulator_value",
        ),
        (lambda: funcopt.scale_by_rss(eps=-1.0), "eps"),
        (lambda: funcopt.scale_by_adadelta(rho=1.0), "rho"),
        (lambda: funcopt.scale_by_layerwise_rms(eps_root=-1.0), "eps_root"),
    ],
)
def test_invalid_hyperparameters_are_named(make, argument):
    with pytest.raises(funcopt.HyperParameterError, match=argument):
        make()


def test_traced_hyperparameters_are_accepted():
    @jax.jit
    def step(b1):
        tx = funcopt.scale_by_nadam(b1)
        return tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]

    np.testing.assert_allclose(step(0.5), (0.5 * 0.5 / 0.75 + 0.5 / 0.5) * np.ones(2), rtol=1e-5)

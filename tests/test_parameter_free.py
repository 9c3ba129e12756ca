"""Learning-rate-free steps: against optax (main and contrib), by hand, on complex,
scalar and bfloat16 parameters, and bad hyper-parameters.

The 50-step float64 comparison with the paper's layer-wise DoG is a row of ``registry``
(``test_oracles.py``).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from oracle import assert_rel_close, quadratic_grads, random_params
from support import (
    assert_bf16_statistics_stay_float32,
    assert_matches_optax,
    assert_one_trace_for_any_values,
)

import funcopt

# optax's state keeps Σ‖g‖² in shape (1,): its update broadcasts, which the test suite's
# strict rank promotion refuses; the matrices and vectors below are unchanged by it.
SHAPES = {"w": (4, 3), "b": (3,), "col": (5, 1)}


def _run(tx, params, steps, apply_updates):
    state = tx.init(params)
    for k in range(steps):
        u, state = tx.update(quadratic_grads(params, jnp.asarray(k)), state, params)
        params = apply_updates(params, u)
    return params, state


def test_matches_optax():
    params = random_params(2, shapes=SHAPES)
    ours = funcopt.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-0.5)
    theirs = optax.scale_by_distance_over_gradients(reps_rel=1e-3, global_scale=-0.5)
    got, state = _run(ours, params, 200, funcopt.apply_updates)
    with jax.numpy_rank_promotion("allow"):
        want, optax_state = _run(theirs, params, 200, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)
    assert_rel_close(state.max_dist, optax_state.max_dist, 1e-5)


def test_first_step_and_scalar_parameters():
    """d₀ = r(1 + ‖θ₀‖), G₁ = ‖g‖²: u₁ = s d₀ g / ‖g‖, keeping a scalar leaf's shape."""
    tx = funcopt.scale_by_distance_over_gradients(reps_rel=0.1, eps=0.0, global_scale=-1.0)
    params = {"s": jnp.array(3.0), "v": jnp.array([3.0, 4.0])}
    grads = {"s": jnp.array(2.0), "v": jnp.array([0.0, -1.0])}
    u, state = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(u["s"], -0.1 * 4.0 * 1.0, rtol=1e-6)
    np.testing.assert_allclose(u["v"], [0.0, 0.1 * 6.0], rtol=1e-6)
    assert u["s"].shape == () and state.grad_sum_of_squares["s"].shape == ()


def test_complex_parameters_use_moduli(x64):
    """‖z − z₀‖ and ‖g‖ of complex leaves are real; θ₀ keeps its imaginary part."""
    tx = funcopt.scale_by_distance_over_gradients(reps_rel=0.5, eps=0.0)
    z = jnp.array([3.0 + 4.0j])
    state = tx.init(z)
    assert state.init_params.dtype == jnp.complex128 and state.max_dist.dtype == jnp.float64
    u, state = tx.update(jnp.array([1.0j]), state, z)
    np.testing.assert_allclose(u, [0.5 * 6.0 * 1.0j])  # d₀ = 0.5 (1 + 5), ‖g‖ = 1


def test_needs_the_params():
    tx = funcopt.scale_by_distance_over_gradients()
    with pytest.raises(ValueError, match="params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# ---- DoG, DoWG and COCOB (optax.contrib's) ----------------------------------------------


def _by_rank(params):
    return jax.tree.map(lambda x: x.ndim > 0, params)


def _pair(name, *args, schedule=None, **kwargs):
    """``funcopt.<name>`` and ``optax.contrib.<name>`` with the same arguments (and each
    library's ``linear_schedule(*schedule)`` as the learning rate, if given)."""

    def make(lib, rate_lib):
        lr = (rate_lib.linear_schedule(*schedule),) if schedule else ()
        return getattr(lib, name)(*lr, *args, **kwargs)

    return lambda: (make(funcopt, funcopt), make(optax.contrib, optax))


TWINS = {
    "dog": _pair("dog"),
    "dog-distance-decay-mask": _pair(
        "dog", 0.5, ("distance", 1e-3), weight_decay=0.01, mask=_by_rank
    ),
    "dog-learning_rate-schedule": _pair(
        "dog", schedule=(1.0, 0.2, 600), init_step=("learning_rate", 1e-2)
    ),
    "dowg": _pair("dowg"),
    "dowg-init-decay": _pair("dowg", 0.5, 1e-3, weight_decay=0.01),
    "cocob": _pair("cocob"),
    "cocob-alpha-decay-mask": _pair("cocob", 0.1, alpha=20.0, weight_decay=0.01, mask=_by_rank),
    "cocob-schedule": _pair("cocob", schedule=(1.0, 0.1, 800), alpha=50.0),
}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_contrib_twins_match_optax(name):
    """1000 float32 steps. The runs are not chaotic (optax nudged by 1e-6 moves by less
    than 1e-6), and funcopt's float32 run is optax's to the bit."""
    ours, theirs = TWINS[name]()
    assert_matches_optax(ours, theirs, random_params(0))


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _drive(tx, params, grads, maybe_jit):
    """The params after each update, flattened."""
    update = maybe_jit(tx.update)
    state, trail = tx.init(params), []
    for g in grads:
        u, state = update(g, state, params)
        params = funcopt.apply_updates(params, u)
        trail.append(_flat(params))
    return trail


def _two_leaves(steps=5):
    params = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    rng = np.random.default_rng(3)
    draw = lambda: {
        "a": jnp.asarray(rng.normal(size=2), jnp.float32),
        "b": jnp.float32(rng.normal()),
    }
    return params, [draw() for _ in range(steps)]


@pytest.mark.parametrize(
    "init_step", [("heuristic", 0.1), ("distance", 0.3), ("learning_rate", 0.2)]
)
def test_dog_written_out(init_step, maybe_jit):
    """d = max(d, ‖θ − θ₀‖), G += ‖g‖², θ ← θ − η d / √(G + ε) g, norms over the whole
    tree; the learning_rate tag makes the first step η₀ g."""
    params, grads = _two_leaves()
    got = _drive(funcopt.dog(0.7, init_step, eps=1e-6), params, grads, maybe_jit)
    theta = theta0 = _flat(params).astype(np.float64)
    tag, value = init_step
    d = {"heuristic": value * (1 + np.linalg.norm(theta0)), "distance": value}.get(tag, 0.0)
    total = 0.0
    for t, g in enumerate(map(_flat, grads)):
        d, total = max(d, np.linalg.norm(theta - theta0)), total + g @ g
        eta = value if tag == "learning_rate" and t == 0 else d / np.sqrt(total + 1e-6)
        theta = theta - 0.7 * eta * g
        np.testing.assert_allclose(got[t], theta, rtol=2e-6, atol=1e-7)


def test_dowg_written_out(maybe_jit):
    """r̄² = max(r̄², ‖θ − θ₀‖²), v += r̄² ‖g‖², θ ← θ − η r̄² / (√v + ε) g."""
    params, grads = _two_leaves()
    got = _drive(funcopt.dowg(0.7, init_estim_sq_dist=0.05, eps=1e-3), params, grads, maybe_jit)
    theta = theta0 = _flat(params).astype(np.float64)
    r2, v = 0.05, 0.0
    for t, g in enumerate(map(_flat, grads)):
        r2 = max(r2, np.sum((theta - theta0) ** 2))
        v = v + r2 * (g @ g)
        theta = theta - 0.7 * r2 / (np.sqrt(v) + 1e-3) * g
        np.testing.assert_allclose(got[t], theta, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
def test_cocob_written_out(dtype, maybe_jit):
    """Orabona and Tommasi's Algorithm 2 per coordinate (from L₀ = ε), on the gradients
    times η; for complex numbers |g| is the modulus and g (θ − θ₁) is Re(conj(g) (θ − θ₁))."""
    rng = np.random.default_rng(5)
    complex_ = dtype == jnp.complex64
    draw = lambda: rng.normal(size=3) + (1j * rng.normal(size=3) if complex_ else 0.0)
    theta = theta1 = draw()
    grads = [draw() for _ in range(6)]
    tx = funcopt.cocob(0.5, alpha=3.0, eps=1e-2)
    got = _drive(tx, jnp.asarray(theta, dtype), [jnp.asarray(g, dtype) for g in grads], maybe_jit)
    scale, total, reward, cumulative = np.full(3, 1e-2), np.zeros(3), np.zeros(3), 0.0
    for t, g in enumerate(grads):
        g = 0.5 * g
        scale, total = np.maximum(scale, np.abs(g)), total + np.abs(g)
        reward = np.maximum(reward - np.real(np.conj(g) * (theta - theta1)), 0.0)
        cumulative = cumulative - g
        bet = cumulative / (scale * np.maximum(total + scale, 3.0 * scale))
        theta = theta1 + bet * (scale + reward)
        np.testing.assert_allclose(got[t], theta, rtol=1e-5, atol=1e-6)


def test_cocob_state_is_real_for_complex_parameters():
    """L, G and R are real (optax's reward turns complex); C keeps the imaginary part."""
    z = jnp.array([1.0 + 1.0j, -2.0j])
    tx = funcopt.scale_by_cocob()
    state = tx.init(z)
    _, state = tx.update(jnp.array([0.5 - 1.0j, 2.0]), state, z)
    assert state.cumulative_gradients.dtype == jnp.complex64
    assert {state.scale.dtype, state.subgradients.dtype, state.reward.dtype} == {
        jnp.dtype(jnp.float32)
    }


def test_first_steps_of_the_primitives():
    """No sign flip; DoG's first step is d₀ g / ‖g‖ and COCOB's θ₁ + C L / (L max(2L, αL))."""
    p = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    g = {"a": jnp.array([-1.0]), "b": jnp.array([0.0])}
    dog = funcopt.scale_by_dog(("heuristic", 0.5), eps=0.0)
    u, _ = dog.update(g, dog.init(p), p)
    np.testing.assert_allclose(_flat(u), [-3.0, 0.0], rtol=1e-6)  # 0.5 (1 + 5) · g / 1
    cocob = funcopt.scale_by_cocob(alpha=10.0)
    u, _ = cocob.update(g, cocob.init(p), p)
    np.testing.assert_allclose(_flat(u), [0.1, 0.0], atol=1e-7)  # 1 · 1 / (1 · max(2, 10))


BAD = [
    (lambda: funcopt.scale_by_dog(("bogus", 1.0)), r"init_step\[0\]='bogus'"),
    (lambda: funcopt.scale_by_dog(("distance", 0.0)), r"init_step\[1\]=0.0"),
    (lambda: funcopt.scale_by_dog(1e-6), "init_step=1e-06"),
    (lambda: funcopt.scale_by_dog(("distance", 1.0), eps=-1.0), "eps=-1.0"),
    (lambda: funcopt.dog(init_step=("heuristic", -1e-6)), r"init_step\[1\]=-1e-06"),
    (lambda: funcopt.dog(-1.0), "learning_rate=-1.0"),
    (lambda: funcopt.dog(weight_decay=-0.1), "weight_decay=-0.1"),
    (lambda: funcopt.dog(weight_decay=0.1, mask="w"), "mask='w'"),
    (lambda: funcopt.scale_by_dowg(init_estim_sq_dist=0.0), "init_estim_sq_dist=0.0"),
    (lambda: funcopt.scale_by_dowg(eps=0.0), "eps=0.0"),
    (lambda: funcopt.dowg(eps=float("nan")), "eps=nan"),
    (lambda: funcopt.dowg(init_estim_sq_dist=-1.0), "init_estim_sq_dist=-1.0"),
    (lambda: funcopt.scale_by_cocob(alpha=-1.0), "alpha=-1.0"),
    (lambda: funcopt.scale_by_cocob(eps=0.0), "eps=0.0"),
    (lambda: funcopt.cocob(weight_decay=-1.0), "weight_decay=-1.0"),
    (lambda: funcopt.cocob(alpha=float("inf")), "alpha=inf"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_hyperparameters_name_the_argument(case):
    make, message = BAD[case]
    with pytest.raises(funcopt.HyperParameterError, match=message):
        make()


@pytest.mark.parametrize(
    "name", ["scale_by_dog", "dog", "scale_by_dowg", "dowg", "scale_by_cocob", "cocob"]
)
def test_signature_matches_optax_contrib(name):
    """Names, kinds and defaults (optax.contrib exports no scale_by_dog or scale_by_dowg:
    they are read from ``optax.contrib._dog``)."""
    twin = getattr(optax.contrib, name, None) or getattr(optax.contrib._dog, name)

    def params(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert params(getattr(funcopt, name)) == params(twin)


def test_dog_is_a_value_with_its_init_step_as_a_leaf():
    """repr reads back; the init value is a leaf (one trace), the tag is structure."""
    tx = funcopt.scale_by_dog(("distance", 0.25), eps=1e-6)
    assert repr(tx) == "scale_by_dog(init_step=('distance', 0.25), eps=1e-06)"
    assert eval(repr(tx), {"scale_by_dog": funcopt.scale_by_dog}) == tx
    assert jax.tree.leaves(tx) == [0.25, 1e-6]
    assert tx != funcopt.scale_by_dog(("heuristic", 0.25), eps=1e-6)
    params = {"w": jnp.ones(3)}
    assert_one_trace_for_any_values(lambda x: funcopt.dog(init_step=("distance", x)), params)
    assert_one_trace_for_any_values(lambda x: funcopt.cocob(alpha=x * 100), params)


@pytest.mark.parametrize(
    "make", [funcopt.dog, funcopt.dowg, funcopt.cocob], ids=["dog", "dowg", "cocob"]
)
def test_bfloat16_params_keep_float32_statistics(make):
    """The start θ₀ keeps the params' bfloat16 (one per leaf); the sums are float32."""
    assert_bf16_statistics_stay_float32(make(), first=1)


@pytest.mark.parametrize(
    "make", [lambda: funcopt.scale_by_dog(("distance", 1.0)), funcopt.scale_by_dowg]
)
def test_whole_tree_steps_need_the_params_and_refuse_broadcasting(make):
    tx = make()
    params = {"w": jnp.ones((2, 3))}
    with pytest.raises(ValueError, match="params"):
        tx.update(params, tx.init(params))
    with pytest.raises(funcopt.StructureError):
        tx.update({"w": jnp.ones((1, 3))}, tx.init(params), params)

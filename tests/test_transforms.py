"""The building blocks of funcopt.transforms and funcopt.modern against their equations.

Each primitive runs four steps (eagerly and under jit, with strict dtype promotion) on
fixed gradients; the expected outputs are the docstring's equations written out in
NumPy (float64) here. Validation of concrete hyper-parameters is checked too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt

RNG = np.random.default_rng(0)
GRADS = [RNG.normal(size=(4, 3)) for _ in range(4)]
PARAMS = RNG.normal(size=(4, 3))


def _outputs(tx, maybe_jit, params=PARAMS):
    update = maybe_jit(tx.update)
    state = tx.init(jnp.asarray(params, jnp.float32))
    outs = []
    for g in GRADS:
        u, state = update(jnp.asarray(g, jnp.float32), state, jnp.asarray(params, jnp.float32))
        outs.append(np.asarray(u, np.float64))
    return outs


def _ema_series(xs, decay, start=0.0):
    acc, out = start, []
    for x in xs:
        acc = decay * acc + (1 - decay) * x
        out.append(acc)
    return out


def _debiased(xs, decay):
    return [x / (1 - decay ** (t + 1)) for t, x in enumerate(xs)]


def _second_moment(b2):
    return funcopt.chain(
        funcopt.square(), funcopt.scale_by_momentum(b2), funcopt.bias_correction(b2)
    )


def _first_moment(b1):
    return funcopt.chain(funcopt.scale_by_momentum(b1), funcopt.bias_correction(b1))


def _check(got, want, tol=2e-6):
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"step {t + 1}")


def _expected(name):
    g = GRADS
    sq = [x * x for x in g]
    if name == "square":
        return sq
    if name == "sign":
        return [np.sign(x) for x in g]
    if name == "divide-adam":
        m, v = _debiased(_ema_series(g, 0.9), 0.9), _debiased(_ema_series(sq, 0.99), 0.99)
        return [a / (np.sqrt(b + 1e-3) + 0.1) for a, b in zip(m, v, strict=True)]
    if name == "divide-nosqrt":
        return [x / (x * x + 0.5) for x in g]
    if name == "nesterov":
        m = _ema_series(g, 0.8)
        return [
            0.8 * m[t] / (1 - 0.8 ** (t + 2)) + 0.2 * g[t] / (1 - 0.8 ** (t + 1)) for t in range(4)
        ]
    if name == "lion":
        m, out = 0.0, []
        for x in g:
            out.append(0.7 * m + 0.3 * x)
            m = 0.95 * m + 0.05 * x
        return out
    if name == "running_max":
        return list(np.maximum.accumulate(np.stack([np.maximum(x, 0) for x in g])))
    if name == "infinity":
        u, out = 0.0, []
        for x in g:
            u = np.maximum(np.abs(x) + 0.01, 0.9 * u)
            out.append(u)
        return out
    if name == "belief":
        m, s, out = 0.0, 0.0, []
        for x in g:
            m = 0.9 * m + 0.1 * x
            s = 0.99 * s + 0.01 * (x - m) ** 2 + 1e-4
            out.append(s)
        return out
    if name == "yogi":
        v, out = 0.5, []
        for x in sq:
            v = v - 0.1 * np.sign(v - x) * x
            out.append(v)
        return out
    if name == "sum_of_squares":
        return list(0.2 + np.cumsum(np.stack(sq), axis=0))
    if name == "delta_rms":
        x_acc, out = 0.0, []
        for x in g:
            u = np.sqrt(x_acc + 0.1) * x
            x_acc = 0.9 * x_acc + 0.1 * u * u
            out.append(u)
        return out
    if name == "layerwise":
        nu, out = None, []
        for x in g:
            n2 = np.sum(x * x)
            nu = n2 if nu is None else 0.5 * nu + 0.5 * n2
            out.append(x / (np.sqrt(nu + 0.01) + 0.1))
        return out
    if name == "param_block_rms":
        return [x * np.sqrt(np.mean(PARAMS**2)) for x in g]
    if name == "trust_ratio":
        return [x * 0.5 * np.linalg.norm(PARAMS) / (np.linalg.norm(x) + 0.1) for x in g]
    if name == "factored":
        rows, cols, out = 0.0, 0.0, []
        for t, x in enumerate(g):
            beta = 1 - (t + 1) ** -0.8
            g2 = x * x + 1e-30
            rows = beta * rows + (1 - beta) * g2.mean(axis=1)  # (4,): the rows of (4, 3)
            cols = beta * cols + (1 - beta) * g2.mean(axis=0)  # (3,)
            v_hat = np.outer(rows, cols) / rows.mean()
            out.append(x / np.sqrt(v_hat))
        return out
    raise KeyError(name)


CASES = [
    ("square", lambda: funcopt.square()),
    ("sign", lambda: funcopt.scale_by_sign()),
    (
        "divide-adam",
        lambda: funcopt.divide(_second_moment(0.99), _first_moment(0.9), eps=0.1, eps_root=1e-3),
    ),
    ("divide-nosqrt", lambda: funcopt.divide(funcopt.square(), sqrt=False, eps=0.2, eps_root=0.3)),
    ("nesterov", lambda: funcopt.nesterov_momentum(0.8)),
    ("lion", lambda: funcopt.lion_momentum(0.7, 0.95)),
    ("running_max", lambda: funcopt.running_max()),
    ("infinity", lambda: funcopt.infinity_moment(0.9, 0.01)),
    ("belief", lambda: funcopt.belief_moment(0.9, 0.99, 1e-4)),
    ("yogi", lambda: funcopt.yogi_moment(0.9, 0.5)),
    ("sum_of_squares", lambda: funcopt.sum_of_squares(0.2)),
    ("delta_rms", lambda: funcopt.scale_by_delta_rms(0.9, 0.1)),
    ("layerwise", lambda: funcopt.scale_by_layerwise_rms(0.5, 0.1, 0.01)),
    ("param_block_rms", lambda: funcopt.scale_by_param_block_rms(1e-3)),
    ("trust_ratio", lambda: funcopt.scale_by_trust_ratio(0.0, 0.5, 0.1)),
    ("factored", lambda: funcopt.scale_by_factored_rms(min_dim_size_to_factor=3)),
]


@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
def test_primitive_follows_its_equation(name, make, maybe_jit, strict_dtypes):
    _check(_outputs(make(), maybe_jit), _expected(name))


def test_factored_rms_keeps_a_full_moment_for_small_leaves(maybe_jit):
    """Below min_dim_size_to_factor the leaf gets RMSProp with Adafactor's decay schedule."""
    got = _outputs(funcopt.scale_by_factored_rms(min_dim_size_to_factor=5), maybe_jit)
    v, want = 0.0, []
    for t, x in enumerate(GRADS):
        beta = 1 - (t + 1) ** -0.8
        v = beta * v + (1 - beta) * (x * x + 1e-30)
        want.append(x / np.sqrt(v))
    _check(got, want)


def test_trust_ratio_is_one_for_zero_params():
    tx = funcopt.scale_by_trust_ratio()
    g = jnp.ones(3)
    out, _ = tx.update(g, tx.init(g), jnp.zeros(3))
    np.testing.assert_array_equal(out, g)


def test_rectify_switches_from_fallback_to_rectified_step(maybe_jit, x64):
    """ρ_t ≥ 5 first at t = 6 for β₂ = 0.999 (RAdam, Liu et al. 2020, Algorithm 2).

    In float64: ρ_t ≈ 5 is the difference of two numbers near 2000 (also in optax).
    """
    b2 = 0.999
    tx = funcopt.rectify(funcopt.scale(2.0), funcopt.scale(-1.0), b2=b2, threshold=5.0)
    update, state = maybe_jit(tx.update), tx.init(jnp.ones(2, jnp.float64))
    rho_inf = 2 / (1 - b2) - 1
    for t in range(1, 9):
        u, state = update(jnp.ones(2, jnp.float64), state)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= 5:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            np.testing.assert_allclose(u, 2 * r * np.ones(2), rtol=1e-12)
        else:
            np.testing.assert_array_equal(u, -np.ones(2))
    assert t >= 6


def test_orthogonalization_gives_near_unit_singular_values(maybe_jit):
    g = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float32)
    tx = funcopt.scale_by_orthogonalization()
    out, _ = maybe_jit(tx.update)(g, tx.init(g))
    s = np.linalg.svd(np.asarray(out), compute_uv=False)
    assert out.shape == g.shape and np.all((s > 0.6) & (s < 1.25)), s
    u, _, vt = np.linalg.svd(np.asarray(g), full_matrices=False)  # same singular vectors:
    d = u.T @ np.asarray(out) @ vt.T  # diagonal, each σ mapped to p(σ) ∈ (0.6, 1.25)
    np.testing.assert_allclose(d - np.diag(np.diag(d)), 0.0, atol=1e-4)
    assert np.all((np.diag(d) > 0.6) & (np.diag(d) < 1.25))


def test_scale_by_shape_width_factor():
    g = {"wide": jnp.ones((2, 8)), "tall": jnp.ones((8, 2))}
    out, _ = funcopt.scale_by_shape().update(g, funcopt.scale_by_shape().init(g))
    np.testing.assert_allclose(out["wide"], 2.0 * np.ones((2, 8)))
    np.testing.assert_allclose(out["tall"], np.ones((8, 2)))
    out, _ = funcopt.scale_by_shape(0.2).update(g, ())
    np.testing.assert_allclose(out["tall"], 0.2 * np.sqrt(8) * np.ones((8, 2)), rtol=1e-6)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: funcopt.nesterov_momentum(1.0), "decay"),
        (lambda: funcopt.lion_momentum(0.9, -0.1), "b2"),
        (lambda: funcopt.infinity_moment(0.9, -1.0), "eps"),
        (lambda: funcopt.divide(funcopt.square(), eps=-1.0), "eps"),
        (lambda: funcopt.belief_moment(0.9, 1.5), "b2"),
        (lambda: funcopt.yogi_moment(0.9, -1e-6), "initial_accumulator_value"),
        (lambda: funcopt.sum_of_squares(-0.1), "initial_accumulator_value"),
        (lambda: funcopt.scale_by_delta_rms(rho=1.0), "rho"),
        (lambda: funcopt.scale_by_layerwise_rms(eps_root=-1.0), "eps_root"),
        (lambda: funcopt.scale_by_factored_rms(decay_rate=0.0), "decay_rate"),
        (lambda: funcopt.scale_by_trust_ratio(trust_coefficient=-1.0), "trust_coefficient"),
        (lambda: funcopt.rectify(funcopt.identity(), b2=1.0), "b2"),
        (lambda: funcopt.scale_by_orthogonalization(ns_steps=0), "ns_steps"),
        (lambda: funcopt.scale_by_orthogonalization(preconditioning="aol"), "preconditioning"),
        (lambda: funcopt.schedule_free(funcopt.sgd(0.1), 0.1, b1=1.0), "b1"),
    ],
)
def test_invalid_hyperparameters_are_named(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_traced_hyperparameters_are_accepted():
    @jax.jit
    def step(decay):
        tx = funcopt.nesterov_momentum(decay)
        return tx.update(jnp.ones(2), tx.init(jnp.ones(2)))[0]

    np.testing.assert_allclose(step(0.5), 0.5 * 0.5 / 0.75 + 0.5 * 1 / 0.5 * np.ones(2), rtol=1e-6)


def test_trust_ratio_needs_params():
    tx = funcopt.scale_by_trust_ratio()
    with pytest.raises(ValueError, match="parameters"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


def test_factored_rms_decay_saturates_at_the_top_count():
    """Adafactor's decay reads count + 1: it must saturate at 2³¹ − 1, not wrap negative."""
    tx = funcopt.scale_by_factored_rms(min_dim_size_to_factor=3)
    g = jnp.asarray(GRADS[0], jnp.float32)
    state = tx.init(g)._replace(count=jnp.asarray(np.iinfo(np.int32).max, jnp.int32))
    out, state = tx.update(g, state)
    assert np.all(np.isfinite(np.asarray(out))) and int(state.count) == np.iinfo(np.int32).max


# ---- accumulators of squares and maxima stay in float32 for bf16 parameters ----------

SQUARE_STATES = [
    ("sum_of_squares", lambda: funcopt.sum_of_squares(0.1)),
    ("yogi_moment", lambda: funcopt.yogi_moment(0.999)),
    ("infinity_moment", lambda: funcopt.infinity_moment(0.999)),
    ("running_max", funcopt.running_max),
    ("belief_moment", lambda: funcopt.belief_moment(0.9, 0.999)),
    ("scale_by_delta_rms", lambda: funcopt.scale_by_delta_rms(0.9)),
    ("scale_by_factored_rms", funcopt.scale_by_factored_rms),
    ("scale_by_layerwise_rms", lambda: funcopt.scale_by_layerwise_rms(0.9)),
    ("adadelta", lambda: funcopt.adadelta(1.0)),
    ("amsgrad", lambda: funcopt.amsgrad(0.1)),
]


@pytest.mark.parametrize(("name", "make"), SQUARE_STATES, ids=[n for n, _ in SQUARE_STATES])
def test_square_accumulators_are_float32_for_bf16_params(name, make):
    params = {"w": jnp.ones((8, 8), jnp.bfloat16), "b": jnp.ones(8, jnp.bfloat16)}
    tx = make()
    state = tx.init(params)
    grads = jax.tree.map(lambda p: p * 0.5, params)
    updates, new = jax.jit(tx.update)(grads, state, params)
    assert {x.dtype for x in jax.tree.leaves(updates)} == {jnp.dtype(jnp.bfloat16)}
    old_dtypes = [x.dtype for x in jax.tree.leaves(state)]
    assert [x.dtype for x in jax.tree.leaves(new)] == old_dtypes  # stable across steps
    # Only a first moment may be bf16 (belief_moment and amsgrad keep one); the rest ≥ f32.
    first_moments = {"belief_moment": 1, "amsgrad": 1}.get(name, 0)
    floats = [x for x in jax.tree.leaves(new) if jnp.issubdtype(x.dtype, jnp.floating)]
    low = [x for x in floats if x.dtype == jnp.bfloat16]
    assert len(low) == first_moments * len(jax.tree.leaves(params))


def test_bf16_params_small_increments_and_decays_are_not_lost():
    # In bf16, 1 + 0.001 rounds to 1 and 0.999 · 1 rounds to 1: the accumulators would
    # never move. Kept in float32 they follow the equations.
    p = jnp.zeros(3, jnp.bfloat16)
    tx = funcopt.sum_of_squares(initial_accumulator_value=1.0)
    state = tx.init(p)
    small = jnp.full(3, 0.03125, jnp.bfloat16)  # g² = 2⁻¹⁰, exact in bf16
    for _ in range(10):
        _, state = tx.update(small, state)
    np.testing.assert_allclose(state.sum_of_squares, 1 + 10 * 2.0**-10, rtol=1e-6)

    tx = funcopt.infinity_moment(decay=0.999, eps=0.0)
    _, state = tx.update(jnp.ones(3, jnp.bfloat16), tx.init(p))
    for _ in range(10):
        _, state = tx.update(jnp.zeros(3, jnp.bfloat16), state)
    np.testing.assert_allclose(state.nu, 0.999**10, rtol=1e-5)

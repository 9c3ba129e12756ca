"""Each moment (funcopt.moments) against its equation, written out by hand in NumPy.

Four steps on fixed gradients, eagerly and under jit, with strict dtype promotion.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support import assert_bf16_statistics_stay_float32

import funcopt

RNG = np.random.default_rng(0)
GRADS = [RNG.normal(size=(4, 3)) for _ in range(4)]


def _outputs(tx, maybe_jit):
    update = maybe_jit(tx.update)
    state = tx.init(jnp.zeros((4, 3), jnp.float32))
    outs = []
    for g in GRADS:
        u, state = update(jnp.asarray(g, jnp.float32), state)
        outs.append(np.asarray(u, np.float64))
    return outs, state


def _ema(xs, decay, start=0.0):
    acc, out = start, []
    for x in xs:
        acc = decay * acc + (1 - decay) * x
        out.append(acc)
    return out


def _expected(name):
    g = GRADS
    sq = [x * x for x in g]
    if name == "momentum":
        return _ema(g, 0.8)
    if name == "trace":
        m, out = 0.0, []
        for x in g:
            m = 0.7 * m + x
            out.append(m)
        return out
    if name == "trace-nesterov":
        m, out = 0.0, []
        for x in g:
            m = 0.7 * m + x
            out.append(0.7 * m + x)
        return out
    if name == "second_moment":
        return _ema(sq, 0.9, 0.5)
    if name == "bias_correction":
        return [x / (1 - 0.9 ** (t + 1)) for t, x in enumerate(g)]
    if name == "nesterov":
        m = _ema(g, 0.8)
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
    raise KeyError(name)


CASES = [
    ("momentum", lambda: funcopt.scale_by_momentum(0.8)),
    ("trace", lambda: funcopt.trace(0.7)),
    ("trace-nesterov", lambda: funcopt.trace(0.7, nesterov=True)),
    ("second_moment", lambda: funcopt.second_moment(0.9, initial_scale=0.5)),
    ("bias_correction", lambda: funcopt.bias_correction(0.9)),
    ("nesterov", lambda: funcopt.nesterov_momentum(0.8)),
    ("lion", lambda: funcopt.lion_momentum(0.7, 0.95)),
    ("running_max", lambda: funcopt.running_max()),
    ("infinity", lambda: funcopt.infinity_norm(0.9, 0.01)),
    ("belief", lambda: funcopt.belief_moment(0.9, 0.99, 1e-4)),
    ("yogi", lambda: funcopt.yogi_moment(0.9, 0.5)),
    ("sum_of_squares", lambda: funcopt.sum_of_squares(0.2)),
]


@pytest.mark.parametrize(("name", "make"), CASES, ids=[c[0] for c in CASES])
def test_moment_follows_its_equation(name, make, maybe_jit, strict_dtypes):
    got, _ = _outputs(make(), maybe_jit)
    for t, (a, b) in enumerate(zip(got, _expected(name), strict=True)):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6, err_msg=f"step {t + 1}")


def test_momentum_then_bias_correction_is_a_weighted_mean():
    """m̂_t = Σ β^{t−k} g_k / Σ β^{t−k}: the chapter's derivation, checked numerically."""
    beta = 0.7
    tx = funcopt.chain(funcopt.scale_by_momentum(beta), funcopt.bias_correction(beta))
    outs, _ = _outputs(tx, lambda f: f)
    for t in range(1, 5):
        w = beta ** np.arange(t - 1, -1, -1)
        want = (w[:, None, None] * np.array(GRADS[:t])).sum(0) / w.sum()
        np.testing.assert_allclose(outs[t - 1], want, rtol=1e-5)


def test_bias_correction_counts_from_one():
    _, state = _outputs(funcopt.bias_correction(0.9), lambda f: f)
    assert int(state.count) == 4


def test_zero_decay_momentum_is_the_identity():
    outs, _ = _outputs(funcopt.scale_by_momentum(0.0), lambda f: f)
    np.testing.assert_allclose(outs, GRADS, rtol=1e-6)


def test_mu_dtype_stores_the_rounded_moment_and_uses_it():
    tx = funcopt.scale_by_momentum(0.9, mu_dtype=jnp.bfloat16)
    outs, state = _outputs(tx, lambda f: f)
    assert state.mu.dtype == jnp.bfloat16
    np.testing.assert_array_equal(outs[-1], np.asarray(state.mu, np.float32))


def test_second_moment_of_complex_gradients_is_real_and_uses_abs_squared():
    tx = funcopt.second_moment(0.5)
    g = jnp.array([1 + 1j, 2j], jnp.complex64)
    _, state = tx.update(g, tx.init(jnp.zeros(2, jnp.complex64)))
    assert state.nu.dtype == jnp.float32
    np.testing.assert_allclose(state.nu, [1.0, 2.0])  # ½ |g|²


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: funcopt.scale_by_momentum(1.0), "decay"),
        (lambda: funcopt.trace(-0.1), "decay"),
        (lambda: funcopt.nesterov_momentum(1.0), "decay"),
        (lambda: funcopt.lion_momentum(0.9, -0.1), "b2"),
        (lambda: funcopt.infinity_norm(0.9, -1.0), "eps"),
        (lambda: funcopt.belief_moment(0.9, 1.5), "b2"),
        (lambda: funcopt.yogi_moment(0.9, -1e-6), "initial_accumulator_value"),
        (lambda: funcopt.sum_of_squares(-0.1), "initial_accumulator_value"),
        (lambda: funcopt.second_moment(0.9, initial_scale=-1), "initial_scale"),
        (lambda: funcopt.bias_correction(True), "decay"),
        (lambda: funcopt.scale_by_momentum(0.9, mu_dtype="not a dtype"), "mu_dtype"),
    ],
)
def test_invalid_hyperparameters_are_named(make, argument):
    with pytest.raises(funcopt.HyperParameterError, match=argument):
        make()


# ---- accumulators of squares and maxima stay in float32 for bf16 parameters ----------

SQUARE_STATES = [
    ("second_moment", lambda: funcopt.second_moment(0.999), 0),
    ("sum_of_squares", lambda: funcopt.sum_of_squares(0.1), 0),
    ("yogi_moment", lambda: funcopt.yogi_moment(0.999), 0),
    ("infinity_norm", lambda: funcopt.infinity_norm(0.999), 0),
    ("running_max", funcopt.running_max, 0),
    ("belief_moment", lambda: funcopt.belief_moment(0.9, 0.999), 1),  # keeps a first moment
]


@pytest.mark.parametrize(
    ("name", "make", "first"), SQUARE_STATES, ids=[n for n, *_ in SQUARE_STATES]
)
def test_square_accumulators_are_float32_for_bf16_params(name, make, first):
    assert_bf16_statistics_stay_float32(make(), first)


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

    tx = funcopt.infinity_norm(decay=0.999, eps=0.0)
    _, state = tx.update(jnp.ones(3, jnp.bfloat16), tx.init(p))
    for _ in range(10):
        _, state = tx.update(jnp.zeros(3, jnp.bfloat16), state)
    np.testing.assert_allclose(state.nu, 0.999**10, rtol=1e-5)


def _final_second_moment(param_dtype, nu_dtype=None):
    """Adam's v after 300 steps of shrinking gradients (bf16 values, same for every run)."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((300, 16)) * 0.99 ** np.arange(300)[:, None]
    tx = funcopt.second_moment(0.999, nu_dtype=nu_dtype)
    state = tx.init(jnp.zeros(16, param_dtype))
    update = jax.jit(tx.update)
    for g in jnp.asarray(grads, jnp.bfloat16):
        _, state = update(g.astype(param_dtype), state)
    return np.asarray(state.nu, np.float32), state.nu.dtype


def test_bfloat16_params_keep_a_float32_second_moment():
    """Gradients shrink, so a v that cannot decay ends ~26% too large; ours tracks float32."""
    v16, dtype = _final_second_moment(jnp.bfloat16)
    v32, _ = _final_second_moment(jnp.float32)
    assert dtype == jnp.float32
    np.testing.assert_allclose(v16, v32, rtol=1e-5)


def test_a_bfloat16_second_moment_cannot_decay():
    """Why that default: stored in bf16, 0.999 v rounds back to v (1 − β₂ < half an ulp)."""
    v_bf16, _ = _final_second_moment(jnp.bfloat16, jnp.bfloat16)
    v32, _ = _final_second_moment(jnp.float32)
    assert np.min(v_bf16 / v32) > 1.05

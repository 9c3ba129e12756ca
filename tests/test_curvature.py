"""SAM and Sophia: against optax.contrib, the equations by hand (float64), errors.

The registry's rows (``tests/registry.py``) compare SAM (SGD outer, normalised SGD ascent)
and Sophia (with g² for the Hessian's diagonal) with optax over 1000 steps in float32 and
float64; here the other configurations, opaque mode and Hutchinson's estimator.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from oracle import assert_rel_close, random_params, wavy_grads
from support import assert_matches_optax, assert_value_reaches_times_value, times_value

import funcopt

# ---- SAM ---------------------------------------------------------------------------------


def _sam_pair(sync_period, reset_state, **kw):
    ours = funcopt.sam(
        funcopt.sgd(0.01, 0.9),
        funcopt.chain(funcopt.normalize(), funcopt.adam(0.05)),
        sync_period,
        reset_state,
        **kw,
    )
    theirs = optax.contrib.sam(
        optax.sgd(0.01, 0.9),
        optax.chain(optax.contrib.normalize(), optax.adam(0.05)),
        sync_period,
        reset_state,
        **kw,
    )
    return ours, theirs


def test_sam_with_two_ascent_steps_and_no_reset_matches_optax():
    ours, theirs = _sam_pair(3, False)
    assert_matches_optax(ours, theirs, random_params(0))


def _run_opaque(tx, params, steps, apply_updates):
    @jax.jit
    def go(params):
        def body(carry, step):
            p, s = carry
            grad_fn = lambda q, i: wavy_grads(q, 3 * step + i)
            u, s = tx.update(wavy_grads(p, 3 * step), s, p, grad_fn=grad_fn)
            return (apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))[0]

    return go(params)


def test_sam_opaque_mode_matches_optax():
    ours, theirs = _sam_pair(3, True, opaque_mode=True)
    params = random_params(1)
    got, state = _run_opaque(ours, params, 1000, funcopt.apply_updates)
    want, _ = _run_opaque(theirs, params, 1000, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)
    assert state.cache is None and int(state.steps_since_sync) == 0


def test_sam_written_out(maybe_jit, x64):
    """θ̃ = θ + ρ g/‖g‖ (returned as θ̃ − θ), then θ − θ̃ − η ∇L(θ̃), for two cycles."""
    rho, eta = 0.5, 0.1
    grad = lambda p: 2 * p * jnp.array([1.0, 3.0])  # L = p₁² + 3 p₂²
    tx = funcopt.sam(funcopt.sgd(eta), funcopt.chain(funcopt.normalize(), funcopt.sgd(rho)))
    update = maybe_jit(tx.update)
    p = jnp.array([3.0, -4.0], jnp.float64)
    state = tx.init(p)
    theta = np.array([3.0, -4.0])
    for _ in range(2):
        g = 2 * theta * [1.0, 3.0]
        adversarial = theta + rho * g / np.linalg.norm(g)
        u, state = update(grad(p), state, p)
        np.testing.assert_allclose(u, adversarial - theta, rtol=1e-14)
        p = funcopt.apply_updates(p, u)
        u, state = update(grad(p), state, p)
        theta = theta - eta * 2 * adversarial * [1.0, 3.0]
        p = funcopt.apply_updates(p, u)
        assert p.dtype == jnp.float64
        np.testing.assert_allclose(p, theta, rtol=1e-14)
    assert int(state.steps_since_sync) == 0


def test_sam_with_sync_period_one_is_the_outer_optimizer():
    """No adversarial step: every call is the outer step (optax's undoes every other)."""
    params = random_params(2)
    sam = funcopt.sam(funcopt.adam(0.01), funcopt.sgd(0.1), sync_period=1)
    from oracle import run

    got, _ = run(sam, params, 50, funcopt.apply_updates, wavy_grads)
    want, _ = run(funcopt.adam(0.01), params, 50, funcopt.apply_updates, wavy_grads)
    assert_rel_close(got, want, 1e-6)


def test_sam_passes_extra_args_to_the_optimizers(maybe_jit):
    assert_value_reaches_times_value(funcopt.sam(times_value(), funcopt.identity(), 1), maybe_jit)


def test_sam_needs_params_and_grad_fn_in_opaque_mode():
    tx = funcopt.sam(funcopt.sgd(0.1), funcopt.sgd(0.1))
    p = jnp.ones(2)
    with pytest.raises(ValueError, match="params"):
        tx.update(p, tx.init(p))
    opaque = funcopt.sam(funcopt.sgd(0.1), funcopt.sgd(0.1), opaque_mode=True)
    with pytest.raises(ValueError, match="grad_fn"):
        opaque.update(p, opaque.init(p), p)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(sync_period=0), "sync_period"),
        (dict(sync_period=1.5), "sync_period"),
        (dict(reset_state="yes"), "reset_state"),
        (dict(opaque_mode=1), "opaque_mode"),
    ],
)
def test_sam_bad_hyperparameters(kw, name):
    with pytest.raises(funcopt.HyperParameterError, match=name):
        funcopt.sam(funcopt.sgd(0.1), funcopt.sgd(0.1), **kw)


def test_sam_refuses_what_is_not_a_transform():
    with pytest.raises(TypeError, match="adv_optimizer"):
        funcopt.sam(funcopt.sgd(0.1), 0.1)


def test_normalize_is_optaxs():
    g = {"a": jnp.array([3.0, 1.0]), "b": jnp.array(-4.0)}
    got = funcopt.normalize().update(g, funcopt.normalize().init(g))[0]
    want = optax.contrib.normalize().update(g, optax.contrib.normalize().init(g))[0]
    assert_rel_close(got, want, 1e-7)


# ---- Sophia ------------------------------------------------------------------------------


def _loss(p, t):
    """A loss whose Hessian is not diagonal (Hutchinson's estimate is then random)."""
    total = 0.0
    for i, x in enumerate(jax.tree.leaves(p)):
        phase = jnp.arange(x.size, dtype=x.dtype).reshape(x.shape) * 0.618
        wave = jnp.sin(t * (0.37 + 0.11 * i) + phase)
        total = total + 0.5 * (0.5 + i) * jnp.sum((x - 0.3) ** 2) + jnp.sum(wave * x)
        total = total + 0.05 * jnp.sum(x) ** 2 + 0.01 * jnp.sum(x**4)
    return total


def _run_with_loss(tx, params, steps, apply_updates):
    @jax.jit
    def go(params):
        def body(carry, step):
            p, s = carry
            f = lambda q: _loss(q, step.astype(jnp.float32))
            u, s = tx.update(jax.grad(f)(p), s, p, obj_fn=f)
            return (apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))[0]

    return go(params)


@pytest.mark.parametrize("kw", [{}, dict(gamma=1.0, update_interval=3, weight_decay=0.01)])
def test_sophia_h_matches_optax(kw):
    """The default estimator (Hutchinson's, needing obj_fn=): the same draws as optax."""
    params = random_params(3)
    got, _ = _run_with_loss(funcopt.sophia(0.01, **kw), params, 300, funcopt.apply_updates)
    want, _ = _run_with_loss(optax.contrib.sophia(0.01, **kw), params, 300, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)


def test_sophia_written_out(maybe_jit, x64):
    """m̂ / max(γ h_{t−1}, ε), clipped at ρ, with h refreshed at t = 1, 3, 5 by ĥ = 2 g."""
    b1, b2, gamma, eps, rho, eta = 0.9, 0.5, 0.5, 0.1, 1.5, 0.1
    tx = funcopt.sophia(
        eta, b1, b2, eps, weight_decay=0.0, gamma=gamma, clip_threshold=rho,
        update_interval=2, hessian_diagonal_fn=funcopt.scale(2.0),
    )  # fmt: skip
    update = maybe_jit(tx.update)
    grads = np.random.default_rng(0).normal(size=(6, 3))
    p = jnp.zeros(3, jnp.float64)
    state = tx.init(p)
    m, h = np.zeros(3), np.zeros(3)
    clipped = 0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        step = np.clip(m / (1 - b1**t) / np.maximum(gamma * h, eps), -rho, rho)
        clipped += int(np.sum(np.abs(step) == rho))
        if t % 2 == 1:
            h = b2 * h + (1 - b2) * 2 * g
        u, state = update(jnp.asarray(g), state, p)
        assert u.dtype == jnp.float64
        np.testing.assert_allclose(u, -eta * step, rtol=1e-13, atol=1e-15)
    assert 0 < clipped < grads.size  # both the clip and the ratio were exercised


def test_state_fields_are_found_by_optax_tree_get():
    """optax.tree.get finds optax's field names in funcopt's states, with optax's values."""
    p = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    same = lambda lib: lib.GradientTransformation(lambda p: (), lambda g, s, p=None: (g, s))
    pairs = [
        (funcopt.sophia(0.1, hessian_diagonal_fn=same(funcopt)),
         optax.contrib.sophia(0.1, hessian_diagonal_fn=same(optax)), optax.contrib.SophiaState),
        (funcopt.sam(funcopt.sgd(0.1), funcopt.sgd(0.1)),
         optax.contrib.sam(optax.sgd(0.1), optax.sgd(0.1)), optax.contrib.SAMState),
    ]  # fmt: skip
    for ours, theirs, state_type in pairs:
        s, r = ours.init(p), theirs.init(p)
        for _ in range(2):
            (_, s), (_, r) = ours.update(p, s, p), theirs.update(p, r, p)
        for field in state_type._fields:
            if field in ("opt_state", "adv_state", "hessian_fn_state"):  # the inner states
                continue
            got, want = optax.tree.get(s, field), optax.tree.get(r, field)
            assert_rel_close(got, want, 1e-7)


def test_sophia_reports_its_win_rate(capfd):
    tx = funcopt.sophia(
        0.1, hessian_diagonal_fn=funcopt.identity(), verbose=True, print_win_rate_every_n_steps=2
    )
    p = jnp.ones(4)
    state = tx.init(p)
    for _ in range(2):
        _, state = tx.update(p, state, p)
    jax.effects_barrier()
    assert capfd.readouterr().out.count("Sophia optimizer win rate") == 1


def test_sophia_needs_obj_fn_and_params():
    tx = funcopt.sophia(0.1)
    p = jnp.ones(2)
    with pytest.raises(ValueError, match="obj_fn"):
        tx.update(p, tx.init(p), p)
    with pytest.raises(ValueError, match="parameters"):
        tx.update(p, tx.init(p), obj_fn=jnp.sum)


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(b1=1.0), "b1"),
        (dict(b2=-0.1), "b2"),
        (dict(eps=-1.0), "eps"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(clip_threshold=-1.0), "clip_threshold"),
        (dict(update_interval=0), "update_interval"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(print_win_rate_every_n_steps=-1), "print_win_rate_every_n_steps"),
        (dict(verbose="no"), "verbose"),
        (dict(mu_dtype=jnp.int32), "mu_dtype"),
    ],
)
def test_sophia_bad_hyperparameters(kw, name):
    with pytest.raises(funcopt.HyperParameterError, match=name):
        funcopt.sophia(0.1, **kw)
    if name not in ("weight_decay",):
        with pytest.raises(funcopt.HyperParameterError, match=name):
            funcopt.scale_by_sophia(**kw)


def test_hutchinson_draws_are_optaxs_and_unbiased():
    """The same signs as optax for the same key, and the mean of many draws is diag H."""
    a = jnp.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 4.0]])
    f = lambda p: 0.5 * p["x"] @ a @ p["x"] + jnp.sum(p["y"] ** 3)
    p = {"x": jnp.ones(3), "y": jnp.array([1.0, -2.0])}
    ours = funcopt.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(5))
    theirs = optax.contrib.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(5))
    ours_update = jax.jit(lambda s: ours.update(p, s, p, obj_fn=f))
    theirs_update = jax.jit(lambda r: theirs.update(p, r, p, obj_fn=f))
    s, r = ours.init(p), theirs.init(p)
    total = jax.tree.map(jnp.zeros_like, p)
    for _ in range(400):
        (h, s), (want, r) = ours_update(s), theirs_update(r)
        assert_rel_close(h, want, 1e-7)
        total = jax.tree.map(jnp.add, total, h)
    np.testing.assert_allclose(total["x"] / 400, jnp.diag(a), atol=0.15)
    np.testing.assert_allclose(total["y"] / 400, 6 * p["y"])  # diagonal: exact


def test_hessian_diagonal_moment_lags_one_step(maybe_jit):
    tx = funcopt.hessian_diagonal_moment(0.5, 3, hessian_diagonal_fn=funcopt.identity())
    update = maybe_jit(tx.update)
    p = jnp.zeros(1)
    state = tx.init(p)
    outs = []
    for g in [4.0, 8.0, 8.0, 2.0, 0.0]:
        u, state = update(jnp.array([g]), state, p)
        outs.append(float(u[0]))
    assert outs == [0.0, 2.0, 2.0, 2.0, 2.0]  # h refreshed at t = 1 and 4 (½·2 + ½·2 = 2)
    assert float(state.inner_state.nu[0]) == 2.0


def test_at_least():
    tx = funcopt.at_least(-1.0)
    u, _ = tx.update(jnp.array([-3.0, 2.0]), tx.init(None))
    np.testing.assert_array_equal(u, [-1.0, 2.0])
    with pytest.raises(funcopt.HyperParameterError, match="minimum"):
        funcopt.at_least(float("inf"))


def test_hutchinson_state_keeps_the_key_in_optaxs_form():
    """A raw ``uint32[2]`` key by default (optax's ``PRNGKey(0)``), so that the state
    converts to NumPy like any other; a typed key given stays typed."""
    p = jnp.ones(3)
    for seed in (None, 4, jax.random.PRNGKey(4)):
        got = funcopt.hutchinson_estimator_diag_hessian(seed).init(p).key
        want = (
            optax.contrib.hutchinson_estimator_diag_hessian(
                jax.random.PRNGKey(0 if seed is None else 4)
            )
            .init(p)
            .key
        )
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.dtype == want.dtype == jnp.uint32
    typed = funcopt.hutchinson_estimator_diag_hessian(jax.random.key(4)).init(p).key
    assert jax.dtypes.issubdtype(typed.dtype, jax.dtypes.prng_key)

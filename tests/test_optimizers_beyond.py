"""The optimizers beyond the chapter against independent oracles.

1. optax (or optax.contrib): 1000 steps on random nested pytrees, float32 ≤ 1e-5, driven
   by one table ``(name, funcopt factory, optax factory, kwargs)``.
2. torch.optim (CPU, float64, 200 steps) where torch has the optimizer.
3. The papers' equations written out by hand where funcopt deliberately differs.
4. No needless recompiles: equal arguments give equal transforms, which jit accepts as
   a static argument without tracing again.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from optax import contrib
from oracle import assert_rel_close, quadratic_grads, random_params, run

import funcopt


def _matrices(params):
    """Weight-decay / trust-ratio mask: only leaves of rank ≥ 2 (module level, so equal)."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


# (id, funcopt factory, optax factory, kwargs): the same kwargs go to both.
TABLE = [
    ("sgd-nesterov", funcopt.sgd, optax.sgd, dict(learning_rate=0.02, momentum=0.9, nesterov=True)),
    ("nadam", funcopt.nadam, optax.nadam, dict(learning_rate=0.01)),
    ("nadam-eps_root", funcopt.nadam, optax.nadam, dict(learning_rate=0.01, b1=0.8, eps_root=1e-8)),
    ("nadamw", funcopt.nadamw, optax.nadamw, dict(learning_rate=0.01, weight_decay=0.1)),
    ("amsgrad", funcopt.amsgrad, optax.amsgrad, dict(learning_rate=0.01)),
    (
        "amsgrad-uncorrected",
        funcopt.amsgrad,
        optax.amsgrad,
        dict(learning_rate=0.01, bias_correction_mu=False, bias_correction_nu=False, eps_root=1e-8),
    ),
    ("adamax", funcopt.adamax, optax.adamax, dict(learning_rate=0.01)),
    (
        "adamaxw",
        funcopt.adamaxw,
        optax.adamaxw,
        dict(learning_rate=0.01, weight_decay=0.1, mask=_matrices),
    ),
    ("adagrad", funcopt.adagrad, optax.adagrad, dict(learning_rate=0.1)),
    ("adadelta", funcopt.adadelta, optax.adadelta, dict(learning_rate=1.0, weight_decay=0.01)),
    ("adabelief", funcopt.adabelief, optax.adabelief, dict(learning_rate=0.01)),
    (
        "adabelief-nesterov",
        funcopt.adabelief,
        optax.adabelief,
        dict(learning_rate=0.01, nesterov=True),
    ),
    ("radam", funcopt.radam, optax.radam, dict(learning_rate=0.01)),
    (
        "radam-nesterov",
        funcopt.radam,
        optax.radam,
        dict(learning_rate=0.01, nesterov=True, threshold=4.0),
    ),
    ("yogi", funcopt.yogi, optax.yogi, dict(learning_rate=0.01)),
    ("lion", funcopt.lion, optax.lion, dict(learning_rate=0.001, weight_decay=0.1)),
    ("sign_sgd", funcopt.sign_sgd, optax.sign_sgd, dict(learning_rate=0.003)),
    ("signum", funcopt.signum, optax.signum, dict(learning_rate=0.003, beta=0.8)),
    ("lamb", funcopt.lamb, optax.lamb, dict(learning_rate=0.01, weight_decay=0.1, mask=_matrices)),
    ("lars", funcopt.lars, optax.lars, dict(learning_rate=0.5, weight_decay=0.01)),
    (
        "lars-masked-nesterov",
        funcopt.lars,
        optax.lars,
        dict(
            learning_rate=0.05,
            weight_decay=0.01,
            weight_decay_mask=_matrices,
            trust_ratio_mask=_matrices,
            nesterov=True,
        ),
    ),
    ("noisy_sgd", funcopt.noisy_sgd, optax.noisy_sgd, dict(learning_rate=0.01, key=3)),
    ("novograd", funcopt.novograd, optax.novograd, dict(learning_rate=0.01, weight_decay=0.01)),
    (
        "adafactor",
        funcopt.adafactor,
        optax.adafactor,
        dict(learning_rate=0.01, min_dim_size_to_factor=2),
    ),
    (
        "adafactor-momentum-decay",
        funcopt.adafactor,
        optax.adafactor,
        dict(
            learning_rate=None,
            min_dim_size_to_factor=3,
            momentum=0.9,
            weight_decay_rate=0.01,
            clipping_threshold=None,
            decay_rate=0.7,
        ),
    ),
    (
        "adafactor-unfactored",
        funcopt.adafactor,
        optax.adafactor,
        dict(learning_rate=0.01, factored=False),
    ),
]
IDS = [row[0] for row in TABLE]


@pytest.mark.parametrize(("name", "ours", "theirs", "kwargs"), TABLE, ids=IDS)
def test_matches_optax_float32(name, ours, theirs, kwargs):
    params = random_params(0)
    got, _ = run(ours(**kwargs), params, 1000, funcopt.apply_updates)
    want, _ = run(theirs(**kwargs), params, 1000, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)


def test_schedule_free_eval_params_match_optax():
    kwargs = dict(learning_rate=0.01, warmup_steps=50)
    params = random_params(0)
    got, got_state = run(
        funcopt.schedule_free_adamw(**kwargs), params, 300, funcopt.apply_updates, quadratic_grads
    )
    want, want_state = run(
        contrib.schedule_free_adamw(**kwargs), params, 300, optax.apply_updates, quadratic_grads
    )
    assert_rel_close(
        funcopt.schedule_free_eval_params(got_state, got),
        contrib.schedule_free_eval_params(want_state, want),
        1e-5,
    )
    # also found inside a chain's state
    tx = funcopt.chain(funcopt.scale(1.0), funcopt.schedule_free_adamw(**kwargs))
    state = tx.init(params)
    assert_rel_close(funcopt.schedule_free_eval_params(state, params), params, 1e-6)  # x₀ = y₀


# Muon orthogonalises a noise-dominated momentum near the optimum: Newton–Schulz blows its
# small singular values up to ~1, so a one-ulp difference between two equal programs (XLA
# fuses them differently) grows ~10x every ~50 steps. float32 is therefore compared over
# 200 steps, and the 1000-step comparison runs in float64, where the drift stays tiny.
MUON = [
    ("default", dict(learning_rate=0.01), 1000),
    (
        "adaptive-dion-decay-rms",
        dict(
            learning_rate=0.01,
            adaptive=True,
            weight_decay=0.1,
            ns_coeffs="dion",
            consistent_rms=0.2,
        ),
        1000,
    ),
    (
        "everything",
        dict(
            learning_rate=0.01,
            nesterov=False,
            adaptive=True,
            weight_decay=0.1,
            adam_weight_decay=0.1,
            ns_coeffs="dion",
            consistent_rms=0.2,
            adam_learning_rate=0.003,
            preconditioning="spectral",
        ),
        300,
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "steps"), MUON, ids=[m[0] for m in MUON])
def test_muon_matches_optax_contrib(name, kwargs, steps):
    params = random_params(0)
    got, _ = run(funcopt.muon(**kwargs), params, 200, funcopt.apply_updates)
    want, _ = run(contrib.muon(**kwargs), params, 200, optax.apply_updates)
    assert_rel_close(got, want, 1e-5)
    with jax.enable_x64(True):
        params = random_params(0, jnp.float64)
        got, _ = run(funcopt.muon(**kwargs), params, steps, funcopt.apply_updates)
        want, _ = run(contrib.muon(**kwargs), params, steps, optax.apply_updates)
        assert_rel_close(got, want, 1e-8)


# ---- torch.optim, float64 ----------------------------------------------------------------


# The oracle's gradients evaluate their oscillation in float32: an eager call and the same
# code fused into a scan may differ in the last bit. So the float64 comparisons with torch
# and with hand-written equations drive funcopt step by step too, every side taking its
# gradients from this one compiled function.
_quadratic_grads_jit = jax.jit(quadratic_grads)


def _drive(tx, params, steps):
    """``steps`` jitted funcopt updates, gradients from :data:`_quadratic_grads_jit`."""

    @jax.jit
    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return funcopt.apply_updates(p, u), s

    state = tx.init(params)
    for k in range(steps):
        params, state = step(params, state, _quadratic_grads_jit(params, jnp.asarray(k, jnp.int32)))
    return params


def _torch_run(make_opt, params, steps):
    """``steps`` torch.optim steps on the gradients of ``oracle.quadratic_grads``."""
    leaves, treedef = jax.tree.flatten(params)
    tensors = [torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=True) for x in leaves]
    opt = make_opt(tensors)
    for step in range(steps):
        current = treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tensors])
        grads = jax.tree.leaves(_quadratic_grads_jit(current, jnp.asarray(step, jnp.int32)))
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.from_numpy(np.array(g, dtype=np.float64))
        opt.step()
    return treedef.unflatten([jnp.asarray(t.detach().numpy()) for t in tensors])


def _torch_amsgrad(lr):
    """torch's AMSGrad: the running max is over v, the bias correction after it."""
    return funcopt.chain(
        funcopt.divide(
            funcopt.chain(
                funcopt.square(),
                funcopt.scale_by_momentum(0.999),
                funcopt.running_max(),
                funcopt.bias_correction(0.999),
            ),
            funcopt.chain(funcopt.scale_by_momentum(0.9), funcopt.bias_correction(0.9)),
            eps=1e-8,
        ),
        funcopt.scale_by_learning_rate(lr),
    )


# (id, funcopt transform, torch optimizer factory). Where torch puts ε elsewhere, ε = 0.
TORCH_TABLE = [
    (
        "sgd-nesterov",
        lambda: funcopt.sgd(0.02, 0.9, nesterov=True),
        lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9, nesterov=True),
    ),
    ("adamax", lambda: funcopt.adamax(0.01), lambda ps: torch.optim.Adamax(ps, lr=0.01)),
    (
        # torch: g / (sqrt(s) + ε); optax/funcopt: g / sqrt(s + ε).
        "adagrad-eps0",
        lambda: funcopt.adagrad(0.1, 0.1, eps=0.0),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.1, eps=0.0),
    ),
    (
        "adadelta",
        lambda: funcopt.adadelta(None, weight_decay=0.01),
        lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.01),
    ),
    (
        # torch adds ε to sqrt(v) before dividing by sqrt(1 − β₂ᵗ).
        "radam-eps0",
        lambda: funcopt.radam(0.01, eps=0.0),
        lambda ps: torch.optim.RAdam(ps, lr=0.01, eps=0.0),
    ),
    (
        "amsgrad-torch-order",
        lambda: _torch_amsgrad(0.01),
        lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True),
    ),
    # No NAdam row: torch.optim.NAdam weights its look-ahead by β₁(1 − ½·0.96^(tψ)),
    # ψ = momentum_decay, and no ψ gives Dozat's (and optax's) constant β₁.
]


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    TORCH_TABLE,
    ids=[r[0] for r in TORCH_TABLE],
)
def test_matches_torch_float64(name, ours, theirs, x64):
    params = random_params(0, jnp.float64)
    got = _drive(ours(), params, 200)
    want = _torch_run(theirs, params, 200)
    assert_rel_close(got, want, 1e-10)


# ---- the papers' equations, where funcopt deliberately differs from optax ---------------


def test_yogi_matches_paper_with_zero_initial_momentum(x64):
    """Zaheer et al. (2018), Algorithm 2 with m₀ = 0, v₀ = 10⁻⁶, both bias-corrected as optax."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-3
    params = random_params(0, jnp.float64)
    got = _drive(funcopt.yogi(lr, b1, b2, eps), params, 50)
    theta = [np.asarray(x) for x in jax.tree.leaves(params)]
    treedef = jax.tree.structure(params)
    m = [np.zeros_like(x) for x in theta]
    v = [np.full_like(x, 1e-6) for x in theta]
    for t in range(1, 51):
        current = treedef.unflatten([jnp.asarray(x) for x in theta])
        grads = jax.tree.leaves(_quadratic_grads_jit(current, jnp.asarray(t - 1, jnp.int32)))
        for i, g in enumerate(np.asarray(x) for x in grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = v[i] - (1 - b2) * np.sign(v[i] - g * g) * g * g
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            theta[i] = theta[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    assert_rel_close(got, treedef.unflatten(theta), 1e-12)


def test_adadelta_without_learning_rate_is_zeilers_method(x64):
    """Zeiler (2012), Algorithm 1: no learning rate (η = 1); optax's None would fail."""
    rho, eps = 0.95, 1e-6
    params = random_params(1, jnp.float64)
    got = _drive(funcopt.adadelta(rho=rho, eps=eps), params, 50)
    theta = [np.asarray(x) for x in jax.tree.leaves(params)]
    treedef = jax.tree.structure(params)
    eg = [np.zeros_like(x) for x in theta]
    ex = [np.zeros_like(x) for x in theta]
    for t in range(50):
        current = treedef.unflatten([jnp.asarray(x) for x in theta])
        grads = jax.tree.leaves(_quadratic_grads_jit(current, jnp.asarray(t, jnp.int32)))
        for i, g in enumerate(np.asarray(x) for x in grads):
            eg[i] = rho * eg[i] + (1 - rho) * g * g
            dx = -np.sqrt(ex[i] + eps) / np.sqrt(eg[i] + eps) * g
            ex[i] = rho * ex[i] + (1 - rho) * dx * dx
            theta[i] = theta[i] + dx
    assert_rel_close(got, treedef.unflatten(theta), 1e-12)


# ---- no needless recompiles ---------------------------------------------------------------

CORE = [
    ("gd", funcopt.gd, dict(learning_rate=0.1)),
    ("gdm", funcopt.gdm, dict(learning_rate=0.1, momentum=0.9)),
    ("sgd", funcopt.sgd, dict(learning_rate=0.1, momentum=0.9)),
    ("rmsprop", funcopt.rmsprop, dict(learning_rate=0.1, centered=True, momentum=0.5)),
    ("adam", funcopt.adam, dict(learning_rate=0.1)),
    ("adamw", funcopt.adamw, dict(learning_rate=0.1, mask=_matrices)),
]
FACTORIES = (
    [(name, ours, kwargs) for name, ours, _, kwargs in TABLE]
    + [("muon-" + name, funcopt.muon, kwargs) for name, kwargs, _ in MUON]
    + CORE
)


def _nested(name, ours, kwargs):
    """Chained and wrapped: a chain holding the optimizer inside a masked transform."""
    return funcopt.chain(funcopt.scale(0.5), funcopt.masked(ours(**kwargs), _matrices))


@pytest.mark.parametrize(("name", "ours", "kwargs"), FACTORIES, ids=[f[0] for f in FACTORIES])
def test_same_arguments_do_not_recompile(name, ours, kwargs):
    traces = 0

    @functools.partial(jax.jit, static_argnums=0)
    def step(tx, params):
        nonlocal traces
        traces += 1
        return tx.update(params, tx.init(params), params)

    params = random_params(0, shapes={"w": (3, 2), "b": (2,)})
    first, second = ours(**kwargs), ours(**kwargs)
    assert first == second and hash(first) == hash(second)
    step(first, params)
    step(second, params)  # runs the compiled step: no second trace
    assert traces == 1, f"{name}: equal transforms traced {traces} times"
    # Chained and nested (lowered only: tracing is what a recompile would show).
    nested = [_nested(name, ours, kwargs) for _ in range(2)]
    assert nested[0] == nested[1] and hash(nested[0]) == hash(nested[1])
    step.lower(nested[0], params)
    step.lower(nested[1], params)
    assert traces == 2
    # A different hyper-parameter is a different transform, traced again.
    step.lower(ours(**dict(kwargs, learning_rate=0.123)), params)
    assert traces == 3


def test_lars_none_masks_mean_every_leaf():
    """``None`` masks mean "all leaves", as for every other optimizer's ``mask``."""
    params = random_params(0)
    got, _ = run(
        funcopt.lars(0.1, 1e-4, None, trust_ratio_mask=None), params, 20, funcopt.apply_updates
    )
    want, _ = run(
        funcopt.lars(0.1, 1e-4, True, trust_ratio_mask=True), params, 20, funcopt.apply_updates
    )
    assert_rel_close(got, want, 0.0)


def test_muon_accepts_a_full_tree_weight_decay_mask():
    """A pytree of bools shaped like the params (as for adamw) selects the decaying
    matrices; it equals the function form, and masking really changes the result."""
    params = random_params(0)
    tree_mask = jax.tree.map(lambda x: x.shape != (6, 1), params)  # every leaf but 'col'
    kwargs = dict(learning_rate=0.01, weight_decay=0.5)
    got, _ = run(
        funcopt.muon(**kwargs, weight_decay_mask=tree_mask), params, 50, funcopt.apply_updates
    )
    by_function = funcopt.muon(
        **kwargs, weight_decay_mask=lambda p: jax.tree.map(lambda x: x.shape != (6, 1), p)
    )
    want, _ = run(by_function, params, 50, funcopt.apply_updates)
    assert_rel_close(got, want, 0.0)
    unmasked, _ = run(funcopt.muon(**kwargs), params, 50, funcopt.apply_updates)
    assert not np.allclose(got["col"], unmasked["col"])
    np.testing.assert_array_equal(got["dense"]["w"], unmasked["dense"]["w"])


# ---- low-memory first moments: every optimizer that keeps one takes its dtype ----------

BF16 = jnp.bfloat16
# (id, factory of (dtype) -> optimizer, how many bf16 state leaves per parameter leaf):
# the first moment m, kept twice by AdaBelief and RAdam (the price of composing).
FIRST_MOMENT = [
    ("gdm", lambda d: funcopt.gdm(0.1, 0.9, mu_dtype=d), 1),
    ("sgd", lambda d: funcopt.sgd(0.1, 0.9, accumulator_dtype=d), 1),
    ("rmsprop-momentum", lambda d: funcopt.rmsprop(0.01, momentum=0.9, mu_dtype=d), 1),
    ("adam", lambda d: funcopt.adam(0.01, mu_dtype=d), 1),
    ("adamw", lambda d: funcopt.adamw(0.01, mu_dtype=d), 1),
    ("nadam", lambda d: funcopt.nadam(0.01, mu_dtype=d), 1),
    ("nadamw", lambda d: funcopt.nadamw(0.01, mu_dtype=d), 1),
    ("amsgrad", lambda d: funcopt.amsgrad(0.01, mu_dtype=d), 1),
    ("adamax", lambda d: funcopt.adamax(0.01, mu_dtype=d), 1),
    ("adamaxw", lambda d: funcopt.adamaxw(0.01, mu_dtype=d), 1),
    ("adabelief", lambda d: funcopt.adabelief(0.01, mu_dtype=d), 2),
    ("radam", lambda d: funcopt.radam(0.01, mu_dtype=d), 2),
    ("yogi", lambda d: funcopt.yogi(0.01, mu_dtype=d), 1),
    ("lion", lambda d: funcopt.lion(0.001, mu_dtype=d), 1),
    ("lamb", lambda d: funcopt.lamb(0.01, mu_dtype=d), 1),
    ("lars", lambda d: funcopt.lars(0.1, mu_dtype=d), 1),
    ("novograd", lambda d: funcopt.novograd(0.01, mu_dtype=d), 1),
    ("signum", lambda d: funcopt.signum(0.01, accumulator_dtype=d), 1),
    ("adafactor", lambda d: funcopt.adafactor(0.01, momentum=0.9, dtype_momentum=d), 1),
    ("muon", lambda d: funcopt.muon(0.01, mu_dtype=d), 1),
]


@pytest.mark.parametrize(
    ("make", "per_leaf"), [r[1:] for r in FIRST_MOMENT], ids=[r[0] for r in FIRST_MOMENT]
)
def test_first_moment_dtype_is_kept_and_the_run_stays_close(make, per_leaf):
    params = {
        "a": jnp.linspace(-1.0, 1.0, 24).reshape(4, 6),
        "b": jnp.linspace(0.5, 2.0, 6).reshape(2, 3),
    }
    low, full = make(BF16), make(None)
    state = low.init(params)
    n_leaves = len(jax.tree.leaves(params))

    def bf16_leaves(tree):
        return [x for x in jax.tree.leaves(tree) if x.dtype == BF16]

    assert len(bf16_leaves(state)) == per_leaf * n_leaves
    assert not bf16_leaves(full.init(params))
    p_low, s_low = run(low, params, 10, funcopt.apply_updates)
    p_full, _ = run(full, params, 10, funcopt.apply_updates)
    assert len(bf16_leaves(s_low)) == per_leaf * n_leaves  # still bf16 after the updates
    # bf16 keeps 8 bits of mantissa: the trajectories agree to about 1% of the travel.
    for a, b, p0 in zip(
        jax.tree.leaves(p_low), jax.tree.leaves(p_full), jax.tree.leaves(params), strict=True
    ):
        assert bool(jnp.all(jnp.isfinite(a)))
        travel = float(jnp.max(jnp.abs(b - p0)))
        assert travel > 0
        assert float(jnp.max(jnp.abs(a - b))) <= 0.02 * travel + 1e-6

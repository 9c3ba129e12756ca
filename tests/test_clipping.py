"""Clipping, cleaning and noise transforms against optax, and their formulas by hand.

One table drives the optax comparison: the same transform built from ``funcopt`` and
from ``optax`` (the names are shared) is applied to the same random pytree, which has a
``None`` leaf, a scalar and leaves of every rank AGC knows (0 to 5); ours runs eagerly
and under ``jit`` with strict dtype promotion.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import random_params

import funcopt
from funcopt.base import HyperParameterError, StructureError

SHAPES = {"dense": {"w": (7, 5), "b": (5,)}, "scalar": (), "none": None, "conv": (3, 3, 2, 4)}
# every rank AGC has a default unit for: vector, dense, column, multi-head, conv, 3-D conv
AGC_SHAPES = {**SHAPES, "col": (6, 1), "heads": (4, 2, 3), "conv3d": (2, 2, 2, 2, 3)}
SMALL = {"w": (4, 3), "s": (), "none": None}  # for the many-step and random-draw tests


def tree(seed, scale=1.0, shapes=SHAPES):
    return jax.tree.map(lambda x: scale * x, random_params(seed, shapes=shapes))


def default_inputs():
    return tree(1), tree(2)


def small_inputs():
    return tree(1, shapes=SMALL), tree(2, shapes=SMALL)


def agc_inputs():
    params = tree(2, 0.3, AGC_SHAPES)
    params["dense"]["w"] = params["dense"]["w"].at[:, 0].set(0.0)  # a zero unit: eps applies
    return tree(1, shapes=AGC_SHAPES), params


def nonnegative_inputs():
    params = jax.tree.map(jnp.abs, tree(2, 0.5))
    params["scalar"] = jnp.float32(-0.25)  # already negative: moved to 0
    return tree(1), params


def nan_inputs():
    grads = tree(1)
    grads["dense"]["w"] = grads["dense"]["w"].at[0, :2].set(jnp.nan)
    grads["scalar"] = jnp.float32(jnp.nan)
    return grads, tree(2)


# (id, builder taking the library, inputs)
TABLE = [
    ("clip", lambda lib: lib.clip(0.5), default_inputs),
    ("clip-zero", lambda lib: lib.clip(0.0), default_inputs),
    ("clip_by_block_rms", lambda lib: lib.clip_by_block_rms(0.9), default_inputs),
    ("clip_by_global_norm-active", lambda lib: lib.clip_by_global_norm(5.0), default_inputs),
    ("clip_by_global_norm-inactive", lambda lib: lib.clip_by_global_norm(1e3), default_inputs),
    ("adaptive_grad_clip", lambda lib: lib.adaptive_grad_clip(0.5), agc_inputs),
    ("adaptive_grad_clip-eps", lambda lib: lib.adaptive_grad_clip(2.0, eps=0.5), agc_inputs),
    ("keep_params_nonnegative", lambda lib: lib.keep_params_nonnegative(), nonnegative_inputs),
    ("zero_nans", lambda lib: lib.zero_nans(), nan_inputs),
    ("add_noise", lambda lib: lib.add_noise(0.3, 0.55, 7), small_inputs),
]


@pytest.mark.parametrize(("build", "inputs"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE])
def test_matches_optax(build, inputs, maybe_jit):
    grads, params = inputs()
    theirs = build(optax)
    want, _ = jax.jit(theirs.update)(grads, theirs.init(params), params)
    with jax.numpy_dtype_promotion("strict"):  # optax itself would not pass this
        ours = build(funcopt)
        got, _ = maybe_jit(ours.update)(grads, ours.init(params), params)
    assert got["none"] is None
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(jax.flatten_util.ravel_pytree(got)[0]).all()


def test_keeps_bfloat16():
    # every transform in one jitted chain: each stage must hand on bfloat16
    stages = [build(funcopt) for _, build, _ in TABLE]
    tx = funcopt.chain(*stages)
    grads, params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), small_inputs())
    got, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, grads)


# ---- the formulas by hand ----------------------------------------------------------------


def test_global_norm_by_hand_and_against_optax():
    t = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.float32(-2.0), "c": None}
    np.testing.assert_allclose(funcopt.global_norm(t), optax.tree.norm(t), rtol=1e-6)
    t["d"] = jnp.array([1.5, -0.5], jnp.bfloat16)  # mixed dtypes: summed in float32
    squares = [np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(t)]
    got = funcopt.global_norm(t)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.sqrt(sum(squares)), rtol=1e-6)
    assert float(funcopt.global_norm({"empty": None})) == 0.0
    np.testing.assert_allclose(funcopt.global_norm(jnp.array([3j, 4.0])), 5.0, rtol=1e-6)
    chex.assert_trees_all_equal(jax.grad(funcopt.global_norm)(jnp.zeros(3)), jnp.zeros(3))


def test_clip_by_global_norm_by_hand(maybe_jit):
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array(4.0)}  # norm 5
    tx = funcopt.clip_by_global_norm(2.0)
    got, _ = maybe_jit(tx.update)(g, tx.init(g))
    chex.assert_trees_all_close(got, {"a": jnp.array([1.2, 0.0]), "b": jnp.array(1.6)})


def test_clip_by_global_norm_all_zero_gradient():
    zeros = jax.tree.map(jnp.zeros_like, tree(1, shapes=SMALL))

    def total(lib, max_norm):
        tx = lib.clip_by_global_norm(max_norm)
        return lambda g: sum(jnp.sum(x) for x in jax.tree.leaves(tx.update(g, tx.init(g))[0]))

    for max_norm in (0.0, 1.0):
        tx = funcopt.clip_by_global_norm(max_norm)
        chex.assert_trees_all_equal(tx.update(zeros, tx.init(zeros))[0], zeros)
        grad = jax.jit(jax.grad(total(funcopt, max_norm)))(zeros)  # e.g. meta-gradients
        chex.assert_trees_all_equal(grad, jax.tree.map(jnp.ones_like, zeros))
    # optax 0.2.8 differs: NaN updates for max_norm=0 and NaN derivatives at zero.
    theirs = optax.clip_by_global_norm(0.0)
    assert np.isnan(jax.tree.leaves(theirs.update(zeros, theirs.init(zeros))[0])[0]).any()
    assert np.isnan(jax.tree.leaves(jax.jit(jax.grad(total(optax, 1.0)))(zeros))[0]).any()
    # and equal elsewhere: a tiny but nonzero gradient passes through unchanged in both
    tiny = jax.tree.map(lambda x: 1e-20 * x, tree(1, shapes=SMALL))
    for lib in (funcopt, optax):
        tx = lib.clip_by_global_norm(1.0)
        chex.assert_trees_all_equal(tx.update(tiny, tx.init(tiny))[0], tiny)


def test_block_rms_and_agc_by_hand():
    tx = funcopt.clip_by_block_rms(1.0)
    g = {"big": jnp.array([3.0, 4.0]), "small": jnp.array([0.5, -0.5])}  # rms √12.5, 0.5
    want = {"big": g["big"] / np.sqrt(12.5), "small": g["small"]}
    chex.assert_trees_all_close(tx.update(g, tx.init(g))[0], want, rtol=1e-6)
    # a dense kernel: one unit per column; column 0 is clipped to 0.5 ‖θ₀‖, column 1 is not
    p = jnp.array([[3.0, 1.0], [4.0, 0.0]])  # column norms 5, 1
    g = jnp.array([[6.0, 0.1], [8.0, 0.2]])  # column norms 10, √0.05
    tx = funcopt.adaptive_grad_clip(0.5)
    want = jnp.array([[6.0 * 2.5 / 10, 0.1], [8.0 * 2.5 / 10, 0.2]])
    chex.assert_trees_all_close(tx.update(g, tx.init(p), p)[0], want, rtol=1e-6)


def test_agc_needs_axis_above_rank_5():
    g = jnp.ones((2, 1, 2, 1, 2, 2))
    with pytest.raises(ValueError, match=r"shape \(2, 1, 2, 1, 2, 2\).*axis="):
        tx = funcopt.adaptive_grad_clip(0.1)
        tx.update(g, tx.init(g), g)
    ours, theirs = (lib.adaptive_grad_clip(0.1, axis=(0, 2)) for lib in (funcopt, optax))
    chex.assert_trees_all_close(
        ours.update(g, ours.init(g), 2 * g)[0], theirs.update(g, (), 2 * g)[0], rtol=1e-6
    )


def test_zero_nans_state_by_hand():
    grads, params = nan_inputs()
    tx = funcopt.zero_nans()
    state = tx.init(params)
    assert not any(jax.tree.leaves(state.found_nan))
    _, state = tx.update(grads, state)
    found = jax.tree.map(lambda x: bool(x), state.found_nan)
    assert found["dense"] == {"w": True, "b": False} and found["scalar"] is True
    assert found["none"] is None and not found["conv"]
    theirs = optax.zero_nans()
    chex.assert_trees_all_equal(state.found_nan, theirs.update(grads, theirs.init(params))[1][0])


# ---- add_noise ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours_key", "theirs_key"),
    [
        (jax.random.key(11), jax.random.key(11)),
        (jax.random.PRNGKey(5), jax.random.wrap_key_data(jax.random.PRNGKey(5))),
    ],
    ids=["typed-key", "raw-key"],
)
def test_add_noise_draws_like_optax_over_steps(ours_key, theirs_key):
    grads, params = tree(1, shapes=SMALL), tree(2, shapes=SMALL)
    ours, theirs = funcopt.add_noise(0.2, 0.55, ours_key), optax.add_noise(0.2, 0.55, theirs_key)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    mine, oracle = jax.jit(ours.update), jax.jit(theirs.update)
    for _ in range(3):
        got, s_ours = mine(grads, s_ours)
        want, s_theirs = oracle(grads, s_theirs)
        chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    assert int(s_ours.count) == int(s_theirs.count) == 3
    np.testing.assert_array_equal(
        jax.random.key_data(s_ours.rng_key), jax.random.key_data(s_theirs.rng_key)
    )


def test_add_noise_distribution_and_annealing():
    eta, gamma, n = 0.5, 0.55, 200_000
    tx = funcopt.add_noise(eta, gamma, key=0)
    g = {"x": jnp.full((n,), 2.0)}
    state = tx.init(g)
    update = jax.jit(tx.update)
    for t in range(1, 5):
        u, state = update(g, state)
        noise = np.asarray(u["x"], np.float64) - 2.0
        var = eta / t**gamma  # σ_t² = η / t^γ
        assert abs(noise.mean()) < 5 * np.sqrt(var / n)
        assert abs(noise.var() / var - 1) < 5 * np.sqrt(2 / n)
    other = funcopt.add_noise(eta, gamma, key=1)
    first, _ = update(g, tx.init(g))
    assert not np.allclose(jax.jit(other.update)(g, other.init(g))[0]["x"], first["x"])


# ---- arguments, params and structure -----------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: funcopt.clip(-1.0), "max_delta=-1.0"),
        (lambda: funcopt.clip_by_global_norm(-2.0), "max_norm=-2.0"),
        (lambda: funcopt.clip_by_block_rms(0.0), "threshold=0.0"),
        (lambda: funcopt.adaptive_grad_clip(-0.1), "clipping=-0.1"),
        (lambda: funcopt.adaptive_grad_clip(0.1, eps=-1.0), "eps=-1.0"),
        (lambda: funcopt.add_noise(-0.1, 0.55, 0), "eta=-0.1"),
        (lambda: funcopt.add_noise(0.1, -0.5, 0), "gamma=-0.5"),
    ],
)
def test_invalid_arguments_raise_naming_them(build, message):
    with pytest.raises(HyperParameterError, match=message):
        build()


def test_traced_arguments_are_accepted():
    g = jnp.array([3.0, -4.0])

    @jax.jit
    def clipped(c):
        tx = funcopt.chain(funcopt.clip(c), funcopt.clip_by_global_norm(c))
        return tx.update(g, tx.init(g))[0]

    chex.assert_trees_all_close(clipped(jnp.float32(2.0)), jnp.array([np.sqrt(2), -np.sqrt(2)]))


@pytest.mark.parametrize("name", ["adaptive_grad_clip", "keep_params_nonnegative"])
def test_needs_params_and_matching_structure(name):
    tx = getattr(funcopt, name)(*([0.1] if name == "adaptive_grad_clip" else []))
    g = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="params"):
        tx.update(g, tx.init(g))
    with pytest.raises(StructureError, match="'b'"):
        tx.update(g, tx.init(g), {"a": jnp.ones(2), "c": jnp.ones(3)})


def test_transforms_are_values_and_work_inside_optax_chain():
    assert funcopt.clip(1.0) == funcopt.clip(1) and hash(funcopt.clip(1.0)) == hash(funcopt.clip(1))
    assert funcopt.add_noise(0.1, 0.55, 0) == funcopt.add_noise(0.1, 0.55, 0)
    assert funcopt.add_noise(0.1, 0.55, 0) != funcopt.add_noise(0.1, 0.55, 1)
    grads, params = small_inputs()
    mixed = optax.chain(funcopt.clip_by_global_norm(1.0), optax.sgd(0.1))
    pure = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))
    got = mixed.update(grads, mixed.init(params), params)[0]
    want = pure.update(grads, pure.init(params), params)[0]
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in funcopt.clipping.__all__ if n[0].islower()])
def test_signature_is_optax(name):
    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(getattr(funcopt, name)) == params(getattr(optax, name))


# ---- 0.2: compiled size, complex leaves, keys, flags -------------------------------------


def test_clip_by_global_norm_compiles_linearly_in_the_leaves():
    # 0.1's `where` around the root made XLA copy the sum of squares into every leaf's
    # fusion: 2.7x the lines for 2x the leaves here (3.2x with adam after it).
    def lines(n):
        tx = funcopt.chain(funcopt.clip_by_global_norm(1.0), funcopt.scale(-1e-3))
        params = [jnp.zeros((64, 8)) for _ in range(n)]

        def step(p, s, g):
            u, s = tx.update(g, s, p)
            return funcopt.apply_updates(p, u), s

        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params)
        return len(compiled.compile().as_text().splitlines())

    assert lines(40) / lines(20) <= 2.1


def test_complex_leaves_use_abs2():
    z = {"a": jnp.array([3j, 4.0 + 0j]), "b": jnp.array([1 + 1j])}  # ‖z‖² = 9 + 16 + 2
    norm = np.sqrt(27.0)
    tx = funcopt.clip_by_global_norm(1.0)
    got = tx.update(z, tx.init(z))[0]
    chex.assert_trees_all_close(got, jax.tree.map(lambda x: x / norm, z), rtol=1e-6)
    tx = funcopt.clip_by_block_rms(1.0)  # rms of [3j, 4] is √12.5
    chex.assert_trees_all_close(tx.update(z["a"], tx.init(z["a"]))[0], z["a"] / np.sqrt(12.5))
    tx = funcopt.adaptive_grad_clip(0.1)  # ‖g‖ = 5, bound 0.1 · max(‖θ‖, ε) = 0.1
    p = jnp.array([1.0, 0.0], jnp.complex64)
    chex.assert_trees_all_close(tx.update(z["a"], tx.init(p), p)[0], z["a"] / 50, rtol=1e-6)


def test_add_noise_keys_seed_alias_and_donation():
    g = {"w": jnp.ones(3)}
    with pytest.warns(DeprecationWarning, match="seed"):
        by_seed = funcopt.add_noise(0.1, 0.55, seed=3)
    assert by_seed == funcopt.add_noise(0.1, 0.55, key=3)
    with pytest.raises(ValueError, match="only one of seed or key"):
        funcopt.add_noise(0.1, 0.55, key=3, seed=3)
    for bad in (True, 1.5, "0", jnp.zeros(2)):
        with pytest.raises(HyperParameterError, match="key="):
            funcopt.add_noise(0.1, 0.55, bad)
    key = jax.random.key(4)
    tx = funcopt.add_noise(0.1, 0.55, key)
    step = jax.jit(tx.update, donate_argnums=(1,))
    first, _ = step(g, tx.init(g))  # the donated state holds init's own copy of the key
    again, _ = step(g, tx.init(g))
    chex.assert_trees_all_equal(first, again)
    jax.random.key_data(key).block_until_ready()  # the user's key is still alive


def test_elementwise_flags_and_axis_argument():
    flat = [funcopt.clip(1.0), funcopt.zero_nans(), funcopt.keep_params_nonnegative()]
    per_leaf = [
        funcopt.clip_by_block_rms(1.0),
        funcopt.clip_by_global_norm(1.0),
        funcopt.adaptive_grad_clip(0.1),
        funcopt.add_noise(0.1, 0.55, 0),
    ]
    assert all(tx.elementwise for tx in flat)
    assert not any(tx.elementwise for tx in per_leaf)
    agc = funcopt.adaptive_grad_clip
    assert agc(0.1, axis=[0, 2]) == agc(0.1, axis=(0, 2))
    with pytest.raises(HyperParameterError, match="axis="):
        funcopt.adaptive_grad_clip(0.1, axis="rows")

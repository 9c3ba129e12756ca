"""Masks and partitions (funcopt.wrappers) against independent oracles.

masked, freeze, set_to_zero and partition (multi_transform):

1. optax: 1000 steps on random nested pytrees, float32 ≤ 1e-5, with funcopt inner
   transforms under funcopt wrappers vs optax under optax, and optax inner transforms
   under funcopt wrappers.
2. The behaviour written out by hand: which leaves change, which leaves keep state,
   masks given as prefixes, functions, callable pytrees and full trees inside a
   partition; extra arguments, values, donation and strict dtypes.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import registry
from oracle import random_params
from support import (
    assert_bfloat16_run_stays_bfloat16,
    assert_donated_train_step_matches_plain,
    assert_matches_optax,
    assert_one_trace_for_any_values,
    assert_signature_matches_optax,
    assert_value_reaches_times_value,
    times_value,
)

import funcopt

# A small nested tree (dict, list, a scalar): compile time grows with the leaf count.
SHAPES = {"dense": {"w": (4, 3), "b": (3,)}, "seq": [(), (2, 3)]}
MASK = {"dense": True, "seq": [False, True]}  # a prefix of the params' structure


def ndim_labels(params):
    """Label 2-d and larger leaves "w" (weights), the rest "b" (biases, norms, scalars)."""
    return jax.tree.map(lambda x: "w" if x.ndim > 1 else "b", params)


# (id, funcopt transform, optax transform). Each funcopt wrapper runs a funcopt inner
# transform unless the id says "optax inner".
TABLE = [
    (
        "masked-prefix",
        lambda: funcopt.chain(funcopt.masked(funcopt.scale_by_adam(), MASK), funcopt.scale(-0.01)),
        lambda: optax.chain(optax.masked(optax.scale_by_adam(), MASK), optax.scale(-0.01)),
    ),
    (
        "masked-callable-optax-inner",
        lambda: funcopt.chain(
            funcopt.masked(
                optax.scale_by_adam(), lambda p: jax.tree.map("w".__eq__, ndim_labels(p))
            ),
            funcopt.scale(-0.01),
        ),
        lambda: optax.chain(
            optax.masked(optax.scale_by_adam(), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
            optax.scale(-0.01),
        ),
    ),
    (
        "partition",
        lambda: funcopt.partition(
            {"w": funcopt.adamw(0.01, weight_decay=0.1), "b": funcopt.sgd(0.02, 0.9)}, ndim_labels
        ),
        lambda: optax.partition(
            {"w": optax.adamw(0.01, weight_decay=0.1), "b": optax.sgd(0.02, 0.9)}, ndim_labels
        ),
    ),
    (
        "freeze",
        lambda: funcopt.chain(funcopt.freeze(MASK), funcopt.adam(0.01)),
        lambda: optax.chain(optax.freeze(MASK), optax.adam(0.01)),
    ),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), TABLE, ids=[r[0] for r in TABLE])
def test_matches_optax_float32(name, ours, theirs):
    assert_matches_optax(ours(), theirs(), random_params(0, shapes=SHAPES))


# ---- masked, partition, freeze -------------------------------------------------------


def test_masked_passes_unmasked_leaves_through(maybe_jit):
    g = {"a": jnp.ones(2), "b": {"c": jnp.full(3, 4.0, jnp.bfloat16), "d": jnp.ones(())}}
    tx = funcopt.masked(funcopt.scale_by_momentum(0.5), {"a": True, "b": {"c": False, "d": True}})
    state = tx.init(g)
    assert isinstance(state.inner_state.mu["b"]["c"], funcopt.MaskedNode)  # no state for c
    u, state = maybe_jit(tx.update)(g, state)
    assert u["b"]["c"] is g["b"]["c"] or bool(jnp.all(u["b"]["c"] == g["b"]["c"]))
    assert u["b"]["c"].dtype == jnp.bfloat16
    chex.assert_trees_all_close((u["a"], u["b"]["d"]), (jnp.full(2, 0.5), jnp.asarray(0.5)))


def test_masked_prefix_and_callable_masks_with_params():
    params = {"w": jnp.full((2, 2), 2.0), "norm": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}
    g = jax.tree.map(jnp.ones_like, params)
    by_prefix = funcopt.masked(funcopt.add_decayed_weights(0.5), {"w": True, "norm": False})
    by_fn = funcopt.masked(
        funcopt.add_decayed_weights(0.5), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    )
    for tx in (by_prefix, by_fn):
        u, _ = tx.update(g, tx.init(params), params)
        # g + 0.5 θ on the weight only: 1 + 0.5 · 2 = 2.
        chex.assert_trees_all_close(u, {"w": jnp.full((2, 2), 2.0), "norm": g["norm"]})


def test_partition_no_weight_decay_on_biases_and_norms(maybe_jit):
    lr, wd = 0.1, 0.5
    params = {
        "dense": {"w": jnp.array([[1.0, -2.0], [3.0, 4.0]]), "b": jnp.array([1.0, 2.0])},
        "norm": {"scale": jnp.array([1.0, 1.0]), "bias": jnp.array([0.5, -0.5])},
    }
    grads = jax.tree.map(lambda p: jnp.where(p > 0.9, 3.0, -0.2), params)
    labels = lambda p: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "no_decay", p)
    tx = funcopt.partition(
        {"decay": funcopt.adamw(lr, weight_decay=wd), "no_decay": funcopt.adam(lr)}, labels
    )
    u, state = maybe_jit(tx.update)(grads, tx.init(params), params)
    assert set(state.inner_states) == {"decay", "no_decay"}
    # Adam's first step is −η g / (|g| + ε) = −η sign(g); AdamW adds −η λ θ. (rtol: β₂ =
    # 0.999 is a Python float in 1 − β₂ but float32 in 1 − β₂ᵗ, a 6.4e-6 mismatch, as optax.)
    sign = lambda x: x / (jnp.abs(x) + 1e-8)
    want = jax.tree.map(lambda g: -lr * sign(g), grads)
    want["dense"]["w"] = -lr * (sign(grads["dense"]["w"]) + wd * params["dense"]["w"])
    chex.assert_trees_all_close(u, want, rtol=1e-5)


def test_partition_names_and_errors():
    assert funcopt.multi_transform is funcopt.partition  # optax 0.2.8 has both names
    assert funcopt.MultiTransformState is funcopt.PartitionState
    assert optax.multi_transform is optax.partition
    # Labels may be a prefix of the params: one label for a whole subtree.
    params = {"x": jnp.ones(1), "y": {"p": jnp.ones(1), "q": jnp.ones(2)}}
    tx = funcopt.partition(
        {"a": funcopt.scale(2.0), "b": funcopt.scale(-1.0)}, {"x": "a", "y": "b"}
    )
    u, _ = tx.update(params, tx.init(params))
    chex.assert_trees_all_equal(
        u, {"x": jnp.full(1, 2.0), "y": {"p": -jnp.ones(1), "q": -jnp.ones(2)}}
    )
    tx = funcopt.partition({"a": funcopt.scale(1.0)}, {"x": "a", "y": "b"})
    with pytest.raises(ValueError, match="'b'"):
        tx.init({"x": jnp.zeros(1), "y": jnp.zeros(1)})
    with pytest.raises(TypeError, match="not a gradient transformation"):
        funcopt.partition({"a": object()}, {"x": "a"})


def test_freeze_and_set_to_zero(maybe_jit):
    g = {"a": jnp.ones(2), "b": jnp.ones(3, jnp.bfloat16)}
    tx = funcopt.freeze({"a": True, "b": False})
    u, _ = maybe_jit(tx.update)(g, tx.init(g))
    chex.assert_trees_all_equal(u, {"a": jnp.zeros(2), "b": g["b"]})
    tx = funcopt.freeze(True)
    u, _ = maybe_jit(tx.update)(g, tx.init(g))
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, g))
    u, _ = maybe_jit(funcopt.set_to_zero().update)(g, funcopt.set_to_zero().init(g))
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, g))  # dtypes kept too


def test_wrappers_reject_non_transforms():
    with pytest.raises(TypeError, match="not a gradient transformation"):
        funcopt.masked(object(), True)


def test_full_tree_decay_mask_inside_partition():
    """An inner adamw's mask may be given for the whole tree: inside ``partition`` it is cut
    to the leaves that branch owns (equal to the same mask as a function)."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3), "emb": jnp.ones((4, 2))}
    grads = jax.tree.map(lambda x: 0.1 * x, params)
    labels = {"w": "adam", "b": "adam", "emb": "sgd"}
    full = {"w": True, "b": False, "emb": True}

    def run(mask):
        tx = funcopt.partition(
            {"adam": funcopt.adamw(0.1, weight_decay=0.5, mask=mask), "sgd": funcopt.sgd(0.1)},
            labels,
        )
        return tx.update(grads, tx.init(params), params)[0]

    got = run(full)
    want = run(lambda p: {"w": True, "b": False, "emb": p["emb"]})
    chex.assert_trees_all_equal(got, want)
    assert not np.allclose(got["w"], got["b"][None, :])  # w decays, b does not


# ---- callable pytrees as masks --------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class Affine:
    """A callable pytree (like an Equinox module): as a mask it is a tree, not a function."""

    def __init__(self, w, b):
        self.w, self.b = w, b

    def __call__(self, x):
        return self.w * x + self.b

    def tree_flatten(self):
        return (self.w, self.b), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def test_callable_pytree_mask_and_labels_are_trees(maybe_jit):
    params = Affine(jnp.ones(2), jnp.full(2, 3.0))
    mask = Affine(True, False)
    assert not funcopt.trees.is_mask_function(mask)
    for ours, theirs in (
        (funcopt.masked(funcopt.scale(2.0), mask), optax.masked(optax.scale(2.0), mask)),
        (funcopt.freeze(mask), optax.freeze(mask)),
    ):
        u, _ = maybe_jit(ours.update)(params, ours.init(params))
        want, _ = theirs.update(params, theirs.init(params))
        chex.assert_trees_all_equal(u, want)
    tx = funcopt.partition({"a": funcopt.scale(2.0), "b": funcopt.scale(-1.0)}, Affine("a", "b"))
    u, state = maybe_jit(tx.update)(params, tx.init(params))
    chex.assert_trees_all_equal((u.w, u.b), (jnp.full(2, 2.0), jnp.full(2, -3.0)))
    assert isinstance(state.inner_states["a"], funcopt.MaskedState)


def test_equinox_module_mask():
    eqx = pytest.importorskip("equinox")

    class Model(eqx.Module):
        w: jax.Array
        b: jax.Array

        def __call__(self, x):
            return self.w * x + self.b

    params = Model(jnp.ones(2), jnp.full(2, 3.0))
    mask = Model(True, False)
    tx = funcopt.masked(funcopt.scale(2.0), mask)
    u, _ = tx.update(params, tx.init(params))
    chex.assert_trees_all_equal((u.w, u.b), (jnp.full(2, 2.0), jnp.full(2, 3.0)))


# ---- extra arguments of update -------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.masked(times_value(), {"w": True}),
        lambda: funcopt.partition({"a": times_value()}, {"w": "a"}),
    ],
    ids=["masked", "partition"],
)
def test_extra_args_reach_the_inner_transform(make, maybe_jit):
    assert_value_reaches_times_value(make(), maybe_jit)


def test_mask_compatible_extra_args_match_optax():
    def plus_other(lib):
        def update(updates, state, params=None, *, other, **extra):
            return jax.tree.map(lambda g, o: g + o, updates, other), state

        return lib(lambda p: optax.EmptyState(), update)

    params = {"w": jnp.ones(2), "b": jnp.ones(3)}
    other = {"w": jnp.full(2, 10.0), "b": jnp.full(3, 20.0)}
    for ours, theirs in (
        (
            funcopt.masked(
                plus_other(funcopt.GradientTransformation),
                {"w": True, "b": False},
                mask_compatible_extra_args=True,
            ),
            optax.masked(
                plus_other(optax.GradientTransformationExtraArgs),
                {"w": True, "b": False},
                mask_compatible_extra_args=True,
            ),
        ),
        (
            funcopt.partition(
                {"x": plus_other(funcopt.GradientTransformation), "y": funcopt.set_to_zero()},
                {"w": "x", "b": "y"},
                mask_compatible_extra_args=True,
            ),
            optax.partition(
                {"x": plus_other(optax.GradientTransformationExtraArgs), "y": optax.set_to_zero()},
                {"w": "x", "b": "y"},
                mask_compatible_extra_args=True,
            ),
        ),
    ):
        u, _ = ours.update(params, ours.init(params), other=other)
        want, _ = theirs.update(params, theirs.init(params), other=other)
        chex.assert_trees_all_equal(u, want)


# ---- values, one trace, donation -----------------------------------------------------


def test_wrappers_are_values():
    adam = funcopt.adam(0.1)
    assert funcopt.masked(adam, {"w": True}) == funcopt.masked(funcopt.adam(0.1), {"w": True})
    assert funcopt.masked(adam, {"w": True}) != funcopt.masked(adam, {"w": False})
    assert funcopt.freeze(True) == funcopt.masked(funcopt.set_to_zero(), True)
    assert funcopt.partition({"a": adam}, {"w": "a"}) == funcopt.partition(
        {"a": funcopt.adam(0.1)}, {"w": "a"}
    )


def test_numeric_hyperparameters_are_leaves_one_trace():
    make = lambda x: funcopt.masked(funcopt.adam(x), {"w": True})
    assert_one_trace_for_any_values(make, {"w": jnp.ones(2)})


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.masked(funcopt.adam(0.1), {"w": True, "b": False}),
        lambda: funcopt.partition(
            {"a": funcopt.adam(0.1), "s": funcopt.sgd(0.1, 0.9)}, {"w": "a", "b": "s"}
        ),
    ],
    ids=["masked", "partition"],
)
def test_donated_train_step(make):
    assert_donated_train_step_matches_plain(make())


# ---- strict dtypes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: funcopt.chain(funcopt.masked(funcopt.adam(0.1), MASK), funcopt.apply_every(2)),
        lambda: funcopt.partition(
            {"w": funcopt.adam(0.1), "b": funcopt.sgd(0.1, 0.9)}, ndim_labels
        ),
    ],
    ids=["masked-apply_every", "partition"],
)
def test_bfloat16_params_under_strict_promotion(make, strict_dtypes):
    assert_bfloat16_run_stays_bfloat16(make(), SHAPES)


# ---- signatures --------------------------------------------------------------------------

# Keyword-only arguments of optax's that funcopt leaves out (none any more: masked and
# partition take mask_compatible_extra_args).
NOT_TAKEN: set[str] = set()


@pytest.mark.parametrize(
    "name", ["masked", "freeze", "set_to_zero", "partition", "multi_transform"]
)
def test_signature_matches_optax(name):
    assert_signature_matches_optax(name, skip=NOT_TAKEN)


# ---- optax.tree.map_params on every state ----------------------------------------------

ROWS = [e for e in registry.available() if e.optax is not None]


@pytest.mark.parametrize("entry", ROWS, ids=registry.ids(ROWS))
def test_optax_map_params_finds_the_same_parameter_trees(entry):
    """``optax.tree.map_params`` (sharding specs, dtype casts of the moments) calls ``init``
    on a placeholder for the whole tree; masks and labels must not be resolved against it.
    It finds as many parameter-shaped leaves in funcopt's state as in optax's."""
    params = random_params(0)

    def cast(tx, p):
        state = tx.init(p)
        out = optax.tree.map_params(tx.init, lambda v: v.astype(jnp.bfloat16), state)
        assert jax.tree.structure(out) == jax.tree.structure(state)
        return sum(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))

    ours = cast(entry.build(registry.LR), entry.params(params))
    theirs = cast(entry.optax(registry.LR), entry.optax_params(params))
    # AdaBelief keeps a third parameter-shaped tree (belief_moment's own prediction of m),
    # Adan a second copy of g_{t−1} (the denominator's nesterov_estimate cannot read the
    # numerator's adan_momentum state)
    extra = len(jax.tree.leaves(params)) if entry.name in ("adabelief", "adan") else 0
    assert ours == theirs + extra


def test_integer_leaves_pass_the_wrappers_optax_passes_them_through():
    """An integer leaf routed to set_to_zero by multi_transform passes every wrapper around
    it and an outer chain of wrappers, unchanged, as in optax; an outer primitive that
    would see it refuses it (optax would scale the integer zeros into float32)."""
    params = {"w": jnp.ones(3), "n": jnp.array([1, 2], jnp.int32)}
    grads = {"w": jnp.full(3, 0.5), "n": jnp.zeros(2, jnp.int32)}
    for lib in (funcopt, optax):
        inner = lib.multi_transform(
            {"opt": lib.adam(0.1), "none": lib.set_to_zero()}, {"w": "opt", "n": "none"}
        )
        for tx in (
            inner,
            lib.MultiSteps(inner, 1),
            lib.apply_if_finite(inner, 3),
            lib.chain(lib.apply_if_finite(inner, 3)),
            lib.masked(inner, {"w": True, "n": True}),
        ):
            u, _ = tx.update(grads, tx.init(params), params)
            new = lib.apply_updates(params, u)
            assert new["n"].dtype == jnp.int32
            np.testing.assert_array_equal(new["n"], [1, 2])
            np.testing.assert_allclose(new["w"], 0.9, rtol=1e-6)  # Adam's first step
    inner = funcopt.multi_transform(
        {"opt": funcopt.adam(0.1), "none": funcopt.set_to_zero()}, {"w": "opt", "n": "none"}
    )
    with pytest.raises(TypeError, match=r"params\['n'\] has dtype int32.*outer chain"):
        funcopt.chain(inner, funcopt.scale(0.5)).init(params)


def test_selective_transform_matches_optax_and_keeps_no_state_for_frozen_leaves():
    params = random_params(0)
    mask = jax.tree.map(lambda x: x.ndim < 2, params)
    ours = funcopt.selective_transform(funcopt.adam(1e-2), freeze_mask=mask)
    theirs = optax.transforms.selective_transform(optax.adam(1e-2), freeze_mask=mask)
    assert_matches_optax(ours, theirs, params)
    mu = ours.init(params).inner_states["train"].inner_state[0].inner_state.numerator[0].mu
    placeholders = jax.tree.leaves(mu, is_leaf=lambda x: isinstance(x, funcopt.MaskedNode))
    frozen = [isinstance(x, funcopt.MaskedNode) for x in placeholders]
    assert frozen == jax.tree.leaves(mask) and any(frozen)  # no moments for frozen leaves
    by_function = funcopt.selective_transform(
        funcopt.adam(1e-2), freeze_mask=lambda p: jax.tree.map(lambda x: x.ndim < 2, p)
    )
    assert_matches_optax(by_function, theirs, params)

"""Packed parameters and state: same numbers as tree mode, state bytes as claimed."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, quadratic_grads, random_params, run

import funcopt
from funcopt.packing import Packed, layout_of

MIXED = {"f32": random_params(0), "bf16": random_params(1, dtype=jnp.bfloat16)}

# Every optimizer that is elementwise in its math declares it, and runs on flat buffers.
ELEMENTWISE = {
    "sgd": lambda: funcopt.sgd(1e-2),
    "sgd-nesterov": lambda: funcopt.sgd(1e-2, momentum=0.9, nesterov=True),
    "gdm": lambda: funcopt.gdm(1e-2, 0.9),
    "rmsprop": lambda: funcopt.rmsprop(1e-2),
    "rmsprop-centered-momentum": lambda: funcopt.rmsprop(1e-2, centered=True, momentum=0.9),
    "adam": lambda: funcopt.adam(1e-2),
    "adam-bf16-mu": lambda: funcopt.adam(1e-2, mu_dtype=jnp.bfloat16),
    "adamw": lambda: funcopt.adamw(1e-2, weight_decay=0.1),
    "nadam": lambda: funcopt.nadam(1e-2),
    "nadamw": lambda: funcopt.nadamw(1e-2),
    "amsgrad": lambda: funcopt.amsgrad(1e-2),
    "adamax": lambda: funcopt.adamax(1e-2),
    "adamaxw": lambda: funcopt.adamaxw(1e-2),
    "adagrad": lambda: funcopt.adagrad(1e-2),
    "adadelta": lambda: funcopt.adadelta(1e-2),
    "adabelief": lambda: funcopt.adabelief(1e-2),
    "radam": lambda: funcopt.radam(1e-2),
    "yogi": lambda: funcopt.yogi(1e-2),
    "lion": lambda: funcopt.lion(1e-2),
    "signum": lambda: funcopt.signum(1e-2),
    "sign_sgd": lambda: funcopt.sign_sgd(1e-2),
}


PER_LEAF = {
    "adamw-masked": lambda: funcopt.adamw(
        1e-2, weight_decay=0.1, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    ),
    "optax-lamb": lambda: optax.lamb(1e-2),
    "lamb": lambda: funcopt.lamb(1e-2),
    "adafactor": lambda: funcopt.adafactor(1e-2),
    "muon": lambda: funcopt.muon(1e-2),
}


def loss_fn(params, x):
    """A loss that touches every leaf, whatever its shape."""
    return sum(
        jnp.mean(jnp.square(jnp.tanh(p.astype(jnp.float32) * x) - 0.3))
        for p in jax.tree.leaves(params)
    )


def copy(tree):
    return jax.tree.map(jnp.copy, tree)


def test_pack_round_trip_groups_by_dtype():
    packed = funcopt.pack(MIXED)
    assert packed.layout.dtypes == ("bfloat16", "float32")  # first seen: keys are sorted
    assert all(b.ndim == 1 for b in packed.buffers)
    n = sum(x.size for x in jax.tree.leaves(MIXED["f32"]))
    assert packed.layout.sizes == (n, n)
    back = funcopt.unpack(packed)
    assert jax.tree.structure(back) == jax.tree.structure(MIXED)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(MIXED), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_packed_is_a_pytree_of_buffers_only():
    packed = funcopt.pack(MIXED)
    assert jax.tree.leaves(packed) == list(packed.buffers)
    doubled = jax.jit(lambda p: jax.tree.map(lambda b: b * 2, p))(packed)
    assert isinstance(doubled, Packed) and doubled.layout == packed.layout


def test_transforms_declare_whether_they_are_elementwise():
    for make in ELEMENTWISE.values():
        assert funcopt.is_elementwise(make())
    for make in PER_LEAF.values():
        assert not funcopt.is_elementwise(make())
    assert not funcopt.is_elementwise(optax.adam(1e-2))  # unknown: tree view, always safe
    assert funcopt.is_elementwise(funcopt.set_to_zero())
    assert not funcopt.is_elementwise(funcopt.scale_by_trust_ratio())


def _steps(step, params, state, n=6):
    losses = []
    for i in range(n):
        x = jnp.asarray(0.5 + 0.1 * i, jnp.float32)
        params, state, loss = step(params, state, x)
        losses.append(float(loss))
    return params, state, losses


def test_large_leaves_keep_a_buffer_of_their_own():
    """With solo_size=20 the (7, 5) and (2, 3, 4) leaves of each dtype stand alone."""
    packed = funcopt.pack(MIXED, solo_size=20)
    big = sorted(s.buffer for s in packed.layout.slots if np.prod(s.shape) >= 20)
    assert len(big) == len(set(big)) == 4  # two per dtype, each its own buffer
    assert len(packed.buffers) == 6  # + one shared buffer per dtype
    assert packed.layout.dtypes.count("float32") == 3
    assert all(packed.layout.sizes[b] in (35, 24) for b in big)
    for a, b in zip(jax.tree.leaves(funcopt.unpack(packed)), jax.tree.leaves(MIXED), strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    assert len(funcopt.pack(MIXED, solo_size=None).buffers) == 2


# The full train step (model, packing, optimizer) for a representative set; every
# elementwise optimizer's flat run is compared with tree mode below, without the model.
TRAIN = ["adam", "adamw", "sgd-nesterov", "rmsprop", "rmsprop-centered-momentum", "adam-bf16-mu"]
CASES = [(name, None) for name in [*TRAIN, *PER_LEAF]]
CASES += [(name, 20) for name in ["adam", "adam-bf16-mu", "rmsprop-centered-momentum", "lamb"]]


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_every_elementwise_optimizer_runs_flat_and_equals_tree_mode(name):
    """On the flat buffers (one fused pass per dtype), three steps equal tree mode's."""
    tx = ELEMENTWISE[name]()
    params = random_params(3)
    flat = funcopt.packed_state(tx)
    s_tree, s_flat = tx.init(params), flat.init(params)
    assert all(jnp.ndim(x) <= 1 for x in jax.tree.leaves(s_flat))  # flat buffers, not leaves
    for k in range(3):
        g = quadratic_grads(params, jnp.asarray(k))
        u_tree, s_tree = tx.update(g, s_tree, params)
        u_flat, s_flat = flat.update(g, s_flat, params)
        tol = 1e-6 if "bf16" not in name else 1e-2
        assert_rel_close(u_flat, u_tree, tol)


@pytest.mark.parametrize(("name", "solo_size"), CASES)
def test_packed_train_step_equals_tree_train_step(name, solo_size):
    make = {**ELEMENTWISE, **PER_LEAF}[name]
    tx = make()
    # The reference is not donated: it must not depend on what is under test here.
    tree_p, _, tree_losses = _steps(
        funcopt.make_train_step(loss_fn, tx, donate=False), copy(MIXED), tx.init(MIXED)
    )
    packed = funcopt.pack(MIXED, solo_size=solo_size)
    packed_p, _, packed_losses = _steps(
        funcopt.make_packed_train_step(loss_fn, tx), packed, funcopt.packed_init(tx, packed)
    )
    np.testing.assert_allclose(packed_losses, tree_losses, rtol=1e-6)
    tol = 1e-6 if "bf16" not in name else 1e-2
    assert_rel_close(funcopt.unpack(packed_p)["f32"], tree_p["f32"], tol)
    assert_rel_close(funcopt.unpack(packed_p)["bf16"], tree_p["bf16"], 1e-2)


def test_forcing_flat_on_a_per_leaf_transform_changes_the_numbers():
    """The registry matters: a masked decay run flat would decay every leaf."""
    tx = PER_LEAF["adamw-masked"]()
    auto = funcopt.make_packed_train_step(loss_fn, tx)
    forced = funcopt.make_packed_train_step(loss_fn, tx, elementwise=True)
    a = funcopt.pack(MIXED)
    b = funcopt.pack(MIXED)
    pa, _, _ = _steps(auto, a, funcopt.packed_init(tx, a))
    pb, _, _ = _steps(forced, b, funcopt.packed_init(tx, b, elementwise=True))
    diff = np.abs(np.asarray(pa.buffers[1]) - np.asarray(pb.buffers[1])).max()  # float32
    assert diff > 1e-4


def test_state_made_for_the_other_mode_is_rejected():
    tx = funcopt.adam(1e-2)
    packed = funcopt.pack(MIXED)
    step = funcopt.make_packed_train_step(loss_fn, tx, donate=False)
    with pytest.raises(TypeError, match="packed_init"):
        step(packed, funcopt.packed_init(tx, packed, elementwise=False), 0.5)


@pytest.mark.parametrize("name", ["adamw", "optax-lamb"])
def test_packed_state_transform_equals_tree_mode(name):
    tx = {**ELEMENTWISE, **PER_LEAF}[name]()
    params = random_params(3)
    ref, _ = run(tx, params, 4, funcopt.apply_updates)
    got, state = run(funcopt.packed_state(tx), params, 4, funcopt.apply_updates)
    assert_rel_close(got, ref, 1e-6)
    leaves = jax.tree.leaves(state)
    assert max(x.size for x in leaves) >= sum(x.size for x in jax.tree.leaves(params))


def test_packed_state_with_low_precision_gradients_equals_tree_mode():
    """bf16 gradients of mixed f32/bf16 parameters (mixed precision): the gradients
    group by dtype differently from the parameters, yet the state keeps the parameters'
    layout and the numbers are tree mode's."""
    tx = funcopt.adamw(1e-2, weight_decay=0.1)
    grads = jax.tree.map(lambda x: (0.5 * x + 0.1).astype(jnp.bfloat16), MIXED)
    want_u, _ = tx.update(grads, tx.init(MIXED), MIXED)
    packed = funcopt.packed_state(tx)
    got_u, got_s = jax.jit(packed.update)(grads, packed.init(MIXED), MIXED)
    chex.assert_trees_all_equal_dtypes(got_u, want_u)
    # Tree mode rounds every primitive's output to the gradient's bf16; the packed f32
    # buffers round once at the end: they may differ by a bf16 ulp (2⁻⁸ relative).
    chex.assert_trees_all_close(got_u, want_u, rtol=2**-7)
    u2, _ = packed.update(grads, got_s, MIXED)  # the state's buffers still fit
    assert jax.tree.structure(u2) == jax.tree.structure(want_u)


def test_packed_step_donates_its_buffers():
    tx = funcopt.adam(1e-2)
    packed = funcopt.pack(MIXED)
    state = funcopt.packed_init(tx, packed)
    step = funcopt.make_packed_train_step(loss_fn, tx)
    assert "input_output_alias" in step.lower(packed, state, 0.5).compile().as_text()
    new, new_state, _ = step(packed, state, 0.5)
    assert all(b.is_deleted() for b in jax.tree.leaves((packed, state)))
    assert not any(b.is_deleted() for b in jax.tree.leaves((new, new_state)))


def test_packed_step_boundary_does_not_grow_with_leaves():
    """200 leaves in, two buffers (one per dtype) + a few counts across jit."""
    params = [jnp.full((3, 2), float(i)) for i in range(200)]
    tx = funcopt.adam(1e-2)
    packed = funcopt.pack(params)
    state = funcopt.packed_init(tx, packed)
    assert len(jax.tree.leaves(packed)) == 1
    assert len(jax.tree.leaves(state)) <= 6


# ---- low-memory state ---------------------------------------------------------------------


def _bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _moment_bytes(tree) -> int:
    """Bytes of the state's non-scalar leaves (the moments; counts are scalars)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if x.ndim > 0)


@pytest.mark.parametrize("packed", [False, True], ids=["tree", "packed"])
def test_adam_state_bytes(packed):
    params = {"w": jnp.zeros((256, 64)), "b": jnp.zeros(64), "v": [jnp.zeros(10)] * 3}
    p_bytes = _bytes(params)
    for mu_dtype, factor in [(None, 2.0), (jnp.bfloat16, 1.5)]:
        tx = funcopt.adam(1e-3, mu_dtype=mu_dtype)
        state = funcopt.packed_init(tx, funcopt.pack(params)) if packed else tx.init(params)
        assert _moment_bytes(state) == factor * p_bytes
        assert _bytes(state) - _moment_bytes(state) <= 16  # the step counts
    adamw = funcopt.adamw(1e-3, mu_dtype=jnp.bfloat16)
    assert _moment_bytes(adamw.init(params)) == 1.5 * p_bytes


def test_bf16_first_moment_dtypes_and_closeness_to_fp32():
    params = random_params(2)
    low = funcopt.adam(1e-2, mu_dtype=jnp.bfloat16)
    full = funcopt.adam(1e-2)
    p_low, s_low = run(low, params, 20, funcopt.apply_updates)
    p_full, _ = run(full, params, 20, funcopt.apply_updates)
    dtypes = {x.dtype for x in jax.tree.leaves(s_low) if x.ndim > 0}
    assert dtypes == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}  # m bf16, v fp32
    assert_rel_close(p_low, p_full, 2e-3)
    # Compare with a parameter's scale of travel: bf16 rounding is visible but small.
    assert 0 < max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(p_low), jax.tree.leaves(p_full), strict=True)
    )


def test_bf16_update_uses_the_stored_rounded_moment():
    """u = −η m̂/(√v̂ + ε) with m̂ computed from the bf16 m that is kept (perf notes §5)."""
    g = jnp.asarray([0.123456, -1.98765, 3.3333], jnp.float32)
    p = jnp.zeros(3)
    tx = funcopt.adam(1.0, b1=0.9, b2=0.999, eps=0.0, mu_dtype=jnp.bfloat16)
    u, _ = tx.update(g, tx.init(p), p)
    m = ((1 - 0.9) * g).astype(jnp.bfloat16).astype(jnp.float32)
    v = (1 - 0.999) * g * g
    expected = -(m / (1 - 0.9)) / jnp.sqrt(v / (1 - 0.999))
    np.testing.assert_allclose(u, expected, rtol=2e-5)
    unrounded = -(((1 - 0.9) * g) / (1 - 0.9)) / jnp.sqrt(v / (1 - 0.999))
    assert not np.allclose(u, unrounded, rtol=5e-4)  # bf16 rounding (≈ 4e-3) is visible


def test_grads_of_quadratic_helper_still_work_with_packed_views():
    packed = funcopt.pack(random_params(4))
    grads = quadratic_grads(funcopt.unpack(packed), jnp.asarray(0))
    assert jax.tree.structure(grads) == packed.layout.treedef


# ---- the layout a packed state belongs to ---------------------------------------------

# Two trees of the same dtype and total size: their packed buffers have the same shapes.
THREE_TWO = {"a": jnp.ones(3), "b": jnp.zeros(2)}
TWO_THREE = {"a": jnp.ones(2), "b": jnp.zeros(3)}


def _restored_into(template, saved):
    """What a checkpointer does: the saved leaves poured into the template's structure."""
    assert [x.shape for x in jax.tree.leaves(template)] == [x.shape for x in jax.tree.leaves(saved)]
    return jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(saved))


@pytest.mark.parametrize("name", ["adam", "lamb"])  # flat buffers, packed tree
def test_packed_state_refuses_gradients_of_other_shapes(name):
    """Swapped leaf shapes of the same total size would move b's gradients onto a."""
    tx = funcopt.packed_state({**ELEMENTWISE, **PER_LEAF}[name]())
    state = tx.init(THREE_TWO)
    swapped = {"a": jnp.ones(2), "b": jnp.ones(3)}
    with pytest.raises(funcopt.StructureError, match=r"shape mismatch at \['a'\]"):
        tx.update(swapped, state, THREE_TWO)
    # without params the updates' layout must be the state's (a packed tree state holds
    # its layout as metadata, which the structure check compares first)
    with pytest.raises(funcopt.StructureError, match=r"another layout|different metadata"):
        tx.update(swapped, state)
    with pytest.raises(funcopt.StructureError, match=r"shape mismatch at \['a'\]"):
        funcopt.pack(swapped, layout_of(THREE_TWO))


def test_a_packed_step_state_restored_for_another_layout_is_refused():
    tx = funcopt.adam(1e-2)
    saved = funcopt.packed_init(tx, funcopt.pack(THREE_TWO))
    target = funcopt.pack(TWO_THREE)
    restored = _restored_into(funcopt.packed_init(tx, target), saved)
    funcopt.check_state(tx, saved, funcopt.pack(THREE_TWO))  # its own layout: fine
    with pytest.raises(funcopt.StructureError, match="another layout"):
        funcopt.check_state(tx, restored, target)
    step = funcopt.make_packed_train_step(loss_fn, tx, donate=False)
    with pytest.raises(funcopt.StructureError, match="another layout"):
        step(target, restored, 0.5)
    step(target, funcopt.packed_init(tx, target), 0.5)  # a state it made is not re-checked


@pytest.mark.parametrize("name", ["adam", "lamb"])
def test_a_packed_state_restored_for_another_layout_is_refused(name):
    tx = funcopt.packed_state({**ELEMENTWISE, **PER_LEAF}[name]())
    restored = _restored_into(tx.init(TWO_THREE), tx.init(THREE_TWO))
    for check in (
        lambda: funcopt.check_state(tx, restored, TWO_THREE),
        lambda: tx.update(TWO_THREE, restored, TWO_THREE),
    ):
        with pytest.raises(funcopt.StructureError, match="another layout"):
            check()

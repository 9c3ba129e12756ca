"""make_train_step: equal to a hand-written optax step, donated, vmappable, shardable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracle import assert_rel_close, random_params

import funcopt


def loss_fn(params, x, y):
    pred = jnp.tanh(x @ params["dense"]["w"] + params["dense"]["b"][None, :])
    return jnp.mean(jnp.square(pred - y)) + 0.01 * sum(
        jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params)
    )


def batch(i: int):
    kx, ky = jax.random.split(jax.random.PRNGKey(100 + i))
    return jax.random.normal(kx, (8, 7)), jax.random.normal(ky, (8, 5))


def optax_step(tx):
    """The train step every optax user writes by hand (the independent oracle)."""

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step


def copy(tree):
    return jax.tree.map(jnp.copy, tree)


def assert_steps_match_hand_written(ours, theirs, steps, rtol):
    """``steps`` of make_train_step with ``ours`` give the losses and params of the
    hand-written optax step with ``theirs``, to ``rtol``."""
    p_ref = random_params()
    s_ref = theirs.init(p_ref)
    p = copy(p_ref)
    s = ours.init(p)
    ref, step = optax_step(theirs), funcopt.make_train_step(loss_fn, ours)
    for i in range(steps):
        p_ref, s_ref, l_ref = ref(p_ref, s_ref, *batch(i))
        p, s, loss = step(p, s, *batch(i))
        np.testing.assert_allclose(float(loss), float(l_ref), rtol=rtol)
    # Not bitwise: donation changes XLA's fusion decisions, hence float rounding.
    assert_rel_close(p, p_ref, rtol)


def test_same_transform_gives_the_hand_written_step():
    tx = optax.adam(1e-2)
    assert_steps_match_hand_written(tx, tx, 5, 1e-6)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (funcopt.adam(1e-2), optax.adam(1e-2)),
        (funcopt.sgd(1e-2, momentum=0.9, nesterov=True), optax.sgd(1e-2, 0.9, nesterov=True)),
    ],
    ids=["adam", "sgd-nesterov"],
)
def test_funcopt_step_matches_optax_step(ours, theirs):
    assert_steps_match_hand_written(ours, theirs, 10, 1e-5)


def test_aux_is_returned_last():
    def with_aux(params, x, y):
        return loss_fn(params, x, y), {"n": x.shape[0]}

    tx = funcopt.sgd(0.1)
    p = random_params()
    out = funcopt.make_train_step(with_aux, tx, has_aux=True)(p, tx.init(p), *batch(0))
    assert len(out) == 4 and int(out[3]["n"]) == 8
    np.testing.assert_allclose(out[2], loss_fn(random_params(), *batch(0)), rtol=1e-6)


def test_params_and_state_are_donated():
    tx = funcopt.adam(1e-3)
    p = random_params()
    s = tx.init(p)
    step = funcopt.make_train_step(loss_fn, tx)
    hlo = step.lower(p, s, *batch(0)).compile().as_text()
    assert "input_output_alias" in hlo
    w_pointer = p["dense"]["w"].unsafe_buffer_pointer()
    new_p, new_s, _ = step(p, s, *batch(0))
    assert all(x.is_deleted() for x in jax.tree.leaves((p, s)))
    assert not any(x.is_deleted() for x in jax.tree.leaves((new_p, new_s)))
    assert new_p["dense"]["w"].unsafe_buffer_pointer() == w_pointer  # written in place


# (the user's array, the transform built from it)
ARRAY_HYPERPARAMETERS = {
    "inject_hyperparams": lambda a: funcopt.inject_hyperparams(funcopt.adam)(learning_rate=a),
    "schedule_free_adamw": lambda a: funcopt.schedule_free_adamw(1e-3, b1=a),
    "adam": lambda a: funcopt.adam(a, b1=0.9),
    "noisy_sgd": lambda key: funcopt.noisy_sgd(1e-3, key=key),
}
USER_ARRAYS = {
    "inject_hyperparams": lambda: jnp.asarray(1e-3),
    "schedule_free_adamw": lambda: jnp.asarray(0.9),
    "adam": lambda: jnp.asarray(1e-3),
    "noisy_sgd": lambda: jax.random.key(3),
    "noisy_sgd-raw-key": lambda: jax.random.PRNGKey(3),
}


@pytest.mark.parametrize("name", USER_ARRAYS)
def test_arrays_of_the_transform_are_never_donated(name):
    """Hyper-parameters given as arrays (and PRNG keys) belong to the transform, not to the
    state: a donated step leaves the user's array alive, and the transform can make
    another state (in issue 14 ``tx.init`` then failed with "Array has been deleted")."""
    mine = USER_ARRAYS[name]()
    tx = ARRAY_HYPERPARAMETERS[name.removesuffix("-raw-key")](mine)
    p = random_params()
    s = tx.init(p)
    step = funcopt.make_train_step(loss_fn, tx)
    for i in range(2):
        p, s, _ = step(p, s, *batch(i))
    assert not mine.is_deleted()
    s = tx.init(random_params())
    step(random_params(), s, *batch(0))


def test_donate_false_keeps_the_inputs():
    tx = funcopt.adam(1e-3)
    p = random_params()
    s = tx.init(p)
    step = funcopt.make_train_step(loss_fn, tx, donate=False)
    assert "input_output_alias" not in step.lower(p, s, *batch(0)).compile().as_text()
    step(p, s, *batch(0))
    assert not any(x.is_deleted() for x in jax.tree.leaves((p, s)))


def test_vmapped_step_equals_per_member_steps():
    tx = funcopt.adam(1e-2)
    members = [random_params(seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    step = funcopt.make_train_step(loss_fn, tx)
    vstep = jax.vmap(step, in_axes=(0, 0, None, None))
    p, s = stacked, jax.vmap(tx.init)(stacked)
    singles = [(copy(m), tx.init(m)) for m in members]
    for i in range(3):
        p, s, losses = vstep(p, s, *batch(i))
        for k, (pk, sk) in enumerate(singles):
            pk, sk, lk = step(pk, sk, *batch(i))
            singles[k] = (pk, sk)
            np.testing.assert_allclose(losses[k], lk, rtol=1e-6)
    for k, (pk, _) in enumerate(singles):
        assert_rel_close(jax.tree.map(lambda x, k=k: x[k], p), pk, 1e-6)


def test_pure_step_runs_under_scan():
    tx = funcopt.adam(1e-2)
    pure = funcopt.make_train_step(loss_fn, tx, jit=False)
    p0 = random_params()
    xs, ys = (jnp.stack(a) for a in zip(*(batch(i) for i in range(4)), strict=True))

    def body(carry, xy):
        p, s, _ = pure(*carry, *xy)
        return (p, s), None

    (p_scan, _), _ = jax.lax.scan(body, (p0, tx.init(p0)), (xs, ys))
    step = funcopt.make_train_step(loss_fn, tx)
    p, s = copy(p0), tx.init(p0)
    for i in range(4):
        p, s, _ = step(p, s, *batch(i))
    assert_rel_close(p_scan, p, 1e-6)


SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import funcopt

    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()), ("d",))
    row = NamedSharding(mesh, P("d"))

    def loss(p, x):
        return jnp.mean(jnp.square(jnp.tanh(x @ p["w"]) @ p["v"]))

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    host = {"w": jax.random.normal(k1, (16, 32)), "v": jax.random.normal(k2, (32, 4))}
    x = jax.random.normal(k3, (8, 16))
    tx = funcopt.adam(1e-2)

    params = jax.device_put(host, {"w": row, "v": row})
    state = jax.jit(tx.init)(params)
    step = funcopt.make_train_step(loss, tx)
    ref_p, ref_s = jax.tree.map(jnp.copy, host), tx.init(host)
    ref_step = funcopt.make_train_step(loss, tx)
    for _ in range(3):
        old = params["w"]
        params, state, value = step(params, state, x)
        ref_p, ref_s, ref_value = ref_step(ref_p, ref_s, x)
        assert old.is_deleted()
    assert params["w"].sharding.is_equivalent_to(row, 2), params["w"].sharding
    assert len(params["w"].addressable_shards) == 4
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print("OK")
    """
)


def test_sharded_params_across_four_cpu_devices(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")

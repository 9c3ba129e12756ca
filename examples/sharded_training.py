"""Sharded training: parameters and optimizer state split over 8 (simulated) devices.

    python examples/sharded_training.py [--steps N]

On a CPU the 8 devices are simulated with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``, set below before jax is
imported. The devices form a 4 × 2 ``jax.sharding.Mesh`` with axes ``data`` and
``model``: each batch is split along ``data``, each weight matrix's output columns along
``model``. ``tx.init`` gives every state leaf its parameter's sharding, and the jitted
train step keeps it, so Adam's ``m`` and ``v`` live next to the weights they update.
The result is checked against the same training on one device.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import funcopt


def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (16, 64)) / 4.0,
        "b1": jnp.zeros(64),
        "w2": jax.random.normal(k2, (64, 8)) / 8.0,
        "b2": jnp.zeros(8),
    }


def train(params, batches, tx):
    step = funcopt.make_train_step(loss_fn, tx)  # jitted; follows its inputs' shardings
    state = tx.init(params)  # every state leaf takes its parameter's sharding
    for x, y in batches:
        params, state, loss = step(params, state, x, y)
    return params, state, float(loss)


def main(steps: int = 100) -> float:
    devices = np.array(jax.devices()[:8])
    assert devices.size == 8, f"expected 8 devices, got {jax.devices()}"
    mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
    specs = {"w1": P(None, "model"), "b1": P("model"), "w2": P(None, "model"), "b2": P("model")}
    shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
    batch_sharding = NamedSharding(mesh, P("data", None))

    key_data, key_params, key_target = jax.random.split(jax.random.PRNGKey(0), 3)
    target = jax.random.normal(key_target, (16, 8))
    batches = []
    for i in range(steps):
        x = jax.random.normal(jax.random.fold_in(key_data, i), (64, 16))
        batches.append((x, jnp.sin(x @ target)))

    tx = funcopt.adamw(3e-3, weight_decay=1e-4)
    params = init_params(key_params)
    sharded_params = jax.device_put(params, shardings)
    sharded_batches = [jax.device_put(b, batch_sharding) for b in batches]
    p_sharded, state, loss = train(sharded_params, sharded_batches, tx)

    print(f"mesh {dict(mesh.shape)}; loss after {steps} steps: {loss:.5f}")
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if getattr(leaf, "ndim", 0) == 2:
            print(f"  state{jax.tree_util.keystr(path)}: {leaf.sharding.spec}")
    # Adam's moments are sharded exactly like the weights they belong to.
    # Read by name, as optax's tools do: the first and second moments of adamw.
    for tree in (optax.tree_utils.tree_get(state, "mu"), optax.tree_utils.tree_get(state, "nu")):
        for k in specs:
            assert tree[k].sharding.is_equivalent_to(shardings[k], tree[k].ndim), (
                k,
                tree[k].sharding,
            )
    for k in specs:
        assert p_sharded[k].sharding.is_equivalent_to(shardings[k], p_sharded[k].ndim)

    one_device = jax.devices()[0]
    p_single, _, loss_single = train(
        jax.device_put(params, one_device), jax.device_put(batches, one_device), tx
    )
    diff = max(
        float(jnp.max(jnp.abs(p_sharded[k] - jax.device_put(p_single[k], p_sharded[k].sharding))))
        for k in params
    )
    print(f"one device: loss {loss_single:.5f}; max |θ_sharded − θ_single| = {diff:.2e}")
    assert diff < 1e-4, diff
    return diff


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    main(parser.parse_args().steps)

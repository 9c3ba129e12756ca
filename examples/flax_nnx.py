"""Train a Flax NNX model with a funcopt optimizer through ``nnx.Optimizer``.

    python examples/flax_nnx.py [--steps N]

A funcopt transform is an ``(init, update)`` NamedTuple, which is all
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` asks of an optax transform. The model
learns a noisy sine curve.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

import funcopt


class MLP(nnx.Module):
    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(1, hidden, rngs=rngs)
        self.linear2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.tanh(self.linear1(x))
        x = jnp.tanh(self.linear2(x))
        return self.out(x)


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    def loss_fn(model: MLP) -> jax.Array:
        return jnp.mean((model(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)  # calls funcopt's tx.update, then applies the updates
    return loss


def main(steps: int = 1000) -> float:
    x = jnp.linspace(-3, 3, 256)[:, None]
    y = jnp.sin(2 * x) + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape)
    model = MLP(32, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, funcopt.adamw(1e-2, weight_decay=1e-4), wrt=nnx.Param)
    first = None
    for i in range(steps):
        loss = float(train_step(model, optimizer, x, y))
        first = loss if first is None else first
        if i % max(1, steps // 5) == 0:
            print(f"step {i:4d}  loss {loss:.5f}")
    final = float(jnp.mean((model(x) - y) ** 2))
    print(f"loss {first:.4f} -> {final:.4f} after {steps} steps")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    main(parser.parse_args().steps)

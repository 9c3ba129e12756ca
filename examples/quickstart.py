"""Quickstart: fit a linear model with funcopt.adam in a jitted training step.

    python examples/quickstart.py [--steps N]

The whole API in four lines: ``tx.init(params)``, ``tx.update(grads, state, params)``,
``funcopt.apply_updates(params, updates)``, and composing with ``funcopt.chain``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import funcopt


def main(steps: int = 500) -> float:
    key_x, key_noise = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (256, 3))
    true_w = jnp.array([2.0, -1.0, 0.5])
    y = x @ true_w + 0.3 + 0.01 * jax.random.normal(key_noise, (256,))
    params = {"w": jnp.zeros(3), "b": jnp.zeros([])}

    def loss_fn(params: dict[str, jax.Array]) -> jax.Array:
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    # funcopt.adam(0.05) is exactly this composition: Adam's direction, then -η.
    tx = funcopt.chain(
        funcopt.scale_by_adam(b1=0.9, b2=0.999), funcopt.scale_by_learning_rate(0.05)
    )
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return funcopt.apply_updates(params, updates), state, loss

    for i in range(steps):
        params, state, loss = step(params, state)
        if i % max(1, steps // 5) == 0:
            print(f"step {i:4d}  loss {float(loss):.6f}")
    final = float(loss_fn(params))
    print(f"final loss {final:.6f}; w = {params['w']}, b = {float(params['b']):.3f}")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    main(parser.parse_args().steps)

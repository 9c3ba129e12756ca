"""Gradient accumulation: one optimizer step from several micro-batches.

    python examples/gradient_accumulation.py [--steps N] [--micro K]

A batch too large for memory is split into ``K`` micro-batches, and the optimizer
takes one step per ``K`` of them. Two ways:

1. by hand: sum the micro-batches' gradients in one jitted ``lax.scan``, average, step;
2. ``funcopt.MultiSteps(tx, every_k_schedule=K)``: a transform that keeps the running
   mean in its state, returns zero updates for ``K − 1`` calls and the inner
   optimizer's step on the ``K``-th; the training loop stays one call per micro-batch.

Because the loss is a mean over examples, the averaged gradient equals the full-batch
gradient, so both match full-batch training up to rounding; the script checks that.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import funcopt


def loss_fn(params, x, y):
    pred = jnp.tanh(x @ params["w1"]) @ params["w2"]
    return jnp.mean((pred - y) ** 2)


def main(steps: int = 200, micro: int = 4, batch: int = 256) -> float:
    assert batch % micro == 0, "the batch must split into equal micro-batches"
    kx, k1, k2, kt = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "w1": jax.random.normal(k1, (8, 32)) / jnp.sqrt(8.0),
        "w2": jax.random.normal(k2, (32, 1)) / jnp.sqrt(32.0),
    }
    target = jax.random.normal(kt, (8, 1))
    tx = funcopt.adam(1e-2)

    @jax.jit
    def accumulated_step(params, state, x, y):
        xs = x.reshape(micro, batch // micro, -1)
        ys = y.reshape(micro, batch // micro, -1)

        def add_micro(acc, xy):
            loss, grads = jax.value_and_grad(loss_fn)(params, *xy)
            return jax.tree.map(jnp.add, acc, grads), loss

        zeros = jax.tree.map(jnp.zeros_like, params)
        grad_sum, losses = jax.lax.scan(add_micro, zeros, (xs, ys))
        grads = jax.tree.map(lambda g: g / micro, grad_sum)  # mean of equal-size means
        updates, state = tx.update(grads, state, params)
        return funcopt.apply_updates(params, updates), state, jnp.mean(losses)

    @jax.jit
    def full_batch_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return funcopt.apply_updates(params, updates), state, loss

    multi = funcopt.MultiSteps(tx, every_k_schedule=micro)

    @jax.jit
    def micro_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = multi.update(grads, state, params)  # zeros until the K-th call
        return funcopt.apply_updates(params, updates), state, loss

    p_acc, s_acc = params, tx.init(params)
    p_full, s_full = params, tx.init(params)
    p_multi, s_multi = params, multi.init(params)
    for i in range(steps):
        x = jax.random.normal(jax.random.fold_in(kx, i), (batch, 8))
        y = jnp.sin(x @ target)
        p_acc, s_acc, loss_acc = accumulated_step(p_acc, s_acc, x, y)
        p_full, s_full, loss_full = full_batch_step(p_full, s_full, x, y)
        for xm, ym in zip(jnp.split(x, micro), jnp.split(y, micro), strict=True):
            p_multi, s_multi, _ = micro_step(p_multi, s_multi, xm, ym)
        if i % max(1, steps // 5) == 0:
            print(
                f"step {i:4d}  accumulated {float(loss_acc):.5f}  full batch {float(loss_full):.5f}"
            )

    def max_diff(p, q):
        return max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True)
        )

    diff = max_diff(p_acc, p_full)
    diff_multi = max_diff(p_multi, p_full)
    print(
        f"{micro} micro-batches of {batch // micro} vs one batch of {batch}: max |Δθ| = {diff:.2e}"
    )
    print(f"funcopt.MultiSteps(adam, {micro}) vs one batch of {batch}: max |Δθ| = {diff_multi:.2e}")
    assert diff < 1e-3 and diff_multi < 1e-3, (diff, diff_multi)
    return diff


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--micro", type=int, default=4)
    args = parser.parse_args()
    main(args.steps, args.micro)

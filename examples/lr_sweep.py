"""A learning-rate sweep in one compiled ``vmap``: many training runs, one program.

    python examples/lr_sweep.py [--steps N] [--out FILE]

funcopt's hyper-parameters may be traced values, so ``funcopt.adam(lr)`` can be built
*inside* a vmapped function: each lane of the vmap trains the same softmax-regression
model on 1,200 of scikit-learn's digits with its own learning rate, and the sweep
picks the rate with the lowest loss on the other 597. Everything (all learning rates,
all steps) is one ``jax.jit`` of one ``lax.scan``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import funcopt


def main(steps: int = 300, out: str | None = "lr_sweep.png") -> np.ndarray:
    digits = load_digits()
    x_all = jnp.asarray(digits.data / 16.0, jnp.float32)
    y_all = jnp.asarray(digits.target, jnp.int32)
    x, y, x_val, y_val = x_all[:1200], y_all[:1200], x_all[1200:], y_all[1200:]
    params0 = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    learning_rates = jnp.logspace(-4, 1, 11)  # 1e-4 ... 10

    def loss_fn(params, x, y):
        logits = x @ params["w"] + params["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train(lr: jax.Array) -> jax.Array:
        tx = funcopt.adam(lr)  # lr is a tracer here: one optimizer per vmap lane

        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, state = tx.update(grads, state, params)
            params = funcopt.apply_updates(params, updates)
            return (params, state), (loss, loss_fn(params, x_val, y_val))

        _, curves = jax.lax.scan(step, (params0, tx.init(params0)), None, length=steps)
        return curves

    losses, val = (np.asarray(c) for c in jax.jit(jax.vmap(train))(learning_rates))
    best = int(np.nanargmin(val[:, -1]))
    for lr, curve, v in zip(np.asarray(learning_rates), losses, val, strict=True):
        print(f"lr {lr:9.2e}  train loss {curve[-1]:.4f}  validation loss {v[-1]:.4f}")
    print(f"best learning rate (validation): {float(learning_rates[best]):.2e}")

    if out:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 4))
        ax_curves, ax_final = fig.subplots(1, 2)
        for lr, curve in zip(np.asarray(learning_rates), losses, strict=True):
            ax_curves.plot(curve, label=f"η={lr:.0e}")
        ax_curves.set(xlabel="steps", ylabel="loss", yscale="log")
        ax_curves.legend(fontsize=7, ncol=2)
        ax_final.semilogx(np.asarray(learning_rates), losses[:, -1], "o-", label="train")
        ax_final.semilogx(np.asarray(learning_rates), val[:, -1], "s-", label="validation")
        ax_final.set(xlabel="learning rate η", ylabel=f"loss after {steps} steps", yscale="log")
        ax_final.legend()
        for ax in (ax_curves, ax_final):
            ax.grid(linestyle="dotted", alpha=0.8)
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        print(f"wrote {out}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="lr_sweep.png", help="plot file ('' for none)")
    args = parser.parse_args()
    main(args.steps, args.out or None)

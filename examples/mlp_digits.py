"""An MLP on scikit-learn's bundled digits, trained by funcopt, optax and torch.optim.

    python examples/mlp_digits.py [--steps N] [--out FILE]

The three runs start from the same weights and see the same mini-batches, with Adam at
the same settings; the script prints the three losses side by side and plots the loss
curves (they lie on top of each other up to float32 rounding). The data ship with
scikit-learn (``load_digits``: 1,797 8×8 images), so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import itertools
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from sklearn.datasets import load_digits

import funcopt

SIZES = (64, 64, 10)
LEARNING_RATE = 3e-3
BATCH = 128


def init_params(seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "w": (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            "b": np.zeros(n_out, np.float32),
        }
        for n_in, n_out in itertools.pairwise(SIZES)
    ]


def loss_jax(params, x, y):
    h = jnp.tanh(x @ params[0]["w"] + params[0]["b"])
    logits = h @ params[1]["w"] + params[1]["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_jax(tx, apply_updates, params, batches):
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_jax)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return apply_updates(params, updates), state, loss

    losses = []
    for x, y in batches:
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss))
    return params, losses


def train_torch(params, batches):
    torch.set_num_threads(1)
    ws = [torch.tensor(layer[k]).requires_grad_() for layer in params for k in ("w", "b")]
    opt = torch.optim.Adam(ws, lr=LEARNING_RATE, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for x, y in batches:
        x, y = torch.from_numpy(x), torch.from_numpy(y).long()
        h = torch.tanh(x @ ws[0] + ws[1])
        loss = torch.nn.functional.cross_entropy(h @ ws[2] + ws[3], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return [
        {"w": ws[0].detach().numpy(), "b": ws[1].detach().numpy()},
        {"w": ws[2].detach().numpy(), "b": ws[3].detach().numpy()},
    ], losses


def main(steps: int = 600, out: str | None = "mlp_digits.png") -> dict[str, list[float]]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(steps):
        idx = rng.choice(len(x), BATCH, replace=False)
        batches.append((x[idx], y[idx]))
    params0 = init_params()

    final, curves = {}, {}
    final["funcopt"], curves["funcopt"] = train_jax(
        funcopt.adam(LEARNING_RATE), funcopt.apply_updates, params0, batches
    )
    final["optax"], curves["optax"] = train_jax(
        optax.adam(LEARNING_RATE), optax.apply_updates, params0, batches
    )
    final["torch"], curves["torch"] = train_torch(params0, batches)

    for i in range(0, steps, max(1, steps // 6)):
        print(f"step {i:4d}  " + "  ".join(f"{k} {v[i]:.5f}" for k, v in curves.items()))
    for other in ("optax", "torch"):
        diff = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(
                jax.tree.leaves(final["funcopt"]), jax.tree.leaves(final[other]), strict=True
            )
        )
        print(f"max |θ_funcopt − θ_{other}| after {steps} steps: {diff:.2e}")
    acc = float(
        jnp.mean(
            jnp.argmax(
                jnp.tanh(x @ final["funcopt"][0]["w"] + final["funcopt"][0]["b"])
                @ final["funcopt"][1]["w"]
                + final["funcopt"][1]["b"],
                axis=1,
            )
            == y
        )
    )
    print(f"training accuracy (funcopt): {acc:.3f}")

    if out:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
        for (name, losses), style in zip(curves.items(), ["-", "--", ":"], strict=True):
            ax.plot(losses, style, label=f"{name} Adam (η={LEARNING_RATE})")
        ax.set_yscale("log")
        ax.set_xlabel("steps")
        ax.set_ylabel("cross-entropy (mini-batch)")
        ax.grid(linestyle="dotted", alpha=0.8)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        print(f"wrote {out}")
    return curves


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="mlp_digits.png", help="plot file ('' for none)")
    args = parser.parse_args()
    main(args.steps, args.out or None)

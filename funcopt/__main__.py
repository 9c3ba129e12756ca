"""``funcopt`` command line: ``demo``, ``figures`` and ``bench``.

``python -m funcopt demo`` (what ``make demo`` runs) trains one small model twice, with
``funcopt.adam`` and with ``optax.adam``, from the same initialisation and on the same
batches, and prints per epoch both losses, the largest parameter difference and each
optimizer's median step time; then it writes the chapter's four figures.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp


def _mlp_init(key: jax.Array, sizes: Sequence[int]) -> list[dict[str, jax.Array]]:
    params = []
    for k, (n_in, n_out) in zip(
        jax.random.split(key, len(sizes) - 1), itertools.pairwise(sizes), strict=True
    ):
        params.append(
            {"w": jax.random.normal(k, (n_in, n_out)) / jnp.sqrt(n_in), "b": jnp.zeros(n_out)}
        )
    return params


def _mlp_loss(params: list[dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"][None, :])
    pred = x @ params[-1]["w"] + params[-1]["b"][None, :]
    return jnp.mean(jnp.square(pred - y))


def _make_step(tx: Any, apply: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    def step(params: Any, state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(_mlp_loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def demo(epochs: int = 5, steps_per_epoch: int = 100, batch: int = 128) -> float:
    """Train funcopt.adam and optax.adam side by side; return the final max |Δθ|."""
    import optax

    import funcopt

    key_data, key_init = jax.random.split(jax.random.PRNGKey(0))
    # A smooth regression target the MLP can fit: y = sin(x·a / 4) + 0.5 cos(x·b / 4).
    a, b = jax.random.normal(key_data, (2, 16, 1))
    params0 = _mlp_init(key_init, [16, 64, 64, 1])
    runs = {
        "funcopt": (funcopt.adam(3e-3), funcopt.apply_updates),
        "optax": (optax.adam(3e-3), optax.apply_updates),
    }
    states = {}
    for name, (tx, apply) in runs.items():
        p = jax.tree.map(jnp.copy, params0)
        states[name] = [p, tx.init(p), _make_step(tx, apply)]
    print(
        f"{'epoch':>5} {'loss funcopt':>13} {'loss optax':>13} {'max|Δθ|':>10} "
        f"{'step funcopt':>13} {'step optax':>11}"
    )
    max_diff = 0.0
    for epoch in range(1, epochs + 1):
        losses: dict[str, list[float]] = {n: [] for n in runs}
        times: dict[str, list[float]] = {n: [] for n in runs}
        for i in range(steps_per_epoch):
            x = jax.random.normal(jax.random.PRNGKey(epoch * 100_000 + i), (batch, 16))
            y = jnp.sin(x @ a / 4) + 0.5 * jnp.cos(x @ b / 4)
            # The batch is computed asynchronously: wait for it, or the first step timed
            # would absorb it. Interleaved, alternating who goes first, so machine noise
            # and warm caches favour neither.
            jax.block_until_ready((x, y))
            order = list(runs) if i % 2 == 0 else list(reversed(list(runs)))
            for name in order:
                p, s, step = states[name]
                t0 = time.perf_counter()
                p, s, loss = step(p, s, x, y)
                loss.block_until_ready()
                times[name].append(time.perf_counter() - t0)
                states[name][:2] = [p, s]
                losses[name].append(float(loss))
        max_diff = max(
            float(jnp.max(jnp.abs(u - v)))
            for u, v in zip(
                jax.tree.leaves(states["funcopt"][0]),
                jax.tree.leaves(states["optax"][0]),
                strict=False,
            )
        )
        med = {n: statistics.median(times[n][1:] or times[n]) * 1e3 for n in runs}
        print(
            f"{epoch:>5} {statistics.mean(losses['funcopt']):>13.6f} "
            f"{statistics.mean(losses['optax']):>13.6f} {max_diff:>10.2e} "
            f"{med['funcopt']:>10.3f} ms {med['optax']:>8.3f} ms"
        )
    return max_diff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="funcopt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="funcopt.adam vs optax.adam, then the chapter's figures")
    p_demo.add_argument("--epochs", type=int, default=5)
    p_demo.add_argument("--steps", type=int, default=100)
    p_demo.add_argument("--out", default="figures", help="where the figures go")
    p_demo.add_argument("--no-figures", action="store_true")
    p_fig = sub.add_parser("figures", help="regenerate the chapter's four figures")
    p_fig.add_argument("--out", default="figures")
    sub.add_parser("bench", help="benchmark against optax and torch.optim", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from funcopt import bench

        return bench.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        demo(epochs=args.epochs, steps_per_epoch=args.steps)
        if args.no_figures:
            return 0
    from funcopt import viz

    for path in viz.chapter_figures(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

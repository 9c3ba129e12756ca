"""``funcopt`` command line: ``demo``, ``figures`` and ``bench``.

``python -m funcopt demo`` (what ``make demo`` runs) trains one small model twice, with
``funcopt.adam`` and with ``optax.adam``, from the same initialisation and on the same
batches. It first says what it trains, on what and for how long; then prints per epoch
both losses, the largest parameter difference and each optimizer's median step time;
writes the chapter's four figures; and ends with a one-line verdict.
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

LAYERS = (16, 64, 64, 1)
"""The demo MLP's layer widths: 16 inputs, two tanh hidden layers of 64, one output."""
BATCH = 128
LEARNING_RATE = 3e-3
AGREE_TOL = 1e-4
"""Largest parameter difference still called agreement (float32 rounding is ~1e-7)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions' line breaks; appends ``(default: …)`` to every option that has
    a default and whose help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "(default" in text
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return text + " (default: %(default)s)"


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


def demo_problem(
    batch: int = BATCH,
) -> tuple[list[dict[str, jax.Array]], Callable[[int, int], tuple[jax.Array, jax.Array]]]:
    """The demo's initial MLP parameters and its data: ``batch_at(epoch, step)`` is the
    (x, y) batch of that step (epochs count from 1), the same for both optimizers.

    The target is a smooth regression the MLP can fit: ``y = sin(x·a / 4) + 0.5 cos(x·b / 4)``
    with ``x ~ N(0, I)`` and fixed random ``a``, ``b``.
    """
    key_data, key_init = jax.random.split(jax.random.PRNGKey(0))
    a, b = jax.random.normal(key_data, (2, LAYERS[0], 1))
    params0 = _mlp_init(key_init, LAYERS)

    def batch_at(epoch: int, step: int) -> tuple[jax.Array, jax.Array]:
        x = jax.random.normal(jax.random.PRNGKey(epoch * 100_000 + step), (batch, LAYERS[0]))
        return x, jnp.sin(x @ a / 4) + 0.5 * jnp.cos(x @ b / 4)

    return params0, batch_at


def max_abs_diff(a: Any, b: Any) -> float:
    """The largest |a − b| over every leaf of two pytrees of the same structure."""
    return max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _make_step(tx: Any, apply: Callable[[Any, Any], Any]) -> Any:
    """The jitted (params, state, x, y) -> (params, state, loss) step, params and state
    donated."""

    def step(params: Any, state: Any, x: jax.Array, y: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(_mlp_loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _say_what(epochs: int, steps_per_epoch: int, batch: int, n_params: int) -> None:
    widths = " → ".join(map(str, LAYERS))
    print("funcopt demo: one model trained twice, from the same start on the same batches")
    print(f"  model      MLP {widths} (tanh), {n_params:,} parameters, mean squared error")
    print(
        f"  data       a synthetic regression: x ~ N(0, I) in {LAYERS[0]} dimensions,"
        " y = sin(x·a/4) + 0.5 cos(x·b/4);"
    )
    print(f"             a fresh batch of {batch} every step, the same for both")
    print(f"  optimizers funcopt.adam({LEARNING_RATE:g}) and optax.adam({LEARNING_RATE:g})")
    print(
        f"  training   {_n(epochs, 'epoch')} × {_n(steps_per_epoch, 'step')} = "
        f"{_n(epochs * steps_per_epoch, 'step')} each, jit-compiled on {jax.default_backend()}"
    )


def demo(epochs: int = 5, steps_per_epoch: int = 100, batch: int = BATCH) -> float:
    """Train funcopt.adam and optax.adam side by side; return the final max |Δθ|."""
    import optax

    import funcopt

    params0, batch_at = demo_problem(batch)
    n_params = sum(int(leaf.size) for leaf in jax.tree.leaves(params0))
    _say_what(epochs, steps_per_epoch, batch, n_params)
    runs = {
        "funcopt": (funcopt.adam(LEARNING_RATE), funcopt.apply_updates),
        "optax": (optax.adam(LEARNING_RATE), optax.apply_updates),
    }
    print("compiling both train steps ...", end=" ", flush=True)
    t0 = time.perf_counter()
    x0, y0 = batch_at(1, 0)
    states = {}
    for name, (tx, apply) in runs.items():
        p = jax.tree.map(jnp.copy, params0)
        s = tx.init(p)
        states[name] = [p, s, _make_step(tx, apply).lower(p, s, x0, y0).compile()]
    print(f"{time.perf_counter() - t0:.1f} s", flush=True)
    print(
        f"{'epoch':>5} {'loss funcopt':>13} {'loss optax':>13} {'max|Δθ|':>10} "
        f"{'step funcopt':>13} {'step optax':>11}",
        flush=True,
    )
    max_diff = 0.0
    for epoch in range(1, epochs + 1):
        losses: dict[str, list[float]] = {n: [] for n in runs}
        times: dict[str, list[float]] = {n: [] for n in runs}
        for i in range(steps_per_epoch):
            x, y = batch_at(epoch, i)
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
        max_diff = max_abs_diff(states["funcopt"][0], states["optax"][0])
        med = {n: statistics.median(times[n][1:] or times[n]) * 1e3 for n in runs}
        print(
            f"{epoch:>5} {statistics.mean(losses['funcopt']):>13.6f} "
            f"{statistics.mean(losses['optax']):>13.6f} {max_diff:>10.2e} "
            f"{med['funcopt']:>10.3f} ms {med['optax']:>8.3f} ms",
            flush=True,
        )
    return max_diff


def verdict(max_diff: float, epochs: int, steps_per_epoch: int, figures: str | None) -> str:
    """The demo's last line: whether the two optimizers agree, and by how much."""
    after = f"after {_n(epochs, 'epoch')} of {_n(steps_per_epoch, 'step')}"
    where = f"; figures in {figures.rstrip('/')}/" if figures else ""
    if max_diff <= AGREE_TOL:
        return f"funcopt.adam and optax.adam agree to {max_diff:.2e} (max |Δθ|) {after}{where}"
    return (
        f"funcopt.adam and optax.adam DISAGREE: max |Δθ| = {max_diff:.2e} {after}, "
        f"more than the {AGREE_TOL:g} float32 rounding allows{where}"
    )


def _figures(out: str) -> None:
    from funcopt import viz

    names = ", ".join(viz.CHAPTER_FIGURES)
    print(f"writing the chapter's four figures to {out.rstrip('/')}/ as PNG and SVG")
    print(f"  ({names}: 300 steps each on the chapter's loss surface) ...", flush=True)
    for path in viz.chapter_figures(out):
        print(f"wrote {path}", flush=True)


DESCRIPTION = """\
funcopt's command line: a side-by-side demo, the chapter's figures, and a benchmark.
Run `funcopt COMMAND --help` for the options of one command."""

EPILOG = """\
examples:
  funcopt demo                          what `make demo` runs (about 10 s)
  funcopt demo --epochs 1 --no-figures  a few seconds
  funcopt figures --out figures
  funcopt bench --quick                 about 45 s
  funcopt bench --list-workloads"""

DEMO_DESCRIPTION = f"""\
Trains one small MLP ({" → ".join(map(str, LAYERS))}, tanh) on a synthetic regression
twice, with funcopt.adam and with optax.adam (learning rate {LEARNING_RATE:g}), from the
same initialisation and on the same batches of {BATCH}. Prints per epoch both mean
losses, the largest parameter difference max|Δθ| and each optimizer's median step
time; then writes the chapter's four figures; and ends with a one-line verdict.
Exits 1 if the parameters differ by more than {AGREE_TOL:g} (float32 rounding: ~1e-7)."""


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="funcopt", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    p_demo = sub.add_parser(
        "demo",
        help="train funcopt.adam and optax.adam side by side, then write the figures",
        description=DEMO_DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    p_demo.add_argument("--epochs", type=_positive, default=5, metavar="N", help="epochs to train")
    p_demo.add_argument("--steps", type=_positive, default=100, metavar="N", help="steps per epoch")
    p_demo.add_argument("--out", default="figures", metavar="DIR", help="where the figures go")
    p_demo.add_argument(
        "--no-figures", action="store_true", help="train only (default: figures are written)"
    )
    p_fig = sub.add_parser(
        "figures",
        help="write the chapter's four figures (PNG and SVG)",
        description="Writes the chapter's four figures (momentum, RMSProp, Adam, Adam at a "
        "large\nlearning rate on the chapter's loss surface) as PNG and SVG.",
        formatter_class=HelpFormatter,
    )
    p_fig.add_argument("--out", default="figures", metavar="DIR", help="where the figures go")
    sub.add_parser(
        "bench",
        help="time Adam and train steps: funcopt vs optax vs torch.optim "
        "(funcopt bench --help lists its options)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``funcopt`` command; returns the exit status."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from funcopt import bench

        return bench.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "figures":
        _figures(args.out)
        return 0
    max_diff = demo(epochs=args.epochs, steps_per_epoch=args.steps)
    if not args.no_figures:
        _figures(args.out)
    print(verdict(max_diff, args.epochs, args.steps, None if args.no_figures else args.out))
    return 0 if max_diff <= AGREE_TOL else 1


if __name__ == "__main__":
    raise SystemExit(main())

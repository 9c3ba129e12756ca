"""Regenerate the chapter's four figures, a sweep heat map, Adam's effective step and a race.

    python examples/chapter_figures.py [--out DIR] [--small]

Writes, into DIR (default ``figures``):

- ``chapter-momentum``, ``chapter-rmsprop``, ``chapter-adam`` and
  ``chapter-adam-large-lr``, each as ``.png`` and ``.svg`` (the chapter's figures);
- ``sweep-and-effective-step.png``: left, GDM's final loss over a grid of learning
  rates × β (all runs in one compiled ``vmap``); right, Adam's per-coordinate effective
  step size;
- ``race.gif``: GDM, RMSProp and Adam at η = 2.5 racing for 300 steps (60 frames,
  600 × 500 pixels).

They are the pictures in ``docs/images/`` (``mlp-digits.png`` comes from
``mlp_digits.py``). ``--small`` skips the chapter figures and
writes the other two at a small size (used by the tests)."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("MPLBACKEND", "Agg")

from matplotlib.figure import Figure

import funcopt
from funcopt import viz


def main(out: str = "figures", small: bool = False) -> list[str]:
    os.makedirs(out, exist_ok=True)
    steps = 40 if small else 300
    paths = [] if small else viz.chapter_figures(out)

    # A grid of learning rates × momentum values, one compiled vmap over all of them.
    lrs = [0.3, 1.0, 3.0] if small else [0.1, 0.3, 0.6, 1.0, 2.0, 3.0, 5.0]
    betas = [0.0, 0.9] if small else [0.0, 0.5, 0.8, 0.9, 0.95, 0.99]
    final = viz.sweep(lambda lr, b: funcopt.gdm(lr, b), lrs, betas, steps=steps)
    fig = Figure(figsize=(11, 4.5))
    ax_sweep, ax_step = fig.subplots(1, 2)
    viz.plot_sweep(lrs, betas, final, ax_sweep, title=f"GDM: final loss after {steps} steps")

    # Adam's per-coordinate step size η / (sqrt(v̂) + ε).
    eff = viz.adam_effective_step(0.3, steps=steps)
    viz.plot_effective_step(eff, ax_step, learning_rate=0.3)
    ax_step.set_title("Adam (η=0.3): effective step size per coordinate")
    fig.tight_layout()
    paths.append(os.path.join(out, "sweep-and-effective-step.png"))
    fig.savefig(paths[-1], dpi=100)

    runs = [
        viz.Run("GDM", (("η", 2.5), ("β", 0.9)), "grey"),
        viz.Run("RMSProp", (("η", 2.5), ("β", 0.9)), "black"),
        viz.Run("Adam", (("η", 2.5), ("β1", 0.9), ("β2", 0.999)), "blue"),
    ]
    paths.append(
        viz.animate_race(
            runs, os.path.join(out, "race.gif"), steps=steps, frames=5 if small else 60
        )
    )
    for p in paths:
        print(f"wrote {p}")
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures")
    parser.add_argument("--small", action="store_true", help="tiny run for the tests")
    args = parser.parse_args()
    main(args.out, args.small)

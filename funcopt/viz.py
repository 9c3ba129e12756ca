"""Loss surfaces, fast optimizer trajectories and the chapter's figures.

This module is imported on first use (``funcopt.viz``); matplotlib is imported inside
the plotting functions only, so the surfaces and the trajectory runner work without it.

* Surfaces: :func:`pathological` (the chapter's plateau loss), :func:`rosenbrock`,
  :func:`quadratic_bowl`, :func:`beale`. Each takes ``w`` of shape ``(..., 2)``.
* :func:`run_trajectory`: any funcopt or optax transform on a surface, all steps in one
  ``jax.lax.scan`` under ``jit``; returns the iterates and the losses.
* The chapter's two-panel figure (:func:`plot_runs`, :func:`chapter_figure`,
  :func:`chapter_figures`), built from :func:`plot_surface`, :func:`plot_path` and
  :func:`plot_loss`.
* Beyond the chapter: a learning-rate × β sweep in one compiled ``vmap``
  (:func:`sweep`, :func:`plot_sweep`), Adam's per-coordinate effective step size
  (:func:`adam_effective_step`, :func:`plot_effective_step`) and an animated race of
  several optimizers (:func:`animate_race`).

Every plotting function takes an optional ``ax`` and returns the axes it drew on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CHAPTER_FIGURES",
    "SURFACES",
    "ChapterFigure",
    "Run",
    "Trajectory",
    "adam_effective_step",
    "animate_race",
    "beale",
    "chapter_figure",
    "chapter_figures",
    "make_optimizer",
    "pathological",
    "plot_effective_step",
    "plot_loss",
    "plot_path",
    "plot_runs",
    "plot_surface",
    "plot_sweep",
    "quadratic_bowl",
    "rosenbrock",
    "run_label",
    "run_trajectory",
    "sweep",
]

from funcopt.surfaces import (
    SURFACES,
    LossFn,
    Run,
    Trajectory,
    beale,
    make_optimizer,
    pathological,
    quadratic_bowl,
    rosenbrock,
    run_label,
    run_trajectory,
)


class ChapterFigure(NamedTuple):
    """One of the chapter's figures: its runs and the limits of its panels."""

    runs: tuple[Run, ...]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    loss_ylim: tuple[float, float] | None = None
    legend_fontsize: float | None = 9


CHAPTER_FIGURES: dict[str, ChapterFigure] = {
    "momentum": ChapterFigure(
        runs=(
            Run("GDM", (("η", 3.0),), "red"),
            Run("GDM", (("η", 3.0), ("β", 0.9)), "black"),
        ),
        xlim=(-5, 5),
        ylim=(-7, 7),
        legend_fontsize=None,
    ),
    "rmsprop": ChapterFigure(
        runs=(
            Run("GDM", (("η", 0.6),), "red"),
            Run("RMSProp", (("η", 0.6), ("β", 0.9)), "black"),
        ),
        xlim=(-5, 5),
        ylim=(-7, 7),
        loss_ylim=(0, 2.5),
    ),
    "adam": ChapterFigure(
        runs=(
            Run("GDM", (("η", 0.3),), "red"),
            Run("GDM", (("η", 0.3), ("β", 0.9)), "gray"),
            Run("Adam", (("η", 0.3), ("β1", 0.9), ("β2", 0.999)), "blue"),
            Run("RMSProp", (("η", 0.3), ("β", 0.9)), "black"),
        ),
        xlim=(-5, 5),
        ylim=(-7, 7),
    ),
    "adam-large-lr": ChapterFigure(
        runs=(
            Run("GDM", (("η", 2.5),), "red"),
            Run("GDM", (("η", 2.5), ("β", 0.9)), "grey"),
            Run("RMSProp", (("η", 2.5), ("β", 0.9)), "black"),
            Run("Adam", (("η", 2.5), ("β1", 0.9), ("β2", 0.999)), "blue"),
        ),
        xlim=(-8, 8),
        ylim=(-10, 6),
    ),
}
"""The chapter's four figures (see ``figures.md``): runs in drawing order, colours, limits."""


# ---- plotting --------------------------------------------------------------------------


def current_axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.gca()


def plot_surface(
    loss_fn: LossFn = pathological,
    ax: Axes | None = None,
    *,
    extent: tuple[float, float, float, float] = (-10.0, 10.0, -10.0, 10.0),
    n: int = 50,
    levels: int = 20,
    cmap: str = "viridis",
) -> Axes:
    """Draw filled contours of ``loss_fn`` on an ``n × n`` grid over ``extent``.

    The chapter's defaults: 50 × 50 points over [-10, 10]², 20 levels, viridis; axes
    labelled ``w0`` and ``w1``.
    """
    ax = current_axes(ax)
    x0, x1, y0, y1 = extent
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    grid_x, grid_y = np.meshgrid(xs, ys)
    z = np.asarray(loss_fn(jnp.stack([jnp.asarray(grid_x), jnp.asarray(grid_y)], axis=-1)))
    ax.contourf(grid_x, grid_y, z, levels=levels, cmap=cmap)
    ax.set_xlabel("w0")
    ax.set_ylabel("w1")
    return ax


def plot_path(
    trajectory: Trajectory,
    ax: Axes | None = None,
    *,
    label: str | None = None,
    color: str | None = None,
    markersize: float = 2.0,
) -> Axes:
    """Draw a trajectory's iterates in the ``(w0, w1)`` plane: a line with a small dot at each."""
    ax = current_axes(ax)
    p = np.asarray(trajectory.params, dtype=np.float64)
    ax.plot(
        p[:, 0], p[:, 1], color=color, label=label, marker="o", markersize=markersize, linewidth=1
    )
    return ax


def plot_loss(
    trajectory: Trajectory,
    ax: Axes | None = None,
    *,
    label: str | None = None,
    color: str | None = None,
) -> Axes:
    """Draw a trajectory's loss against step (0 is the start point); axes ``steps``, ``loss``."""
    ax = current_axes(ax)
    losses = np.asarray(trajectory.losses, dtype=np.float64)
    ax.plot(np.arange(len(losses)), losses, color=color, label=label)
    ax.set_xlabel("steps")
    ax.set_ylabel("loss")
    return ax


def plot_runs(
    runs: Sequence[Run],
    axes: Sequence[Axes] | None = None,
    *,
    loss_fn: LossFn = pathological,
    w_init: Sequence[float] = (-4.0, 5.0),
    steps: int = 300,
    dtype: Any = jnp.float32,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    loss_ylim: tuple[float, float] | None = None,
    legend_fontsize: float | None = 9,
) -> tuple[Axes, Axes]:
    """The chapter's two-panel figure for a list of runs.

    Left: filled contours of ``loss_fn`` (see :func:`plot_surface`) with each run's
    path, zoomed to ``xlim``/``ylim``. Right: each run's loss against step, dotted grid.
    Both panels carry a legend with the chapter's labels (:func:`run_label`). Without
    ``axes`` a new 11 × 5 inch figure is made.

    Returns:
        The (surface, loss) axes.
    """
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 2, figsize=(11, 5))
    ax_surface, ax_loss = axes[0], axes[1]
    plot_surface(loss_fn, ax_surface)
    for run in runs:
        traj = run_trajectory(
            make_optimizer(run.optimizer, dict(run.hparams)), loss_fn, w_init, steps, dtype
        )
        label = run_label(run.optimizer, run.hparams)
        plot_path(traj, ax_surface, label=label, color=run.color)
        plot_loss(traj, ax_loss, label=label, color=run.color)
    if xlim is not None:
        ax_surface.set_xlim(*xlim)
    if ylim is not None:
        ax_surface.set_ylim(*ylim)
    if loss_ylim is not None:
        ax_loss.set_ylim(*loss_ylim)
    ax_loss.grid(linestyle="dotted", alpha=0.8)
    ax_surface.legend(fontsize=legend_fontsize)
    ax_loss.legend(fontsize=legend_fontsize)
    return ax_surface, ax_loss


def chapter_figure(name: str, *, steps: int = 300) -> Figure:
    """Build one of the chapter's figures (a key of :data:`CHAPTER_FIGURES`) as a new Figure.

    300 steps from ``w_init = (-4, 5)`` in float32 on :func:`pathological`, as in the
    chapter.
    """
    from matplotlib.figure import Figure

    spec = CHAPTER_FIGURES[name]
    fig = Figure(figsize=(11, 5))
    axes = fig.subplots(1, 2)
    plot_runs(
        spec.runs,
        axes,
        steps=steps,
        xlim=spec.xlim,
        ylim=spec.ylim,
        loss_ylim=spec.loss_ylim,
        legend_fontsize=spec.legend_fontsize,
    )
    fig.tight_layout()
    return fig


def chapter_figures(out_dir: str | os.PathLike[str], *, steps: int = 300) -> list[str]:
    """Write the chapter's four figures to ``out_dir`` as PNG and SVG; return the paths.

    Files are ``chapter-<name>.png`` and ``chapter-<name>.svg`` for each name in
    :data:`CHAPTER_FIGURES` (``momentum``, ``rmsprop``, ``adam``, ``adam-large-lr``).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in CHAPTER_FIGURES:
        fig = chapter_figure(name, steps=steps)
        for ext in ("png", "svg"):
            path = os.path.join(os.fspath(out_dir), f"chapter-{name}.{ext}")
            fig.savefig(path, dpi=100)
            paths.append(path)
    return paths


# The studies beyond the chapter live in funcopt.viz_studies; they are part of this API.
from funcopt.viz_studies import (  # noqa: E402
    adam_effective_step,
    animate_race,
    plot_effective_step,
    plot_sweep,
    sweep,
)

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

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
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

LossFn = Callable[[jax.Array], jax.Array]

# ---- loss surfaces ---------------------------------------------------------------------


def pathological(w: jax.Array) -> jax.Array:
    r"""The chapter's plateau loss: $f = \tanh(w_0)^2 + 0.01\,|w_1| + \sigma(w_1)$.

    Its infimum lies along ``w0 = 0`` as ``w1 → −∞``. For large ``|w0|`` the surface is
    flat (``tanh`` saturates), and for ``w1 ≫ 0`` the sigmoid saturates too, so plain
    gradient descent stalls on two plateaus.
    """
    w0, w1 = w[..., 0], w[..., 1]
    return jnp.tanh(w0) ** 2 + 0.01 * jnp.abs(w1) + jax.nn.sigmoid(w1)


def rosenbrock(w: jax.Array) -> jax.Array:
    r"""Rosenbrock's banana valley, $f = (1 - w_0)^2 + 100\,(w_1 - w_0^2)^2$; minimum at (1, 1)."""
    w0, w1 = w[..., 0], w[..., 1]
    return (1 - w0) ** 2 + 100 * (w1 - w0**2) ** 2


def quadratic_bowl(w: jax.Array) -> jax.Array:
    r"""An ill-conditioned bowl, $f = \tfrac12 (w_0^2 + 10\, w_1^2)$; minimum at the origin."""
    w0, w1 = w[..., 0], w[..., 1]
    return 0.5 * (w0**2 + 10 * w1**2)


def beale(w: jax.Array) -> jax.Array:
    r"""Beale's function; minimum 0 at (3, 0.5), steep walls and flat valleys.

    $$ f = (1.5 - w_0 + w_0 w_1)^2 + (2.25 - w_0 + w_0 w_1^2)^2 + (2.625 - w_0 + w_0 w_1^3)^2 $$
    """
    w0, w1 = w[..., 0], w[..., 1]
    return (
        (1.5 - w0 + w0 * w1) ** 2 + (2.25 - w0 + w0 * w1**2) ** 2 + (2.625 - w0 + w0 * w1**3) ** 2
    )


SURFACES: dict[str, LossFn] = {
    "pathological": pathological,
    "rosenbrock": rosenbrock,
    "quadratic_bowl": quadratic_bowl,
    "beale": beale,
}
"""The surfaces by name."""


# ---- trajectories ----------------------------------------------------------------------


class Trajectory(NamedTuple):
    """One optimizer run on a 2-D surface, logged as in the chapter.

    Attributes:
        params: ``(steps + 1, 2)``: the start point, then the point after each update.
        losses: ``(steps + 1,)``: ``f`` at the start point, then for each update the
            loss computed *before* that update (so ``losses[0] == losses[1]``).
        states: the optimizer state after each update (stacked along axis 0), or
            ``None`` unless ``record_states=True``.
    """

    params: jax.Array
    losses: jax.Array
    states: Any = None


@functools.partial(jax.jit, static_argnames=("tx", "loss_fn", "steps", "record_states"))
def _scan_run(
    tx: Any, loss_fn: LossFn, w0: jax.Array, steps: int, record_states: bool
) -> Trajectory:
    def body(carry: Any, _: None) -> tuple[Any, Any]:
        w, state = carry
        loss, grad = jax.value_and_grad(loss_fn)(w)
        updates, state = tx.update(grad, state, w)
        w = (w + updates.astype(w.dtype)).astype(w.dtype)
        return (w, state), (w, loss, state if record_states else None)

    _, (ws, losses, states) = jax.lax.scan(body, (w0, tx.init(w0)), None, length=steps)
    params = jnp.concatenate([w0[None], ws])
    losses = jnp.concatenate([loss_fn(w0)[None], losses])
    return Trajectory(params, losses, states)


def run_trajectory(
    tx: Any,
    loss_fn: LossFn = pathological,
    w_init: Sequence[float] | jax.Array = (-4.0, 5.0),
    steps: int = 300,
    dtype: Any = jnp.float32,
    *,
    record_states: bool = False,
) -> Trajectory:
    """Run ``steps`` updates of ``tx`` on ``loss_fn`` from ``w_init``: one ``scan`` under ``jit``.

    Each step evaluates the loss and its gradient at the current point, then applies
    one update of ``tx`` (a funcopt or optax transform, or anything with
    ``init``/``update``). The parameters are one array of shape ``(2,)`` in ``dtype``
    (float64 needs ``jax.enable_x64``). The compiled run is cached per
    ``(tx, loss_fn, steps)``; cached funcopt factories return the same ``tx`` for equal
    arguments, so re-running a configuration does not recompile.

    Returns:
        A :class:`Trajectory` logged as in the chapter: the start point and ``f`` there,
        then after each step the new point with the loss computed before that update.
    """
    w0 = jnp.asarray(w_init, dtype=dtype)
    return _scan_run(tx, loss_fn, w0, int(steps), bool(record_states))


# ---- the chapter's runs ----------------------------------------------------------------

_HPARAM_TEX = {"η": r"$\eta$", "β": r"$\beta$", "β1": r"$\beta_1$", "β2": r"$\beta_2$"}


class Run(NamedTuple):
    """One of the chapter's runs: optimizer name, hyper-parameters, colour.

    ``hparams`` is ``(("η", 3.0), ("β", 0.9))``-style pairs in the chapter's order;
    only the hyper-parameters the chapter set are listed (and shown in the label).
    """

    optimizer: str
    hparams: tuple[tuple[str, float], ...]
    color: str


def make_optimizer(optimizer: str, hparams: Mapping[str, Any]) -> Any:
    """The funcopt transform for a chapter optimizer name and its hyper-parameters.

    ``"GDM"`` → :func:`funcopt.gdm` (damped momentum, β = 0 if absent), ``"RMSProp"`` →
    :func:`funcopt.rmsprop` with ``eps=0`` (the chapter's has no ε), ``"Adam"`` →
    :func:`funcopt.adam` (ε = 1e-8). Hyper-parameter keys: ``η``, ``β``, ``β1``, ``β2``;
    values may be traced (this is how :func:`sweep` vmaps over them).
    """
    import funcopt

    eta = hparams["η"]
    if optimizer == "GDM":
        return funcopt.gdm(eta, hparams.get("β", 0.0))
    if optimizer == "RMSProp":
        return funcopt.rmsprop(eta, decay=hparams.get("β", 0.9), eps=0.0)
    if optimizer == "Adam":
        return funcopt.adam(eta, b1=hparams.get("β1", 0.9), b2=hparams.get("β2", 0.999))
    raise ValueError(f"unknown optimizer {optimizer!r}: expected GDM, RMSProp or Adam")


def run_label(optimizer: str, hparams: Sequence[tuple[str, float]]) -> str:
    r"""The chapter's legend label, e.g. ``GDM ($\eta$=3.0, $\beta$=0.9)``.

    Rendered by matplotlib's mathtext as ``GDM (η=3.0, β=0.9)``;
    ``Adam ($\eta$=0.3, $\beta_1$=0.9, $\beta_2$=0.999)`` as ``Adam (η=0.3, β₁=0.9, β₂=0.999)``.
    """
    inner = ", ".join(f"{_HPARAM_TEX.get(k, k)}={v!r}" for k, v in hparams)
    return f"{optimizer} ({inner})"


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

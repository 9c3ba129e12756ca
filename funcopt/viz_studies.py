"""Studies beyond the chapter, re-exported by :mod:`funcopt.viz` (imported on first use).

A learning-rate × β sweep in one compiled ``vmap`` (:func:`sweep`, :func:`plot_sweep`),
Adam's per-coordinate effective step size (:func:`adam_effective_step`,
:func:`plot_effective_step`) and an animated race of several optimizers
(:func:`animate_race`). Every plotting function takes an optional ``ax`` and returns it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["adam_effective_step", "animate_race", "plot_effective_step", "plot_sweep", "sweep"]

from funcopt.surfaces import LossFn, Run, make_optimizer, pathological, run_label, run_trajectory

# ---- beyond the chapter: a hyper-parameter sweep in one vmap ---------------------------


def sweep(
    make_tx: Callable[[jax.Array, jax.Array], Any],
    learning_rates: Sequence[float] | jax.Array,
    betas: Sequence[float] | jax.Array,
    *,
    loss_fn: LossFn = pathological,
    w_init: Sequence[float] = (-4.0, 5.0),
    steps: int = 300,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Final loss for every ``(learning rate, β)`` pair, all runs in one compiled ``vmap``.

    ``make_tx(lr, beta)`` builds the transform from traced scalars (e.g.
    ``lambda lr, b: funcopt.gdm(lr, b)``). The final loss is ``f`` at the last iterate.

    Returns:
        An array of shape ``(len(learning_rates), len(betas))``.
    """
    lrs = jnp.asarray(learning_rates, dtype)
    bs = jnp.asarray(betas, dtype)
    w0 = jnp.asarray(w_init, dtype)

    def final_loss(lr: jax.Array, beta: jax.Array) -> jax.Array:
        tx = make_tx(lr, beta)

        def body(carry: Any, _: None) -> tuple[Any, None]:
            w, state = carry
            updates, state = tx.update(jax.grad(loss_fn)(w), state, w)
            return ((w + updates.astype(w.dtype)).astype(w.dtype), state), None

        (w, _), _ = jax.lax.scan(body, (w0, tx.init(w0)), None, length=steps)
        return loss_fn(w)

    grid = jax.vmap(jax.vmap(final_loss, in_axes=(None, 0)), in_axes=(0, None))
    return jax.jit(grid)(lrs, bs)


def plot_sweep(
    learning_rates: Sequence[float],
    betas: Sequence[float],
    final_losses: Any,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Axes:
    """Draw the final losses of :func:`sweep` as a heat map (rows β, columns learning rate).

    Each cell is annotated with its loss; diverged runs (NaN or inf) are left blank.
    """
    from funcopt.viz import current_axes  # viz imports this module: no import cycle

    ax = current_axes(ax)
    z = np.asarray(final_losses, dtype=np.float64).T  # rows: β, columns: η
    masked = np.ma.masked_invalid(z)
    im = ax.imshow(masked, origin="lower", cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(learning_rates)), [f"{v:g}" for v in learning_rates])
    ax.set_yticks(range(len(betas)), [f"{v:g}" for v in betas])
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("β")
    bright = (
        np.asarray(im.norm(z), dtype=np.float64) < 0.5
    )  # the low end of viridis_r is yellow: write on it in black
    for (i, j), v in np.ndenumerate(z):
        if np.isfinite(v):
            color = "black" if bright[i, j] else "white"
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.figure.colorbar(im, ax=ax, label="final loss")
    if title:
        ax.set_title(title)
    return ax


# ---- beyond the chapter: Adam's effective step size ------------------------------------


def adam_effective_step(
    learning_rate: float = 0.3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    loss_fn: LossFn = pathological,
    w_init: Sequence[float] = (-4.0, 5.0),
    steps: int = 300,
    dtype: Any = jnp.float32,
) -> jax.Array:
    r"""Adam's per-coordinate effective step size $\eta / (\sqrt{\hat v_t} + \epsilon)$ per step.

    Runs :func:`funcopt.adam` with :func:`run_trajectory` and reads ``v`` and ``t`` from
    its recorded state. The update is this factor times $\hat m_t$.

    Returns:
        An array of shape ``(steps, 2)``: row ``t − 1`` holds the factor used by update ``t``.
    """
    import funcopt

    traj = run_trajectory(
        funcopt.adam(learning_rate, b1, b2, eps), loss_fn, w_init, steps, dtype, record_states=True
    )
    states = traj.states
    t = _tree_get(states, "count").astype(dtype)[:, None]
    v_hat = _tree_get(states, "nu") / (1 - jnp.asarray(b2, dtype) ** t)
    return learning_rate / (jnp.sqrt(v_hat) + eps)


def _tree_get(tree: Any, name: str) -> Any:
    """The one field called ``name`` in a state (``optax.tree_utils.tree_get``)."""
    import optax

    return optax.tree_utils.tree_get(tree, name)


def plot_effective_step(
    effective_step: Any,
    ax: Axes | None = None,
    *,
    learning_rate: float | None = None,
) -> Axes:
    """Draw each coordinate's effective step size against the update number (log scale).

    With ``learning_rate``, a dashed line marks η, the step Adam takes while its
    gradients keep one sign.
    """
    from funcopt.viz import current_axes  # viz imports this module: no import cycle

    ax = current_axes(ax)
    s = np.asarray(effective_step, dtype=np.float64)
    t = np.arange(1, len(s) + 1)
    for i in range(s.shape[1]):
        ax.plot(t, s[:, i], label=f"w{i}")
    if learning_rate is not None:
        ax.axhline(learning_rate, color="gray", linestyle="--", label="η")
    ax.set_yscale("log")
    ax.set_xlabel("steps")
    ax.set_ylabel(r"$\eta / (\sqrt{\hat v_t} + \epsilon)$")
    ax.grid(linestyle="dotted", alpha=0.8)
    ax.legend()
    return ax


# ---- beyond the chapter: an animated race ----------------------------------------------


def animate_race(
    runs: Sequence[Run],
    out_path: str | os.PathLike[str],
    *,
    loss_fn: LossFn = pathological,
    w_init: Sequence[float] = (-4.0, 5.0),
    steps: int = 300,
    frames: int = 60,
    fps: int = 15,
    extent: tuple[float, float, float, float] = (-8.0, 8.0, -10.0, 6.0),
    dpi: float = 100,
) -> str:
    """Write a GIF of several optimizers racing across ``loss_fn`` from ``w_init``.

    Each frame shows the contours, every run's path so far and its current point;
    ``frames`` frames are spread evenly over ``steps`` updates, drawn at ``dpi`` on a
    6 × 5 inch canvas. Uses matplotlib's ``PillowWriter``.

    Returns:
        The path written.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    trajs = [
        np.asarray(
            run_trajectory(make_optimizer(r.optimizer, dict(r.hparams)), loss_fn, w_init, steps)[0],
            dtype=np.float64,
        )
        for r in runs
    ]
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    from funcopt.viz import plot_surface

    plot_surface(loss_fn, ax, extent=(-10.0, 10.0, -10.0, 10.0))
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    lines = [
        ax.plot([], [], color=r.color, label=run_label(r.optimizer, r.hparams), linewidth=1)[0]
        for r in runs
    ]
    heads = [ax.plot([], [], "o", color=r.color, markersize=6)[0] for r in runs]
    ax.legend(fontsize=7, loc="upper right")
    title = ax.set_title("step 0")
    ends = np.linspace(0, steps, frames).round().astype(int)

    def draw(frame: int) -> list[Any]:
        k = ends[frame]
        for line, head, p in zip(lines, heads, trajs, strict=True):
            line.set_data(p[: k + 1, 0], p[: k + 1, 1])
            head.set_data(p[k : k + 1, 0], p[k : k + 1, 1])
        title.set_text(f"step {k}")
        return [*lines, *heads, title]

    anim = FuncAnimation(fig, draw, frames=frames, blit=False)
    out = os.fspath(out_path)
    anim.save(out, writer=PillowWriter(fps=fps), dpi=dpi)
    return out

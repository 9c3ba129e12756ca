"""Optimizers on 2-D loss surfaces: the surfaces, runs, and the trajectory runner.

Pure JAX (no matplotlib): :mod:`funcopt.viz` draws what this module computes and
re-exports it.

* Surfaces: :func:`pathological` (the chapter's plateau loss), :func:`rosenbrock`,
  :func:`quadratic_bowl`, :func:`beale`. Each takes ``w`` of shape ``(..., 2)``.
* :func:`run_trajectory`: any funcopt or optax transform on a surface, all steps in one
  ``jax.lax.scan`` under ``jit``; returns the iterates and the losses.
* :class:`Run`, :func:`make_optimizer`, :func:`run_label`: the chapter's runs, by name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "SURFACES",
    "LossFn",
    "Run",
    "Trajectory",
    "beale",
    "make_optimizer",
    "pathological",
    "quadratic_bowl",
    "rosenbrock",
    "run_label",
    "run_trajectory",
]

LossFn = Callable[[jax.Array], jax.Array]
"""A loss on the plane: ``w`` of shape ``(..., 2)`` to a value of shape ``(...)``."""


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

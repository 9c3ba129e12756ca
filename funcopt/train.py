"""One jitted train step: gradient, optimizer update and parameter update in one region.

:func:`make_train_step` builds ``step(params, opt_state, *batch)`` and returns it
jitted with the parameters and optimizer state *donated*: XLA writes the new values
into the buffers of the old ones instead of allocating fresh ones every step. That is
the fast path (about 5× on a memory-bound optimizer step, and no extra peak memory; see
``docs/performance.md``), so it is the default. After a donated call the arrays passed
as ``params`` and ``opt_state`` are deleted: always rebind them to the step's outputs::

    step = funcopt.make_train_step(loss_fn, funcopt.adam(1e-3))
    for x, y in batches:
        params, opt_state, loss = step(params, opt_state, x, y)

Ensembles: ``jax.vmap`` the jitted step itself. It stays one compiled, donated call
(the parameters and state carry a leading member axis; build the state with
``jax.vmap(tx.init)(params)``); ``None`` in ``in_axes`` shares a batch argument::

    step = funcopt.make_train_step(loss_fn, tx)
    ensemble_step = jax.vmap(step, in_axes=(0, 0, None, None))

The pure step (``jit=False``) is there for ``lax.scan`` or a ``jax.jit`` of your own.

Sharded inputs need nothing special: the jitted step follows the shardings of its
arguments (e.g. parameters placed with ``jax.NamedSharding``) and donation keeps the
new parameters in the same shards. Build the state under jit, ``jax.jit(tx.init)(params)``,
so it is made on the parameters' devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from funcopt.base import GradientTransformation, OptState, Params
from funcopt.trees import apply_updates

__all__ = ["TrainStep", "make_train_step"]

TrainStep = Callable[..., tuple[Any, ...]]
"""``step(params, opt_state, *batch) -> (params, opt_state, loss)`` (``+ (aux,)`` with
``has_aux``)."""


def _pure_step(
    loss_fn: Callable[..., Any], tx: GradientTransformation | Any, has_aux: bool
) -> TrainStep:
    """The un-jitted train step: value-and-grad, ``tx.update``, ``apply_updates``."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def step(params: Params, opt_state: OptState, *batch: Any) -> tuple[Any, ...]:
        value, grads = grad_fn(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = apply_updates(params, updates)
        if has_aux:
            loss, aux = value
            return params, opt_state, loss, aux
        return params, opt_state, value

    return step


def make_train_step(
    loss_fn: Callable[..., Any],
    tx: GradientTransformation | Any,
    *,
    has_aux: bool = False,
    donate: bool = True,
    jit: bool = True,
    static_argnums: Sequence[int] = (),
) -> TrainStep:
    """Build ``step(params, opt_state, *batch) -> (params, opt_state, loss[, aux])``.

    The step computes ``loss, grads = value_and_grad(loss_fn)(params, *batch)``, then
    ``updates, opt_state = tx.update(grads, opt_state, params)`` and
    ``params = apply_updates(params, updates)``, all in one jitted region.

    Args:
        loss_fn: ``loss_fn(params, *batch)`` returning a scalar loss, or
            ``(loss, aux)`` with ``has_aux=True``.
        tx: a funcopt (or optax) gradient transformation.
        has_aux: ``loss_fn`` returns ``(loss, aux)``; the step then returns ``aux`` last.
        donate: donate ``params`` and ``opt_state`` (default): their buffers are reused
            for the outputs and the arrays passed in are deleted by the call.
        jit: return the jitted step (default); ``False`` returns the pure function,
            for use under ``jax.vmap``, ``lax.scan`` or your own ``jax.jit``.
        static_argnums: positions (counting ``params`` as 0) of static arguments
            among ``batch``, passed on to ``jax.jit``.

    Returns:
        The step function; when jitted it has ``.lower(...)`` like any ``jax.jit``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> loss = lambda p, x: jnp.sum((p["w"] * x) ** 2)
        >>> step = funcopt.make_train_step(loss, funcopt.sgd(0.1))
        >>> params = {"w": jnp.ones(2)}
        >>> params, state, value = step(params, funcopt.sgd(0.1).init(params), jnp.ones(2))
        >>> params["w"]
        Array([0.8, 0.8], dtype=float32)
    """
    step = _pure_step(loss_fn, tx, has_aux)
    if not jit:
        return step
    return jax.jit(
        step, donate_argnums=(0, 1) if donate else (), static_argnums=tuple(static_argnums)
    )

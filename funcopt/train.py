"""One jitted train step: gradient, optimizer update and parameter update in one region.

:func:`make_train_step` builds ``step(params, opt_state, *batch)`` and returns it
jitted with the parameters and optimizer state *donated*: XLA writes the new values
into the buffers of the old ones instead of allocating fresh ones every step. That is
the fast path (3.8× on a memory-bound 16M-parameter Adam step, and no extra peak memory;
see ``docs/performance.md``), so it is the default. After a donated call the arrays passed
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
from funcopt.fused import ordered_update_and_apply, runs_segmented, segmented_update_and_apply
from funcopt.packed_views import packed_value_and_grad, views
from funcopt.packing import Packed, PackedOptState, pack, runs_flat
from funcopt.trees import apply_updates

__all__ = ["PackedStep", "TrainStep", "make_packed_train_step", "make_train_step"]

TrainStep = Callable[..., tuple[Any, ...]]
"""``step(params, opt_state, *batch) -> (params, opt_state, loss)`` (``+ (aux,)`` with
``has_aux``)."""


def _pure_step(
    loss_fn: Callable[..., Any],
    tx: GradientTransformation | Any,
    has_aux: bool,
    fused: bool | None = None,
) -> TrainStep:
    """The un-jitted train step: value-and-grad, then ``tx.update`` and ``apply_updates``
    (:func:`~funcopt.update_and_apply`)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def step(params: Params, opt_state: OptState, *batch: Any) -> tuple[Any, ...]:
        value, grads = grad_fn(params, *batch)
        params, opt_state, value = ordered_update_and_apply(
            tx, grads, opt_state, params, value, fused
        )
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
    fused: bool | None = None,
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
        fused: the one-pass Adam kernel for :func:`~funcopt.adam` and
            :func:`~funcopt.adamw` on CPU (:func:`~funcopt.update_and_apply`): ``None``
            (default) where it applies, ``True`` always (an error where it cannot run),
            ``False`` never. The numbers are the same either way.

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
    step = _pure_step(loss_fn, tx, has_aux, fused)
    if not jit:
        return step
    return jax.jit(
        step, donate_argnums=(0, 1) if donate else (), static_argnums=tuple(static_argnums)
    )


# ---- the packed train step --------------------------------------------------------------

PackedStep = Callable[..., tuple[Any, ...]]
"""``step(packed, opt_state, *batch) -> (packed, opt_state, loss)`` (``+ (aux,)``)."""


def make_packed_train_step(
    loss_fn: Callable[..., Any],
    tx: GradientTransformation | Any,
    *,
    has_aux: bool = False,
    donate: bool = True,
    jit: bool = True,
    elementwise: bool | None = None,
    fused: bool | None = None,
) -> PackedStep:
    """A train step whose parameters and optimizer state stay packed across steps.

    ``step(packed, opt_state, *batch) -> (packed, opt_state, loss[, aux])`` where
    ``packed`` comes from :func:`pack` and ``opt_state`` from :func:`packed_init`.
    ``loss_fn(params, *batch)`` receives the ordinary pytree, as
    :func:`~funcopt.views` of the buffers: slices at offsets the compiler cannot see, so
    that all leaves of one shape share a compiled kernel and the step compiles no slower
    than the tree step. For an elementwise ``tx`` the gradient is taken with respect to
    the buffers (:func:`~funcopt.packed_value_and_grad`) and comes out packed. Numbers
    equal those of :func:`funcopt.make_train_step` up to float rounding.

    Args:
        loss_fn: as for :func:`funcopt.make_train_step`.
        tx: any gradient transformation.
        has_aux: ``loss_fn`` returns ``(loss, aux)``.
        donate: donate the packed parameters and the state (default).
        jit: return the jitted step (default) or the pure function.
        elementwise: run ``tx`` on the flat buffers (True) or on the tree view (False);
            default :func:`is_elementwise` ``(tx)``. Forcing True on a transform with
            per-leaf structure gives wrong numbers.
        fused: funcopt's kernels on the flat buffers (elementwise mode only; ``True`` in
            tree mode is an error): for Adam, AdamW, GD, GDM, SGD (with or without
            momentum), Lion, RMSProp and AdaGrad on CPU the gradient is taken leaf by leaf
            and each buffer is updated in place from its leaves' gradients, so no packed
            copy of the gradient is made (memory: params + grads + state); ``None`` where
            it applies, ``False`` never, ``True`` everywhere or an error saying why not
            (:func:`~funcopt.packed_update_and_apply`).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> loss_fn = lambda p, x: jnp.sum((p["w"] * x) ** 2) / 2  # gradient w · x²
        >>> tx = funcopt.sgd(0.5)
        >>> packed = funcopt.pack({"w": jnp.array([1.0, 2.0])})
        >>> opt_state = funcopt.packed_init(tx, packed)
        >>> step = funcopt.make_packed_train_step(loss_fn, tx)
        >>> packed, opt_state, loss = step(packed, opt_state, jnp.ones(2))
        >>> float(loss), funcopt.unpack(packed)["w"]
        (2.5, Array([0.5, 1. ], dtype=float32))
    """
    flat = runs_flat(elementwise, tx)
    if fused and not flat:
        raise ValueError("make_packed_train_step(fused=True) needs the elementwise mode")

    def step(params: Packed, opt_state: OptState, *batch: Any) -> tuple[Any, ...]:
        layout = params.layout
        if not isinstance(opt_state, PackedOptState) or isinstance(opt_state.inner, Packed) == flat:
            raise TypeError(
                "make_packed_train_step: the optimizer state was not made for this mode "
                f"(elementwise={flat}); build it with packed_init(tx, packed)"
            )
        stamp, opt_state = opt_state.stamp, opt_state.inner
        if flat and runs_segmented(tx, params, fused):
            # A kernel takes the gradient leaf by leaf, as the model makes it, and
            # updates the buffers in place: no packed copy of the gradient exists.
            tree = views(params)
            value, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(tree, *batch)
            buffers, opt_state, value = segmented_update_and_apply(
                tx, grads, opt_state, params, value, fused
            )
            new = Packed(buffers, layout)
        elif flat:
            # The loss sees views() of the buffers (one compiled kernel per leaf shape, not
            # per leaf) and the gradient is taken w.r.t. the buffers: it comes out packed.
            value, grads = packed_value_and_grad(loss_fn, has_aux=has_aux)(params, *batch)
            buffers, opt_state, value = ordered_update_and_apply(
                tx, grads.buffers, opt_state, params.buffers, value, fused
            )
            new = Packed(tuple(buffers), layout)
        else:
            tree = views(params)
            value, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(tree, *batch)
            updates, inner = tx.update(grads, views(opt_state), tree)
            new = pack(apply_updates(tree, updates), layout)
            opt_state = pack(inner, opt_state.layout)
        opt_state = PackedOptState(stamp, opt_state)
        if has_aux:
            loss, aux = value
            return new, opt_state, loss, aux
        return new, opt_state, value

    if not jit:
        return step
    return _CheckedStep(jax.jit(step, donate_argnums=(0, 1) if donate else ()))


class _CheckedStep:
    """The jitted packed step, checking the layout stamp of a state it did not make.

    A state returned by the previous call is trusted (no device read in the loop); any
    other (the first, or one restored from a checkpoint) has its stamp read once.
    ``lower`` and the rest of ``jax.jit``'s methods are the jitted function's.
    """

    def __init__(self, jitted: Any) -> None:
        self._jitted = jitted
        self._made: Any = None

    def __call__(self, params: Packed, opt_state: OptState, *batch: Any) -> tuple[Any, ...]:
        if opt_state is not self._made and isinstance(opt_state, PackedOptState):
            opt_state.stamp.check(params.layout)
        out = self._jitted(params, opt_state, *batch)
        self._made = out[1]
        return out  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jitted, name)

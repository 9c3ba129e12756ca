"""Packed parameters and optimizer state: contiguous buffers instead of many leaves.

A jitted step over a pytree pays a fixed cost per leaf at the jit boundary (each donated
or returned buffer is a few microseconds), and its compile time grows with the number of
leaves. For a model with a thousand small leaves that overhead, not the arithmetic, is
the step time (``docs/performance.md``). Packing removes it: the parameters (and the
optimizer state) live in one 1-D buffer per dtype (large leaves, which pay no such
overhead, keep a flat buffer each), and the pytree your loss function sees
is recovered *inside* jit as static slices of those buffers, which XLA fuses away::

    packed = funcopt.pack(params)                 # flat buffers + static layout
    opt_state = funcopt.packed_init(tx, packed)
    step = funcopt.make_packed_train_step(loss_fn, tx)
    for x, y in batches:
        packed, opt_state, loss = step(packed, opt_state, x, y)
    params = funcopt.unpack(packed)               # the pytree again

How the optimizer runs on the buffers is decided for you, so correctness never depends
on knowing an optimizer's internals:

- An *elementwise* transform (Adam, AdamW without a mask, SGD, RMSProp, ...: each output
  coordinate depends only on the same coordinate of its inputs and on scalars) runs
  directly on the flat buffers: one fused pass per dtype, state as flat buffers too.
- Any other transform (per-leaf norms as in LAMB's trust ratio, per-matrix
  orthogonalisation, factored moments, masks, optax transforms, your own) runs on the
  tree view of the buffers, and its state is packed by dtype around the call. Numbers
  are those of tree mode; only the jit-boundary cost is saved.

:func:`is_elementwise` makes the choice from a registry of funcopt's elementwise
transforms (compositions are walked); anything it does not know is treated as
per-leaf. :func:`register_elementwise` adds your own transforms to the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import GradientTransformation, OptState, Params, Updates
from funcopt.trees import apply_updates

__all__ = [
    "Layout",
    "Packed",
    "PackedStep",
    "is_elementwise",
    "make_packed_train_step",
    "pack",
    "packed_init",
    "packed_state",
    "unpack",
]


# ---- layout and the two views ----------------------------------------------------------


class Slot(NamedTuple):
    """Where one leaf lives: buffer index, offset into it, and the leaf's shape."""

    buffer: int
    offset: int
    shape: tuple[int, ...]


class Layout(NamedTuple):
    """Static description of a packed pytree (hashable: part of the jit cache key).

    Attributes:
        treedef: the pytree structure.
        slots: one :class:`Slot` per leaf, in ``jax.tree.leaves`` order.
        dtypes: the dtype name of each buffer (a dtype repeats for large leaves).
        sizes: the number of elements of each buffer.
    """

    treedef: Any
    slots: tuple[Slot, ...]
    dtypes: tuple[str, ...]
    sizes: tuple[int, ...]


SOLO_SIZE = 1 << 16
"""Leaves with at least this many elements keep a buffer of their own (see :func:`pack`)."""


def layout_of(tree: Any, *, solo_size: int | None = SOLO_SIZE) -> Layout:
    """The layout :func:`pack` uses for ``tree``.

    Leaves smaller than ``solo_size`` elements are grouped by dtype, in tree order, one
    buffer per dtype; each leaf of ``solo_size`` elements or more gets a buffer of its
    own (``None``: every leaf is grouped).
    """
    leaves, treedef = jax.tree.flatten(tree)
    dtypes: list[str] = []
    sizes: list[int] = []
    shared: dict[str, int] = {}
    slots = []
    for leaf in leaves:
        dtype = jnp.dtype(jnp.result_type(leaf)).name
        shape = tuple(int(d) for d in jnp.shape(leaf))
        size = int(np.prod(shape, dtype=np.int64))
        solo = solo_size is not None and size >= solo_size
        if solo or dtype not in shared:
            dtypes.append(dtype)
            sizes.append(0)
            if not solo:
                shared[dtype] = len(dtypes) - 1
        b = len(dtypes) - 1 if solo else shared[dtype]
        slots.append(Slot(b, sizes[b], shape))
        sizes[b] += size
    return Layout(treedef, tuple(slots), tuple(dtypes), tuple(sizes))


@dataclasses.dataclass(frozen=True)
class Packed:
    """A pytree stored as a few 1-D buffers (small leaves grouped by dtype).

    Only ``buffers`` are pytree leaves (what jit donates and returns); ``layout`` is
    static. A frozen dataclass rather than a NamedTuple, because a NamedTuple's fields
    would all be pytree children.

    Attributes:
        buffers: 1-D arrays, in ``layout.dtypes`` order.
        layout: the :class:`Layout` to recover the tree with :func:`unpack`.
    """

    buffers: tuple[jax.Array, ...]
    layout: Layout

    @property
    def nbytes(self) -> int:
        """Total bytes of the buffers."""
        return sum(int(b.size) * jnp.dtype(b.dtype).itemsize for b in self.buffers)


jax.tree_util.register_dataclass(Packed, data_fields=["buffers"], meta_fields=["layout"])


def pack(tree: Any, layout: Layout | None = None, *, solo_size: int | None = SOLO_SIZE) -> Packed:
    """Concatenate a pytree's small leaves into one 1-D buffer per dtype.

    Leaves of ``solo_size`` elements or more (default 65 536) are kept as buffers of
    their own, flattened: for them the per-leaf cost at the jit boundary is negligible
    next to their arithmetic, while gathering them costs a copy per step (on XLA:CPU a
    concatenate of large operands runs at a sixth of copy bandwidth, which made a
    fully packed MLP step twice as slow as the tree step; ``docs/performance.md``).
    ``solo_size=None`` packs every leaf.

    Works eagerly and under jit (where it is one concatenate per shared buffer).
    ``layout`` defaults to :func:`layout_of` ``(tree, solo_size=solo_size)``; pass one to
    pack a tree of the same structure into a known layout. Every buffer is freshly
    allocated, so the result can be donated.

    Args:
        tree: a pytree of arrays (any dtypes; each buffer holds one dtype).
        layout: a :class:`Layout` to pack into (its tree structure must match ``tree``;
            leaves are cast to its dtypes), or ``None`` to compute one.
        solo_size: leaves with at least this many elements get a buffer of their own;
            ``None`` groups every leaf. Ignored when ``layout`` is given.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3), "big": jnp.zeros(70_000)}
        >>> packed = funcopt.pack(params)
        >>> len(packed.buffers), [b.shape for b in packed.buffers]
        (2, [(9,), (70000,)])
        >>> len(funcopt.pack(params, solo_size=None).buffers)
        1
    """
    layout = layout_of(tree, solo_size=solo_size) if layout is None else layout
    leaves = layout.treedef.flatten_up_to(tree)
    groups: list[list[jax.Array]] = [[] for _ in layout.dtypes]
    for leaf, slot in zip(leaves, layout.slots, strict=True):
        groups[slot.buffer].append(jnp.ravel(jnp.asarray(leaf, layout.dtypes[slot.buffer])))
    buffers = tuple(
        jnp.concatenate(g) if len(g) > 1 else jnp.array(g[0], copy=True) for g in groups
    )
    return Packed(buffers, layout)


def _views(buffers: tuple[jax.Array, ...], layout: Layout) -> list[jax.Array]:
    """The leaves as static slices of the buffers (``lax.split``, whose transpose is a
    concatenate, so gradients come back packed without per-leaf scatters)."""
    pieces: list[list[jax.Array]] = []
    for b, buf in enumerate(buffers):
        sizes = [int(np.prod(s.shape, dtype=np.int64)) for s in layout.slots if s.buffer == b]
        pieces.append(list(jax.lax.split(buf, sizes)) if len(sizes) > 1 else [buf])
    taken = [0] * len(buffers)
    leaves = []
    for slot in layout.slots:
        leaves.append(pieces[slot.buffer][taken[slot.buffer]].reshape(slot.shape))
        taken[slot.buffer] += 1
    return leaves


def unpack(packed: Packed) -> Any:
    """The pytree a :class:`Packed` holds (leaves are views inside jit, copies outside).

    Args:
        packed: the result of :func:`pack` (or a step's updated copy of it).

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.arange(3.0)}
        >>> packed = funcopt.pack(params)
        >>> len(packed.buffers), packed.buffers[0].shape
        (1, (9,))
        >>> tree = funcopt.unpack(packed)
        >>> jax.tree.map(jnp.shape, tree), tree["b"]
        ({'b': (3,), 'w': (2, 3)}, Array([0., 1., 2.], dtype=float32))
    """
    return packed.layout.treedef.unflatten(_views(packed.buffers, packed.layout))


# ---- which transforms may run on the flat buffers ----------------------------------------


def is_elementwise(tx: GradientTransformation | Any) -> bool:
    """Whether ``tx`` declares itself elementwise, so that it may run on flat buffers.

    Every funcopt transform declares it (``tx.elementwise``): a primitive whose every
    output coordinate depends only on the same coordinate of its inputs and on scalars, or
    a combinator of such primitives. Anything else (including every optax transform) gives
    ``False`` and runs on the tree view, which is always correct.

    Args:
        tx: a gradient transformation (funcopt's, optax's or your own).

    Example:
        >>> import funcopt
        >>> funcopt.is_elementwise(funcopt.adam(1e-3))
        True
        >>> funcopt.is_elementwise(funcopt.lamb(1e-3))  # per-leaf trust ratio
        False
        >>> funcopt.is_elementwise(funcopt.adamw(1e-3, mask={"w": True}))  # a mask
        False
    """
    return isinstance(tx, GradientTransformation) and bool(tx.elementwise)


# ---- packed optimizer state -------------------------------------------------------------


def _flat(elementwise: bool | None, tx: Any) -> bool:
    return is_elementwise(tx) if elementwise is None else bool(elementwise)


def packed_init(
    tx: GradientTransformation | Any, params: Packed, *, elementwise: bool | None = None
) -> OptState:
    """The optimizer state for :func:`make_packed_train_step`.

    For an elementwise ``tx`` this is ``tx.init(params.buffers)``: moments are flat
    buffers (Adam's state is 2× the parameter bytes in float32). Otherwise it is
    ``pack(tx.init(unpack(params)))``: the tree state packed by dtype.

    Args:
        tx: the gradient transformation the step will run.
        params: the packed parameters, from :func:`pack`.
        elementwise: build the flat state (True) or the packed tree state (False);
            default :func:`is_elementwise` ``(tx)``. Must match the step's.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> packed = funcopt.pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
        >>> state = funcopt.packed_init(funcopt.scale_by_momentum(0.9), packed)
        >>> jax.tree.map(jnp.shape, state)  # one flat moment buffer
        MomentumState(mu=((9,),))
        >>> type(funcopt.packed_init(funcopt.lamb(1e-3), packed)).__name__
        'Packed'
    """
    if _flat(elementwise, tx):
        return tx.init(params.buffers)
    return pack(tx.init(unpack(params)))


def packed_state(
    tx: GradientTransformation | Any, *, elementwise: bool | None = None
) -> GradientTransformation:
    """Wrap ``tx`` so that its state is kept packed; updates and params stay trees.

    Use this when the parameters must stay a pytree (e.g. owned by a framework): the
    jit boundary then sees one buffer per dtype for the state instead of one per state
    leaf. Each update packs the gradients (and parameters) and unpacks the updates, so
    it saves less than packing the parameters too (:func:`make_packed_train_step`).
    Gradients are packed in the parameters' layout and dtypes (pass ``params`` when
    they differ from the gradients' dtypes), and updates come back in the gradients'.

    Args:
        tx: the gradient transformation to wrap.
        elementwise: run ``tx`` on flat buffers (True) or on the tree (False, the state
            packed around each call); default :func:`is_elementwise` ``(tx)``.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> tx = funcopt.packed_state(funcopt.scale_by_momentum(0.5))
        >>> params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
        >>> state = tx.init(params)
        >>> jax.tree.map(jnp.shape, state)
        MomentumState(mu=((9,),))
        >>> grads = {"w": jnp.ones((2, 3)), "b": jnp.full(3, 2.0)}
        >>> u, state = tx.update(grads, state)
        >>> u["b"]  # (1 − β) g: a tree again
        Array([1., 1., 1.], dtype=float32)
    """
    flat = _flat(elementwise, tx)

    def init(params: Params) -> OptState:
        if flat:
            return tx.init(pack(params).buffers)
        return pack(tx.init(params))

    def update(
        updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]:
        if flat:
            # The parameters' layout, as at init: gradients in another dtype (bf16
            # gradients of f32 master weights) are cast up into it, so the buffers match
            # the state's; each update leaf then returns in its gradient's dtype.
            layout = layout_of(updates if params is None else params)
            g = pack(updates, layout)
            p = None if params is None else pack(params, layout).buffers
            u, state = tx.update(g.buffers, state, p)
            out = unpack(Packed(tuple(u), layout))
            return jax.tree.map(lambda x, d: x.astype(d.dtype), out, updates), state
        u, inner = tx.update(updates, unpack(state), params)
        return u, pack(inner, state.layout)

    return GradientTransformation(init, update)


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
) -> PackedStep:
    """A train step whose parameters and optimizer state stay packed across steps.

    ``step(packed, opt_state, *batch) -> (packed, opt_state, loss[, aux])`` where
    ``packed`` comes from :func:`pack` and ``opt_state`` from :func:`packed_init`.
    ``loss_fn(params, *batch)`` receives the ordinary pytree (static slices of the
    buffers, free inside jit). Numbers equal those of :func:`funcopt.make_train_step`
    up to float rounding.

    Args:
        loss_fn: as for :func:`funcopt.make_train_step`.
        tx: any gradient transformation.
        has_aux: ``loss_fn`` returns ``(loss, aux)``.
        donate: donate the packed parameters and the state (default).
        jit: return the jitted step (default) or the pure function.
        elementwise: run ``tx`` on the flat buffers (True) or on the tree view (False);
            default :func:`is_elementwise` ``(tx)``. Forcing True on a transform with
            per-leaf structure gives wrong numbers.

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
    flat = _flat(elementwise, tx)

    def step(params: Packed, opt_state: OptState, *batch: Any) -> tuple[Any, ...]:
        layout = params.layout
        if isinstance(opt_state, Packed) == flat:
            raise TypeError(
                "make_packed_train_step: the optimizer state was not made for this mode "
                f"(elementwise={flat}); build it with packed_init(tx, packed)"
            )
        if flat:
            # The barriers keep the slicing and the concatenation out of the model's own
            # fusions: fused into a matmul's operands or output they turn XLA:CPU's
            # library matmul into a slow loop (measured: 5× on an MLP step).
            tree = jax.lax.optimization_barrier(unpack(params))
            value, g_tree = jax.value_and_grad(loss_fn, has_aux=has_aux)(tree, *batch)
            grads = pack(jax.lax.optimization_barrier(g_tree), layout).buffers
            updates, opt_state = tx.update(grads, opt_state, params.buffers)
            new = Packed(tuple(apply_updates(params.buffers, updates)), layout)
        else:
            tree = unpack(params)
            value, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(tree, *batch)
            updates, inner = tx.update(grads, unpack(opt_state), tree)
            new = pack(apply_updates(tree, updates), layout)
            opt_state = pack(inner, opt_state.layout)
        if has_aux:
            loss, aux = value
            return new, opt_state, loss, aux
        return new, opt_state, value

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1) if donate else ())

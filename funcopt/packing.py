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
import hashlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import (
    GradientTransformation,
    OptState,
    Params,
    StructureError,
    Updates,
    as_transform,
    expect_state,
)
from funcopt.trees import check_shapes, flatten_like
from funcopt.values import static

__all__ = [
    "Layout",
    "LayoutStamp",
    "Packed",
    "PackedOptState",
    "is_elementwise",
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


def leaves_in_layout(tree: Any, layout: Layout) -> list[Any]:
    """``tree``'s leaves, one per slot of ``layout``; the tree must have the layout's
    structure and, leaf by leaf, its shapes (:class:`StructureError` naming the path)."""
    expected = [jax.ShapeDtypeStruct(s.shape, layout.dtypes[s.buffer]) for s in layout.slots]
    names = ("the layout", "the tree")
    leaves = flatten_like(layout.treedef, tree, layout.treedef.unflatten(expected), names)
    check_shapes(expected, layout.treedef, [leaves], names)
    return leaves


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
    if layout is None:
        layout = layout_of(tree, solo_size=solo_size)
        leaves = jax.tree.leaves(tree)
    else:
        leaves = leaves_in_layout(tree, layout)
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


def runs_flat(elementwise: bool | None, tx: Any) -> bool:
    return is_elementwise(tx) if elementwise is None else bool(elementwise)


def fingerprint(layout: Layout) -> int:
    """A stable 31-bit fingerprint of a :class:`Layout` (the same in every process)."""
    text = repr((str(layout.treedef), layout.slots, layout.dtypes, layout.sizes))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


class LayoutStamp(NamedTuple):
    """The fingerprint of the layout a packed state was made for (data: it is checkpointed).

    A state restored from a checkpoint into a template made for another layout (moments
    that would now belong to other leaves) keeps the fingerprint it was saved with, and
    :meth:`check` against the layout in use raises :class:`~funcopt.base.StructureError`.
    :func:`funcopt.check_state`, :class:`packed_state` (eagerly) and
    :func:`~funcopt.make_packed_train_step` (on a state it did not make) call it.

    Attributes:
        fingerprint: an int32 scalar, :func:`fingerprint` of the layout.
    """

    fingerprint: Any

    @classmethod
    def of(cls, layout: Layout) -> LayoutStamp:
        return cls(jnp.asarray(fingerprint(layout), jnp.int32))

    def check(self, layout: Layout) -> None:
        """Raise unless the stamp is traced or is ``layout``'s fingerprint."""
        saved = self.fingerprint
        if isinstance(saved, jax.core.Tracer) or not hasattr(saved, "shape"):
            return
        if int(saved) != fingerprint(layout):
            raise StructureError(
                "this packed optimizer state was made for another layout of the parameters "
                f"(fingerprint {int(saved)}, not {fingerprint(layout)}): its moments would "
                "belong to other leaves; restore it for the parameters it was saved with"
            )


class PackedOptState(NamedTuple):
    """A packed optimizer state: the layout's stamp and the transform's own state."""

    stamp: LayoutStamp
    inner: OptState


def packed_init(
    tx: GradientTransformation | Any, params: Packed, *, elementwise: bool | None = None
) -> OptState:
    """The optimizer state for :func:`make_packed_train_step`.

    For an elementwise ``tx`` the state is ``tx.init(params.buffers)``: moments are flat
    buffers (Adam's state is 2× the parameter bytes in float32). Otherwise it is
    ``pack(tx.init(unpack(params)))``: the tree state packed by dtype. Either way it comes
    in a :class:`PackedOptState` with the :class:`LayoutStamp` of ``params.layout``.

    Args:
        tx: the gradient transformation the step will run.
        params: the packed parameters, from :func:`pack`.
        elementwise: build the flat state (True) or the packed tree state (False);
            default :func:`is_elementwise` ``(tx)``. Must match the step's.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> packed = funcopt.pack({"w": jnp.ones((2, 3)), "b": jnp.zeros(3)})
        >>> state = funcopt.packed_init(funcopt.scale_by_momentum(0.9), packed)
        >>> jax.tree.map(jnp.shape, state.inner)  # one flat moment buffer
        MomentumState(mu=((9,),))
        >>> type(funcopt.packed_init(funcopt.lamb(1e-3), packed).inner).__name__
        'Packed'
    """
    stamp = LayoutStamp.of(params.layout)
    if runs_flat(elementwise, tx):
        return PackedOptState(stamp, tx.init(params.buffers))
    return PackedOptState(stamp, pack(tx.init(unpack(params))))


class packed_state(GradientTransformation):
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
        >>> jax.tree.map(jnp.shape, state.inner)
        MomentumState(mu=((9,),))
        >>> grads = {"w": jnp.ones((2, 3)), "b": jnp.full(3, 2.0)}
        >>> u, state = tx.update(grads, state)
        >>> u["b"]  # (1 − β) g: a tree again
        Array([1., 1., 1.], dtype=float32)
    """

    inner: GradientTransformation
    flat: bool = static(False)

    State = PackedOptState

    def __init__(self, tx: Any, *, elementwise: bool | None = None) -> None:
        object.__setattr__(self, "inner", as_transform(tx, "packed_state"))
        object.__setattr__(self, "flat", runs_flat(elementwise, tx))
        self.__post_init__()

    def init_state(self, params: Params) -> OptState:
        stamp = LayoutStamp.of(layout_of(params))
        if self.flat:
            return PackedOptState(stamp, self.inner.init(pack(params).buffers))
        return PackedOptState(stamp, pack(self.inner.init(params)))

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        # The parameters' layout, as at init: gradients in another dtype (bf16 gradients of
        # f32 master weights) are cast up into it, so the buffers match the state's; each
        # update leaf then returns in its gradient's dtype.
        layout = layout_of(updates if params is None else params)
        state.stamp.check(layout)
        if self.flat:
            g = pack(updates, layout)
            p = None if params is None else pack(params, layout).buffers
            u, inner = self.inner.update(g.buffers, state.inner, p, **extra)
            out = unpack(Packed(tuple(u), layout))
            out = jax.tree.map(lambda x, d: x.astype(d.dtype), out, updates)
            return out, PackedOptState(state.stamp, inner)
        u, inner = self.inner.update(updates, unpack(state.inner), params, **extra)
        return u, PackedOptState(state.stamp, pack(inner, state.inner.layout))

"""Leaf views of packed buffers that compile once per leaf *shape*, not once per leaf.

Inside jit, :func:`funcopt.unpack` cuts each leaf out of its buffer with a static slice.
XLA:CPU compiles every fused kernel separately and reuses a compiled kernel only for an
identical one, and a slice at offset 1024 is not identical to the same slice at offset
2048: a thousand leaves give a thousand kernels to compile (measured: 20–80 ms each), and
every consumer the slice fuses into becomes distinct too. That is why a packed train step
compiled 3–7× slower than the tree step it replaces, although its program is smaller.

:func:`views` cuts the leaves with ``dynamic_slice`` at offsets that XLA cannot see: they
are sums of outputs of one ``sort`` of constant pairs ``[v, v + 1]`` keyed by an
ascending pair computed from the buffers' data (the sign bit of their first element), so
the sort is the identity and every offset is exact, yet no pass can fold it into a
constant. Every leaf of a given shape then reads through the same kernel, which XLA
compiles once. The values are those of :func:`~funcopt.unpack`, bit for bit.

The views are differentiable in reverse mode with respect to the buffers, and the
gradient comes back packed: the cotangents of the leaves are concatenated into buffers of
the layout (one concatenate per buffer), not scattered into zeros leaf by leaf, which is
what differentiating ``dynamic_slice`` would do. Forward mode (``jax.jvp`` through the
views) is not supported; differentiate a tree (:func:`~funcopt.unpack`) for that.

:func:`packed_value_and_grad` is ``jax.value_and_grad`` of a loss of the tree, taken with
respect to the packed buffers; :func:`funcopt.make_packed_train_step` is built on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcopt.base import StructureError
from funcopt.packing import Layout, Packed

__all__ = ["packed_value_and_grad", "views"]

_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _sizes(layout: Layout) -> list[int]:
    return [int(np.prod(s.shape, dtype=np.int64)) for s in layout.slots]


def _opaque_key(buffers: Sequence[jax.Array]) -> jax.Array | None:
    """An int32 pair ``[a, a + 1]``, ``a`` ∈ {0, 1} read from the data: ascending whatever
    the values (so a stable sort by it is the identity), and unknown to the compiler."""
    first = next((b for b in buffers if b.size), None)
    if first is None:
        return None
    x = first[0]
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    width = jnp.dtype(x.dtype).itemsize
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        x, width = jnp.real(x), width // 2
    bits = lax.bitcast_convert_type(x, _UINT[width])
    a = (bits >> (8 * width - 1)).astype(jnp.int32)
    return jnp.stack([a, a + 1])


def _opaque_ints(values: Sequence[int], key: jax.Array) -> dict[int, jax.Array]:
    """Each of ``values`` as an int32 scalar that XLA cannot constant-fold, each in its own
    buffer, from one ``sort`` (one kernel, whatever the number of values)."""
    distinct = sorted(set(values))
    pairs = [jnp.array([v, v + 1], jnp.int32) for v in distinct]
    out = lax.sort((key, *pairs), num_keys=1, is_stable=True)
    return {v: p[0] for v, p in zip(distinct, out[1:], strict=True)}


def _opaque_offsets(offsets: Sequence[int], key: jax.Array) -> list[jax.Array]:
    """``offsets`` as opaque int32 scalars, each the sum of two opaque values: the first
    offset of its block of ⌈√n⌉ consecutive offsets and its distance from it. So the sort
    has about 2√n operands instead of n (it costs ≈ 0.3 µs per operand at run time), and
    every slice still reads its offset from buffers, never from a constant."""
    block = max(1, int(np.ceil(np.sqrt(len(offsets)))))
    bases = [offsets[i - i % block] for i in range(len(offsets))]
    deltas = [o - b for o, b in zip(offsets, bases, strict=True)]
    opaque = _opaque_ints([*bases, *deltas], key)
    return [opaque[b] + opaque[d] for b, d in zip(bases, deltas, strict=True)]


def _check(buffers: Sequence[jax.Array], layout: Layout) -> None:
    """The buffers must be the layout's: a dynamic slice would clamp, not fail."""
    got = [(tuple(jnp.shape(b)), jnp.dtype(jnp.result_type(b)).name) for b in buffers]
    want = [((n,), d) for n, d in zip(layout.sizes, layout.dtypes, strict=True)]
    if got != want:
        raise StructureError(
            f"views: the buffers (shape, dtype) {got} are not those of the layout, {want}; "
            "build the Packed with funcopt.pack, or keep a step's output with its layout"
        )


def _cut(buffers: Sequence[jax.Array], layout: Layout) -> list[jax.Array]:
    _check(buffers, layout)
    sizes = _sizes(layout)
    whole = [sizes[i] == layout.sizes[s.buffer] for i, s in enumerate(layout.slots)]
    cut = [i for i, w in enumerate(whole) if not w]
    offsets: dict[int, jax.Array] = {}
    key = _opaque_key(buffers) if cut else None
    if key is not None:
        found = _opaque_offsets([layout.slots[i].offset for i in cut], key)
        offsets = dict(zip(cut, found, strict=True))
    leaves = []
    for i, slot in enumerate(layout.slots):
        buf = buffers[slot.buffer]
        if whole[i] or sizes[i] == 0:
            flat = buf[: sizes[i]]
        else:
            flat = lax.dynamic_slice(buf, (offsets[i],), (sizes[i],))
        leaves.append(flat.reshape(slot.shape))
    return leaves


def _packed_cotangent(cts: Sequence[jax.Array], layout: Layout) -> tuple[jax.Array, ...]:
    groups: list[list[jax.Array]] = [[] for _ in layout.dtypes]
    for ct, slot in zip(cts, layout.slots, strict=True):
        groups[slot.buffer].append(jnp.ravel(ct).astype(layout.dtypes[slot.buffer]))
    return tuple(jnp.concatenate(g) if len(g) > 1 else g[0] for g in groups)


_CUTTERS: dict[Layout, Callable[..., list[jax.Array]]] = {}


def _cutter(layout: Layout) -> Callable[..., list[jax.Array]]:
    """The differentiable cut for ``layout`` (one ``custom_vjp`` per layout, cached)."""
    found = _CUTTERS.get(layout)
    if found is not None:
        return found

    @jax.custom_vjp
    def cut(buffers: tuple[jax.Array, ...]) -> list[jax.Array]:
        return _cut(buffers, layout)

    def fwd(buffers: tuple[jax.Array, ...]) -> tuple[list[jax.Array], None]:
        return _cut(buffers, layout), None

    def bwd(_: None, cts: list[jax.Array]) -> tuple[tuple[jax.Array, ...]]:
        return (_packed_cotangent(cts, layout),)

    cut.defvjp(fwd, bwd)
    if len(_CUTTERS) > 64:
        _CUTTERS.clear()
    _CUTTERS[layout] = cut
    return cut


def views(packed: Packed) -> Any:
    """The pytree a :class:`~funcopt.Packed` holds, as views that compile once per shape.

    Equal to :func:`~funcopt.unpack` ``(packed)``, value for value; inside jit each leaf
    is a ``dynamic_slice`` at an offset the compiler cannot see, so all leaves of a shape
    share one compiled kernel (see the module's docstring). Differentiating a function
    of the views with respect to ``packed`` (reverse mode) gives a gradient that is a
    :class:`~funcopt.Packed` of the same layout, made by one concatenate per buffer.

    Args:
        packed: packed parameters (from :func:`~funcopt.pack`), usually a traced argument.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> packed = funcopt.pack({"a": jnp.ones((2, 2)), "b": jnp.arange(3.0)})
        >>> loss = lambda p: jnp.sum(funcopt.views(p)["b"] ** 2)
        >>> g = jax.jit(jax.grad(loss))(packed)
        >>> g.buffers[0]  # 'a' (4 zeros), then 2·b
        Array([0., 0., 0., 0., 0., 2., 4.], dtype=float32)
    """
    layout = packed.layout
    return layout.treedef.unflatten(_cutter(layout)(tuple(packed.buffers)))


def packed_value_and_grad(
    loss_fn: Callable[..., Any], *, has_aux: bool = False
) -> Callable[..., tuple[Any, Packed]]:
    """``jax.value_and_grad`` of ``loss_fn(params, *batch)``, taken at packed parameters.

    Returns ``f(packed, *batch) -> (value, grads)``: ``loss_fn`` receives the pytree as
    :func:`views` of ``packed``, and ``grads`` is a :class:`~funcopt.Packed` in
    ``packed.layout``, ready for an optimizer running on the buffers. The numbers are
    those of ``jax.value_and_grad(loss_fn)`` on the tree, packed. Inside a jitted step
    this compiles as fast as the tree-mode gradient (the views share kernels) and the
    step's jit boundary sees the buffers only.

    Args:
        loss_fn: ``loss_fn(params, *batch)`` returning a scalar, or ``(loss, aux)``.
        has_aux: ``loss_fn`` returns ``(loss, aux)``; ``value`` is then that pair.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> loss = lambda p, x: jnp.sum(p["w"] * x) + jnp.sum(p["b"])
        >>> packed = funcopt.pack({"w": jnp.ones(2), "b": jnp.zeros(1)})
        >>> value, grads = funcopt.packed_value_and_grad(loss)(packed, jnp.array([3.0, 4.0]))
        >>> float(value), grads.buffers[0]  # sorted keys: b, then w
        (7.0, Array([1., 3., 4.], dtype=float32))
    """

    def value_and_grad(packed: Packed, *batch: Any) -> tuple[Any, Packed]:
        layout = packed.layout

        def of_buffers(buffers: tuple[jax.Array, ...]) -> Any:
            return loss_fn(views(Packed(buffers, layout)), *batch)

        value, g = jax.value_and_grad(of_buffers, has_aux=has_aux)(tuple(packed.buffers))
        return value, Packed(tuple(g), layout)

    return value_and_grad

"""Update and apply in one call: Adam as one pass over memory on CPU.

A memory-bound optimizer step is as fast as the bytes it moves. XLA compiles
``tx.update`` followed by ``apply_updates`` for Adam into fusions that read and write the
parameters and moments in three passes; torch's fused Adam takes one. For large float32
leaves of :func:`~funcopt.adam` and :func:`~funcopt.adamw`, :func:`update_and_apply` calls
a small C++ kernel instead (``funcopt/fused_adam.cc``, behind an XLA FFI custom call) that
reads ``g, p, m, v`` once and writes ``p, m, v`` in place: on a 16M-parameter leaf the step
goes from 1.7–1.9× the time of torch's fused Adam to 0.8–0.9× (``docs/performance.md``).

Nothing else changes. The numbers are funcopt's: the kernel performs the float32 operations
XLA compiles the pure-JAX step into (a multiply by the reciprocal of ``1 − βᵗ``, fused
multiply-adds where XLA fuses them), so a one-leaf step is equal to the last bit, and in
larger programs, where XLA regroups the same divisions differently from leaf to leaf,
equal within a few float32 ulps (as the pure step is to itself in another program). The
state is the one ``tx.init`` made (checkpoints, ``tree_get`` and optax's readers see no
difference); the step still jits, donates, vmaps (an ensemble is one call, with a row of
coefficients per member) and differentiates (through the same equations in JAX).
:func:`~funcopt.make_train_step` and :func:`~funcopt.make_packed_train_step` call it, so a
train step needs no change. In the packed step a kernel also takes a buffer's gradient
leaf by leaf, as the model produces it, so that the gradient is never concatenated into a
packed copy (the memory of params + grads + state, not a gradient more); there gradient
descent (GD, GDM, SGD with heavy-ball or Nesterov momentum), Lion, RMSProp and AdaGrad
have hand-written kernels too (``funcopt.fused_plans`` reads which transform is which
family), and every other elementwise transform runs its own equations, traced into a small
program of float32 instructions (``funcopt.fused_program``).

The kernel is compiled on first use with the system C++ compiler (``$CXX``, else ``c++``)
against the XLA FFI headers jaxlib ships (``jax.ffi.include_dir()``), once per machine and
jaxlib version, into ``$FUNCOPT_CACHE_DIR`` (default ``~/.cache/funcopt``). Where there
is no compiler, another backend than one CPU device, another transform, or leaves that are
not float32, the step is ``tx.update`` + ``apply_updates`` in pure JAX, with the same
results. ``FUNCOPT_FUSED=0`` in the environment turns the kernel off everywhere.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt import fused_program
from funcopt.base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
)
from funcopt.fused_build import PROGRAM_TARGET, SEGMENTS_TARGET, TARGET, _load
from funcopt.fused_plans import ADAM, ADAMW, computes, kernel_step, reference
from funcopt.packing import Packed, leaves_in_layout, pack
from funcopt.trees import apply_updates, check_against_init
from funcopt.values import flatten

__all__ = ["fused_adam_available", "packed_update_and_apply", "update_and_apply"]

MIN_SIZE = 1 << 19
"""Leaves of fewer elements stay in XLA's fusions when the kernel is chosen automatically.
In a train step the kernel was 2-7% slower than XLA's fusions for leaves of 65k-262k
elements and 2% faster at 524k (the gradient must be materialised for it, and the three
passes run in cache); an optimizer step alone on a 1M leaf takes 0.4x the time."""
MIN_SEGMENTED = 1 << 16
"""A packed buffer of several leaves and at least this many elements takes its gradient leaf
by leaf through the kernel by default: the gain is memory (no packed copy of the gradient,
a quarter of params + grads + state), at the step time of XLA's fusions."""

_F32 = jnp.dtype(jnp.float32)


# ---- the kernel ---------------------------------------------------------------------------


def fused_adam_available() -> bool:
    """Whether the one-pass Adam kernel is built and registered on this machine (building
    it on the first call).

    Example:
        >>> import funcopt
        >>> isinstance(funcopt.fused_adam_available(), bool)
        True
    """
    return _load() is None


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def _kernel(
    g: Any, p: Any, m: Any, v: Any, c: Any, after: tuple[Any, ...], decay: bool
) -> tuple[Any, Any, Any]:
    """The kernel's call: ``p, m, v`` updated in place. ``after`` (arrays the kernel ignores)
    are operands only so that XLA computes them first: a loss that reads ``p`` must be
    done before ``p`` is overwritten, or XLA copies ``p`` to keep it."""
    out = jax.ShapeDtypeStruct(p.shape, p.dtype)
    call = jax.ffi.ffi_call(
        TARGET,
        (out, out, out),
        input_output_aliases={1: 0, 2: 1, 3: 2},
        vmap_method="broadcast_all",
    )
    new_p, new_m, new_v = call(g, p, m, v, c, *after, decay=decay)
    return new_p, new_m, new_v


@_kernel.defjvp
def _kernel_jvp(decay: bool, primals: Any, tangents: Any) -> Any:
    kind = ADAMW if decay else ADAM

    def equations(g: Any, p: Any, m: Any, v: Any, c: Any) -> Any:
        return reference(kind, g, p, (m, v), c)

    _, dout = jax.jvp(equations, primals[:5], tangents[:5])
    return _kernel(*primals, decay), dout


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def _segments_kernel(
    grads: tuple[Any, ...],
    p: Any,
    states: tuple[Any, ...],
    c: Any,
    after: tuple[Any, ...],
    offsets: tuple[int, ...],
    kind: int,
) -> tuple[Any, ...]:
    """A family's kernel on a packed buffer whose gradient comes as one array per leaf,
    segment ``i`` of ``p`` and of the ``states`` starting at ``offsets[i]``: they are
    updated in place, and the gradients are never concatenated. ``(new_p, *new_states)``."""
    out = jax.ShapeDtypeStruct(p.shape, p.dtype)
    aliases = {0: 0, **{2 + j: 1 + j for j in range(len(states))}}
    call = jax.ffi.ffi_call(
        SEGMENTS_TARGET,
        (out,) * (1 + len(states)),
        input_output_aliases=aliases,
        vmap_method="broadcast_all",
    )
    offs = np.asarray(offsets, np.int64)
    return tuple(call(p, c, *states, *grads, *after, kind=np.int64(kind), offsets=offs))


@_segments_kernel.defjvp
def _segments_kernel_jvp(offsets: tuple[int, ...], kind: int, primals: Any, tangents: Any) -> Any:
    def equations(grads: Any, p: Any, states: Any, c: Any) -> Any:
        return reference(kind, _joined(grads, p.size), p, states, c)

    _, dout = jax.jvp(equations, primals[:4], tangents[:4])
    return _segments_kernel(*primals, offsets, kind), dout


@functools.partial(jax.custom_jvp, nondiff_argnums=(5, 6))
def _program_kernel(
    grads: tuple[Any, ...],
    p: Any,
    states: tuple[Any, ...],
    c: Any,
    after: tuple[Any, ...],
    offsets: tuple[int, ...],
    program: fused_program.Program,
) -> tuple[Any, ...]:
    """A traced program (:mod:`funcopt.fused_program`) on a packed buffer whose gradient
    comes as one array per leaf, as :func:`_segments_kernel`: its outputs (new ``p`` or
    state buffers) are written in place over the inputs they replace."""
    out = jax.ShapeDtypeStruct(p.shape, p.dtype)
    aliases = {(0 if s == 1 else s): j for j, s in enumerate(program.replaces)}  # p is arg 0
    call = jax.ffi.ffi_call(
        PROGRAM_TARGET,
        (out,) * len(program.outputs),
        input_output_aliases=aliases,
        vmap_method="broadcast_all",
    )
    return tuple(
        call(
            p,
            c,
            *states,
            *grads,
            *after,
            code=np.asarray(program.code, np.int64),
            outputs=np.asarray(program.outputs, np.int64),
            offsets=np.asarray(offsets, np.int64),
            states=np.int64(program.states),
            coefs=np.int64(program.coefs),
            registers=np.int64(program.registers),
        )
    )


@_program_kernel.defjvp
def _program_kernel_jvp(
    offsets: tuple[int, ...], program: fused_program.Program, primals: Any, tangents: Any
) -> Any:
    def equations(grads: Any, p: Any, states: Any, c: Any) -> Any:
        return fused_program.run(program, _joined(grads, p.size), p, states, c)

    _, dout = jax.jvp(equations, primals[:4], tangents[:4])
    return _program_kernel(*primals, offsets, program), dout


def _joined(grads: tuple[Any, ...], size: int) -> Any:
    """The segments' gradients as the one flat gradient of their buffer (a packed layout's
    leaves lie end to end in it, in order)."""
    if not grads:
        return jnp.zeros(size, _F32)
    return jnp.concatenate(grads) if len(grads) > 1 else grads[0]


# ---- the step ------------------------------------------------------------------------------


def _why_not(tx: Any, grads: Any, params: Any, segmented: bool = False) -> str | None:
    """Why the kernel cannot run this step (``None`` when it can); ``segmented``: a packed
    buffer's step with the gradient leaf by leaf, which every elementwise transform whose
    step can be traced into programs has too (:mod:`funcopt.fused_program`)."""
    if jax.default_backend() != "cpu" or jax.device_count() != 1:
        return (
            f"the kernel runs on one CPU device, not {jax.device_count()} {jax.default_backend()}"
        )
    for name, tree in (("grads", grads), ("params", params)):
        bad = [x for x in jax.tree.leaves(tree) if jnp.result_type(x) != _F32]
        if bad:
            return f"the kernel takes float32 {name}, got {jnp.result_type(bad[0])}"
    if not computes(tx, segmented):
        if not segmented:
            return f"{type(tx).__name__} is not funcopt.adam or funcopt.adamw without a mask"
        why = fused_program.refusal(tx, jax.tree.leaves(params))
        if why is not None:
            return f"{type(tx).__name__}'s step is not a program of elementwise operations: {why}"
    return _load()


def update_and_apply(
    tx: GradientTransformation | Any,
    grads: Updates,
    state: OptState,
    params: Params,
    *,
    fused: bool | None = None,
) -> tuple[Params, OptState]:
    """``updates, state = tx.update(grads, state, params)``, then ``apply_updates``, in one.

    For :func:`~funcopt.adam` and :func:`~funcopt.adamw` (no mask) on one CPU device, float32
    leaves of at least 524,288 elements are updated by the one-pass kernel (see the module
    docstring), with the same numbers; everything else, and every other transform, goes
    through ``tx.update`` and :func:`~funcopt.apply_updates`.

    Args:
        tx: the gradient transformation.
        grads: the gradients, with the parameters' structure.
        state: ``tx``'s state.
        params: the parameters.
        fused: ``None`` (default) uses the kernel where it applies and gains; ``True``
            runs every leaf through it and raises ``ValueError`` saying why when it cannot;
            ``False`` never uses it.

    Returns:
        ``(new_params, new_state)``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.adam(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> params, state = funcopt.update_and_apply(
        ...     tx, {"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params["w"]  # θ − η sign(g) at the first step, to float32 rounding
        Array([ 0.9000007, -1.9000007], dtype=float32)
    """
    params, state, _ = ordered_update_and_apply(tx, grads, state, params, None, fused)
    return params, state


def ordered_update_and_apply(
    tx: Any, grads: Updates, state: OptState, params: Params, reads: Any, fused: bool | None
) -> tuple[Params, OptState, Any]:
    """:func:`update_and_apply`, with ``reads`` (values computed from the parameters beside
    the gradient: a train step's loss and aux) computed before the kernel overwrites the
    parameters in place, and returned. Without that order XLA copies each parameter first:
    a loss is not an input of the kernel, so nothing else keeps it from being read after."""
    gains = (_gains(jnp.size(x), 1) for x in jax.tree.leaves(params))
    if flatten(grads)[1] == flatten(params)[1] and _runs_kernel(tx, grads, params, fused, gains):
        grads = jax.tree.map(jnp.asarray, grads)
        check_against_init(tx, state, grads, params)
        g_leaves = flatten(params)[1].flatten_up_to(grads)
        new, state = _fused_step(tx, state, params, g_leaves, reads, bool(fused), False)
        return new, state, reads
    updates, state = tx.update(grads, state, params)
    return apply_updates(params, updates), state, reads


def packed_update_and_apply(
    tx: GradientTransformation | Any,
    grads: Updates,
    state: OptState,
    packed: Packed,
    *,
    fused: bool | None = None,
) -> tuple[Packed, OptState]:
    """:func:`update_and_apply` for packed parameters whose gradient is a tree.

    A model's gradient comes leaf by leaf; an elementwise optimizer on packed parameters
    (:func:`~funcopt.pack`, state from ``tx.init(packed.buffers)``) needs it in the
    buffers' layout. For an elementwise transform whose step is a program of elementwise
    float32 operations (every funcopt optimizer declared elementwise but ``apply_if_finite``
    and bfloat16 moments: :mod:`funcopt.fused_program`) on one CPU device, for float32
    buffers of at least 65,536 elements holding several leaves, a kernel reads each
    leaf's gradient where it is and updates the buffers in place, with no packed copy of
    the gradient; otherwise the gradient is packed
    (``pack(grads, packed.layout)``) and the step is :func:`update_and_apply` on the
    buffers. This is the update of :func:`~funcopt.make_packed_train_step`, for a train
    step written by hand.

    Args:
        tx: an elementwise gradient transformation (:func:`~funcopt.is_elementwise`).
        grads: the gradient, with the structure and shapes of ``unpack(packed)``.
        state: ``tx.init(packed.buffers)``.
        packed: the packed parameters.
        fused: as in :func:`update_and_apply`.

    Returns:
        ``(new_packed, new_state)``, ``new_packed`` in ``packed.layout``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.sgd(0.5)
        >>> packed = funcopt.pack({"a": jnp.ones(2), "b": jnp.zeros(1)})
        >>> grads = {"a": jnp.array([2.0, 4.0]), "b": jnp.array([-2.0])}
        >>> packed, state = funcopt.packed_update_and_apply(
        ...     tx, grads, tx.init(packed.buffers), packed)
        >>> packed.buffers[0]  # θ − η g, in the layout: a, then b
        Array([ 0., -1.,  1.], dtype=float32)
    """
    if runs_segmented(tx, packed, fused):
        buffers, state, _ = segmented_update_and_apply(tx, grads, state, packed, None, fused)
    else:
        flat = pack(grads, packed.layout).buffers
        buffers, state, _ = ordered_update_and_apply(
            tx, tuple(flat), state, tuple(packed.buffers), None, fused
        )
    return Packed(tuple(buffers), packed.layout), state


def _gains(size: int, leaves: int) -> bool:
    """Whether, by default, the kernel updates a leaf of ``size`` elements (or a packed
    buffer holding ``leaves`` leaves)."""
    return size >= MIN_SIZE or (leaves > 1 and size >= MIN_SEGMENTED)


def _runs_kernel(
    tx: Any, grads: Any, params: Any, fused: bool | None, gains: Any, segmented: bool = False
) -> bool:
    """Whether the step runs the kernel: where it can, and for ``fused=None`` where it
    ``gains`` (an iterable of :func:`_gains` results, one per leaf or buffer)."""
    if fused is False:
        return False
    why = _why_not(tx, grads, params, segmented)
    if fused and why is not None:
        raise ValueError(f"fused=True, but the fused kernel cannot run this step: {why}")
    return why is None and bool(fused or any(gains))


def runs_segmented(tx: Any, packed: Packed, fused: bool | None) -> bool:
    """Whether a packed train step should take the gradient leaf by leaf (with respect to
    the views) and hand the leaves to the kernel (:func:`segmented_update_and_apply`),
    instead of concatenating them into packed gradient buffers first."""
    buffers = tuple(packed.buffers)
    counts = [0] * len(buffers)
    for slot in packed.layout.slots:
        counts[slot.buffer] += 1
    gains = (_gains(jnp.size(b), n) for b, n in zip(buffers, counts, strict=True))
    return _runs_kernel(tx, buffers, buffers, fused, gains, segmented=True)


class _Segments(NamedTuple):
    """A packed buffer's gradient as the model gives it: one array per leaf, at offsets."""

    grads: tuple[Any, ...]
    offsets: tuple[int, ...]


def segmented_update_and_apply(
    tx: Any, leaf_grads: Any, state: OptState, packed: Packed, reads: Any, fused: bool | None
) -> tuple[tuple[Any, ...], OptState, Any]:
    """The packed step's update with the kernel (where :func:`runs_segmented` says so):
    ``leaf_grads`` is the gradient tree of the loss with respect to ``views(packed)``; each
    buffer is updated from its leaves' gradients in place, with no packed gradient buffer
    (params + grads + state, not one gradient more). Returns ``(buffers, state, reads)``."""
    layout = packed.layout
    buffers = tuple(packed.buffers)
    check_against_init(tx, state, buffers, buffers)
    per_buffer: list[list[tuple[int, Any]]] = [[] for _ in buffers]
    for slot, g in zip(layout.slots, leaves_in_layout(leaf_grads, layout), strict=True):
        if jnp.size(g):  # in the buffer's dtype, as pack() would store it
            per_buffer[slot.buffer].append((slot.offset, jnp.ravel(jnp.asarray(g, _F32))))
    g_leaves = [
        _Segments(tuple(g for _, g in segs), tuple(o for o, _ in segs)) for segs in per_buffer
    ]
    new, state = _fused_step(tx, state, buffers, g_leaves, reads, bool(fused), True)
    return tuple(new), state, reads


def _leaf_step(
    g: Any, p: Any, states: tuple[Any, ...], c: Any, after: Any, kind: int, kernel: bool
) -> tuple[Any, ...]:
    """One leaf (or packed buffer) through a kernel, or the same equations in JAX:
    ``(new_p, *new_states)``."""
    if isinstance(g, _Segments):
        if kernel and len(g.grads) > 1:  # else the gradient is the one leaf's, or zeros
            return _segments_kernel(g.grads, p, states, c, after, g.offsets, kind)
        g = _joined(g.grads, jnp.size(p))
    if kernel and kind in (ADAM, ADAMW):  # a lone leaf: Adam's one-pass kernel
        return _kernel(g, p, *states, c, after, kind == ADAMW)
    return reference(kind, g, p, states, c)


def _count(g: Any) -> int:
    """How many leaves a gradient stands for (a packed buffer's segments, else one)."""
    return len(g.grads) if isinstance(g, _Segments) else 1


def _fused_step(
    tx: Any,
    state: Any,
    params: Any,
    g_leaves: list[Any],
    reads: Any,
    everything: bool,
    segmented: bool,
) -> tuple[Params, OptState]:
    """The step with a kernel, leaf by leaf (``g_leaves`` in ``params``' leaf order); the
    state keeps ``tx.init``'s structure."""
    step = kernel_step(tx, state, segmented)
    after = tuple(x for x in jax.tree.leaves(reads) if isinstance(x, jax.Array))
    if step is None:  # a packed step as traced programs (_why_not said it can be)
        return _program_step(tx, state, params, g_leaves, after, everything)
    p_leaves, treedef = flatten(params)
    s_leaves = [treedef.flatten_up_to(s) for s in step.states]
    out = [
        _leaf_step(
            g,
            p,
            tuple(s),
            step.coef,
            after,
            step.kind,
            everything or _gains(jnp.size(p), _count(g)),
        )
        for g, p, *s in zip(g_leaves, p_leaves, *s_leaves, strict=True)
    ]
    new_p, *new_states = (treedef.unflatten(list(x)) for x in zip(*out, strict=True))
    return new_p, step.rebuild(tuple(new_states))


def _program_step(
    tx: Any, state: Any, buffers: Any, g_leaves: list[Any], after: Any, everything: bool
) -> tuple[Params, OptState]:
    """The packed step as programs (:func:`funcopt.fused_program.trace`): each buffer's
    program runs in the kernel over its gradient's segments, or in JAX where the buffer is
    too small to gain; the scalars are XLA's. ``(new_buffers, new_state)``."""
    traced = fused_program.trace(tx, state, tuple(buffers))
    results: list[tuple[Any, ...]] = []
    for g, p, program, states in zip(
        g_leaves, buffers, traced.programs, traced.states, strict=True
    ):
        if program is None:
            results.append(())
        elif (everything or _gains(jnp.size(p), _count(g))) and len(g.grads) > 1:
            results.append(
                _program_kernel(g.grads, p, states, traced.coef, after, g.offsets, program)
            )
        else:
            joined = _joined(g.grads, jnp.size(p))
            results.append(fused_program.run(program, joined, p, states, traced.coef))
    return traced.rebuild(results)

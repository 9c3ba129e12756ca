"""The lifter: a primitive states its per-leaf equation once; the rest happens here.

A primitive is a :class:`Leafwise` transform. It declares the state it keeps per leaf
(a ``NamedTuple`` class, and ``init_leaf`` building one leaf's buffers) and its
equation for one leaf, in plain math::

    class scale_by_momentum(Leafwise):
        decay: float = hyper(DECAY, 0.9)
        State = MomentumState

        def init_leaf(self, p):
            return MomentumState(mu=moment_like(p, self.mu_dtype))

        def leaf(self, g, s):
            mu = self.decay * s.mu + (1 - self.decay) * g
            return mu, MomentumState(mu)

:class:`Leafwise` lifts that over the pytree, in one place for every primitive:

- **structure**: the updates, each state field and the params must have the same tree
  structure and shapes (state fields: for elementwise primitives), never broadcast; a
  mismatch raises :class:`~funcopt.base.StructureError` naming the path and the field;
  integer and boolean updates are refused (``TypeError``): a step on them would be
  truncated;
- **arithmetic in at least float32**: ``g``, the state and the params reach ``leaf``
  upcast (bfloat16 and float16 to float32), and array-valued hyper-parameters in the same
  precision, so ``β₂ = 0.999`` is never rounded to 1;
- **rounding once**: outputs stay in the compute dtype from one part of a composition to
  the next, and the public ``update`` casts the final updates to the gradients' dtypes;
- **storage in each buffer's dtype** (saturating in float16/bfloat16 rather than overflowing
  to ±inf): the new state is rounded to the dtype ``init_leaf``
  gave it (first moments the parameter's dtype or ``mu_dtype``; second moments at least
  float32, see :func:`second_moment_like`), and an output that *is* a state field is taken
  from the stored, rounded value, so a resumed run is bit-identical;
- **complex numbers**: :func:`abs2` is ``g · conj(g)``, real, and second moments of complex
  parameters are real buffers;
- **scalars per update**: the step count and anything derived from it (``scalars``) are
  computed once per update, not once per leaf;
- Python-float and ``None`` leaves (``None`` is an empty subtree and is left alone).
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import jax
import jax.numpy as jnp

from funcopt.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    Updates,
    expect_state,
    store,
)
from funcopt.base import StructureError as StructureError
from funcopt.trees import check_float_leaves, check_shapes, flatten, flatten_like, tree_map

__all__ = [
    "Leafwise",
    "abs2",
    "compute_dtype",
    "moment_like",
    "second_moment_like",
]


def compute_dtype(dtype: Any) -> Any:
    """The dtype arithmetic runs in: at least float32 (complex64 for complex inputs).

    Args:
        dtype: a leaf's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.lifting import compute_dtype
        >>> compute_dtype(jnp.bfloat16), compute_dtype(jnp.complex64)
        (dtype('float32'), dtype('complex64'))
    """
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact) and dtype.itemsize >= 4:
        return dtype
    return jnp.dtype(jnp.float32)


def real_dtype(dtype: Any) -> Any:
    """The real dtype of the same precision (``float32`` for ``complex64``)."""
    return jnp.finfo(compute_dtype(dtype)).dtype


def up(x: Any) -> jax.Array:
    """``x`` as an array in its compute dtype (at least float32)."""
    x = jnp.asarray(x)
    return x.astype(compute_dtype(x.dtype))


def coef(c: Any, x: jax.Array) -> Any:
    """A hyper-parameter ready to multiply ``x``: Python numbers stay weakly typed, arrays
    take ``x``'s real precision."""
    if isinstance(c, int | float):
        return c
    return jnp.asarray(c).astype(real_dtype(x.dtype))


def abs2(x: jax.Array) -> jax.Array:
    """``|x|²`` element-wise: ``x²`` for real ``x``, ``x · conj(x)`` (real) for complex.

    Args:
        x: an array.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.lifting import abs2
        >>> abs2(jnp.array([3 + 4j, -2.0]))
        Array([25.,  4.], dtype=float32)
    """
    if jnp.iscomplexobj(x):
        return jnp.real(x * jnp.conj(x))
    return jnp.square(x)


def moment_like(p: jax.Array, dtype: Any = None, fill: Any = 0.0) -> jax.Array:
    """A fresh buffer shaped like ``p`` (with its sharding), in ``dtype`` or ``p``'s dtype.

    The buffer of a first moment (an average of gradients): by default it keeps the
    parameter's dtype, complex included.

    Args:
        p: the parameter leaf.
        dtype: the buffer's dtype (``None``: ``p``'s).
        fill: the initial value.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.lifting import moment_like
        >>> moment_like(jnp.ones(2, jnp.bfloat16))
        Array([0, 0], dtype=bfloat16)
    """
    return jax.lax.full_like(p, fill, dtype=dtype or jnp.result_type(p))


def second_moment_like(p: jax.Array, dtype: Any = None, fill: Any = 0.0) -> jax.Array:
    """A fresh buffer for a statistic of ``|g|²``: real, in ``dtype`` or at least float32.

    A second moment changes by a relative ``1 − β₂`` (0.001) per step, less than half a
    bfloat16 ulp (2⁻⁹), so stored in bfloat16 it could never decay; by default it is kept
    in float32 for low-precision parameters, and in the real dtype for complex ones.

    Args:
        p: the parameter leaf.
        dtype: the buffer's dtype (``None``: ``p``'s real dtype, at least float32).
        fill: the initial value.

    Example:
        >>> import jax.numpy as jnp
        >>> from funcopt.lifting import second_moment_like
        >>> second_moment_like(jnp.ones(2, jnp.bfloat16), fill=1e-6).dtype
        dtype('float32')
    """
    return jax.lax.full_like(p, fill, dtype=dtype or real_dtype(jnp.result_type(p)))


def require_params(tx: Any, params: Params | None) -> Params:
    """``params``, or a ``ValueError`` saying that ``tx`` needs them."""
    if params is None:
        raise ValueError(
            f"{type(tx).__name__} needs the current parameters: call update(grads, state, params)"
        )
    return params


def map_leaves(fn: Any, tree: Any, *rest: Any, names: tuple[str, ...] = ()) -> Any:
    """``fn`` per leaf on upcast inputs; results in the compute dtype (see the module)."""

    def leaf(x: Any, *ys: Any) -> jax.Array:
        return jnp.asarray(fn(up(x), *(up(y) for y in ys)))

    return tree_map(leaf, tree, *rest, names=names)


def _concrete(p: Any) -> jax.Array:
    """A parameter leaf as an array; an abstract one (``jax.ShapeDtypeStruct``) as zeros of
    its shape and dtype, as optax's ``init`` gives (it calls ``zeros_like``)."""
    return jnp.zeros_like(p) if isinstance(p, jax.ShapeDtypeStruct) else jnp.asarray(p)


class Leafwise(GradientTransformation):
    """A primitive: one per-leaf equation, lifted over the pytree (see the module docstring).

    Subclasses set ``State`` (a ``NamedTuple`` of per-leaf buffers, default
    :class:`~funcopt.base.EmptyState`) and implement ``init_leaf(p)`` (one leaf's buffers)
    and ``leaf``:

    - stateless: ``leaf(g, **scalars) -> u``;
    - with state: ``leaf(g, s, **scalars) -> (u, new_s)``.

    ``scalars`` are ``t`` (the step number, as a float) if ``reads_count``, whatever
    :meth:`scalars` adds, and ``p`` (the parameter leaf) if ``needs_params``.

    Attributes:
        State: the per-leaf state type.
        needs_params: whether ``leaf`` takes the parameters as ``p``.

    Example (a primitive of one's own, with the whole lift: structure checks, float32
    arithmetic for bf16, validation, equality, ``repr``):
        >>> import jax.numpy as jnp, funcopt
        >>> from funcopt.values import hyper
        >>> from funcopt.lifting import Leafwise
        >>> from funcopt.validation import NONNEGATIVE
        >>> class soft_sign(Leafwise):
        ...     scale: float = hyper(NONNEGATIVE, 1.0)
        ...     def leaf(self, g):
        ...         return g / (self.scale + jnp.abs(g))
        >>> tx = soft_sign(1.0)
        >>> tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))[0]
        Array([ 0.5 , -0.75], dtype=float32)
        >>> tx == soft_sign(), tx
        (True, soft_sign())
    """

    State: ClassVar[type] = EmptyState
    needs_params: ClassVar[bool] = False
    elementwise = True

    def init_leaf(self, p: jax.Array) -> Any:
        """The state buffers of one parameter leaf ``p`` (a ``State``)."""
        return EmptyState()

    def leaf(self, g: jax.Array, *args: Any, **scalars: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement leaf")

    def leaf_options(self, updates: Updates) -> list[dict[str, Any]] | None:
        """Static keyword arguments for ``leaf``, one dict per leaf of ``updates`` (in
        flattening order), for a primitive whose per-leaf math depends on a tree aligned
        with the params (a matrix layout, say); ``None`` (the default): none."""
        return None

    def scalars(self, count: Any) -> dict[str, Any]:
        """Per-update scalars passed to every ``leaf`` call, computed once per update at the
        widest float precision (float64 under x64, as optax) and given to each leaf in its
        own precision. Default: the step ``t`` as a float (1 at the first update)."""
        return {} if count is None else {"t": count.astype(jnp.result_type(float))}

    # ---- the lift ---------------------------------------------------------------------

    def init_state(self, params: Params) -> OptState:
        check_float_leaves(params)
        if self.State is EmptyState:
            return EmptyState()
        leaves, treedef = flatten(params)
        per_leaf = [self.init_leaf(_concrete(p)) for p in leaves]
        fields = range(len(self.State._fields))  # type: ignore[attr-defined]
        return self.State(*(treedef.unflatten([s[i] for s in per_leaf]) for i in fields))

    def _cast(self, dtype: Any) -> Any:
        """This transform with its array hyper-parameters in ``dtype``'s real precision."""
        leaves, treedef = flatten(self)
        if all(isinstance(x, int | float) for x in leaves):
            return self
        real = real_dtype(dtype)
        return treedef.unflatten(
            [x if isinstance(x, int | float) else jnp.asarray(x).astype(real) for x in leaves]
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        del extra
        g_leaves, treedef = flatten(updates)
        check_float_leaves(updates, "updates")  # an integer step would be truncated
        stateful = self.State is not EmptyState
        names: tuple[str, ...] = self.State._fields if stateful else ()  # type: ignore[attr-defined]
        fields: list[list[Any]] = []
        if stateful:
            expect_state(self, state, self.State)
            for name, tree in zip(names, cast(Any, state), strict=True):
                fields.append(flatten_like(treedef, tree, updates, ("updates", f"state.{name}")))
        p_leaves: list[Any] = []
        if self.needs_params:
            params = require_params(self, params)
        same_tree = params is not None and flatten(params)[1] == treedef
        if self.needs_params or same_tree:  # no broadcasting: updates have params' shapes
            p_leaves = flatten_like(treedef, params, updates, ("updates", "params"))
            check_shapes(g_leaves, treedef, [p_leaves], ("updates", "params"))
        if self.elementwise and fields:
            check_shapes(g_leaves, treedef, fields, ("updates", *(f"state.{n}" for n in names)))
        scalars = self.scalars(count)
        options = self.leaf_options(updates)
        prepared: dict[Any, tuple[Any, dict[str, Any]]] = {}
        out: list[Any] = []
        new: list[list[Any]] = []
        for k, g in enumerate(g_leaves):
            g = jnp.asarray(g)
            dtype = compute_dtype(g.dtype)
            if dtype not in prepared:
                prepared[dtype] = (self._cast(dtype), _cast_scalars(scalars, dtype))
            me, kw = prepared[dtype]
            if self.needs_params:
                kw = {**kw, "p": up(p_leaves[k])}
            if options is not None:
                kw = {**kw, **options[k]}
            x = g.astype(dtype)
            if not stateful:
                u = me.leaf(x, **kw)
            else:
                u, s_new = me.leaf(x, self.State(*(up(f[k]) for f in fields)), **kw)
                stored = [store(n, f[k].dtype) for n, f in zip(s_new, fields, strict=True)]
                for n, s in zip(s_new, stored, strict=True):
                    if u is n:  # the output is a state field: take the stored value
                        u = s
                new.append(stored)
            out.append(jnp.asarray(u))  # in the compute dtype: cast once, by the public update
        updates = treedef.unflatten(out)
        if not stateful:
            return updates, EmptyState()
        trees = [treedef.unflatten([s[i] for s in new]) for i in range(len(names))]
        return updates, self.State(*trees)


def _cast_scalars(scalars: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """Float scalars in the leaf's real precision (Python numbers stay weakly typed)."""
    real = real_dtype(dtype)
    out = {}
    for k, v in scalars.items():
        if not isinstance(v, int | float) and jnp.issubdtype(jnp.result_type(v), jnp.inexact):
            v = jnp.asarray(v).astype(real)
        out[k] = v
    return out

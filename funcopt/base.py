"""The protocol: a gradient transformation is a pair of pure functions over pytrees.

``state = tx.init(params)`` builds the optimizer state, and
``updates, state = tx.update(grads, state, params)`` maps gradients to updates. The
pair is a ``NamedTuple`` with fields in the order ``(init, update)``, so a funcopt
transform is accepted wherever optax expects one (``optax.chain``,
``flax.nnx.Optimizer``), and an optax transform works inside :func:`chain`.

This module also holds the few helpers every transform shares: a structure-checked
``jax.tree.map``, hyper-parameter validation that only looks at concrete numbers, a
saturating step counter, and the cache that makes equal factories return equal
transforms.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar

import jax
import jax.numpy as jnp

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "HyperParameterError",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "StructureError",
    "Updates",
    "apply_updates",
    "chain",
    "check_decays",
    "check_float_leaves",
    "check_state",
    "identity",
    "safe_increment",
]

Params = Any
"""A pytree of arrays (``None`` leaves are allowed and left alone)."""
Updates = Any
"""A pytree with the structure of the parameters: gradients on the way in, steps out."""
OptState = Any
"""A pytree of arrays: whatever a transform keeps between steps."""
Schedule = Callable[[jax.Array], Any]
"""A function of the step count (an int32 scalar, 0 at the first update) to a value."""
ScalarOrSchedule = float | jax.Array | Schedule
"""A hyper-parameter given as a number or as a :data:`Schedule`."""


class InitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class UpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair.

    Attributes:
        init: ``init(params) -> state``.
        update: ``update(updates, state, params=None) -> (updates, state)``.
    """

    init: InitFn
    update: UpdateFn


class EmptyState(NamedTuple):
    """The state of a transform that keeps nothing between steps."""


class StructureError(ValueError):
    """Two pytrees that must match (updates, state, params) do not."""


class HyperParameterError(ValueError):
    """A hyper-parameter given as a concrete number is out of its valid range."""


# --------------------------------------------------------------------------------------
# Factories: equal arguments give the very same transform object.
# --------------------------------------------------------------------------------------

_P = ParamSpec("_P")
_R = TypeVar("_R")


def cached_factory(factory: Callable[_P, _R]) -> Callable[_P, _R]:
    """Make ``factory(*args)`` return the same object for equal, hashable arguments.

    Two calls ``adam(1e-3)`` then return one ``GradientTransformation``, which compares
    and hashes equal to itself, so passing it to ``jax.jit`` as a static argument does
    not trigger a recompilation. Calls with unhashable arguments (arrays, tracers,
    dicts) simply build a fresh transform.
    """
    cached = functools.lru_cache(maxsize=4096, typed=True)(factory)

    @functools.wraps(factory)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            hash((args, tuple(kwargs.items())))
        except TypeError:
            return factory(*args, **kwargs)
        return cached(*args, **kwargs)  # type: ignore[arg-type]

    return wrapper


# --------------------------------------------------------------------------------------
# Validation of concrete hyper-parameters.
# --------------------------------------------------------------------------------------


def concrete_number(value: Any) -> float | None:
    """``float(value)`` for a concrete real scalar; ``None`` for tracers, schedules, arrays."""
    if isinstance(value, jax.core.Tracer) or callable(value) or isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, jax.Array | jnp.ndarray) and getattr(value, "ndim", 1) == 0:
        try:
            return float(value)
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None
    return None


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
) -> None:
    """Raise :class:`HyperParameterError` if a concrete ``value`` is outside the range.

    Traced values (built inside ``jit``/``vmap``/``grad``) and schedules are not checked.
    """
    x = concrete_number(value)
    if x is None:
        return
    ok = x == x  # NaN is never valid
    if low is not None:
        ok = ok and (x >= low if low_inclusive else x > low)
    if high is not None:
        ok = ok and (x <= high if high_inclusive else x < high)
    if not ok:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise HyperParameterError(f"{name} must be in {lo}, {hi}, got {name}={x!r}")


def check_decay(name: str, value: Any) -> None:
    """A decay rate must lie in ``[0, 1)``."""
    check_range(name, value, 0.0, 1.0)


def check_nonnegative(name: str, value: Any) -> None:
    """A step size, ε or weight decay must be ``≥ 0``."""
    check_range(name, value, 0.0)


def check_decays(**values: Any) -> None:
    """:func:`check_decay` for each keyword, under the caller's argument name.

    An optimizer calls ``check_decays(b1=b1, b2=b2)`` before composing primitives, so a
    bad ``b1`` is reported as ``b1=…`` rather than as the primitive's ``decay=…``.
    ``None`` (an optional momentum switched off) is skipped.
    """
    for name, value in values.items():
        check_decay(name, value)


# --------------------------------------------------------------------------------------
# Trees.
# --------------------------------------------------------------------------------------


class MaskedNode(NamedTuple):
    """Stands in for a subtree that a masked inner transform must not see (no leaves)."""


def is_masked_node(x: Any) -> bool:
    """Whether ``x`` is a :class:`MaskedNode` placeholder (``masked``/``partition``)."""
    return isinstance(x, MaskedNode)


def _keystr(path: tuple[Any, ...]) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def _children(x: Any) -> tuple[Any, list[tuple[Any, Any]]]:
    """The node type of ``x`` (None for a leaf) and its immediate ``(key, child)`` pairs."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x)
    data = treedef.node_data()  # type: ignore[attr-defined]
    if data is None:  # ``x`` is a leaf
        return None, []
    return data[0], [(p[0], c) for p, c in pairs]


def _structure(x: Any) -> Any:
    return jax.tree.structure(x)


def _type_name(node_type: Any) -> str:
    return "a leaf" if node_type is None else node_type.__name__


def first_difference(a: Any, b: Any, name_a: str, name_b: str) -> str | None:
    """Where two pytrees' structures first differ (depth first), in words; None if equal."""

    def walk(x: Any, y: Any, path: tuple[Any, ...]) -> str | None:
        tx, cx = _children(x)
        ty, cy = _children(y)
        at = _keystr(path)
        if tx is not ty:
            return f"at {at}, {name_a} has {_type_name(tx)} where {name_b} has {_type_name(ty)}"
        kx, ky = [k for k, _ in cx], [k for k, _ in cy]
        for (k1, xc), (k2, yc) in zip(cx, cy, strict=False):
            if k1 != k2:
                return (
                    f"at {_keystr((*path, k1))}, {name_a} has key {_keystr((k1,))} "
                    f"where {name_b} has {_keystr((k2,))}"
                )
            found = walk(xc, yc, (*path, k1))
            if found:
                return found
        if len(kx) != len(ky):
            longer, shorter, keys = (
                (name_a, name_b, kx) if len(kx) > len(ky) else (name_b, name_a, ky)
            )
            extra = keys[min(len(kx), len(ky))]
            return f"{longer} has {_keystr((*path, extra))} that {shorter} lacks"
        if tx is not None and _structure(x) != _structure(y):
            return f"at {at}, the {_type_name(tx)} nodes carry different metadata"
        return None

    return walk(a, b, ())


def _describe_mismatch(a: Any, b: Any, name_a: str, name_b: str) -> str:
    first = first_difference(a, b, name_a, name_b) or "the structures differ"
    return (
        f"pytree structure mismatch between {name_a} and {name_b}: {first}.\n"
        f"  {name_a}: {jax.tree.structure(a)}\n  {name_b}: {jax.tree.structure(b)}"
    )


def tree_map(f: Callable[..., Any], tree: Any, *rest: Any, names: tuple[str, ...] = ()) -> Any:
    """``jax.tree.map`` that reports a structure or shape mismatch by path.

    ``names`` label ``tree`` and each of ``rest`` in the error message
    (default ``"updates"``, ``"state"``, ...).
    """
    labels = (*names, *(f"tree {i}" for i in range(len(names), len(rest) + 1)))
    leaves, treedef = jax.tree.flatten(tree)
    others = []
    for i, other in enumerate(rest):
        try:
            others.append(treedef.flatten_up_to(other))  # type: ignore[attr-defined]
        except (ValueError, TypeError):
            raise StructureError(
                _describe_mismatch(tree, other, labels[0], labels[i + 1])
            ) from None
    for k, xs in enumerate(zip(leaves, *others, strict=True)):
        shape = getattr(xs[0], "shape", None)
        for i, x in enumerate(xs[1:]):
            if shape is not None and getattr(x, "shape", shape) != shape:
                path = jax.tree_util.tree_flatten_with_path(tree)[0][k][0]
                raise StructureError(
                    f"shape mismatch at {_keystr(path)}: {labels[0]} has shape {shape}, "
                    f"{labels[i + 1]} has shape {jnp.shape(x)}"
                )
    results = [f(*xs) for xs in zip(leaves, *others, strict=True)]
    return treedef.unflatten(results)  # type: ignore[attr-defined]


def _leaf_dtype(x: Any) -> Any:
    dtype = getattr(x, "dtype", None)  # may be an extended dtype (a typed PRNG key)
    return dtype if dtype is not None else jnp.result_type(x)


def check_float_leaves(tree: Any, name: str = "params") -> None:
    """Raise ``TypeError`` naming the first leaf of ``tree`` that is not floating point.

    funcopt's policy: integer and boolean leaves are *rejected*, never silently
    rounded. An optimizer step on an integer would truncate it, and a boolean has no
    step at all. Every ``init`` that keeps per-leaf state (through :func:`zeros_like`)
    and every :func:`chain` call this. To carry such leaves in the parameter tree, mask
    them out (``masked``/``multi_transform`` with ``set_to_zero``) or keep them out of
    the tree the optimizer sees. ``None`` leaves are not leaves and are fine.
    """
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = _leaf_dtype(x)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{name}{_keystr(path) if path else ''} has dtype {dtype}: funcopt optimizers "
                "only update floating-point leaves. Route it to set_to_zero (multi_transform) "
                "or mask it out (masked), or remove it from the tree given to the optimizer."
            )


def zeros_like(tree: Any, dtype: Any = None, fill: Any = 0.0) -> Any:
    """A fresh buffer per leaf, filled with ``fill``, in ``dtype`` (default: the leaf's).

    ``dtype`` may also be a function of the leaf's dtype (e.g. :func:`compute_dtype`,
    to keep a second moment in at least float32).

    Each buffer is new (never shared, so state can be donated) and takes the leaf's
    sharding: eagerly for any committed array, and under ``jit`` when the mesh has
    explicit axes (``jax.sharding.AxisType.Explicit``). Raises ``TypeError`` for an
    integer or boolean leaf (see :func:`check_float_leaves`).
    """
    check_float_leaves(tree)

    def leaf(x: Any) -> jax.Array:
        x = x if isinstance(x, jax.Array) else jnp.asarray(x)
        to = dtype(x.dtype) if callable(dtype) and not isinstance(dtype, type) else dtype
        return jax.lax.full_like(x, fill, dtype=to or x.dtype)

    return jax.tree.map(leaf, tree)


def check_state(tx: Any, state: OptState, params: Params, *, dtypes: bool = True) -> None:
    """Raise :class:`StructureError` unless ``state`` could come from ``tx.init(params)``.

    Compares ``state`` with ``jax.eval_shape(tx.init, params)`` (nothing is computed):
    the tree structure, including the state types of every member of a chain, then
    each leaf's shape and (with ``dtypes=True``) dtype. Use it after restoring a
    checkpoint: a state saved from an optimizer of another configuration (another
    chain, momentum switched on, other parameter shapes) is reported with the first
    differing path. Hyper-parameter *values* are not part of the state and are not
    compared.
    """
    expected = jax.eval_shape(tx.init, params)
    _compare_state(state, expected, "tx.init(params)", dtypes=dtypes)


def _compare_state(state: Any, expected: Any, what: str, *, dtypes: bool) -> None:
    if _structure(state) != _structure(expected):
        raise StructureError(
            "the optimizer state does not match this transform (was it made by another "
            "optimizer, another configuration, or for other parameters?): "
            + _describe_mismatch(state, expected, "state", what)
        )
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    for (path, x), e in zip(flat, jax.tree.leaves(expected), strict=True):
        if jnp.shape(x) != e.shape or (dtypes and _leaf_dtype(x) != e.dtype):
            raise StructureError(
                f"state{_keystr(path) if path else ''} has shape {jnp.shape(x)} and dtype "
                f"{_leaf_dtype(x)}, but {what} gives shape {e.shape} and dtype {e.dtype}: "
                "the state was made for other parameters or another configuration"
            )


def compute_dtype(dtype: Any) -> Any:
    """The dtype optimizer arithmetic runs in: at least float32 (so β = 0.999 survives)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.inexact) and dtype.itemsize >= 4:
        return dtype
    return jnp.dtype(jnp.float32)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the dtype's largest value instead of wrapping.

    Args:
        count: an integer array (typically a transform's int32 step count); each
            element is incremented unless it already holds the dtype's maximum.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> funcopt.safe_increment(jnp.array(3, jnp.int32))
        Array(4, dtype=int32)
        >>> funcopt.safe_increment(jnp.array(2**31 - 1, jnp.int32))  # saturates, no wrap
        Array(2147483647, dtype=int32)
    """
    count = jnp.asarray(count)
    top = jnp.iinfo(count.dtype).max
    return jnp.where(count < top, count + 1, count)


def new_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


# --------------------------------------------------------------------------------------
# The basic transforms.
# --------------------------------------------------------------------------------------


@cached_factory
def identity() -> GradientTransformation:
    """The transform that returns its input unchanged: ``u = g``.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.identity()
        >>> tx.update(jnp.array([1.0, -2.0]), tx.init(jnp.zeros(2)))
        (Array([ 1., -2.], dtype=float32), EmptyState())
    """

    def init(params: Params) -> OptState:
        del params
        return EmptyState()

    def update(
        updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]:
        del params
        return updates, state

    return GradientTransformation(init, update)


@cached_factory
def chain(*transforms: Any) -> GradientTransformation:
    """Apply transforms in sequence: ``u = T_k(… T_2(T_1(g)))``.

    The state is the tuple of the members' states. Members may be funcopt or optax
    transforms (anything with ``init`` and ``update``).

    ``init`` rejects integer and boolean leaves (:func:`check_float_leaves`).
    ``update`` first compares the state's tree and leaf shapes with
    ``jax.eval_shape(init, params)`` (once per input signature, at trace time) and
    raises :class:`StructureError` at the first difference, so a state from another
    optimizer or configuration never reaches the members.

    Args:
        *transforms: the gradient transformations to apply, first to last (none gives
            the identity).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.chain(funcopt.scale(2.0), funcopt.scale_by_learning_rate(0.1))
        >>> u, state = tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))
        >>> u, len(state)  # −0.1 · (2 · g), one state per member
        (Array([-0.2,  0.6], dtype=float32), 2)
    """
    for i, tx in enumerate(transforms):
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"chain: argument {i} is {type(tx).__name__}, not a gradient transformation"
            )

    def init(params: Params) -> OptState:
        check_float_leaves(params)
        return tuple(tx.init(params) for tx in transforms)

    expected_structure: dict[Any, Any] = {}

    def check(updates: Updates, state: OptState, params: Params | None) -> None:
        # The state must be what ``init`` builds for parameters shaped like these:
        # compared once per input signature, at trace time, via eval_shape.
        like = updates if params is None else params  # what init was given
        try:
            leaves, treedef = jax.tree.flatten(like)
            key = (treedef, tuple((jnp.shape(x), str(_leaf_dtype(x))) for x in leaves))
            hash(key)
        except TypeError:
            return
        if key not in expected_structure:
            try:
                expected_structure[key] = jax.eval_shape(init, like)
            except Exception:  # an init that needs concrete values: no check
                expected_structure[key] = None
            if len(expected_structure) > 64:
                expected_structure.pop(next(iter(expected_structure)))
        expected = expected_structure[key]
        if expected is not None:
            what = "init(params)" if params is not None else "init(params like the updates)"
            _compare_state(state, expected, what, dtypes=False)

    def update(
        updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]:
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise StructureError(
                f"chain of {len(transforms)} transforms got a state of type "
                f"{type(state).__name__}, not a tuple of {len(transforms)} states: "
                "was it made by the same chain's init?"
            )
        check(updates, state, params)
        new_state = []
        for tx, s in zip(transforms, state, strict=True):
            updates, s = tx.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``θ ← θ + u`` leaf by leaf; each result keeps its parameter's dtype.

    The sum is formed in the wider of the two dtypes, then cast back to the
    parameter's dtype (a bfloat16 parameter stays bfloat16). ``None`` leaves stay
    ``None``.

    Args:
        params: the parameters θ, a pytree of arrays.
        updates: the steps ``u``, a pytree with the parameters' structure and shapes
            (e.g. from ``tx.update``, already scaled and sign-flipped).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([1.0, 2.0]), "b": None}
        >>> updates = {"w": jnp.array([0.5, -1.0]), "b": None}
        >>> funcopt.apply_updates(params, updates)
        {'b': None, 'w': Array([1.5, 1. ], dtype=float32)}
    """

    def add(p: Any, u: Any) -> Any:
        if p is None:
            return None
        p = jnp.asarray(p)
        u = jnp.asarray(u)
        wide = p.dtype if p.dtype.itemsize >= u.dtype.itemsize else u.dtype
        return (p.astype(wide) + u.astype(wide)).astype(p.dtype)

    return tree_map(add, params, updates, names=("params", "updates"))

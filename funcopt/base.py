"""The protocol, and what makes a transform a value.

A gradient transformation maps gradients to updates::

    state = tx.init(params)
    updates, state = tx.update(grads, state, params=None, **extra_args)
    params = funcopt.apply_updates(params, updates)

Every funcopt transform is a subclass of :class:`GradientTransformation`, and every
subclass is a frozen dataclass registered as a pytree:

- **a value**: two transforms with equal hyper-parameters are equal and hash equal,
  however the arguments were spelled (``adam(1e-3) == adam(learning_rate=0.001)``), and
  ``repr`` shows the composition (``chain(scale_by_momentum(...), ...)``);
- **data**: numeric hyper-parameters are pytree leaves and structure (flags, dtypes,
  callables, masks) is static, so a transform passed to a jitted function traces once
  for all learning rates, can be ``vmap``-ped over a stacked learning rate and
  differentiated with respect to one;
- **optax-shaped**: ``tx.init``/``tx.update`` (and ``init, update = tx``) are what
  ``optax.chain``, ``optax.MultiSteps``, flax's ``TrainState`` and ``nnx.Optimizer`` use,
  and ``update`` takes optax's extra keyword arguments (``value=loss``, ...).

The step count. A transform that reads the step number ``t`` (bias correction, a
schedule, ...) says so (``reads_count``). Inside a combinator it receives ``t`` from its
parent; only the outermost one keeps the count, in a :class:`CountState` next to its own
state. So an optimizer has one step count however many of its parts read it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.validation import HyperParameterError as HyperParameterError
from funcopt.validation import Kind

__all__ = [
    "CountState",
    "EmptyState",
    "GradientTransformation",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "StructureError",
    "Updates",
    "Value",
    "hyper",
    "safe_increment",
    "static",
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


class StructureError(ValueError):
    """Two pytrees that must match (updates, state, params) do not."""


class EmptyState(NamedTuple):
    """The state of a transform that keeps nothing between steps."""


class CountState(NamedTuple):
    """The step count of an outermost transform that reads it, beside that transform's state.

    Attributes:
        count: the number of updates so far (int32, saturating at its maximum).
        inner_state: the transform's own state.
    """

    count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
    inner_state: OptState


def new_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


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


# --------------------------------------------------------------------------------------
# Fields: hyper-parameters (leaves, checked by kind) and static structure.
# --------------------------------------------------------------------------------------


def hyper(kind: Kind, default: Any = dataclasses.MISSING) -> Any:
    """A hyper-parameter field: a pytree leaf, checked and normalised by ``kind``.

    A callable value (a schedule that is not itself a pytree) is kept as static data.

    Args:
        kind: a :class:`~funcopt.validation.Kind` (e.g. ``DECAY``).
        default: the default value, if any.

    Example:
        >>> import funcopt
        >>> from funcopt.base import hyper
        >>> from funcopt.validation import DECAY
        >>> class halve(funcopt.GradientTransformation):
        ...     decay: float = hyper(DECAY, 0.5)
        >>> halve(1)
        Traceback (most recent call last):
        ...
        funcopt.validation.HyperParameterError: decay must be in [0, 1), got decay=1.0
    """
    return dataclasses.field(default=default, metadata={"kind": kind})


def static(default: Any = dataclasses.MISSING, kind: Kind | None = None) -> Any:
    """A structural field (a flag, a dtype, a mask, a function): static pytree data.

    Args:
        default: the default value, if any.
        kind: an optional :class:`~funcopt.validation.Kind` that checks it.

    Example:
        >>> import jax, funcopt
        >>> jax.tree.leaves(funcopt.trace(0.9, nesterov=True))  # the flag is not a leaf
        [0.9]
    """
    return dataclasses.field(default=default, metadata={"static": True, "kind": kind})


def _is_opaque(value: Any) -> bool:
    """A callable that is not a pytree node (a plain function): it cannot be a leaf."""
    return callable(value) and jax.tree_util.treedef_is_leaf(jax.tree.structure(value))


def _fingerprint(value: Any) -> Any:
    """A hashable stand-in with value semantics where possible, identity otherwise."""
    if isinstance(value, jax.Array | np.ndarray):
        return ("id", id(value))
    try:
        hash(value)
    except TypeError:
        pass
    else:
        return ("value", type(value), value)
    leaves, treedef = jax.tree.flatten(value)
    if not jax.tree_util.treedef_is_leaf(treedef):
        return ("tree", treedef, tuple(_fingerprint(x) for x in leaves))
    return ("id", id(value))


class _Static:
    """Static pytree data that hashes and compares by :func:`_fingerprint`."""

    __slots__ = ("key", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.key = _fingerprint(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return repr(self.value)


def _flatten(tree: Any) -> tuple[list[Any], Any]:
    """``jax.tree.flatten`` with the tree definition typed loosely (for mypy)."""
    return jax.tree.flatten(tree)


def _same_leaf(a: Any, b: Any) -> bool:
    if a is b:
        return True
    scalar = (int, float, complex)
    return type(a) is type(b) and isinstance(a, scalar) and a == b


def _leaf_hash(x: Any) -> Any:
    return x if isinstance(x, int | float | complex) else id(x)


def _register(cls: type) -> None:
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    always_static = frozenset(f.name for f in fields if f.metadata.get("static"))
    keys = tuple(jax.tree_util.GetAttrKey(n) for n in names)

    def parts(obj: Any) -> tuple[list[Any], tuple[Any, ...]]:
        children: list[Any] = []
        aux: list[Any] = []
        for name in names:
            value = getattr(obj, name)
            if name in always_static or _is_opaque(value):
                children.append(None)
                aux.append(_Static(value))
            else:
                children.append(value)
                aux.append(None)
        return children, tuple(aux)

    def flatten_with_keys(obj: Any) -> tuple[list[tuple[Any, Any]], tuple[Any, ...]]:
        children, aux = parts(obj)
        return list(zip(keys, children, strict=True)), aux

    def flatten(obj: Any) -> tuple[list[Any], tuple[Any, ...]]:
        return parts(obj)

    def unflatten(aux: tuple[Any, ...], children: Any) -> Any:
        obj: Any = object.__new__(cls)
        for name, a, c in zip(names, aux, children, strict=True):
            object.__setattr__(obj, name, c if a is None else a.value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)


# --------------------------------------------------------------------------------------
# The base class.
# --------------------------------------------------------------------------------------


class Value:
    """A frozen dataclass registered as a pytree, equal, hashed and shown by its fields.

    The base of every transform (:class:`GradientTransformation`) and of funcopt's
    schedules. Each subclass becomes a frozen dataclass when it is defined; fields declared
    with :func:`hyper` are checked by their kind and normalised when an instance is built,
    then :meth:`check` runs for checks across fields. Equality and hashing compare the
    pytree structure (static fields included) and the leaves (numbers by value, arrays by
    identity); ``repr`` shows the fields that differ from their defaults.

    Example:
        >>> import funcopt
        >>> funcopt.scale(1) == funcopt.scale(1.0), funcopt.scale(2.0)
        (True, scale(step_size=2.0))
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__new__(cls)  # the dataclass __init__ of each subclass takes the fields

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_init = "__init__" in cls.__dict__
        dataclasses.dataclass(frozen=True, eq=False, repr=False, init=not own_init)(cls)
        _register(cls)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            kind = f.metadata.get("kind")
            if kind is not None:
                object.__setattr__(self, f.name, kind(f.name, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Cross-argument checks of a subclass (raise :class:`HyperParameterError`)."""

    @classmethod
    def unchecked(cls, **fields: Any) -> Any:
        """An instance from already valid (possibly traced) field values, without checks."""
        obj = object.__new__(cls)
        for name, value in fields.items():
            object.__setattr__(obj, name, value)
        return obj

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        a, ta = _flatten(self)
        b, tb = _flatten(other)
        return bool(ta == tb) and all(_same_leaf(x, y) for x, y in zip(a, b, strict=True))

    def __hash__(self) -> int:
        leaves, treedef = _flatten(self)
        return hash((treedef, tuple(_leaf_hash(x) for x in leaves)))

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or not _same_default(value, f.default):
                shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class GradientTransformation(Value):
    """A pure ``(init, update)`` pair; the base class of every funcopt transform.

    Subclasses are frozen dataclasses registered as pytrees (see the module docstring):
    fields declared with :func:`hyper` are leaves, fields declared with :func:`static`
    are structure, and plain fields hold inner transforms. A subclass implements

    - ``init_state(params)``: the state, without a step count;
    - ``apply(updates, state, params, count, **extra_args)``: one update, where
      ``count`` is the step number ``t`` (1 at the first update) if the transform
      ``reads_count``, else ``None``;

    and inherits the public ``init``/``update``, which keep the count of an outermost
    transform in a :class:`CountState` and check a given state against ``init``.

    ``GradientTransformation(init_fn, update_fn)`` makes a transform from two functions,
    as in optax.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> tx = funcopt.GradientTransformation(lambda p: (), lambda u, s, p=None: (u, s))
        >>> isinstance(funcopt.adam(), funcopt.GradientTransformation), tx.init(None)
        (True, ())
        >>> jax.tree.leaves(funcopt.scale_by_momentum(0.9))  # hyper-parameters are leaves
        [0.9]

    Attributes:
        reads_count: whether ``apply`` needs the step number.
        elementwise: whether every output coordinate depends only on the same coordinate
            of the updates, state and params and on scalars, so that the transform may
            run on flat buffers (:mod:`funcopt.packing`).
    """

    reads_count: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is GradientTransformation:
            return FunctionPair(*args, **kwargs)
        return super().__new__(cls)

    # ---- what subclasses implement -----------------------------------------------------

    def init_state(self, params: Params) -> OptState:
        raise NotImplementedError(f"{type(self).__name__} does not implement init_state")

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        raise NotImplementedError(f"{type(self).__name__} does not implement apply")

    # ---- the public protocol ----------------------------------------------------------

    def init(self, params: Params) -> OptState:
        """The state for ``params``: ``init_state``, with the count if ``reads_count``."""
        state = self.init_state(params)
        return self.attach_count(state, new_count()) if self.reads_count else state

    def update(
        self,
        updates: Updates,
        state: OptState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, OptState]:
        """One step: ``(updates, state) -> (new updates, new state)``.

        ``state`` must come from ``init`` (its structure and shapes are compared with
        ``init``'s once per input signature, at trace time); ``extra_args`` (optax's
        ``value=``, ``grad=``, ...) reach every part that uses them.
        """
        from funcopt.trees import check_against_init  # trees builds on this module

        check_against_init(self, state, updates, params)
        if not self.reads_count:
            out, state = self.apply(updates, state, params, None, **extra_args)
            return cast_like(out, updates), state
        count, inner = self.detach_count(state)
        t = safe_increment(count)
        out, inner = self.apply(updates, inner, params, t, **extra_args)
        return cast_like(out, updates), self.attach_count(inner, t)

    def attach_count(self, state: OptState, count: jax.Array) -> OptState:
        """The public state: ``state`` with the step ``count`` kept beside it."""
        return CountState(count, state)

    def detach_count(self, state: OptState) -> tuple[jax.Array, OptState]:
        """The inverse of :meth:`attach_count`."""
        if not isinstance(state, CountState):
            raise StructureError(
                f"{_short(self)} keeps a step count, so its state is a CountState, got "
                f"{type(state).__name__}: was the state made by this transform's init?"
            )
        return state.count, state.inner_state

    # ---- values -----------------------------------------------------------------------

    def __iter__(self) -> Any:
        return iter((self.init, self.update))


def cast_like(out: Updates, updates: Updates) -> Updates:
    """The outputs of a step in the dtypes of its inputs (rounded once, at the boundary).

    Inside a composition every part works in at least float32; only the result of a
    public ``update`` is cast back, leaf by leaf, to the incoming update's dtype (a real
    statistic of a complex input stays real, in the input's precision). Outputs of
    another structure (e.g. lookahead's) are returned as they are.
    """
    if _flatten(out)[1] != _flatten(updates)[1]:
        return out

    def cast(o: Any, u: Any) -> Any:
        o = jnp.asarray(o)
        dtype = jnp.result_type(u)
        if jnp.issubdtype(dtype, jnp.complexfloating) and not jnp.iscomplexobj(o):
            dtype = jnp.finfo(dtype).dtype
        return o if o.dtype == dtype else o.astype(dtype)

    return jax.tree.map(cast, out, updates)


def _same_default(value: Any, default: Any) -> bool:
    try:
        return bool(type(value) is type(default) and value == default)
    except Exception:  # arrays, tracers
        return False


def _short(tx: Any) -> str:
    text = repr(tx)
    return text if len(text) < 80 else text[:77] + "..."


class FunctionPair(GradientTransformation):
    """A transform made of two functions, ``GradientTransformation(init_fn, update_fn)``.

    Also how a transform from another library (optax's) sits inside a funcopt combinator:
    it keeps its own state, counts included, and receives extra keyword arguments only if
    its ``update`` accepts them (optax's ``GradientTransformationExtraArgs`` does).

    Attributes:
        init_fn: ``init_fn(params) -> state``.
        update_fn: ``update_fn(updates, state, params=None, **extra_args)``.
    """

    init_fn: Callable[..., Any] = static()
    update_fn: Callable[..., Any] = static()

    def __repr__(self) -> str:
        return f"GradientTransformation({self.init_fn!r}, {self.update_fn!r})"

    def init_state(self, params: Params) -> OptState:
        return self.init_fn(params)

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        if extra and _takes_extra_args(self.update_fn):
            return self.update_fn(updates, state, params, **extra)
        return self.update_fn(updates, state, params)

    def init(self, params: Params) -> OptState:
        return self.init_fn(params)

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        return self.apply(updates, state, params, None, **extra_args)


def _takes_extra_args(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD for p in parameters)


def as_transform(tx: Any, where: str = "transform") -> GradientTransformation:
    """``tx`` as a funcopt transform: itself, or a :class:`FunctionPair` of its methods.

    Raises ``TypeError`` naming ``where`` for anything without ``init`` and ``update``.
    """
    if isinstance(tx, GradientTransformation):
        return tx
    init, update = getattr(tx, "init", None), getattr(tx, "update", None)
    if not (callable(init) and callable(update)):
        raise TypeError(f"{where}: got {type(tx).__name__}, not a gradient transformation")
    return FunctionPair(init, update)

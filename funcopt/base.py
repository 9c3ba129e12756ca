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

import inspect
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.validation import HyperParameterError as HyperParameterError
from funcopt.values import Value, static
from funcopt.values import flatten as _flatten

__all__ = [
    "CountState",
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "StructureError",
    "Updates",
    "safe_increment",
    "with_extra_args_support",
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

    def __getattr__(self, name: str) -> Any:
        """The one field called ``name`` in the inner state, read through the count
        (``scale_by_adam().init(p).mu``), as in optax, whose states keep the count beside
        their fields. Looked for in the states (named tuples) the inner state is made of,
        and in the tuples holding them; an ``AttributeError`` unless exactly one is found."""
        if name.startswith("_"):
            raise AttributeError(name)
        found = _fields_named(self.inner_state, name)
        if len(found) == 1:
            return found[0]
        where = "none" if not found else f"{len(found)}: read them with optax.tree_utils"
        raise AttributeError(f"CountState has no field {name!r}, and its inner state {where}")


def _fields_named(state: Any, name: str) -> list[Any]:
    """The values of the fields called ``name`` in the named tuples of ``state``."""
    if not isinstance(state, tuple):
        return []
    fields = getattr(type(state), "_fields", None)
    if fields is not None and name in fields:
        return [getattr(state, name)]
    return [x for part in state for x in _fields_named(part, name)]


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
        made_by: the public name that builds this class, where it is not the class's own
            (states are reported as made by it in errors).
        reads_count: whether ``apply`` needs the step number.
        elementwise: whether every output coordinate depends only on the same coordinate
            of the updates, state and params and on scalars, so that the transform may
            run on flat buffers (:mod:`funcopt.packing`).
    """

    made_by: ClassVar[str]
    reads_count: ClassVar[bool] = False
    elementwise: ClassVar[bool] = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is GradientTransformation:
            return FunctionPair(*args, **kwargs)
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        state = cls.__dict__.get("State")
        if isinstance(state, type) and state is not EmptyState:
            STATE_OWNERS.setdefault(state, []).append(cls.__dict__.get("made_by", cls.__name__))

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

        updates = jax.tree.map(as_array, updates)
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

    def __getitem__(self, index: Any) -> Any:
        """``tx[0]`` is ``init`` and ``tx[1]`` is ``update``, as in optax's named tuple."""
        return (self.init, self.update)[index]


def as_array(x: Any) -> Any:
    """A Python number as a 0-d array (as ``jnp.asarray``); anything else as it is."""
    return jnp.asarray(x) if isinstance(x, int | float | complex) else x


def store(x: Any, dtype: Any) -> jax.Array:
    """``x`` rounded to the storage ``dtype``; in float16 and bfloat16, saturating at the
    largest finite value instead of overflowing to ±inf (NaN stays NaN)."""
    x = jnp.asarray(x)
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        top = float(jnp.finfo(dtype).max)
        x = jnp.clip(x, -top, top)
    return x.astype(dtype)


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
        return o if o.dtype == dtype else store(o, dtype)

    return jax.tree.map(cast, out, updates)


STATE_OWNERS: dict[type, list[str]] = {}
"""State type -> the transforms that keep it (their ``State`` class attribute)."""


def expect_state(tx: Any, state: Any, kind: type) -> None:
    """Raise :class:`StructureError` unless ``state`` is a ``kind`` (``tx``'s state type);
    the message says which transform a foreign state belongs to."""
    if not isinstance(state, kind):
        owners = STATE_OWNERS.get(type(state), [])
        whose = f", the state of {' or '.join(owners)}" if owners else ""
        raise StructureError(
            f"{type(tx).__name__} keeps a {kind.__name__}, got a {type(state).__name__}{whose}"
            ": was the state made by this transform's init?"
        )


def _short(tx: Any) -> str:
    text = repr(tx)
    return text if len(text) < 80 else text[:77] + "..."


GradientTransformationExtraArgs = GradientTransformation
"""optax's name for a transform whose ``update`` takes extra keyword arguments: every
funcopt transform's does, so it is :class:`GradientTransformation` itself
(``GradientTransformationExtraArgs(init_fn, update_fn)`` as in optax)."""


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
        args: tuple[Any, ...] = (updates, state, params)
        if params is None and not _takes_positionals(self.update_fn, 3):
            args = (updates, state)  # an update(updates, state, **kw): as optax calls it
        if extra and _takes_extra_args(self.update_fn):
            return self.update_fn(*args, **extra)
        return self.update_fn(*args)

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


def _takes_positionals(fn: Callable[..., Any], n: int) -> bool:
    """Whether ``fn`` can be called with ``n`` positional arguments (True if unknown)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    kinds = [p.kind for p in parameters]
    positional = sum(
        k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for k in kinds
    )
    return positional >= n or inspect.Parameter.VAR_POSITIONAL in kinds


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


def with_extra_args_support(tx: Any) -> GradientTransformation:
    """``tx`` with an ``update`` that takes extra keyword arguments, as optax's name does.

    Every funcopt transform's already does (it is returned as is); another library's
    (optax's ``GradientTransformation``) is wrapped, and receives them only if its
    ``update`` accepts them.

    Args:
        tx: a funcopt or optax transform.

    Example:
        >>> import funcopt
        >>> tx = funcopt.sgd(0.1)
        >>> funcopt.with_extra_args_support(tx) is tx
        True
    """
    return as_transform(tx, "with_extra_args_support")

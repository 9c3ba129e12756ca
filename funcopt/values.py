"""What makes a transform a value: frozen dataclasses registered as pytrees.

:class:`Value` is the base of every transform (:class:`funcopt.GradientTransformation`)
and of funcopt's schedules. A subclass becomes a frozen dataclass when it is defined:

- fields declared with :func:`hyper` are hyper-parameters: pytree *leaves* (so a transform
  passed to ``jax.jit`` traces once for all their values, and can be ``vmap``-ped and
  differentiated), checked and normalised by a kind of :mod:`funcopt.validation` when an
  instance is built; a plain function given to one (a schedule) is kept as static data;
- fields declared with :func:`static` are structure (flags, dtypes, masks, integer step
  counts): static pytree data, hashed by value where possible and by identity otherwise;
- plain annotated fields hold inner transforms (pytree children).

Equality and hashing compare the pytree structure and the leaves (numbers by value,
arrays by identity), so equal hyper-parameters give equal, hash-equal values however they
were spelled, with no cache; ``repr`` shows the fields that differ from their defaults.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from funcopt.validation import Kind

__all__ = ["Value", "hyper", "static"]


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
        >>> from funcopt.values import hyper
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


def flatten(tree: Any) -> tuple[list[Any], Any]:
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
        a, ta = flatten(self)
        b, tb = flatten(other)
        return bool(ta == tb) and all(_same_leaf(x, y) for x, y in zip(a, b, strict=True))

    def __hash__(self) -> int:
        leaves, treedef = flatten(self)
        return hash((treedef, tuple(_leaf_hash(x) for x in leaves)))

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or not _same_default(value, f.default):
                shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _same_default(value: Any, default: Any) -> bool:
    try:
        return bool(type(value) is type(default) and value == default)
    except Exception:  # arrays, tracers
        return False

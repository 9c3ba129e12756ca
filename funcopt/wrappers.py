"""Wrappers that route leaves: transform only some of them, or give each group its own.

:class:`masked` runs a transform on the leaves a mask selects and passes the others
through (:func:`freeze` zeroes them with :class:`set_to_zero`); :class:`partition` gives
each group of parameters, named by a label, its own transform. The inner transforms run
at every step on their own leaves and keep their own state (step counts included), in
optax's state shapes: ``MaskedState(inner_state)`` and
``PartitionState(inner_states={label: MaskedState(...)})``. Inner transforms may be
funcopt's or optax's; names, signatures, defaults and numerics follow optax.

Masks and labels are static (part of the transform's structure): a pytree with the
structure of the params (or a prefix of it), or a function of the params returning one.
A callable that is itself a pytree of bools or arrays (an Equinox module used as a
mask) is a tree, not a function (:func:`funcopt.trees.is_mask_function`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    StructureError,
    Updates,
    as_transform,
    expect_state,
)
from funcopt.trees import (
    MASK,
    Mask,
    MaskedNode,
    is_mask_function,
    is_stand_in,
    resolve_mask,
    tree_map,
)
from funcopt.validation import BOOL
from funcopt.values import static

__all__ = [
    "MaskedState",
    "MultiTransformState",
    "PartitionState",
    "freeze",
    "masked",
    "multi_transform",
    "partition",
    "selective_transform",
    "set_to_zero",
]


# ---- masking -----------------------------------------------------------------------------


class MaskedState(NamedTuple):
    """State of :class:`masked`: the inner state, with :class:`MaskedNode` where masked out."""

    inner_state: OptState


def _keep_tree(mask: Mask, tree: Any) -> Any:
    """The mask (resolved against ``tree``) with Python bools at its leaves."""
    return jax.tree.map(bool, resolve_mask(mask, tree))


def _hide(tree: Any, keep: Any) -> Any:
    """``tree`` with :class:`MaskedNode` in place of every subtree whose mask is False."""
    return tree_map(lambda k, x: x if k else MaskedNode(), keep, tree, names=("mask", "tree"))


def _hide_extra(extra: dict[str, Any], updates: Updates, keep: Any, on: bool) -> dict[str, Any]:
    """With ``on``, the extra arguments shaped like the updates are masked as they are."""
    if not on:
        return extra
    structure: Any = jax.tree.structure(updates)
    return {
        k: _hide(v, keep) if jax.tree.structure(v) == structure else v for k, v in extra.items()
    }


class masked(GradientTransformation):
    r"""Apply ``inner`` to the leaves selected by ``mask``; pass the others through unchanged.

    $$ u_i = \begin{cases} T(g)_i & \text{mask}_i \\ g_i & \text{otherwise} \end{cases} $$

    ``inner`` sees (and keeps state for) only the selected leaves: the others are
    replaced by :class:`~funcopt.MaskedNode` in what it receives. It runs every step
    and keeps its own state, step count included (``state.inner_state``).

    Args:
        inner: the transform to apply where the mask is True (funcopt's or optax's).
        mask: a pytree of bools with the structure of the params or a prefix of it (a
            bool for a whole subtree), or a function of the params (of the updates in
            ``update``) returning one. Must be concrete, not traced.
        mask_compatible_extra_args: also mask the extra keyword arguments of ``update``
            that have the structure of the updates (as optax).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.masked(funcopt.scale(2.0), {"w": True, "b": False})
        >>> g = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx.update(g, tx.init(g))[0]  # b passes through
        {'b': Array([1., 1.], dtype=float32), 'w': Array([2., 2.], dtype=float32)}
    """

    State = MaskedState

    inner: GradientTransformation
    mask: Mask = static()
    mask_compatible_extra_args: bool = static(False, BOOL)

    def __init__(
        self,
        inner: Any,
        mask: Mask | Callable[[Params], Any],
        *,
        mask_compatible_extra_args: bool = False,
    ) -> None:
        object.__setattr__(self, "inner", as_transform(inner, "masked: inner"))
        object.__setattr__(self, "mask", MASK("mask", mask))
        object.__setattr__(self, "mask_compatible_extra_args", mask_compatible_extra_args)
        self.__post_init__()

    def init_state(self, params: Params) -> OptState:
        if is_stand_in(params):  # optax.tree.map_params' placeholder for the whole tree
            return MaskedState(inner_state=self.inner.init(params))
        return MaskedState(
            inner_state=self.inner.init(_hide(params, _keep_tree(self.mask, params)))
        )

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        expect_state(self, state, self.State)
        keep = _keep_tree(self.mask, updates)
        extra = _hide_extra(extra, updates, keep, self.mask_compatible_extra_args)
        new, inner_state = self.inner.update(
            _hide(updates, keep),
            state.inner_state,
            None if params is None else _hide(params, keep),
            **extra,
        )
        out = tree_map(
            lambda k, n, g: n if k else g, keep, new, updates, names=("mask", "inner", "updates")
        )
        return out, MaskedState(inner_state=inner_state)


class set_to_zero(GradientTransformation):
    r"""Map every update to zero, $u = 0$, keeping shapes and dtypes (freezes parameters).

    Integer and boolean leaves are zeroed too (and accepted at ``init``), so this is the
    transform to route non-float leaves to in a :class:`partition`.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.set_to_zero()
        >>> g = {"w": jnp.array([1.0, -2.0]), "step": jnp.array(3, jnp.int32)}
        >>> tx.update(g, tx.init(g))[0]
        {'step': Array(0, dtype=int32), 'w': Array([0., 0.], dtype=float32)}
    """

    elementwise = True

    def init_state(self, params: Params) -> OptState:
        return EmptyState()

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        return jax.tree.map(jnp.zeros_like, updates), EmptyState()


def freeze(mask: bool | Any) -> GradientTransformation:
    """Zero the updates where ``mask`` is True, so those parameters stay fixed.

    ``masked(set_to_zero(), mask)``; chain it before an optimizer to keep the frozen
    leaves fixed whatever the optimizer's statistics would do to them.

    Args:
        mask: a bool (freeze all or nothing), a pytree of bools or a function of the
            params returning one, as in :class:`masked`.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.freeze({"w": True, "b": False})
        >>> g = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx.update(g, tx.init(g))[0]["w"]
        Array([0., 0.], dtype=float32)
    """
    return masked(set_to_zero(), mask)


# ---- parameter groups --------------------------------------------------------------------


class PartitionState(NamedTuple):
    """State of :class:`partition`: each group's :class:`MaskedState`, keyed by label."""

    inner_states: dict[Hashable, OptState]


MultiTransformState = PartitionState
"""optax's older name for :class:`PartitionState`."""


def _is_label_function(labels: Any, known: Any) -> bool:
    """Whether ``labels`` is a function of the params rather than a tree of labels.

    A callable is a function unless it is a pytree (an Equinox module, say) whose leaves
    are all labels of ``transforms``.
    """
    if not callable(labels):
        return False
    leaves, treedef = jax.tree.flatten(labels)
    if jax.tree_util.treedef_is_leaf(treedef):
        return True
    return not (leaves and all(_hashable(x) and x in known for x in leaves))


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


class partition(GradientTransformation):
    """Give each group of parameters its own transform.

    ``u_i = T_{label_i}(g)_i``: each transform runs, as :class:`masked`, on the leaves
    whose label is its key (every step) and keeps state only for them, in
    ``state.inner_states[label]`` (a :class:`MaskedState`).

    Args:
        transforms: a mapping from label to transform (funcopt's or optax's).
        param_labels: a pytree of labels with the params' structure (or a prefix of
            it), or a function of the params (of the updates in ``update``) returning
            one. Every label must be a key of ``transforms``.
        mask_compatible_extra_args: also mask the extra keyword arguments of ``update``
            that have the structure of the updates (as optax).

    Example (no weight decay on biases and norm scales, i.e. 1-d leaves):
        >>> import jax, jax.numpy as jnp, funcopt
        >>> labels = lambda p: jax.tree.map(lambda x: "decay" if x.ndim > 1 else "plain", p)
        >>> tx = funcopt.partition(
        ...     {"decay": funcopt.add_decayed_weights(0.5), "plain": funcopt.scale(1.0)}, labels)
        >>> params = {"w": jnp.ones((1, 2)), "b": jnp.ones(2)}
        >>> u, state = tx.update(params, tx.init(params), params)
        >>> u["w"], u["b"]  # g + 0.5 θ on the matrix only
        (Array([[1.5, 1.5]], dtype=float32), Array([1., 1.], dtype=float32))
        >>> sorted(state.inner_states)
        ['decay', 'plain']
    """

    State = PartitionState

    transforms: dict[Hashable, GradientTransformation]
    param_labels: Any = static()
    mask_compatible_extra_args: bool = static(False, BOOL)

    def __init__(
        self,
        transforms: Mapping[Hashable, Any],
        param_labels: Any | Callable[[Params], Any],
        *,
        mask_compatible_extra_args: bool = False,
    ) -> None:
        if not isinstance(transforms, Mapping):
            raise TypeError(
                f"partition: transforms must be a mapping from label to transform, got "
                f"{type(transforms).__name__}"
            )
        members = {
            label: as_transform(tx, f"partition: transforms[{label!r}]")
            for label, tx in transforms.items()
        }
        object.__setattr__(self, "transforms", members)
        object.__setattr__(self, "param_labels", param_labels)
        object.__setattr__(self, "mask_compatible_extra_args", mask_compatible_extra_args)
        self.__post_init__()

    def _labels(self, tree: Any) -> Any:
        labels = self.param_labels
        if _is_label_function(labels, self.transforms):
            labels = labels(tree)
        leaves = jax.tree.leaves(labels)
        unknown = {x for x in leaves if not (_hashable(x) and x in self.transforms)}
        if unknown:
            raise ValueError(
                f"partition: labels {sorted(map(repr, unknown))} have no transform; "
                f"transforms has keys {sorted(map(repr, self.transforms))}"
            )
        return labels

    def groups(self, tree: Any) -> dict[Hashable, masked]:
        """Each label's transform, masked to the leaves of ``tree`` with that label."""
        labels = self._labels(tree)

        def mask_of(group: Hashable) -> Any:
            return jax.tree.map(lambda label: bool(label == group), labels)

        return {
            group: masked(
                tx, mask_of(group), mask_compatible_extra_args=self.mask_compatible_extra_args
            )
            for group, tx in self.transforms.items()
        }

    def init_state(self, params: Params) -> OptState:
        if is_stand_in(params):  # optax.tree.map_params' placeholder: no labels to resolve
            return PartitionState(
                {g: masked(tx, True).init(params) for g, tx in self.transforms.items()}
            )
        return PartitionState({g: tx.init(params) for g, tx in self.groups(params).items()})

    def apply(
        self, updates: Updates, state: OptState, params: Params | None, count: Any, **extra: Any
    ) -> tuple[Updates, OptState]:
        if not isinstance(state, PartitionState) or set(state.inner_states) != set(self.transforms):
            raise StructureError(
                f"partition with labels {sorted(map(repr, self.transforms))} got a state of "
                f"type {type(state).__name__}: was it made by the same partition's init?"
            )
        new_states = {}
        for group, tx in self.groups(updates).items():
            updates, new_states[group] = tx.update(
                updates, state.inner_states[group], params, **extra
            )
        return updates, PartitionState(new_states)


multi_transform = partition
"""optax's older name for :class:`partition`."""


def selective_transform(optimizer: Any, *, freeze_mask: bool | Any) -> GradientTransformation:
    """Run ``optimizer`` only on the leaves not frozen by ``freeze_mask``; zero the others.

    ``partition({"train": optimizer, "freeze": set_to_zero()}, labels)``, labels from the
    mask: unlike ``chain(freeze(mask), optimizer)``, the optimizer keeps no state for the
    frozen leaves. Equal to ``optax.transforms.selective_transform``.

    Args:
        optimizer: the transform for the trained leaves.
        freeze_mask: True where a leaf is frozen: a bool, a pytree of bools or a function of
            the params returning one.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.selective_transform(funcopt.adam(0.1), freeze_mask={"w": True, "b": False})
        >>> p = {"w": jnp.ones(2), "b": jnp.ones(2)}
        >>> tx.init(p).inner_states["train"].inner_state[0].inner_state.numerator[0].mu["w"]
        MaskedNode()
    """
    freeze_mask = MASK("freeze_mask", freeze_mask)

    labels = (
        _FreezeLabels(freeze_mask) if is_mask_function(freeze_mask) else _freeze_labels(freeze_mask)
    )
    return partition({"train": optimizer, "freeze": set_to_zero()}, labels)


def _freeze_labels(mask: Any) -> Any:
    """``"freeze"`` where ``mask`` is True, ``"train"`` elsewhere."""
    return jax.tree.map(lambda frozen: "freeze" if frozen else "train", mask)


@dataclasses.dataclass(frozen=True)
class _FreezeLabels:
    """The labels of :func:`selective_transform` for a mask function: a value, so that two
    transforms built from the same function are equal (and compile once)."""

    freeze_mask: Callable[[Params], Any]

    def __call__(self, params: Params) -> Any:
        return _freeze_labels(self.freeze_mask(params))

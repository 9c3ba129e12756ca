"""Adafactor: a second moment kept as row and column statistics, and the optimizer.

:class:`scale_by_factored_rms` keeps, for a matrix-like leaf, one average of ``g²`` per
row and one per column instead of one per coordinate (``n + m`` numbers instead of
``n · m``), and rebuilds the full estimate as their outer product. Whether a leaf is
factored depends on its shape, so the primitive is per leaf, not elementwise.
:func:`adafactor` composes it with block-RMS clipping, the relative step size and the
optional momentum and weight decay, as ``optax.adafactor`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcopt.base import GradientTransformation, ScalarOrSchedule, Updates
from funcopt.clipping import clip_by_block_rms
from funcopt.combine import chain
from funcopt.lifting import Leafwise, abs2, real_dtype, second_moment_like
from funcopt.moments import scale_by_momentum
from funcopt.scaling import (
    add_decayed_weights,
    scale,
    scale_by_learning_rate,
    scale_by_param_block_rms,
)
from funcopt.trees import MASK, Mask
from funcopt.validation import (
    BOOL,
    DTYPE,
    NONNEGATIVE,
    POSITIVE,
    hyperparameters,
    integer,
    interval,
)
from funcopt.values import hyper, static

__all__ = ["FactoredState", "adafactor", "scale_by_factored_rms"]


class FactoredState(NamedTuple):
    """State of :class:`scale_by_factored_rms` (optax's field names), per leaf.

    A factored leaf keeps ``v_row`` and ``v_col`` (its shape without the largest axis,
    and without the second largest); any other leaf keeps a full ``v``. The buffers a
    leaf does not use are one-element placeholders (each its own buffer), so the state's
    structure is the same for every leaf. The step count is the enclosing
    :class:`~funcopt.base.CountState`'s.

    Attributes:
        v_row: the row statistics (averages of ``g² + ε`` over the largest axis).
        v_col: the column statistics (averages over the second largest axis).
        v: the full second moment of a leaf that is not factored.
    """

    v_row: Updates
    v_col: Updates
    v: Updates


def _decay_rate_pow(i: jax.Array, exponent: Any = 0.8) -> jax.Array:
    """Adafactor's increasing decay ``β = 1 − (i + 1)^(−c)`` at step ``i`` (0 first).

    As optax's default ``decay_rate_fn``: computed in float32.
    """
    t = jnp.asarray(i + 1).astype(jnp.float32)
    return 1.0 - t ** (-exponent)


def _factored_dims(shape: tuple[int, ...], factored: bool, min_size: int) -> Any:
    """The (second largest, largest) axes of a leaf worth factoring, else ``None``."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_size:
        return None
    return int(order[-2]), int(order[-1])


def _zeros_without_axis(p: jax.Array, axis: int, dtype: Any) -> jax.Array:
    """A fresh zero buffer shaped like ``p`` without ``axis`` (keeping its sharding)."""
    target = jax.eval_shape(lambda x: jnp.sum(x, axis=axis), p)
    return jnp.zeros_like(target, dtype=dtype)


class scale_by_factored_rms(Leafwise):
    r"""Adafactor's second moment: row and column averages instead of a full matrix.

    With $\beta_t$ = ``decay_rate_fn(t − 1 − t₀, c)`` (by default
    $1 - (t - t_0)^{-c}$, so $\beta_1 = 0$) and $G = |g|^2 + \epsilon$, a leaf whose
    second largest axis is at least ``min_dim_size_to_factor`` keeps only

    $$ R_t = \beta_t R_{t-1} + (1-\beta_t)\,\mathrm{mean}_{cols} G, \quad
       C_t = \beta_t C_{t-1} + (1-\beta_t)\,\mathrm{mean}_{rows} G, \quad
       u_t = g_t \Big/ \sqrt{R_t C_t / \mathrm{mean}(R_t)} $$

    (``mean_cols`` over the largest axis, ``mean_rows`` over the second largest), and
    any other leaf a full $v_t = \beta_t v_{t-1} + (1-\beta_t) G$, $u_t = g_t/\sqrt{v_t}$.
    Statistics are kept in at least float32, real for complex leaves. Equal to
    ``optax.scale_by_factored_rms``.

    Args:
        factored: factor leaves of rank ≥ 2 at all (False keeps a full ``v`` everywhere).
        decay_rate: the exponent ``c`` > 0 of the decay schedule.
        step_offset: ``t₀`` ≥ 0, steps to subtract from the count, for a state resumed
            at a count ≥ ``t₀`` (on a fresh state an offset > 0 makes the first ``β_t``, and
            so the statistics, NaN, as in optax).
        min_dim_size_to_factor: factor only if the second largest axis is at least this
            long (≥ 1).
        epsilon: ε ≥ 0 added to ``|g|²``.
        decay_rate_fn: ``decay_rate_fn(step, decay_rate) -> β``, the decay at ``step``
            (0 at the first update, less ``t₀``); default Adafactor's power schedule. A
            schedule with an upper bound (Zhai et al., 2021) keeps ``v`` from freezing.

    Example:
        >>> import jax, jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_factored_rms(min_dim_size_to_factor=2)
        >>> state = tx.init({"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)})
        >>> s = state.inner_state  # the count is kept beside it
        >>> jax.tree.map(jnp.shape, (s.v_row, s.v_col, s.v))  # (1,): unused
        ({'b': (1,), 'w': (2,)}, {'b': (1,), 'w': (3,)}, {'b': (3,), 'w': (1,)})
        >>> grads = {"w": jnp.full((2, 3), 2.0), "b": jnp.array([1.0, -2.0, 3.0])}
        >>> tx.update(grads, state)[0]["b"]  # β_1 = 0, so the first step is g / |g|
        Array([ 1., -1.,  1.], dtype=float32)

    Reference: Shazeer & Stern, Adafactor, ICML 2018.
    """

    factored: bool = static(True, BOOL)
    decay_rate: float = hyper(POSITIVE, 0.8)
    step_offset: int = static(0, integer(0))
    min_dim_size_to_factor: int = static(128, integer(1))
    epsilon: float = hyper(NONNEGATIVE, 1e-30)
    decay_rate_fn: Callable[[Any, Any], Any] = static(_decay_rate_pow)

    State = FactoredState
    reads_count = True
    elementwise = False

    def check(self) -> None:
        if not callable(self.decay_rate_fn):
            raise TypeError(
                "scale_by_factored_rms: decay_rate_fn must be a function "
                f"(step, decay_rate) -> decay, got {type(self.decay_rate_fn).__name__}"
            )

    def _dims(self, shape: tuple[int, ...]) -> Any:
        return _factored_dims(shape, self.factored, self.min_dim_size_to_factor)

    def init_leaf(self, p: jax.Array) -> FactoredState:
        dtype = real_dtype(jnp.result_type(p))
        d = self._dims(jnp.shape(p))
        if d is None:
            return FactoredState(
                jnp.zeros((1,), dtype), jnp.zeros((1,), dtype), second_moment_like(p)
            )
        second, largest = d
        return FactoredState(
            _zeros_without_axis(p, largest, dtype),
            _zeros_without_axis(p, second, dtype),
            jnp.zeros((1,), dtype),
        )

    def scalars(self, count: Any) -> dict[str, Any]:
        return {"beta": self.decay_rate_fn(count - 1 - self.step_offset, self.decay_rate)}

    def leaf(self, g: jax.Array, s: FactoredState, *, beta: Any) -> tuple[jax.Array, FactoredState]:
        g2 = abs2(g) + self.epsilon
        d = self._dims(g.shape)
        if d is None:
            v = beta * s.v + (1 - beta) * g2
            return g * v**-0.5, FactoredState(s.v_row, s.v_col, v)
        second, largest = d
        row = beta * s.v_row + (1 - beta) * jnp.mean(g2, axis=largest)
        col = beta * s.v_col + (1 - beta) * jnp.mean(g2, axis=second)
        reduced = second - 1 if second > largest else second
        row_factor = (row / jnp.mean(row, axis=reduced, keepdims=True)) ** -0.5
        col_factor = col**-0.5
        u = g * jnp.expand_dims(row_factor, largest) * jnp.expand_dims(col_factor, second)
        return u, FactoredState(row, col, s.v)


OPTIONAL_RATE = interval(0.0, schedule=True, optional=True)


@hyperparameters(
    learning_rate=OPTIONAL_RATE, min_dim_size_to_factor=integer(1), decay_rate=POSITIVE,
    decay_offset=integer(0), multiply_by_parameter_scale=BOOL,
    clipping_threshold=interval(0.0, low_inclusive=False, optional=True),
    momentum=interval(0.0, 1.0, optional=True), dtype_momentum=DTYPE,
    weight_decay_rate=OPTIONAL_RATE, eps=NONNEGATIVE, factored=BOOL, weight_decay_mask=MASK,
)  # fmt: skip
def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: float | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask | None = None,
) -> GradientTransformation:
    r"""Adafactor (Shazeer & Stern, 2018): factored second moments, relative step sizes.

    $$ u_t = \frac{g_t}{\sqrt{\hat V_t}}\ \text{(}\hat V\text{ factored, see
       scale\_by\_factored\_rms)},\quad u_t \leftarrow \frac{u_t}{\max(1,
       \mathrm{RMS}(u_t)/d)},\quad \theta_{t+1} = \theta_t - \eta\, \mathrm{RMS}(\theta_t)\, u_t $$

    then optional momentum and weight decay; each stage is skipped when its argument is
    ``None`` / ``False``. Equal to ``optax.adafactor``.

    Args:
        learning_rate: η ≥ 0, a number or a schedule; ``None`` means η = 1.
        min_dim_size_to_factor: factor a leaf of rank ≥ 2 only if its second largest
            axis is at least this long (≥ 1); other leaves keep a full ``V``.
        decay_rate: the exponent ``c`` > 0 of the decay ``β_t = 1 − t^{−c}``.
        decay_offset: steps ≥ 0 subtracted from the count in ``β_t``, for a state
            resumed at a count ≥ the offset (on a fresh state an offset > 0 makes the
            statistics NaN, as in optax).
        multiply_by_parameter_scale: multiply each leaf's step by ``max(RMS(θ), 10⁻³)``.
        clipping_threshold: ``d`` > 0, the largest RMS a leaf's step may keep, or
            ``None`` for no clipping.
        momentum: β in ``[0, 1)`` of a damped average of the scaled steps (no bias
            correction), or ``None``.
        dtype_momentum: dtype that average is stored in (optax's name for ``mu_dtype``).
        weight_decay_rate: λ ≥ 0 of ``λ θ`` added after the learning rate (so not
            multiplied by η), or ``None``.
        eps: ε ≥ 0 added to ``g²``.
        factored: ``False`` keeps a full ``V`` for every leaf.
        weight_decay_mask: which leaves decay: a pytree of bools shaped like the
            params, or a function of the params returning one; ``None`` decays every leaf.

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> params = {"w": jnp.array([2.0, -2.0])}  # RMS(θ) = 2
        >>> tx = funcopt.adafactor(0.1)
        >>> updates, state = tx.update({"w": jnp.array([2.0, -4.0])}, tx.init(params), params)
        >>> params = funcopt.apply_updates(params, updates)
        >>> [round(x, 4) for x in params["w"].tolist()]  # θ − η RMS(θ) sign(g)
        [1.8, -1.8]
        >>> factors = tx.init({"m": jnp.zeros((256, 128))})[0].inner_state  # row, col stats
        >>> factors.v_row["m"].shape, factors.v_col["m"].shape
        ((128,), (256,))
    """
    parts: list[GradientTransformation] = [
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))  # u / max(1, RMS(u) / d)
    if learning_rate is not None:
        parts.append(scale_by_learning_rate(learning_rate, flip_sign=False))  # η ·
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())  # · max(RMS(θ), 10⁻³)
    if momentum is not None:
        parts.append(scale_by_momentum(momentum, dtype_momentum))  # m = β m + (1 − β) ·
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))  # + λ θ
    parts.append(scale(-1))  # descend
    return chain(*parts)

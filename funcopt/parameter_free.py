r"""Learning-rate-free step sizes: the step is estimated from the run itself.

Distance over gradients (DoG, Ivgi et al., 2023) sets the step of each layer to the
largest distance the layer has moved from its start, over the root of the sum of its
squared gradient norms:

$$ \eta_t = \frac{\max_{s \le t} \lVert \theta_s - \theta_0 \rVert}
                {\sqrt{\sum_{s \le t} \lVert g_s \rVert^2}} $$

(with the distance started at ``r_ε (1 + ‖θ₀‖)`` so that the first step is not zero).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcopt.base import Updates
from funcopt.lifting import Leafwise, abs2, real_dtype, up
from funcopt.validation import DTYPE, NONNEGATIVE, POSITIVE, REAL
from funcopt.values import hyper, static

__all__ = ["DistanceOverGradientsState", "scale_by_distance_over_gradients"]


class DistanceOverGradientsState(NamedTuple):
    """State of :class:`scale_by_distance_over_gradients`, per leaf: the largest distance
    from the start, the sum of squared gradient norms, and the start itself."""

    max_dist: Updates
    grad_sum_of_squares: Updates
    init_params: Updates


class scale_by_distance_over_gradients(Leafwise):
    r"""Layer-wise DoG (LDoG): scale each leaf by its distance travelled over its gradients.

    $$ d_t = \max(d_{t-1}, \lVert\theta_t - \theta_0\rVert),\quad
       G_t = G_{t-1} + \lVert g_t\rVert^2,\quad
       u_t = s\, \frac{d_t}{\sqrt{G_t + \epsilon}}\, g_t,\qquad
       d_0 = r_\epsilon (1 + \lVert\theta_0\rVert),\ G_0 = 0 $$

    One copy of the start θ₀ (in ``param_dtype``) and two scalars per leaf. No sign flip:
    use ``global_scale=-1.0`` for a descent step, as in optax. Equal to
    ``optax.scale_by_distance_over_gradients``, except that ``G`` is a 0-d scalar per
    leaf (optax's shape ``(1,)`` turned a scalar parameter's update into shape ``(1,)``).

    Args:
        reps_rel: ``r_ε > 0``, the relative size of the first distance (1e-6; 1e-4 with
            batch norm, as the authors recommend).
        eps: ε ≥ 0 inside the root.
        param_dtype: dtype of the stored start θ₀ (complex parameters keep their own).
        global_scale: ``s``, a factor on every step (−1 for descent).

    Example:
        >>> import jax.numpy as jnp, funcopt
        >>> tx = funcopt.scale_by_distance_over_gradients(reps_rel=0.5, eps=0.0)
        >>> p = jnp.array([3.0, 4.0])  # ‖θ₀‖ = 5: d₀ = 0.5 · 6 = 3
        >>> u, _ = tx.update(jnp.array([0.0, 2.0]), tx.init(p), p)
        >>> u  # 3 / √4 · g
        Array([0., 3.], dtype=float32)

    Reference: Ivgi, Hinder and Carmon, DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule, 2023.
    """

    reps_rel: float = hyper(POSITIVE, 1e-6)
    eps: float = hyper(NONNEGATIVE, 1e-8)
    param_dtype: Any = static(jnp.dtype(jnp.float32), DTYPE)
    global_scale: float = hyper(REAL, 1.0)

    State = DistanceOverGradientsState
    needs_params = True
    elementwise = False

    def init_leaf(self, p: jax.Array) -> DistanceOverGradientsState:
        real = real_dtype(jnp.result_type(p))
        norm = jnp.sqrt(jnp.sum(abs2(up(p))))
        return DistanceOverGradientsState(
            (self.reps_rel * (1 + norm)).astype(real),
            jnp.zeros([], real),
            jnp.array(p, dtype=jnp.result_type(p) if jnp.iscomplexobj(p) else self.param_dtype),
        )

    def leaf(
        self, g: jax.Array, s: DistanceOverGradientsState, *, p: jax.Array
    ) -> tuple[jax.Array, DistanceOverGradientsState]:
        distance = jnp.sqrt(jnp.sum(abs2(p - s.init_params)))
        d = jnp.maximum(s.max_dist, distance)
        total = s.grad_sum_of_squares + jnp.sum(abs2(g))
        u = self.global_scale * (d / jnp.sqrt(total + self.eps)) * g
        return u, DistanceOverGradientsState(d, total, s.init_params)

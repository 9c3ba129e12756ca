"""The adaptive optimizers beyond the chapter (funcopt.adaptive), past their oracles.

The optax, torch.optim and paper comparisons of nadam, amsgrad, adamax, adagrad,
adadelta, adabelief, radam and yogi run from ``registry`` in ``test_oracles.py``. Here:

- every optimizer that keeps a first moment (of every module) stores it in ``mu_dtype``
  and its bfloat16 run stays close to the full-precision one;
- the accumulators of squares and maxima of adadelta and amsgrad stay in float32 for
  bfloat16 parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from oracle import run
from support import assert_bf16_statistics_stay_float32

import funcopt

# ---- low-memory first moments: every optimizer that keeps one takes its dtype ----------

BF16 = jnp.bfloat16
# (id, factory of (dtype) -> optimizer, how many bf16 state leaves per parameter leaf).
# One first moment m per leaf everywhere but AdaBelief: its numerator keeps m as ``mu``,
# and its belief moment keeps its own prediction m (``prediction``, the same average of g,
# kept by the denominator so that belief_moment composes with any numerator), and both are
# first moments stored in mu_dtype: 2 per leaf. RAdam keeps m once (rectify wraps one
# precondition).
FIRST_MOMENT = [
    ("gdm", lambda d: funcopt.gdm(0.1, 0.9, mu_dtype=d), 1),
    ("sgd", lambda d: funcopt.sgd(0.1, 0.9, mu_dtype=d), 1),
    ("rmsprop-momentum", lambda d: funcopt.rmsprop(0.01, momentum=0.9, mu_dtype=d), 1),
    ("adam", lambda d: funcopt.adam(0.01, mu_dtype=d), 1),
    ("adamw", lambda d: funcopt.adamw(0.01, mu_dtype=d), 1),
    ("nadam", lambda d: funcopt.nadam(0.01, mu_dtype=d), 1),
    ("nadamw", lambda d: funcopt.nadamw(0.01, mu_dtype=d), 1),
    ("amsgrad", lambda d: funcopt.amsgrad(0.01, mu_dtype=d), 1),
    ("adamax", lambda d: funcopt.adamax(0.01, mu_dtype=d), 1),
    ("adamaxw", lambda d: funcopt.adamaxw(0.01, mu_dtype=d), 1),
    ("adabelief", lambda d: funcopt.adabelief(0.01, mu_dtype=d), 2),
    ("radam", lambda d: funcopt.radam(0.01, mu_dtype=d), 1),
    ("yogi", lambda d: funcopt.yogi(0.01, mu_dtype=d), 1),
    ("lion", lambda d: funcopt.lion(0.001, mu_dtype=d), 1),
    ("lamb", lambda d: funcopt.lamb(0.01, mu_dtype=d), 1),
    ("lars", lambda d: funcopt.lars(0.1, mu_dtype=d), 1),
    ("novograd", lambda d: funcopt.novograd(0.01, mu_dtype=d), 1),
    ("signum", lambda d: funcopt.signum(0.01, mu_dtype=d), 1),
    ("adafactor", lambda d: funcopt.adafactor(0.01, momentum=0.9, dtype_momentum=d), 1),
    ("muon", lambda d: funcopt.muon(0.01, mu_dtype=d), 1),
]


def test_adabelief_keeps_its_first_moment_as_mu_and_prediction():
    """The two bf16 leaves per parameter of AdaBelief are the numerator's ``mu`` and the
    belief moment's ``prediction``; the second moment ``nu`` stays float32."""
    params = {"a": jnp.ones((4, 6)), "b": jnp.ones((2, 3))}
    state = funcopt.adabelief(0.01, mu_dtype=BF16).init(params)
    for name, dtype in [("mu", BF16), ("prediction", BF16), ("nu", jnp.float32)]:
        tree = optax.tree_utils.tree_get(state, name)
        assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(dtype)}, name


@pytest.mark.parametrize(
    ("make", "per_leaf"), [r[1:] for r in FIRST_MOMENT], ids=[r[0] for r in FIRST_MOMENT]
)
def test_first_moment_dtype_is_kept_and_the_run_stays_close(make, per_leaf):
    params = {
        "a": jnp.linspace(-1.0, 1.0, 24).reshape(4, 6),
        "b": jnp.linspace(0.5, 2.0, 6).reshape(2, 3),
    }
    low, full = make(BF16), make(None)
    state = low.init(params)
    n_leaves = len(jax.tree.leaves(params))

    def bf16_leaves(tree):
        return [x for x in jax.tree.leaves(tree) if x.dtype == BF16]

    assert len(bf16_leaves(state)) == per_leaf * n_leaves
    assert not bf16_leaves(full.init(params))
    p_low, s_low = run(low, params, 10, funcopt.apply_updates)
    p_full, _ = run(full, params, 10, funcopt.apply_updates)
    assert len(bf16_leaves(s_low)) == per_leaf * n_leaves  # still bf16 after the updates
    # bf16 keeps 8 bits of mantissa: the trajectories agree to about 1% of the travel.
    for a, b, p0 in zip(
        jax.tree.leaves(p_low), jax.tree.leaves(p_full), jax.tree.leaves(params), strict=True
    ):
        assert bool(jnp.all(jnp.isfinite(a)))
        travel = float(jnp.max(jnp.abs(b - p0)))
        assert travel > 0
        assert float(jnp.max(jnp.abs(a - b))) <= 0.02 * travel + 1e-6


# ---- accumulators of squares and maxima stay in float32 for bf16 parameters ----------

# (id, factory, first moments per leaf: the only state that may be bf16). The moments
# themselves (sum_of_squares, yogi_moment, infinity_norm, running_max, belief_moment) are
# checked in test_moments.py; these are adadelta's direction and the optimizers built on them.
SQUARE_STATES = [
    ("scale_by_delta_rms", lambda: funcopt.scale_by_delta_rms(0.9), 0),
    ("adadelta", lambda: funcopt.adadelta(1.0), 0),
    ("amsgrad", lambda: funcopt.amsgrad(0.1), 1),  # keeps a first moment
]


@pytest.mark.parametrize(
    ("name", "make", "first"), SQUARE_STATES, ids=[n for n, *_ in SQUARE_STATES]
)
def test_square_accumulators_are_float32_for_bf16_params(name, make, first):
    assert_bf16_statistics_stay_float32(make(), first)

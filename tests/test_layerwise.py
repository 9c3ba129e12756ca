"""The layer-wise optimizers (funcopt.layerwise): lamb, lars and novograd, past their oracles.

Their optax comparisons (masks and Nesterov included) run from ``registry`` in
``test_oracles.py``; their first moments' dtype in ``test_adaptive.py``. Here: LARS's
``None`` masks, and the per-leaf statistics of bfloat16 parameters.
"""

from __future__ import annotations

import pytest
from oracle import assert_rel_close, random_params, run
from support import assert_bf16_statistics_stay_float32

import funcopt


def test_lars_none_masks_mean_every_leaf():
    """``None`` masks mean "all leaves", as for every other optimizer's ``mask``."""
    params = random_params(0)
    got, _ = run(
        funcopt.lars(0.1, 1e-4, None, trust_ratio_mask=None), params, 20, funcopt.apply_updates
    )
    want, _ = run(
        funcopt.lars(0.1, 1e-4, True, trust_ratio_mask=True), params, 20, funcopt.apply_updates
    )
    assert_rel_close(got, want, 0.0)


# ---- accumulators of squares stay in float32 for bf16 parameters ---------------------

# (id, factory, first moments per leaf: the only state that may be bf16)
SQUARE_STATES = [
    ("scale_by_layerwise_rms", lambda: funcopt.scale_by_layerwise_rms(0.9), 0),
    ("novograd", lambda: funcopt.novograd(0.1), 1),  # its trace m
    ("lamb", lambda: funcopt.lamb(0.1), 1),  # Adam's m
]


@pytest.mark.parametrize(
    ("name", "make", "first"), SQUARE_STATES, ids=[n for n, *_ in SQUARE_STATES]
)
def test_square_accumulators_are_float32_for_bf16_params(name, make, first):
    assert_bf16_statistics_stay_float32(make(), first)

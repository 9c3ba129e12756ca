"""Schedule-free optimization (funcopt.schedulefree), past the registry's oracles.

``schedule_free_adamw``'s parameters are compared with optax.contrib's from ``registry``
in ``test_oracles.py``; here the evaluation parameters ``x`` (also found inside a chain's
state), the wrapper's argument checks, and donation with an optax base optimizer.
"""

from __future__ import annotations

import optax
import pytest
from optax import contrib
from oracle import assert_rel_close, quadratic_grads, random_params, run
from support import assert_state_buffers_donatable

import funcopt


def test_schedule_free_eval_params_match_optax():
    kwargs = dict(learning_rate=0.01, warmup_steps=50)
    params = random_params(0)
    got, got_state = run(
        funcopt.schedule_free_adamw(**kwargs), params, 300, funcopt.apply_updates, quadratic_grads
    )
    want, want_state = run(
        contrib.schedule_free_adamw(**kwargs), params, 300, optax.apply_updates, quadratic_grads
    )
    assert_rel_close(
        funcopt.schedule_free_eval_params(got_state, got),
        contrib.schedule_free_eval_params(want_state, want),
        1e-5,
    )
    # also found inside a chain's state
    tx = funcopt.chain(funcopt.scale(1.0), funcopt.schedule_free_adamw(**kwargs))
    state = tx.init(params)
    assert_rel_close(funcopt.schedule_free_eval_params(state, params), params, 1e-6)  # x₀ = y₀


@pytest.mark.parametrize(
    ("make", "argument"),
    [(lambda: funcopt.schedule_free(funcopt.sgd(0.1), 0.1, b1=1.0), "b1")],
)
def test_invalid_hyperparameters_are_named(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


# The registry's rows (schedule_free_adamw among them) are donated in test_properties.py;
# this one wraps an optax base optimizer.
DONATED = [
    ("schedule_free-optax-base", lambda: funcopt.schedule_free(optax.sgd(0.1), 0.1)),
]


@pytest.mark.parametrize("make", [d[1] for d in DONATED], ids=[d[0] for d in DONATED])
def test_init_allocates_a_buffer_per_state_leaf(make):
    """No state leaf shares a buffer with another or with the params (schedule-free's z is
    a copy), so the state, and the params beside it, can be donated."""
    assert_state_buffers_donatable(make(), random_params(0))

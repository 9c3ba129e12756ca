"""Which transforms the kernels compute: each family's plan is read from the transform's
structure, refused for any variant the kernel does not implement, and its scalars, state
split and equations reproduce the transform's own step."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcopt
from funcopt.fused_plans import (
    ADAGRAD,
    ADAM,
    ADAMW,
    EMA,
    LION,
    MOMENTUM,
    NESTEROV,
    RMSPROP,
    SGD,
    computes,
    kernel_step,
    reference,
)

SCHEDULE = funcopt.linear_schedule(0.05, 0.01, 4)
COMPUTED = {  # transform -> (kind, also for a lone leaf)
    "adam": (funcopt.adam(1e-2), ADAM, True),
    "adamw, schedules": (funcopt.adamw(SCHEDULE, weight_decay=SCHEDULE), ADAMW, True),
    "adam written out": (
        funcopt.chain(funcopt.scale_by_adam(), funcopt.scale_by_learning_rate(1e-2)),
        ADAM,
        True,
    ),
    "gd": (funcopt.gd(0.1), SGD, False),
    "gd, schedule": (funcopt.gd(SCHEDULE), SGD, False),
    "gdm, schedule": (funcopt.gdm(SCHEDULE, 0.8), EMA, False),
    "sgd": (funcopt.sgd(0.1), SGD, False),
    "sgd, schedule": (funcopt.sgd(SCHEDULE), SGD, False),
    "sgd-momentum": (funcopt.sgd(0.1, momentum=0.9), MOMENTUM, False),
    "sgd-nesterov, schedule": (funcopt.sgd(SCHEDULE, momentum=0.5, nesterov=True), NESTEROV, False),
    "lion": (funcopt.lion(1e-3, b1=0.8, weight_decay=0.1), LION, False),
    "lion, schedules": (funcopt.lion(SCHEDULE, weight_decay=SCHEDULE), LION, False),
    "lion, array hyper-parameters": (
        funcopt.lion(jnp.asarray(1e-3), b2=jnp.asarray(0.9)),
        LION,
        False,
    ),
    "rmsprop": (funcopt.rmsprop(1e-2), RMSPROP, False),
    "adagrad": (funcopt.adagrad(1e-2), ADAGRAD, False),
    "adagrad, eps outside, schedule": (
        funcopt.chain(
            funcopt.precondition(funcopt.identity(), funcopt.sum_of_squares(0.5), eps=1e-3),
            funcopt.scale_by_learning_rate(SCHEDULE),
        ),
        ADAGRAD,
        False,
    ),
    "rmsprop, eps outside, schedule": (
        funcopt.rmsprop(SCHEDULE, decay=0.8, eps=1e-3, eps_in_sqrt=False),
        RMSPROP,
        False,
    ),
}
REFUSED = {
    "adamw with a mask": funcopt.adamw(1e-2, mask=lambda p: jax.tree.map(lambda x: True, p)),
    "adam, bfloat16 moment": funcopt.adam(1e-2, mu_dtype=jnp.bfloat16),
    "adam, nesterov": funcopt.adam(1e-2, nesterov=True),
    "adam, eps_root": funcopt.adam(1e-2, eps_root=1e-8),
    "sgd, bfloat16 trace": funcopt.sgd(0.1, momentum=0.9, mu_dtype=jnp.bfloat16),
    "ascent": funcopt.chain(
        funcopt.trace(0.9), funcopt.scale_by_learning_rate(0.1, flip_sign=False)
    ),
    "lion with a mask": funcopt.lion(1e-3, mask=lambda p: jax.tree.map(lambda x: True, p)),
    "lion, bfloat16 moment": funcopt.lion(1e-3, mu_dtype=jnp.bfloat16),
    "rmsprop, centered": funcopt.rmsprop(1e-2, centered=True),
    "rmsprop, momentum": funcopt.rmsprop(1e-2, momentum=0.9),
    "rmsprop, bias correction": funcopt.rmsprop(1e-2, bias_correction=True),
    "rmsprop, v0": funcopt.rmsprop(1e-2, initial_scale=1.0),
    "adabelief": funcopt.adabelief(1e-2),
    "gdm, bfloat16 average": funcopt.gdm(0.1, 0.9, mu_dtype=jnp.bfloat16),
    "gd ascent": funcopt.scale_by_learning_rate(0.1, flip_sign=False),
    "sgd, clipped": funcopt.chain(funcopt.clip(1.0), funcopt.sgd(0.1)),
}


@pytest.mark.parametrize("name", list(COMPUTED))
def test_plans_read_the_families(name):
    tx, kind, lone = COMPUTED[name]
    assert computes(tx, segmented=True)
    assert computes(tx, segmented=False) == lone
    assert kernel_step(tx, tx.init(jnp.zeros(3)), True).kind == kind


@pytest.mark.parametrize("name", list(REFUSED))
def test_plans_refuse_what_no_kernel_computes(name):
    assert not computes(REFUSED[name], segmented=True)


@pytest.mark.parametrize("name", list(COMPUTED))
def test_a_plan_steps_as_the_transform(name):
    """Four steps of ``reference`` on the state split out by ``kernel_step`` and put back by
    its ``rebuild``, against ``tx.update`` + ``apply_updates``: the scalars, the state's
    moments and counts, and the equations are the transform's own (float32 rounding)."""
    tx = COMPUTED[name][0]
    rng = np.random.default_rng(0)
    p = want = jnp.asarray(rng.standard_normal(37), jnp.float32)
    state = want_state = tx.init(p)
    for _ in range(4):
        g = jnp.asarray(rng.standard_normal(37), jnp.float32)
        step = kernel_step(tx, state, True)
        p, *moments = reference(step.kind, g, p, step.states, step.coef)
        state = step.rebuild(tuple(moments))
        updates, want_state = tx.update(g, want_state, want)
        want = funcopt.apply_updates(want, updates)
        chex.assert_trees_all_equal_structs(state, want_state)
        chex.assert_trees_all_close((p, state), (want, want_state), rtol=1e-6, atol=1e-7)

"""The optimizers beyond the chapter against independent oracles.

1. optax (or optax.contrib): 1000 steps on random nested pytrees, float32 ≤ 1e-5, driven
   by one table ``(name, funcopt factory, optax factory, kwargs)``.
2. torch.optim (CPU, float64, 200 steps) where torch has the optimizer.
3. The papers' equations written out by hand where funcopt deliberately differs.
4. No needless recompiles: equal arguments give equal transforms, which jit accepts as
   a static argument without tracing again.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from oracle import assert_rel_close, random_params, run

import funcopt


def wavy_grads(params, step):
    """Like ``oracle.quadratic_grads`` but with deterministic noise ``sin(0.7 t + 1.3 i + k)``.

    Every coordinate's gradient still changes sign and size, but there is no PRNG to
    compile: threefry makes each 1000-step scan take seconds to compile, this does not.
    """
    leaves, treedef = jax.tree.flatten(params)
    out = []
    for k, p in enumerate(leaves):
        index = jnp.arange(p.size, dtype=p.dtype).reshape(p.shape)
        phase = jnp.asarray(0.7, p.dtype) * step.astype(p.dtype) + jnp.asarray(1.3, p.dtype) * index
        noise = jnp.sin(phase + jnp.asarray(k, p.dtype))
        out.append(jnp.asarray(0.5 + k, p.dtype) * (p - jnp.asarray(0.3, p.dtype)) + noise)
    return treedef.unflatten(out)


def _matrices(params):
    """Weight-decay / trust-ratio mask: only leaves of rank ≥ 2 (module level, so equal)."""
    return jax.tree.map(lambda x: x.ndim > 1, params)


# (id, funcopt factory, optax factory, kwargs): the same kwargs go to both.
TABLE = [
    ("sgd-nesterov", funcopt.sgd, optax.sgd, dict(learning_rate=0.02, momentum=0.9, nesterov=True)),
    ("nadam", funcopt.nadam, optax.nadam, dict(learning_rate=0.01)),
    ("nadam-eps_root", funcopt.nadam, optax.nadam, dict(learning_rate=0.01, b1=0.8, eps_root=1e-8)),
    ("nadamw", funcopt.nadamw, optax.nadamw, dict(learning_rate=0.01, weight_decay=0.1)),
    ("amsgrad", funcopt.amsgrad, optax.amsgrad, dict(learning_rate=0.01)),
    (
        "amsgrad-uncorrected",
        funcopt.amsgrad,
        optax.amsgrad,
        dict(learning_rate=0.01, bias_correction_mu=False, bias_correction_nu=False, eps_root=1e-8),
    ),
    ("adamax", funcopt.adamax, optax.adamax, dict(learning_rate=0.01)),
    (
        "adamaxw",
        funcopt.adamaxw,
        optax.adamaxw,
        dict(learning_rate=0.01, weight_decay=0.1, mask=_matrices),
    ),
    ("adagrad", funcopt.adagrad, optax.adagrad, dict(learning_rate=0.1)),
    ("adadelta", funcopt.adadelta, optax.adadelta, dict(learning_rate=1.0, weight_decay=0.01)),
    ("adabelief", funcopt.adabelief, optax.adabelief, dict(learning_rate=0.01)),
    (
        "adabelief-nesterov",
        funcopt.adabelief,
        optax.adabelief,
        dict(learning_rate=0.01, nesterov=True),
    ),
    ("radam", funcopt.radam, optax.radam, dict(learning_rate=0.01)),
    (
        "radam-nesterov",
        funcopt.radam,
        optax.radam,
        dict(learning_rate=0.01, nesterov=True, threshold=4.0),
    ),
    ("yogi", funcopt.yogi, optax.yogi, dict(learning_rate=0.01)),
    ("lion", funcopt.lion, optax.lion, dict(learning_rate=0.001, weight_decay=0.1)),
    ("sign_sgd", funcopt.sign_sgd, optax.sign_sgd, dict(learning_rate=0.003)),
    ("signum", funcopt.signum, optax.signum, dict(learning_rate=0.003, beta=0.8)),
    ("lamb", funcopt.lamb, optax.lamb, dict(learning_rate=0.01, weight_decay=0.1, mask=_matrices)),
    ("lars", funcopt.lars, optax.lars, dict(learning_rate=0.5, weight_decay=0.01)),
    (
        "lars-masked-nesterov",
        funcopt.lars,
        optax.lars,
        dict(
            learning_rate=0.5,
            weight_decay=0.01,
            weight_decay_mask=_matrices,
            trust_ratio_mask=_matrices,
            nesterov=True,
        ),
    ),
    ("noisy_sgd", funcopt.noisy_sgd, optax.noisy_sgd, dict(learning_rate=0.01, key=3)),
    ("novograd", funcopt.novograd, optax.novograd, dict(learning_rate=0.01, weight_decay=0.01)),
    (
        "adafactor",
        funcopt.adafactor,
        optax.adafactor,
        dict(learning_rate=0.01, min_dim_size_to_factor=2),
    ),
    (
        "adafactor-momentum-decay",
        funcopt.adafactor,
        optax.adafactor,
        dict(
            learning_rate=None,
            min_dim_size_to_factor=3,
            momentum=0.9,
            weight_decay_rate=0.01,
            clipping_threshold=None,
            decay_rate=0.7,
        ),
    ),
    (
        "adafactor-unfactored",
        funcopt.adafactor,
        optax.adafactor,
        dict(learning_rate=0.01, factored=False),
    ),
]
IDS = [row[0] for row in TABLE]


@pytest.mark.parametrize(("name", "ours", "theirs", "kwargs"), TABLE, ids=IDS)
def test_matches_optax_float32(name, ours, theirs, kwargs):
    params = random_params(0)
    got, _ = run(ours(**kwargs), params, 1000, funcopt.apply_updates, wavy_grads)
    want, _ = run(theirs(**kwargs), params, 1000, optax.apply_updates, wavy_grads)
    assert_rel_close(got, want, 1e-5)

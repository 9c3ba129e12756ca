"""Shared pytest set-up: strict JAX on request, x64 scoping, hypothesis profile."""

from __future__ import annotations

import os

# Tests run on the CPU; keep XLA from grabbing every core's worth of threads per worker.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")

# optax's own tests, run against funcopt by `make compat` (tests/optax_compat/run.py), in
# their own process and directory: never collected with funcopt's.
collect_ignore = ["optax_compat"]

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")


@pytest.fixture
def strict_dtypes():
    """No implicit dtype promotion inside funcopt (optax itself does not pass this)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture
def x64():
    """Enable float64 for the duration of one test."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def maybe_jit(request):
    """Run a function eagerly and under ``jax.jit``."""
    return jax.jit if request.param else (lambda f, **kw: f)

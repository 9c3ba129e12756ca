"""Muon (funcopt.orthogonal): Newton–Schulz, the shape scaling and the optimizer.

- the primitives against the SVD (real and complex matrices);
- ``muon`` against ``optax.contrib.muon`` in several configurations (float32 over 200
  steps and float64, and complex64), with full-tree weight-decay masks;
- the arguments' checks, which name the argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax import contrib
from oracle import assert_rel_close, quadratic_grads, random_params, run, run_against_optax

import funcopt

RNG = np.random.default_rng(0)
for _ in range(5):  # skip the five (4, 3) draws made before the matrix below in 0.1's tests
    RNG.normal(size=(4, 3))

# ---- Newton–Schulz and the shape scaling -----------------------------------------------


def test_orthogonalization_gives_near_unit_singular_values(maybe_jit):
    g = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float32)
    tx = funcopt.scale_by_orthogonalization()
    out, _ = maybe_jit(tx.update)(g, tx.init(g))
    s = np.linalg.svd(np.asarray(out), compute_uv=False)
    assert out.shape == g.shape and np.all((s > 0.6) & (s < 1.25)), s
    u, _, vt = np.linalg.svd(np.asarray(g), full_matrices=False)  # same singular vectors:
    d = u.T @ np.asarray(out) @ vt.T  # diagonal, each σ mapped to p(σ) ∈ (0.6, 1.25)
    np.testing.assert_allclose(d - np.diag(np.diag(d)), 0.0, atol=1e-4)
    assert np.all((np.diag(d) > 0.6) & (np.diag(d) < 1.25))


def test_scale_by_shape_width_factor():
    g = {"wide": jnp.ones((2, 8)), "tall": jnp.ones((8, 2))}
    out, _ = funcopt.scale_by_shape().update(g, funcopt.scale_by_shape().init(g))
    np.testing.assert_allclose(out["wide"], 2.0 * np.ones((2, 8)))
    np.testing.assert_allclose(out["tall"], np.ones((8, 2)))
    out, _ = funcopt.scale_by_shape(0.2).update(g, funcopt.scale_by_shape(0.2).init(g))
    np.testing.assert_allclose(out["tall"], 0.2 * np.sqrt(8) * np.ones((8, 2)), rtol=1e-6)


def _complex_matrix(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def test_adaptive_orthogonalization_of_a_complex_matrix_scales_by_a_real_dual_norm(x64):
    """u = Re⟨g, O(g)⟩ O(g), with ⟨g, O⟩ = Σ conj(g) O = Σᵢ σᵢ p(σᵢ) (real)."""
    g = jnp.asarray(_complex_matrix((3, 5), 2))
    o = funcopt.orthogonalize_via_newton_schulz(g)
    tx = funcopt.scale_by_orthogonalization(adaptive=True)
    out, _ = tx.update(g, tx.init(g))
    u, s, vh = np.linalg.svd(np.asarray(g), full_matrices=False)
    p_of_s = np.real(np.diag(u.conj().T @ np.asarray(o) @ vh.conj().T))
    assert out.dtype == jnp.complex128
    np.testing.assert_allclose(np.asarray(out), np.sum(s * p_of_s) * np.asarray(o), rtol=1e-10)


def test_orthogonalization_needs_matrices():
    tx = funcopt.scale_by_orthogonalization()
    with pytest.raises(ValueError, match=r"matrix.*\(3,\)"):
        tx.update(jnp.ones(3), tx.init(jnp.ones(3)))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: funcopt.scale_by_orthogonalization(ns_steps=2.5), r"ns_steps"),
        (lambda: funcopt.scale_by_orthogonalization(ns_steps=True), r"ns_steps"),
        (lambda: funcopt.scale_by_orthogonalization(ns_steps=0), r"ns_steps"),
        (
            lambda: funcopt.scale_by_orthogonalization(preconditioning="polar"),
            r"preconditioning must be one of 'frobenius', 'spectral', 'aol', 'schatten'",
        ),
        (lambda: funcopt.scale_by_orthogonalization("quintic"), r"ns_coeffs.*'dion'"),
        (lambda: funcopt.scale_by_orthogonalization((1.0, 2.0)), r"ns_coeffs"),
        (lambda: funcopt.scale_by_orthogonalization("dion", ns_steps=6), r"ns_steps=6"),
        (lambda: funcopt.scale_by_shape(consistent_rms=-0.1), r"consistent_rms"),
    ],
)
def test_primitives_reject_bad_arguments(make, message):
    with pytest.raises(funcopt.HyperParameterError, match=message):
        make()


# ---- muon against optax.contrib ---------------------------------------------------------

# Muon orthogonalises a noise-dominated momentum near the optimum: Newton–Schulz blows its
# small singular values up to ~1, so a one-ulp difference between two equal programs (XLA
# fuses them differently) grows ~10x every ~50 steps. float32 is therefore compared over
# 200 steps, and the 1000-step comparison runs in float64, where the drift stays tiny.
MUON = [
    ("default", dict(learning_rate=0.01), 1000),
    (
        "adaptive-dion-decay-rms",
        dict(
            learning_rate=0.01,
            adaptive=True,
            weight_decay=0.1,
            ns_coeffs="dion",
            consistent_rms=0.2,
        ),
        1000,
    ),
    (
        "everything",
        dict(
            learning_rate=0.01,
            nesterov=False,
            adaptive=True,
            weight_decay=0.1,
            adam_weight_decay=0.1,
            ns_coeffs="dion",
            consistent_rms=0.2,
            adam_learning_rate=0.003,
            preconditioning="spectral",
        ),
        300,
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "steps"), MUON, ids=[m[0] for m in MUON])
def test_muon_matches_optax_contrib(name, kwargs, steps):
    params = random_params(0)
    got, want = run_against_optax(funcopt.muon(**kwargs), contrib.muon(**kwargs), params, 200)
    assert_rel_close(got, want, 1e-5)
    with jax.enable_x64(True):
        params = random_params(0, jnp.float64)
        got, want = run_against_optax(funcopt.muon(**kwargs), contrib.muon(**kwargs), params, steps)
        assert_rel_close(got, want, 1e-8)


def test_muon_accepts_a_full_tree_weight_decay_mask():
    """A pytree of bools shaped like the params (as for adamw) selects the decaying
    matrices; it equals the function form, and masking really changes the result."""
    params = random_params(0)
    tree_mask = jax.tree.map(lambda x: x.shape != (6, 1), params)  # every leaf but 'col'
    kwargs = dict(learning_rate=0.01, weight_decay=0.5)
    got, _ = run(
        funcopt.muon(**kwargs, weight_decay_mask=tree_mask), params, 50, funcopt.apply_updates
    )
    by_function = funcopt.muon(
        **kwargs, weight_decay_mask=lambda p: jax.tree.map(lambda x: x.shape != (6, 1), p)
    )
    want, _ = run(by_function, params, 50, funcopt.apply_updates)
    assert_rel_close(got, want, 0.0)
    unmasked, _ = run(funcopt.muon(**kwargs), params, 50, funcopt.apply_updates)
    assert not np.allclose(got["col"], unmasked["col"])
    np.testing.assert_array_equal(got["dense"]["w"], unmasked["dense"]["w"])


def _complex_params():
    return jax.tree.map(
        lambda a, b: (a + 1j * b).astype(jnp.complex64), random_params(0), random_params(1)
    )


def _complex_grads(params, step):
    real = quadratic_grads(jax.tree.map(jnp.real, params), step)
    imag = quadratic_grads(jax.tree.map(jnp.imag, params), step + 7)
    return jax.tree.map(lambda a, b: (a + 1j * b).astype(jnp.complex64), real, imag)


def _complex_rel_err(a, b):
    return max(
        float(np.linalg.norm(np.asarray(x) - np.asarray(y)) / np.linalg.norm(np.asarray(y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# optax's "schatten" first step uses X Xᵀ, not X Xᴴ, and diverges on complex matrices.
COMPLEX_MUON = [
    ("default", dict(learning_rate=0.01)),
    (
        "adaptive-dion-aol",
        dict(learning_rate=0.01, adaptive=True, ns_coeffs="dion", preconditioning="aol"),
    ),
    (
        "spectral-adaptive-decay",
        dict(
            learning_rate=0.01,
            adaptive=True,
            nesterov=False,
            preconditioning="spectral",
            weight_decay=0.1,
        ),
    ),
]


@pytest.mark.parametrize(("name", "kwargs"), COMPLEX_MUON, ids=[c[0] for c in COMPLEX_MUON])
def test_muon_on_complex64_matches_optax_contrib(name, kwargs):
    """Complex matrices are orthogonalised with the conjugate transpose, as optax does."""
    params = _complex_params()
    ours, theirs = funcopt.muon(**kwargs), contrib.muon(**kwargs)
    got, want = run_against_optax(ours, theirs, params, 200, _complex_grads)
    assert {x.dtype for x in jax.tree.leaves(got)} == {jnp.dtype(jnp.complex64)}
    assert _complex_rel_err(got, want) <= 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(adam_b1=1.5), r"\badam_b1=1.5"),
        (dict(adam_b2=-0.1), r"\badam_b2=-0.1"),
        (dict(adam_eps_root=-1.0), r"\badam_eps_root=-1.0"),
        (dict(adam_weight_decay=-1.0), r"\badam_weight_decay=-1.0"),
        (dict(adam_learning_rate=-1.0), r"\badam_learning_rate=-1.0"),
        (dict(adam_b1=None), r"\badam_b1=None"),
        (dict(ns_steps=2.5), r"\bns_steps=2.5"),
        (dict(ns_steps=0), r"\bns_steps=0"),
        (dict(consistent_rms=-0.2), r"\bconsistent_rms=-0.2"),
        (dict(preconditioning="polar"), r"one of 'frobenius', 'spectral', 'aol', 'schatten'"),
        (dict(ns_coeffs="quintic"), r"\bns_coeffs='quintic'"),
    ],
)
def test_muon_names_its_own_arguments(kwargs, message):
    with pytest.raises(funcopt.HyperParameterError, match=message):
        funcopt.muon(0.01, **kwargs)


# ---- weights of other ranks: MuonDimensionNumbers --------------------------------------

D = funcopt.MuonDimensionNumbers
CONV_SHAPES = {"conv": (3, 2, 5, 8), "heads": (6, 2, 4), "w": (5, 3), "b": (4,)}


def _dims(cls):
    return {"conv": cls(2, 3), "heads": cls(0, (1, 2)), "w": cls(), "b": None}


DIMS_CASES = {
    "tree-adaptive-aol": ("tree", dict(adaptive=True, preconditioning="aol")),
    "function-rms": ("function", dict(consistent_rms=0.2, nesterov=False)),
}


@pytest.mark.parametrize(("form", "kwargs"), DIMS_CASES.values(), ids=DIMS_CASES.keys())
def test_muon_with_dimension_numbers_matches_optax_contrib(form, kwargs):
    """Convolution kernels and attention heads join Muon as optax's dimension numbers say;
    a function of the params works as the tree does."""

    def spec(cls):
        if form == "tree":
            return _dims(cls)
        return lambda p: jax.tree.map(
            lambda x: _dims(cls)[x] if isinstance(x, str) else x, {k: k for k in p}
        )

    with jax.enable_x64(True):
        params = random_params(0, jnp.float64, CONV_SHAPES)
        got, state = run(
            funcopt.muon(0.01, muon_weight_dimension_numbers=spec(D), **kwargs),
            params, 100, funcopt.apply_updates,
        )  # fmt: skip
        want, _ = run(
            contrib.muon(0.01, muon_weight_dimension_numbers=spec(contrib.MuonDimensionNumbers),
                         **kwargs),
            params, 100, optax.apply_updates,
        )  # fmt: skip
        assert_rel_close(got, want, 1e-8)
    mu = state[0]["muon"][0][0].mu  # the momentum of the Muon leaves only
    assert isinstance(mu["b"], funcopt.MaskedNode) and mu["conv"].shape == (3, 2, 5, 8)


def test_muon_dimension_numbers_decide_which_leaves_are_muon():
    """A matrix given ``None`` goes to AdamW; one ``MuonDimensionNumbers`` covers every
    leaf; equal specs give equal transforms (one compilation)."""
    params = {"w": jnp.ones((4, 3)), "v": jnp.ones((4, 3))}
    state = funcopt.muon(0.01, muon_weight_dimension_numbers={"w": D(), "v": None}).init(params)
    muon_mu = state[0]["muon"][0][0].mu
    assert isinstance(muon_mu["v"], funcopt.MaskedNode) and muon_mu["w"].shape == (4, 3)
    state = funcopt.muon(0.01, muon_weight_dimension_numbers=D(1, 0)).init(params)
    assert not any(isinstance(x, funcopt.MaskedNode) for x in state[0]["muon"][0][0].mu.values())
    assert funcopt.muon(0.01, muon_weight_dimension_numbers=_dims(D)) == funcopt.muon(
        0.01, muon_weight_dimension_numbers=_dims(D)
    )


BAD_DIMS = {
    "not-dims": (
        lambda: funcopt.muon(0.1, muon_weight_dimension_numbers={"w": 3}),
        funcopt.HyperParameterError,
        r"muon_weight_dimension_numbers\['w'\]=3",
    ),
    "mismatched-tree": (
        lambda: funcopt.scale_by_orthogonalization(weight_dimension_numbers={"w": D()}).update(
            {"x": jnp.ones((2, 2))}, funcopt.EmptyState()
        ),
        funcopt.StructureError,
        r"weight_dimension_numbers must be a prefix",
    ),
}


@pytest.mark.parametrize(("make", "error", "message"), BAD_DIMS.values(), ids=BAD_DIMS.keys())
def test_dimension_numbers_errors_name_the_problem(make, error, message):
    with pytest.raises(error, match=message):
        make()

"""Newton–Schulz orthogonalisation (funcopt.newton_schulz), against the SVD and by hand.

- complex matrices iterate with the conjugate transpose: the polar factor of an SVD;
- with :class:`MuonDimensionNumbers`, each batch slice is its own matrix, and axes tuples
  flatten in order (a reshape written out in the test is the oracle);
- bad dimension numbers are refused, naming the axes and the shape.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import funcopt

D = funcopt.MuonDimensionNumbers
RNG = np.random.default_rng(7)


def _complex_matrix(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)], ids=["wide", "tall"])
def test_newton_schulz_on_complex_matrices_is_the_svd_polar_factor(shape, x64):
    """Complex matrices iterate with the conjugate transpose: the classic cubic converges
    to U Vᴴ of a float64 SVD, and the quintic keeps the singular vectors (Uᴴ O V real,
    diagonal, with each σ mapped into (0.6, 1.25)). AOL rescales rows, so it does not
    keep them: it is compared with optax below (test_muon_on_complex64_matches_optax_contrib).
    """
    g = _complex_matrix(shape, 1)
    u, _, vh = np.linalg.svd(g, full_matrices=False)
    o = funcopt.orthogonalize_via_newton_schulz(jnp.asarray(g), (1.5, -0.5, 0.0), ns_steps=60)
    assert o.dtype == jnp.complex128 and o.shape == shape
    np.testing.assert_allclose(np.asarray(o), u @ vh, atol=1e-10)
    for preconditioning in ("frobenius", "spectral", "schatten"):
        o = funcopt.orthogonalize_via_newton_schulz(jnp.asarray(g), preconditioning=preconditioning)
        d = u.conj().T @ np.asarray(o) @ vh.conj().T
        np.testing.assert_allclose(
            d - np.diag(np.diag(d)), 0.0, atol=1e-10, err_msg=preconditioning
        )
        assert np.all(np.abs(np.diag(d).imag) < 1e-10), preconditioning
        assert np.all((np.diag(d).real > 0.6) & (np.diag(d).real < 1.25)), preconditioning


def test_newton_schulz_with_dimension_numbers_orthogonalises_each_slice():
    """Batch axes are independent matrices, and axes tuples are flattened in order: the
    hand-made reshape, orthogonalised slice by slice, is the oracle."""
    x = jnp.asarray(RNG.normal(size=(3, 2, 5, 8)), jnp.float32)
    got = funcopt.orthogonalize_via_newton_schulz(x, dimension_numbers=D(2, 3))
    for i in range(3):
        for j in range(2):
            want = funcopt.orthogonalize_via_newton_schulz(x[i, j])
            np.testing.assert_allclose(got[i, j], want, rtol=1e-5, atol=1e-6)
    # reduction axis 2, output axes (0, 3): rows x[:, :, r, :] flattened over (0, 3)
    got = funcopt.orthogonalize_via_newton_schulz(x, dimension_numbers=D(-2, (0, 3)))
    for j in range(2):
        matrix = jnp.transpose(x[:, j], (1, 0, 2)).reshape(5, 24)
        want = funcopt.orthogonalize_via_newton_schulz(matrix).reshape(5, 3, 8)
        np.testing.assert_allclose(got[:, j], jnp.transpose(want, (1, 0, 2)), atol=1e-6)


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        (D(0, 0), r"axes of MuonDimensionNumbers\(reduction_axis=0, output_axis=0\) overlap"),
        (D(0, 5), r"output_axis=\(5,\) is not .* shape \(2, 3, 4\)"),
        (D((), 1), r"reduction_axis=\(\) is not a non-empty set"),
        (None, r"pass dimension_numbers"),
        ((0, 1), r"dimension_numbers must be a MuonDimensionNumbers or None"),
    ],
    ids=["overlap", "out-of-range", "empty", "3d-without", "plain-tuple"],
)
def test_bad_dimension_numbers_name_the_axes_and_the_shape(dims, message):
    with pytest.raises((ValueError, TypeError), match=message):
        funcopt.orthogonalize_via_newton_schulz(jnp.ones((2, 3, 4)), dimension_numbers=dims)

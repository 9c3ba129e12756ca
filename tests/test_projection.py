"""split_real_and_imaginary and GaLore: against optax.contrib, by hand, errors.

The registry's rows (``tests/registry.py``) compare GaLore (rank 2, refreshed every 10
steps) over 1000 float32 steps, and the split around Adam in float32, float64 and on
complex parameters; here the other configurations, and GaLore's projection by hand in
float64 (optax's takes its SVD in float32 whatever the dtype, so its float64 runs are
not funcopt's: a singular vector's sign may differ at a refresh).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from oracle import assert_rel_close, random_params, run, wavy_grads
from support import assert_matches_optax, assert_value_reaches_times_value, times_value

import funcopt

# ---- split_real_and_imaginary -------------------------------------------------------------


def _complex_params(seed):
    re, im = random_params(seed), random_params(seed + 1)
    params = jax.tree.map(lambda x, y: jax.lax.complex(x, y), re, im)
    params["scalar"] = re["scalar"]  # a real leaf among complex ones
    return params


def test_split_real_and_imaginary_matches_optax():
    ours = funcopt.split_real_and_imaginary(funcopt.adam(0.01))
    theirs = optax.contrib.split_real_and_imaginary(optax.adam(0.01))
    assert_matches_optax(ours, theirs, _complex_params(0))


def test_split_is_the_inner_transform_on_the_real_pairs(maybe_jit):
    """Adam on z = x + iy through the split equals Adam on the real leaves (x, y)."""
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.1j])
    tx = funcopt.split_real_and_imaginary(funcopt.adam(0.1))
    plain = funcopt.adam(0.1)
    update, plain_update = maybe_jit(tx.update), maybe_jit(plain.update)
    pair = {"x": jnp.real(z), "y": jnp.imag(z)}
    state, plain_state = tx.init(z), plain.init(pair)
    for k in range(4):
        g = z * (k + 1) - 1j
        u, state = update(g, state, z)
        v, plain_state = plain_update({"x": jnp.real(g), "y": jnp.imag(g)}, plain_state, pair)
        assert u.dtype == jnp.complex64
        np.testing.assert_allclose(u, v["x"] + 1j * v["y"], rtol=1e-6)
    # not Adam on complex leaves, whose second moment is of |g|²
    direct, _ = funcopt.adam(0.1).update(g, funcopt.adam(0.1).init(z), z)
    split, _ = tx.update(g, tx.init(z), z)
    assert not np.allclose(direct, split)


def test_split_passes_extra_args(maybe_jit):
    assert_value_reaches_times_value(funcopt.split_real_and_imaginary(times_value()), maybe_jit)


def test_split_refuses_what_is_not_a_transform():
    with pytest.raises(TypeError, match="split_real_and_imaginary"):
        funcopt.split_real_and_imaginary(0.1)


# ---- GaLore -----------------------------------------------------------------------------

SHAPES = {"tall": (9, 4), "wide": (3, 8), "attn": (6, 2, 3), "b": (4,), "s": ()}
ATTN = funcopt.GaLoreDimensionNumbers(reduction_axis=0, output_axis=(1, 2))


def _dims(lib):
    spec = lib.GaLoreDimensionNumbers(0, (1, 2))
    return {"tall": lib.GaLoreDimensionNumbers(), "wide": None, "attn": spec, "b": None, "s": None}


def test_galore_with_scale_and_decay_matches_optax():
    params = random_params(5, shapes=SHAPES)
    kw = dict(rank=3, update_proj_gap=7, scale=0.5, weight_decay=0.1)
    assert_matches_optax(funcopt.galore(0.01, **kw), optax.contrib.galore(0.01, **kw), params)


def test_galore_with_dimension_numbers_matches_optax():
    params = random_params(6, shapes=SHAPES)
    base = dict(rank=2, update_proj_gap=20)
    ours = funcopt.galore(
        0.01, **base, base_optimizer=funcopt.scale_by_adam(b2=0.99),
        weight_dimension_numbers=_dims(funcopt),
    )  # fmt: skip
    theirs = optax.contrib.galore(
        0.01, **base, base_optimizer=optax.scale_by_adam(b2=0.99),
        weight_dimension_numbers=_dims(optax.contrib),
    )  # fmt: skip
    assert_matches_optax(ours, theirs, params)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=["real", "complex"])
def test_galore_written_out(dtype, maybe_jit, x64):
    """With the identity inside: u = s P Pᴴ G for a tall G, u = s G Q Qᴴ for a wide one, the
    projectors the top-r singular vectors of the gradient at t = 1, 3, 5 (NumPy's SVD)."""
    tx = funcopt.scale_by_galore(
        rank=2, update_proj_gap=2, scale=0.5, base_optimizer=funcopt.identity()
    )
    update = maybe_jit(tx.update)
    rng = np.random.default_rng(0)
    params = {"tall": jnp.zeros((6, 3), dtype), "wide": jnp.zeros((3, 5), dtype)}
    state = tx.init(params)

    def draw(shape):
        g = rng.normal(size=shape)
        return g + 1j * rng.normal(size=shape) if dtype == np.complex128 else g

    for t in range(1, 6):
        g = {k: draw(v.shape) for k, v in params.items()}
        if t % 2 == 1:
            p = np.linalg.svd(g["tall"])[0][:, :2]
            q = np.linalg.svd(g["wide"])[2][:2].conj().T
        u, state = update(jax.tree.map(jnp.asarray, g), state, params)
        assert u["tall"].dtype == dtype
        want = {"tall": 0.5 * p @ p.conj().T @ g["tall"], "wide": 0.5 * g["wide"] @ q @ q.conj().T}
        for k in want:
            np.testing.assert_allclose(u[k], want[k], rtol=1e-12, atol=1e-14)
            assert not np.allclose(want[k], 0.5 * g[k])  # rank 2 < 3: a true projection


def test_state_fields_are_found_by_optax_tree_get():
    """optax.tree.get finds optax's field names in funcopt's states, with optax's values."""
    params = random_params(0, shapes={"w": (4, 3), "b": (3,)})
    grads = wavy_grads(params, jnp.asarray(0))
    for ours, theirs, fields in [
        (funcopt.galore(0.1, rank=2), optax.contrib.galore(0.1, rank=2), ("projector", "mu")),
        (funcopt.split_real_and_imaginary(funcopt.adam(0.1)),
         optax.contrib.split_real_and_imaginary(optax.adam(0.1)), ("mu", "nu")),
    ]:  # fmt: skip
        s, r = ours.init(params), theirs.init(params)
        ours_update, theirs_update = jax.jit(ours.update), jax.jit(theirs.update)
        for _ in range(2):
            (_, s), (_, r) = ours_update(grads, s, params), theirs_update(grads, r, params)
        for field in fields:
            assert_rel_close(optax.tree.get(s, field), optax.tree.get(r, field), 1e-6)


def test_galore_keeps_the_inner_state_low_rank():
    params = random_params(0, shapes=SHAPES)
    tx = funcopt.scale_by_galore(rank=2, base_optimizer=funcopt.scale_by_adam())
    state = tx.init(params)
    mu = state.inner_state.base_optimizer_state.inner_state.numerator[0].mu
    assert {k: v.shape for k, v in mu.items()} == {
        "tall": (2, 4), "wide": (3, 2), "attn": (6, 2, 3), "b": (4,), "s": (),
    }  # fmt: skip
    projector = state.inner_state.projector
    assert projector["tall"].shape == (9, 2) and projector["wide"].shape == (8, 2)
    assert projector["b"].shape == (0, 0)


def test_galore_with_one_spec_projects_every_matrix_and_tensor():
    params = random_params(0, shapes=SHAPES)
    one = funcopt.GaLoreDimensionNumbers(0, -1)
    with pytest.raises(ValueError, match="must split"):  # (6, 2, 3) leaves axis 1 out
        funcopt.scale_by_galore(rank=2, weight_dimension_numbers=one).init(params)
    tx = funcopt.scale_by_galore(rank=2, weight_dimension_numbers=lambda p: _dims(funcopt))
    got, _ = run(tx, params, 3, funcopt.apply_updates, wavy_grads)
    assert jax.tree.structure(got) == jax.tree.structure(params)


def test_galore_refuses_a_vector_spec():
    tx = funcopt.scale_by_galore(weight_dimension_numbers={"b": ATTN})
    with pytest.raises(ValueError, match="rank ≥ 2"):
        tx.init({"b": jnp.ones(3)})


def test_galore_passes_extra_args(maybe_jit):
    tx = funcopt.scale_by_galore(rank=1, base_optimizer=times_value())
    assert_value_reaches_times_value(tx, maybe_jit)  # a vector: through ρ whole


@pytest.mark.parametrize(
    "kw, name",
    [
        (dict(rank=0), "rank"),
        (dict(rank=1.5), "rank"),
        (dict(update_proj_gap=0), "update_proj_gap"),
        (dict(scale=float("nan")), "scale"),
        (dict(weight_dimension_numbers=3), "weight_dimension_numbers"),
    ],
)
def test_galore_bad_hyperparameters(kw, name):
    with pytest.raises(funcopt.HyperParameterError, match=name):
        funcopt.scale_by_galore(**kw)
    with pytest.raises(funcopt.HyperParameterError, match=name):
        funcopt.galore(0.1, **kw)


def test_galore_bad_learning_rate_and_decay():
    with pytest.raises(funcopt.HyperParameterError, match="learning_rate"):
        funcopt.galore(-0.1)
    with pytest.raises(funcopt.HyperParameterError, match="weight_decay"):
        funcopt.galore(0.1, weight_decay=-1.0)


def test_galore_on_complex_matrices_keeps_the_projection():
    """Pᴴ for complex matrices: with rank = n the projection is the identity."""
    z = jax.lax.complex(*random_params(0, shapes=[(5, 3), (5, 3)]))
    tx = funcopt.scale_by_galore(rank=3, base_optimizer=funcopt.identity())
    u, _ = tx.update(z, tx.init(z), z)
    assert_rel_close(u, z, 1e-5)

"""Program size: every optimizer, wrapper and clip compiles to a program linear in the leaves.

Compile time is what JAX users feel first, and it follows the size of the optimized
program. Line counts of XLA's optimized HLO are deterministic (timings are not), so they
are tested here: for every registry row, a donated step (``update`` then
``apply_updates``) on ``L/2``, ``L`` and ``2L`` leaves must grow at most linearly and be
within 1.2× of optax's counterpart on the same ``L`` leaves. Linear is asked twice:

* the ratio ``lines(2L) / lines(L)`` is at most 2.1;
* the growth from ``L`` to ``2L`` is at most 2.45× the growth from ``L/2`` to ``L`` (2 for a
  linear program; a quadratic term makes it larger, and the program's constant part,
  which lowers the plain ratio, cancels out of this one).

With ``L = 8``, ``clip_by_global_norm`` as it was in 0.1 (two ``jnp.where`` around the
root, which XLA copied into every output fusion) has growth 2.7–2.8 (and a ratio of
2.1–2.3, at the bound); every row today has growth ≤ 2.27 (DoG and DoWG, whose first
leaves cost fewer lines than the next: from 8 leaves on they add 52 and 50 lines a leaf).
Larger ``L`` would only compile longer: at 16 and 32 leaves the suite spent twice the time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
import registry

import funcopt

L = 8  # leaves: half (8, 4) matrices, half (4,) vectors
GROWTH = 2.45
ENTRIES = registry.available()
# AdaBelief keeps m twice (the numerator's momentum and belief_moment's prediction of the
# surprise g − m), a third buffer per leaf that optax's monolithic scale_by_belief shares.
OVER_OPTAX = {"adabelief": 1.25}


def _params(n: int) -> dict[str, jax.Array]:
    return {f"l{i:02d}": jnp.full((8, 4) if i % 2 else (4,), 0.5 + i / n) for i in range(n)}


def hlo_lines(tx, params, apply_updates) -> int:
    """Lines of the optimized HLO of one donated step of ``tx`` at ``params``."""
    fast = params.fast if hasattr(params, "fast") else params  # lookahead's gradients
    grads = jax.tree.map(lambda x: 0.1 * x + 0.3, fast)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return apply_updates(p, u), s

    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), grads)
    return lowered.compile().as_text().count("\n")


def ratio_and_growth(sizes: dict[int, int]) -> tuple[float, float]:
    """``lines(2L) / lines(L)`` and the growth ratio, from lines at ``L/2``, ``L``, ``2L``."""
    half, once, twice = (sizes[n] for n in sorted(sizes))
    return twice / once, (twice - once) / (once - half)


def assert_linear(name: str, sizes: dict[int, int]) -> None:
    """``sizes`` (lines at ``L/2``, ``L``, ``2L`` leaves) grow linearly, as the module says."""
    ratio, growth = ratio_and_growth(sizes)
    assert ratio <= 2.1, f"{name}: {sizes} (lines by leaves): ratio {ratio:.2f}"
    assert growth <= GROWTH, f"{name}: {sizes} (lines by leaves): growth {growth:.2f}"


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
def test_program_grows_linearly_and_is_close_to_optax(entry):
    sizes = {
        n: hlo_lines(entry.build(registry.LR), entry.params(_params(n)), funcopt.apply_updates)
        for n in (L // 2, L, 2 * L)
    }
    assert_linear(entry.name, sizes)
    if entry.optax is not None:
        theirs = hlo_lines(
            entry.optax(registry.LR), entry.optax_params(_params(L)), optax.apply_updates
        )
        bound = OVER_OPTAX.get(entry.name, 1.2)
        assert sizes[L] <= bound * theirs, f"{entry.name}: {sizes[L]} lines, optax {theirs}"


def test_clipped_adamw_at_many_leaves():
    """The issue's case: ``chain(clip_by_global_norm(1), adamw)``, whose global norm made
    XLA copy the scalar sum into every output fusion (quadratic in the leaves)."""
    tx = funcopt.chain(funcopt.clip_by_global_norm(1.0), funcopt.adamw(1e-3))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    sizes = [hlo_lines(tx, _params(n), funcopt.apply_updates) for n in (40, 80)]
    assert sizes[1] <= 2.1 * sizes[0], sizes
    assert sizes[0] <= 1.2 * hlo_lines(theirs, _params(40), optax.apply_updates)


def test_the_linearity_check_catches_the_quadratic_norm_of_0_1(monkeypatch):
    """The growth check above fails, with room to spare, on the bug it was written for:
    ``global_norm``'s safe root as 0.1 wrote it, two ``jnp.where`` around ``sqrt`` (the
    plain ratio is then 2.1 to 2.3, at the bound)."""

    def where_root(s: jax.Array) -> jax.Array:
        positive = s > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)

    monkeypatch.setattr(funcopt.clipping, "_sqrt", where_root)
    tx = funcopt.clip_by_global_norm(1.0)
    sizes = {n: hlo_lines(tx, _params(n), funcopt.apply_updates) for n in (L // 2, L, 2 * L)}
    ratio, growth = ratio_and_growth(sizes)
    assert growth > GROWTH, (sizes, ratio, growth)  # observed: 2.8

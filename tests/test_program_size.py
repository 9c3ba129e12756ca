"""Program size: every optimizer, wrapper and clip compiles to a program linear in the leaves.

Compile time is what JAX users feel first, and it follows the size of the optimized
program. Line counts of XLA's optimized HLO are deterministic (timings are not), so they
are tested here: for every registry row, a donated step (``update`` then
``apply_updates``) on ``L`` and ``2L`` leaves must grow at most linearly (ratio ≤ 2.1: a
quadratic term, such as ``clip_by_global_norm``'s in 0.1, shows as a larger ratio) and be
within 1.2× of optax's counterpart on the same tree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
import registry

import funcopt

L = 16  # leaves: half (8, 4) matrices, half (4,) vectors
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


@pytest.mark.parametrize("entry", ENTRIES, ids=registry.ids(ENTRIES))
def test_program_grows_linearly_and_is_close_to_optax(entry):
    ours = hlo_lines(entry.build(registry.LR), entry.params(_params(L)), funcopt.apply_updates)
    twice = hlo_lines(entry.build(registry.LR), entry.params(_params(2 * L)), funcopt.apply_updates)
    assert twice <= 2.1 * ours, f"{entry.name}: {ours} lines at {L} leaves, {twice} at {2 * L}"
    if entry.optax is not None:
        theirs = hlo_lines(
            entry.optax(registry.LR), entry.optax_params(_params(L)), optax.apply_updates
        )
        bound = OVER_OPTAX.get(entry.name, 1.2)
        assert ours <= bound * theirs, f"{entry.name}: {ours} lines, optax {theirs}"


def test_clipped_adamw_at_many_leaves():
    """The issue's case: ``chain(clip_by_global_norm(1), adamw)``, whose global norm made
    XLA copy the scalar sum into every output fusion (quadratic in the leaves)."""
    tx = funcopt.chain(funcopt.clip_by_global_norm(1.0), funcopt.adamw(1e-3))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    sizes = [hlo_lines(tx, _params(n), funcopt.apply_updates) for n in (40, 80)]
    assert sizes[1] <= 2.1 * sizes[0], sizes
    assert sizes[0] <= 1.2 * hlo_lines(theirs, _params(40), optax.apply_updates)

"""One table of every optimizer and wrapper funcopt has, for the shared property tests.

Each :class:`Entry` builds its transform from a learning rate (a number or a
schedule), so the same row serves the property tests (constant rate), the checkpoint
tests and the long runs (scheduled rate). ``optax`` gives the independent float64
reference of the long runs where optax has a counterpart with the same arguments.

Rows name the funcopt attributes they need in ``requires``; a row whose names are not
(yet) in funcopt is not silently skipped: ``missing()`` lists them and
``test_registry_complete`` fails on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax
import optax.contrib

import funcopt as fo

LR = 1e-2


def _by_rank(p: Any) -> Any:
    """True for arrays of rank ≥ 1 (weights), False for scalars (a typical decay mask)."""
    return jax.tree.map(lambda x: x.ndim > 0, p)


def _matrices(p: Any) -> Any:
    """True for arrays of rank ≥ 2."""
    return jax.tree.map(lambda x: x.ndim > 1, p)


def _labels(p: Any) -> Any:
    return jax.tree.map(lambda x: "adam" if x.ndim > 0 else "sgd", p)


class Entry(NamedTuple):
    name: str
    build: Callable[[Any], Any]  # learning rate (number or schedule) -> transform
    requires: tuple[str, ...]
    optax: Callable[[Any], Any] | None = None  # the same optimizer in optax
    wrap: Callable[[Any], Any] | None = None  # params as the transform expects them
    optax_wrap: Callable[[Any], Any] | None = None  # params as the optax twin expects them

    def params(self, params: Any) -> Any:
        return self.wrap(params) if self.wrap else params

    def optax_params(self, params: Any) -> Any:
        return self.optax_wrap(params) if self.optax_wrap else params


def _same(name: str, **kw: Any) -> Entry:
    """``funcopt.<name>(lr, **kw)`` with ``optax.<name>(lr, **kw)`` as its twin."""
    return Entry(
        name,
        lambda lr: getattr(fo, name)(lr, **kw),
        (name,),
        (lambda lr: getattr(optax, name)(lr, **kw)) if hasattr(optax, name) else None,
    )


def _lookahead_params(p: Any) -> Any:
    return fo.LookaheadParams.init_synced(p)


ENTRIES: list[Entry] = [
    # ---- the chapter's optimizers --------------------------------------------------
    Entry("gd", lambda lr: fo.gd(lr), ("gd",), lambda lr: optax.sgd(lr)),
    # gdm(η, β) equals optax.sgd(η (1 − β), β) (damped vs. heavy-ball trace).
    Entry(
        "gdm",
        lambda lr: fo.gdm(lr, 0.9),
        ("gdm",),
        lambda lr: optax.sgd((lambda c: 0.1 * lr(c)) if callable(lr) else 0.1 * lr, 0.9),
    ),
    Entry("sgd", lambda lr: fo.sgd(lr), ("sgd",), lambda lr: optax.sgd(lr)),
    _same("sgd", momentum=0.9, nesterov=True)._replace(name="sgd-nesterov"),
    _same("rmsprop"),
    _same("rmsprop", centered=True, momentum=0.9)._replace(name="rmsprop-centered"),
    _same("adam"),
    _same("adamw", weight_decay=0.1),
    _same("adamw", weight_decay=0.1, mask=_by_rank)._replace(name="adamw-mask"),
    # ---- optimizers beyond the chapter ----------------------------------------------
    _same("nadam"),
    _same("nadamw", weight_decay=0.1),
    _same("amsgrad"),
    _same("adamax"),
    _same("adamaxw", weight_decay=0.1),
    _same("adagrad"),
    _same("adadelta"),
    _same("adabelief"),
    _same("radam"),
    _same("yogi"),
    _same("lion", weight_decay=0.01),
    _same("lamb", weight_decay=0.01),
    _same("lars"),
    _same("adafactor")._replace(requires=("adafactor", "clip_by_block_rms")),
    _same("adafactor", min_dim_size_to_factor=2)._replace(
        name="adafactor-factored", requires=("adafactor", "clip_by_block_rms")
    ),
    _same("sign_sgd"),
    _same("signum"),
    Entry(
        "noisy_sgd",
        lambda lr: fo.noisy_sgd(lr, key=3),
        ("noisy_sgd", "add_noise"),
        lambda lr: optax.noisy_sgd(lr, key=3),
    ),
    _same("novograd"),
    Entry("muon", lambda lr: fo.muon(lr), ("muon",), lambda lr: optax.contrib.muon(lr)),
    # schedule-free methods replace the schedule: a constant rate with their own warmup
    Entry(
        "schedule_free_adamw",
        lambda lr: fo.schedule_free_adamw(LR, warmup_steps=1000),
        ("schedule_free_adamw",),
        lambda lr: optax.contrib.schedule_free_adamw(LR, warmup_steps=1000),
    ),
    # ---- clipping in front of an optimizer --------------------------------------------
    Entry(
        "clip_by_global_norm",
        lambda lr: fo.chain(fo.clip_by_global_norm(1.0), fo.adam(lr)),
        ("clip_by_global_norm",),
        lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr)),
    ),
    Entry(
        "clip",
        lambda lr: fo.chain(fo.clip(0.5), fo.sgd(lr, 0.9)),
        ("clip",),
        lambda lr: optax.chain(optax.clip(0.5), optax.sgd(lr, 0.9)),
    ),
    # ---- wrappers ----------------------------------------------------------------------
    Entry(
        "named_chain",
        lambda lr: fo.named_chain(
            ("adam", fo.scale_by_adam()), ("lr", fo.scale_by_learning_rate(lr))
        ),
        ("named_chain",),
        lambda lr: optax.named_chain(
            ("adam", optax.scale_by_adam()), ("lr", optax.scale_by_learning_rate(lr))
        ),
    ),
    Entry(
        "masked",
        lambda lr: fo.chain(fo.masked(fo.scale_by_adam(), _by_rank), fo.scale_by_learning_rate(lr)),
        ("masked",),
        lambda lr: optax.chain(
            optax.masked(optax.scale_by_adam(), _by_rank), optax.scale_by_learning_rate(lr)
        ),
    ),
    Entry(
        "multi_transform",
        lambda lr: fo.multi_transform({"adam": fo.adam(lr), "sgd": fo.sgd(lr, 0.9)}, _labels),
        ("multi_transform",),
        lambda lr: optax.multi_transform(
            {"adam": optax.adam(lr), "sgd": optax.sgd(lr, 0.9)}, _labels
        ),
    ),
    Entry(
        "partition",
        lambda lr: fo.partition({"adam": fo.adam(lr), "sgd": fo.sgd(lr, 0.9)}, _labels),
        ("partition",),
        lambda lr: optax.partition({"adam": optax.adam(lr), "sgd": optax.sgd(lr, 0.9)}, _labels),
    ),
    Entry(
        "freeze",
        lambda lr: fo.chain(fo.freeze(_matrices), fo.adam(lr)),
        ("freeze",),
        lambda lr: optax.chain(optax.masked(optax.set_to_zero(), _matrices), optax.adam(lr)),
    ),
    Entry(
        "set_to_zero",
        lambda lr: fo.multi_transform({"adam": fo.adam(lr), "sgd": fo.set_to_zero()}, _labels),
        ("set_to_zero", "multi_transform"),
        lambda lr: optax.multi_transform(
            {"adam": optax.adam(lr), "sgd": optax.set_to_zero()}, _labels
        ),
    ),
    Entry(
        "inject_hyperparams",
        lambda lr: fo.inject_hyperparams(fo.adam)(learning_rate=lr, b1=0.9),
        ("inject_hyperparams",),
        lambda lr: optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.9),
    ),
    Entry(
        "MultiSteps",
        lambda lr: fo.MultiSteps(fo.adam(lr), every_k_schedule=2).gradient_transformation(),
        ("MultiSteps",),
        lambda lr: optax.MultiSteps(optax.adam(lr), every_k_schedule=2).gradient_transformation(),
    ),
    Entry(
        "apply_every",
        lambda lr: fo.chain(fo.adam(lr), fo.apply_every(2)),
        ("apply_every",),
        lambda lr: optax.chain(optax.adam(lr), optax.apply_every(2)),
    ),
    Entry(
        "apply_if_finite",
        lambda lr: fo.apply_if_finite(fo.adam(lr), 3),
        ("apply_if_finite",),
        lambda lr: optax.apply_if_finite(optax.adam(lr), 3),
    ),
    Entry(
        "lookahead",
        lambda lr: fo.lookahead(fo.adam(lr), sync_period=3, slow_step_size=0.5),
        ("lookahead", "LookaheadParams"),
        lambda lr: optax.lookahead(optax.adam(lr), sync_period=3, slow_step_size=0.5),
        wrap=_lookahead_params,
        optax_wrap=optax.LookaheadParams.init_synced,
    ),
]

CORE = ("gd", "gdm", "sgd", "sgd-nesterov", "rmsprop", "rmsprop-centered", "adam", "adamw")
"""The chapter's optimizers: the long runs hold them to the tightest tolerance."""


def missing() -> list[str]:
    """Names some row needs that funcopt does not have."""
    return sorted({n for e in ENTRIES for n in e.requires if not hasattr(fo, n)})


def available() -> list[Entry]:
    """Rows whose funcopt names all exist."""
    return [e for e in ENTRIES if all(hasattr(fo, n) for n in e.requires)]


def ids(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries]

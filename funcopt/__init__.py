"""funcopt: functional gradient transformations for JAX.

Every optimizer is a pure ``(init, update)`` pair over pytrees, composed from small
primitives that read like the update equations::

    tx = funcopt.adam(1e-3)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = funcopt.apply_updates(params, updates)

A transform is a value: equal hyper-parameters give equal transforms, hyper-parameters
are pytree leaves (jit once, vmap a sweep, differentiate), and ``repr`` shows the
composition. The modules, by concept:

- the protocol: :mod:`~funcopt.base`, :mod:`~funcopt.values` (what makes a transform a
  value), :mod:`~funcopt.validation`, :mod:`~funcopt.trees`,
  :mod:`~funcopt.lifting` (the one lifter of per-leaf equations);
- building blocks: :mod:`~funcopt.combine` (chain, precondition), :mod:`~funcopt.moments`,
  :mod:`~funcopt.scaling`, :mod:`~funcopt.preconditioners`, :mod:`~funcopt.clipping`,
  :mod:`~funcopt.factored`;
- optimizers: :mod:`~funcopt.optimizers` (the chapter's), :mod:`~funcopt.adaptive`,
  :mod:`~funcopt.layerwise`, :mod:`~funcopt.orthogonal` (Muon, on
  :mod:`~funcopt.newton_schulz`),
  :mod:`~funcopt.schedulefree`, :mod:`~funcopt.optimistic` (min-max games),
  :mod:`~funcopt.parameter_free` (step sizes estimated from the run), Adam's relatives
  :mod:`~funcopt.decorrelated` (ADOPT, ACProp), :mod:`~funcopt.ema_mixtures` (AdEMAMix),
  :mod:`~funcopt.nesterov_estimation` (Adan), :mod:`~funcopt.dual_averaging` (MADGRAD);
- around them: :mod:`~funcopt.schedules`, :mod:`~funcopt.schedules_composite`,
  :mod:`~funcopt.wrappers`, :mod:`~funcopt.hyperparams`, :mod:`~funcopt.accumulation`,
  :mod:`~funcopt.averaging`, :mod:`~funcopt.checkpoints`;
- running them: :mod:`~funcopt.train`, :mod:`~funcopt.packing`, :mod:`~funcopt.fused`
  (Adam as one pass over memory on CPU); ``funcopt.viz``
  (matplotlib) is imported on first use.

Every public name of these modules is re-exported here.
"""

import sys
import types

from funcopt.accumulation import *  # noqa: F403
from funcopt.adaptive import *  # noqa: F403
from funcopt.averaging import *  # noqa: F403
from funcopt.base import *  # noqa: F403
from funcopt.checkpoints import *  # noqa: F403
from funcopt.clipping import *  # noqa: F403
from funcopt.combine import *  # noqa: F403
from funcopt.curvature import *  # noqa: F403
from funcopt.dadaptation import *  # noqa: F403
from funcopt.decorrelated import *  # noqa: F403
from funcopt.dual_averaging import *  # noqa: F403
from funcopt.ema_mixtures import *  # noqa: F403
from funcopt.factored import *  # noqa: F403
from funcopt.fused import *  # noqa: F403
from funcopt.hyperparams import *  # noqa: F403
from funcopt.layerwise import *  # noqa: F403
from funcopt.lifting import *  # noqa: F403
from funcopt.moments import *  # noqa: F403
from funcopt.nesterov_estimation import *  # noqa: F403
from funcopt.newton_schulz import *  # noqa: F403
from funcopt.optimistic import *  # noqa: F403
from funcopt.optimizers import *  # noqa: F403
from funcopt.orthogonal import *  # noqa: F403
from funcopt.packed_views import *  # noqa: F403
from funcopt.packing import *  # noqa: F403
from funcopt.parameter_free import *  # noqa: F403
from funcopt.plateau import *  # noqa: F403
from funcopt.polyak import *  # noqa: F403
from funcopt.preconditioners import *  # noqa: F403
from funcopt.projection import *  # noqa: F403
from funcopt.scaling import *  # noqa: F403
from funcopt.schedulefree import *  # noqa: F403
from funcopt.schedules import *  # noqa: F403
from funcopt.schedules_composite import *  # noqa: F403
from funcopt.train import *  # noqa: F403
from funcopt.trees import *  # noqa: F403
from funcopt.validation import *  # noqa: F403
from funcopt.values import *  # noqa: F403
from funcopt.wrappers import *  # noqa: F403

__version__ = "0.2.0"

# __all__ is every public name of every submodule imported above, found in sys.modules
# (not among this module's globals, where a function may shadow its module's name).
_MODULES = [
    m
    for name, m in sorted(sys.modules.items())
    if name.startswith("funcopt.") and name.count(".") == 1 and isinstance(m, types.ModuleType)
]
__all__ = sorted({name for module in _MODULES for name in module.__all__})


def _evaluate_signatures() -> None:
    """Public functions' (and transform classes') signatures with evaluated annotations.

    The modules use ``from __future__ import annotations``, which leaves annotations as
    strings; optax's are objects, and code that introspects them (optax's own tests ask
    whether ``learning_rate`` is annotated ``ScalarOrSchedule``) sees funcopt's as
    optax's. An annotation that does not evaluate leaves that signature as it was.
    """
    import inspect

    for name in __all__:
        obj = globals().get(name)
        if inspect.isclass(obj):
            obj = obj.__dict__.get("__init__")  # the class's own: nothing is inherited
        if inspect.isfunction(obj) and "__signature__" not in obj.__dict__:
            try:
                obj.__signature__ = inspect.signature(obj, eval_str=True)  # type: ignore[attr-defined]
            except Exception:  # an annotation only type checkers can evaluate
                pass


_evaluate_signatures()


def __getattr__(name: str):
    if name == "viz":
        import importlib

        return importlib.import_module("funcopt.viz")
    raise AttributeError(f"module 'funcopt' has no attribute {name!r}")

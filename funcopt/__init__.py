"""funcopt: functional gradient transformations for JAX.

Every optimizer is a pure ``(init, update)`` pair over pytrees, composed from small
primitives that read like the update equations::

    tx = funcopt.adam(1e-3)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = funcopt.apply_updates(params, updates)

Every public name of the submodules is re-exported here; ``funcopt.viz`` (matplotlib)
is imported on first use.
"""

from funcopt import (
    base,
    clipping,
    modern,
    optimizers,
    packing,
    primitives,
    schedules,
    train,
    transforms,
    wrappers,
)
from funcopt.base import *  # noqa: F403
from funcopt.clipping import *  # noqa: F403
from funcopt.modern import *  # noqa: F403
from funcopt.optimizers import *  # noqa: F403
from funcopt.packing import *  # noqa: F403
from funcopt.primitives import *  # noqa: F403
from funcopt.schedules import *  # noqa: F403
from funcopt.train import *  # noqa: F403
from funcopt.transforms import *  # noqa: F403
from funcopt.wrappers import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    *base.__all__,
    *clipping.__all__,
    *modern.__all__,
    *optimizers.__all__,
    *packing.__all__,
    *primitives.__all__,
    *schedules.__all__,
    *train.__all__,
    *transforms.__all__,
    *wrappers.__all__,
]


def __getattr__(name: str):
    if name == "viz":
        import importlib

        return importlib.import_module("funcopt.viz")
    raise AttributeError(f"module 'funcopt' has no attribute {name!r}")

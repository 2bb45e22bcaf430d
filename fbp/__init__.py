"""fbp: functional backpropagation.

Backpropagation written by hand as the δ recursion of *Neural Networks and Deep
Learning* (ch. 2), on pytree parameters, jitted and vmapped, and checked
against ``jax.grad``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each name's module, imported at the name's first use (PEP 562): ``import fbp`` itself imports no jax, so
# that the ``fbp`` command answers --help and refuses a flag at once; ``fbp.forward`` and
# ``from fbp import forward`` import it then.
_WHERE = {
    "ACTIVATIONS": "fbp.activations", "Activation": "fbp.activations", "get_activation": "fbp.activations",
    "backward": "fbp.backprop", "batch_backward": "fbp.backprop", "batch_deltas": "fbp.backprop",
    "deltas": "fbp.backprop", "example_loss": "fbp.backprop", "loss": "fbp.backprop",
    "value_and_batch_backward": "fbp.backprop",
    "GradReport": "fbp.check", "autodiff_grad": "fbp.check", "compare_grads": "fbp.check",
    "finite_differences": "fbp.check", "relative_error": "fbp.check",
    "load_params": "fbp.checkpoint", "save_network2": "fbp.checkpoint", "save_params": "fbp.checkpoint",
    "COSTS": "fbp.costs", "Cost": "fbp.costs", "get_cost": "fbp.costs",
    "Conv": "fbp.layers", "Dense": "fbp.layers",
    "INITS": "fbp.network", "dropout_masks": "fbp.network", "forward": "fbp.network",
    "forward_trace": "fbp.network", "init_convnet": "fbp.network", "init_mlp": "fbp.network",
}

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "COSTS",
    "Conv",
    "Cost",
    "Dense",
    "GradReport",
    "INITS",
    "autodiff_grad",
    "backward",
    "batch_backward",
    "batch_deltas",
    "compare_grads",
    "deltas",
    "dropout_masks",
    "example_loss",
    "finite_differences",
    "forward",
    "forward_trace",
    "get_activation",
    "get_cost",
    "init_convnet",
    "init_mlp",
    "load_params",
    "loss",
    "relative_error",
    "save_network2",
    "save_params",
    "stats",
    "value_and_batch_backward",
]

if TYPE_CHECKING:  # the names as a type checker and an editor see them
    from fbp import stats
    from fbp.activations import ACTIVATIONS, Activation, get_activation
    from fbp.backprop import (
        backward,
        batch_backward,
        batch_deltas,
        deltas,
        example_loss,
        loss,
        value_and_batch_backward,
    )
    from fbp.check import GradReport, autodiff_grad, compare_grads, finite_differences, relative_error
    from fbp.checkpoint import load_params, save_network2, save_params
    from fbp.costs import COSTS, Cost, get_cost
    from fbp.layers import Conv, Dense
    from fbp.network import INITS, dropout_masks, forward, forward_trace, init_convnet, init_mlp


def __getattr__(name: str) -> Any:
    if name.startswith("_"):  # what tools probe for (__wrapped__, say): not a module's name
        raise AttributeError(f"module 'fbp' has no attribute {name!r}")
    if name not in _WHERE:  # a submodule not imported yet (fbp.stats, fbp.train, …), as an eager package has them
        try:
            return importlib.import_module(f"fbp.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"fbp.{name}":  # one it imports is missing (matplotlib, say): that error is the one to see
                raise
            raise AttributeError(f"module 'fbp' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))

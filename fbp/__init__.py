"""fbp: functional backpropagation.

Backpropagation written by hand as the δ recursion of *Neural Networks and Deep
Learning* (ch. 2), on pytree parameters, jitted and vmapped, and checked
against ``jax.grad``.
"""

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
from fbp import stats  # noqa: E402  (fbp.stats.per_example_grad_norms, …)

__version__ = "0.1.0"

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

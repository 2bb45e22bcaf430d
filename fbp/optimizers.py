"""The book's update rules through optax's own transforms: plain SGD,
momentum, Adam, L2 weight decay λ/n and L1 (``make_optimizer``), the cost
terms the regularized steps descend (``l2_cost``, ``l1_cost``), and the
step-size factor that ``fit``'s learning schedule (ch. 3) halves. ``fbp.train``
re-exports the public names (``fbp.train.make_optimizer``, …).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fbp.network import in_params_sequence

Array = jax.Array
OPTIMIZERS = ("sgd", "momentum", "adam")
DEFAULT_MOMENTUM = 0.9  # μ of make_optimizer("momentum") and fbp train --optimizer momentum


def weight_mask(params: list) -> list:
    """True on every weight matrix, False on every bias (L2 and L1 act on
    weights only), in params' own structure (optax pairs the two)."""
    return in_params_sequence(params, [dataclasses.replace(layer, w=True, b=False) for layer in params])


def make_optimizer(
    name: str = "sgd", lr: float = 3.0, *, l2: float = 0.0, n_train: Optional[int] = None,
    momentum: float = DEFAULT_MOMENTUM, l1: float = 0.0,
) -> optax.GradientTransformation:
    """The book's optimizers through optax's own transforms.

    ``sgd`` is w → w − η ∇C (η = 3.0 is the book's chapter-1 setting).
    ``l2`` is the book's λ in network2: w → (1 − ηλ/n) w − η ∇C, i.e. optax's
    ``add_decayed_weights(λ/n)`` on the weights (not the biases) before the step.
    ``l1`` is the book's other regularizer of ch. 3, L1: w → w − (ηλ/n) sgn(w)
    − η ∇C, with sgn(0) = 0 (``add_l1``; optax has no L1 transform of its own).
    ``momentum`` is the book's μ (ch. 3, for ``name="momentum"``): v → μv − η∇C,
    w → w + v. optax's ``sgd(η, momentum=μ)`` keeps t → ∇C + μt and steps −ηt,
    the same thing (v = −ηt) while η is constant.

    The same settings give transformations built alike, so that ``fit``
    called again with a fresh ``make_optimizer`` of them (a loop over seeds)
    reuses the epoch it compiled the first time.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a positive number, got {lr!r}.")
    for what, value in (("l2", l2), ("l1", l1)):
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{what} (λ) must be a number ≥ 0, got {value!r}.")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum (μ) must be in [0, 1), got {momentum!r}; at 1 and above the velocity never decays.")
    if name == "sgd":
        step = optax.sgd(lr)
    elif name == "momentum":
        step = optax.sgd(lr, momentum=momentum)
    else:
        step = optax.adam(lr)
    if l2 == 0 and l1 == 0:
        return step
    if not n_train:
        raise ValueError(f"{'l2' if l2 else 'l1'} > 0 needs n_train, the training-set size n of the book's λ/n.")
    decay = [optax.add_decayed_weights(l2 / n_train, mask=weight_mask)] if l2 else []
    decay += [add_l1(l1 / n_train)] if l1 else []
    return optax.chain(*decay, step)


def add_l1(strength: float) -> optax.GradientTransformation:
    """Add ``strength`` · sgn(w) to the update of every weight (not the
    biases): the gradient of strength · Σ_w |w|, with sgn(0) = 0 as the book
    takes it, so that a weight at exactly 0 stays there. Before a plain SGD
    step of η, that is the book's L1 step w → w − η·strength·sgn(w) − η∇C."""
    def add_sign(updates, params):
        return jax.tree.map(lambda g, w: g + strength * jnp.sign(w), updates, params)

    return optax.masked(optax.stateless(add_sign), weight_mask)


def l2_cost(params: list, l2: float, n_train: int) -> Union[Array, float]:
    """The book's L2 term of the cost, (λ/2n) Σ_w w², over the weights (not
    the biases): what ``make_optimizer(l2=λ, n_train=n)``'s decay descends
    beside the data cost C₀ (its gradient, (λ/n) w, is the decay). The
    book's ``total_cost`` of the training data is C₀ plus this; of other
    data it adds the term with n their own size."""
    return 0.5 * l2 / n_train * sum(jnp.sum(jnp.square(layer.w)) for layer in params)


def l1_cost(params: list, l1: float, n_train: int) -> Union[Array, float]:
    """The book's L1 term of the cost, (λ/n) Σ_w |w|, over the weights (not
    the biases): what ``make_optimizer(l1=λ, n_train=n)``'s ``add_l1``
    descends beside the data cost (its gradient, (λ/n) sgn(w), is that step)."""
    return l1 / n_train * sum(jnp.sum(jnp.abs(layer.w)) for layer in params)


def penalty_terms(params: list, n_train: int, *, l2: float = 0.0, l1: float = 0.0) -> dict:
    """The L2 and L1 terms of the cost (``l2_cost``, ``l1_cost``) that
    ``make_optimizer(l2=, l1=, n_train=)``'s steps descend beside the data
    cost, as floats, each where its λ is given: what ``fbp train`` records
    each epoch (through ``fit``'s ``monitor``)."""
    return {**({"l2_cost": float(l2_cost(params, l2, n_train))} if l2 else {}),
            **({"l1_cost": float(l1_cost(params, l1, n_train))} if l1 else {})}


# --- the book's learning schedule (ch. 3) ------------------------------------
def with_lr_schedule(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optimizer`` followed by a step-size factor that lives in the optimizer
    state (1.0 at the start), so that fit can halve it between epochs and a
    checkpoint carries it."""
    return optax.chain(optimizer, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def lr_factor(opt_state) -> float:
    """The step-size factor of a state made with ``with_lr_schedule`` (fit's ``lr_halving``)."""
    return float(np.asarray(opt_state[1].hyperparams["step_size"]))


def halve_lr(opt_state):
    """The same state with its step-size factor halved: the book's schedule
    after ``lr_halving`` epochs without a better evaluation accuracy."""
    inner, schedule = opt_state
    hyper = dict(schedule.hyperparams, step_size=schedule.hyperparams["step_size"] * 0.5)
    return (inner, schedule._replace(hyperparams=hyper))

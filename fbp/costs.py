"""Costs: each is C(a, y) for one example beside its gradient ∇_a C.

BP1 in general is δ^L = ∇_a C ⊙ σ'(z^L) (or Jᵀ ∇_a C for softmax). For the two
matched pairs, sigmoid + cross_entropy and softmax + log_likelihood, the
product simplifies to δ^L = a^L − y; ``closed_form`` returns that output error
and the cost itself as functions of z^L, so that a saturated output neuron
(|z| in the hundreds) still gives finite numbers: no log(0), no 0 · ∞.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from fbp.activations import Activation, _sigmoid, _softmax, _softplus, _unknown

Array = jnp.ndarray


class Cost(NamedTuple):
    """A per-example cost with its hand-written gradient.

    Attributes:
      name: the name used on the command line and in ``fbp.loss``.
      fn: C(a, y) -> scalar, one example (a and y of shape (n_out,)).
      grad: ∇_a C(a, y) -> (n_out,).
      needs_probabilities: the cost takes logs of a, so the output activation
        must map into (0, 1) (sigmoid or softmax).
    """

    name: str
    fn: Callable[[Array, Array], Array]
    grad: Callable[[Array, Array], Array]
    needs_probabilities: bool = False


class ClosedForm(NamedTuple):
    """A cost and its output error written as functions of z^L (stable)."""

    loss: Callable[[Array, Array], Array]  # C(σ(z), y) from z
    delta: Callable[[Array, Array], Array]  # δ^L = a^L − y from z


# --- quadratic: C = ½‖a − y‖² (the book's)
def _quadratic(a, y):
    d = a - y
    return 0.5 * jnp.sum(d * d)


def _quadratic_grad(a, y):
    return a - y


# --- mse: C = (1/n) Σ_j (a_j − y_j)², the mean over output units
def _mse(a, y):
    d = a - y
    return jnp.mean(d * d)


def _mse_grad(a, y):
    return 2.0 * (a - y) / a.shape[-1]


# --- binary cross-entropy: C = −Σ_j [y ln a + (1 − y) ln(1 − a)]
def _cross_entropy(a, y):
    return -jnp.sum(y * jnp.log(a) + (1.0 - y) * jnp.log1p(-a))


def _cross_entropy_grad(a, y):
    return (a - y) / (a * (1.0 - a))


# --- log-likelihood: C = −Σ_j y_j ln a_j  (= −ln a_y for one-hot y)
def _log_likelihood(a, y):
    return -jnp.sum(y * jnp.log(a))


def _log_likelihood_grad(a, y):
    return -y / a


quadratic = Cost("quadratic", _quadratic, _quadratic_grad)
mse = Cost("mse", _mse, _mse_grad)
cross_entropy = Cost("cross_entropy", _cross_entropy, _cross_entropy_grad, True)
log_likelihood = Cost("log_likelihood", _log_likelihood, _log_likelihood_grad, True)

COSTS = {c.name: c for c in (quadratic, mse, cross_entropy, log_likelihood)}


# --- the closed forms, written from z.
# sigmoid + cross-entropy: C = Σ softplus(z) − y z, δ = σ(z) − y
def _sigmoid_ce_loss(z, y):
    return jnp.sum(_softplus(z) - y * z)


def _sigmoid_ce_delta(z, y):
    return _sigmoid(z) - y


# softmax + log-likelihood: C = (Σ y) logsumexp(z) − y·z, δ = (Σ y) softmax(z) − y
def _softmax_ll_loss(z, y):
    m = jax.lax.stop_gradient(jnp.max(z))  # any m gives the same value; no kink at ties
    lse = m + jnp.log(jnp.sum(jnp.exp(z - m)))
    return jnp.sum(y) * lse - jnp.dot(y, z)


def _softmax_ll_delta(z, y):
    return jnp.sum(y) * _softmax(z) - y


CLOSED_FORMS = {
    ("cross_entropy", "sigmoid"): ClosedForm(_sigmoid_ce_loss, _sigmoid_ce_delta),
    ("log_likelihood", "softmax"): ClosedForm(_softmax_ll_loss, _softmax_ll_delta),
}


def closed_form(cost: Cost, activation: Activation) -> Optional[ClosedForm]:
    """The stable (loss, δ^L) pair for a matched cost and output activation, else None."""
    return CLOSED_FORMS.get((cost.name, activation.name))


def get_cost(cost: Union[str, Cost]) -> Cost:
    """Return the ``Cost`` for a name or pass a ``Cost`` through."""
    if isinstance(cost, Cost):
        return cost
    if isinstance(cost, str):
        if cost not in COSTS:
            raise _unknown("cost", cost, COSTS)
        return COSTS[cost]
    raise TypeError(
        f"cost must be a name such as 'quadratic' or an fbp.Cost, "
        f"got {cost!r} of type {type(cost).__name__}."
    )

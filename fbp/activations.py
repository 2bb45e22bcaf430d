"""Activations: each is σ beside its derivative σ', written by hand.

An elementwise activation gives BP1/BP2 their ``⊙ σ'(z)`` factor. Softmax is
not elementwise: its backward is the Jacobian-transpose-vector product
``Jᵀ g = a ⊙ (g − (a·g))``, also written by hand, and it may only sit on the
output layer.
"""

from __future__ import annotations

import difflib
from typing import Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

Array = jnp.ndarray


class Activation(NamedTuple):
    """An activation σ with its hand-written backward.

    Attributes:
      name: the name used in ``Dense.activation`` and on the command line.
      fn: σ(z), one example: (n,) -> (n,).
      prime: σ'(z) for an elementwise σ; ``None`` for softmax.
      vjp: for a non-elementwise σ, ``vjp(z, a, g) = J(z)ᵀ g``; ``None`` otherwise.
    """

    name: str
    fn: Callable[[Array], Array]
    prime: Optional[Callable[[Array], Array]] = None
    vjp: Optional[Callable[[Array, Array, Array], Array]] = None

    @property
    def elementwise(self) -> bool:
        return self.vjp is None

    def backward(self, z: Array, a: Array, g: Array) -> Array:
        """Pull ``g = ∂C/∂a`` back to ``∂C/∂z``: g ⊙ σ'(z), or Jᵀg for softmax."""
        if self.vjp is not None:
            return self.vjp(z, a, g)
        if self.prime is None:
            raise _no_backward(self)
        return g * self.prime(z)


def _no_backward(activation: "Activation") -> TypeError:
    return TypeError(f"activation {activation.name!r} has neither prime (σ'(z), for an elementwise σ) nor vjp "
                     f"(J(z)ᵀg, for one that is not), and the backward pass (BP1, BP2) needs one: "
                     f"fbp.Activation({activation.name!r}, fn, prime=lambda z: ...).")


# --- sigmoid: σ(z) = 1/(1+e^{-z}), written through tanh so that it (and its
# autodiff) stays finite for any z.
def _sigmoid(z):
    return 0.5 * (jnp.tanh(0.5 * z) + 1.0)


def _sigmoid_prime(z):
    s = _sigmoid(z)
    return s * (1.0 - s)


# --- tanh
def _tanh(z):
    return jnp.tanh(z)


def _tanh_prime(z):
    t = jnp.tanh(z)
    return 1.0 - t * t


# --- relu (σ'(0) = 0, the subgradient jax.grad of the same `where` takes)
def _relu(z):
    return jnp.where(z > 0, z, jnp.zeros_like(z))


def _relu_prime(z):
    return jnp.where(z > 0, jnp.ones_like(z), jnp.zeros_like(z))


# --- leaky relu, slope 0.01 for z <= 0
LEAKY_SLOPE = 0.01


def _leaky_relu(z):
    return jnp.where(z > 0, z, LEAKY_SLOPE * z)


def _leaky_relu_prime(z):
    return jnp.where(z > 0, jnp.ones_like(z), jnp.full_like(z, LEAKY_SLOPE))


# --- identity
def _identity(z):
    return z


def _identity_prime(z):
    return jnp.ones_like(z)


# --- softplus: ln(1 + e^z) = max(z, 0) + ln(1 + e^{-|z|}); σ' is the sigmoid.
# max(z, 0) and −|z| are written with one `where` each, so that autodiff of this
# form takes the same branch for both and gets σ(0) = ½ at z = 0 (jnp.maximum
# and jnp.abs pick subgradients that do not cancel there), and nothing overflows.
def _softplus(z):
    pos = z > 0
    return jnp.where(pos, z, 0.0) + jnp.log1p(jnp.exp(jnp.where(pos, -z, z)))


def _softplus_prime(z):
    return _sigmoid(z)


# --- softmax: a_j = e^{z_j} / Σ_k e^{z_k}; Jᵀg = a ⊙ (g − a·g)
def _softmax(z):
    e = jnp.exp(z - jax.lax.stop_gradient(jnp.max(z)))  # shift: no overflow, same value
    return e / jnp.sum(e)


def _softmax_vjp(z, a, g):
    return a * (g - jnp.dot(a, g))


sigmoid = Activation("sigmoid", _sigmoid, _sigmoid_prime)
tanh = Activation("tanh", _tanh, _tanh_prime)
relu = Activation("relu", _relu, _relu_prime)
leaky_relu = Activation("leaky_relu", _leaky_relu, _leaky_relu_prime)
identity = Activation("identity", _identity, _identity_prime)
softplus = Activation("softplus", _softplus, _softplus_prime)
softmax = Activation("softmax", _softmax, vjp=_softmax_vjp)

ACTIVATIONS = {
    act.name: act
    for act in (sigmoid, tanh, relu, leaky_relu, identity, softplus, softmax)
}


def _unknown(kind: str, name, known) -> ValueError:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"unknown {kind} {name!r}.{hint} Choose one of: {', '.join(sorted(known))}."
    )


def get_activation(activation: Union[str, Activation]) -> Activation:
    """Return the ``Activation`` for a name or pass an ``Activation`` through."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise _unknown("activation", activation, ACTIVATIONS)
        return ACTIVATIONS[activation]
    raise TypeError(
        f"activation must be a name such as 'sigmoid' or an fbp.Activation, "
        f"got {activation!r} of type {type(activation).__name__}."
    )

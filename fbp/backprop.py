"""Backpropagation by hand: the δ recursion of *NNDL*, chapter 2.

    BP1  δ^L = ∇_a C ⊙ σ'(z^L)               (Jᵀ∇_a C for softmax; a^L − y for the matched pairs)
    BP2  δ^l = ((w^{l+1})ᵀ δ^{l+1}) ⊙ σ'(z^l)
    BP3  ∂C/∂b^l = δ^l
    BP4  ∂C/∂w^l = δ^l (a^{l−1})ᵀ

``deltas`` and ``backward`` are written for one example. ``batch_backward``
vmaps the recursion over the batch and forms each weight gradient as one
matrix product Δᵀ A (never B per-example outer products). Nothing here knows
about training.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fbp.costs import Cost, closed_form, get_cost
from fbp.network import (check_inputs, check_masks, check_targets, forward_trace, layer_inputs, like_params,
                         validate_params)

Array = jax.Array
REDUCTIONS = ("mean", "sum")


def check_cost(params, cost) -> Cost:
    """The ``Cost`` for a name or object, checked against the output activation."""
    cost = get_cost(cost)
    out = params[-1].act
    if cost.needs_probabilities and out.name not in ("sigmoid", "softmax"):
        raise ValueError(
            f"cost {cost.name!r} takes logarithms of the output, so the output layer must give "
            f"values in (0, 1), but its activation is {out.name!r}; use "
            f"output_activation='sigmoid' (or 'softmax' for log_likelihood)."
        )
    return cost


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")


def _scale(X, reduction: str):
    """The factor δ^L carries for the batch cost: 1/B for ``mean``, none for ``sum``."""
    _check_reduction(reduction)
    if reduction == "sum":
        return None
    n = jnp.shape(X)[0] if jnp.ndim(X) else 1
    return 1.0 / n if n else None  # a 0-d or empty X fails check_batch next, with a message


def reduce(per_example: Array, reduction: str) -> Array:
    """(B,) per-example costs to the batch cost: their mean or their sum."""
    _check_reduction(reduction)
    return jnp.mean(per_example) if reduction == "mean" else jnp.sum(per_example)


def output_error(params: list, z_L: Array, a_L: Array, y: Array, cost: Cost) -> Array:
    """BP1: δ^L for one example. Closed form a^L − y (from z) for the matched pairs."""
    out = params[-1].act
    pair = closed_form(cost, out)
    if pair is not None:
        return pair.delta(z_L, y)
    return out.backward(z_L, a_L, cost.grad(a_L, y))


def _deltas_and_inputs(params: list, x: Array, y: Array, cost: Cost, scale=None, masks=None):
    """The recursion for one example: returns (δ^1..δ^L, a^0..a^{L−1}).

    ``scale`` multiplies δ^L before the recursion (1/B for a mean over a batch);
    with dropout ``masks``, the a^{l−1} are what each layer took in, m ⊙ a.
    """
    zs, activations = forward_trace(params, x, masks)
    return _deltas_from(params, zs, activations, y, cost, scale, masks), layer_inputs(activations, masks)


def _deltas_from(params: list, zs: list, activations: list, y: Array, cost: Cost, scale=None, masks=None) -> list:
    """BP1 (times ``scale``) then BP2, from a forward trace."""
    delta = output_error(params, zs[-1], activations[-1], y, cost)  # BP1
    if scale is not None:
        delta = delta * scale
    return propagate(params, zs, activations, delta, masks)


def propagate(params: list, zs: list, activations: list, delta_L: Array, masks=None) -> list:
    """BP2 from a given δ^L, one example: [δ^1, …, δ^L].

    ``zs`` and ``activations`` come from ``forward_trace``. Any vector can be
    sent back this way (fbp.stats sends the columns of the output Hessian's
    factor for the Gauss-Newton diagonal). With dropout ``masks`` (this
    example's rows), the error sent back to hidden layer l is multiplied by
    its mask: a dropped unit took no part, and gets δ = 0.
    """
    delta = delta_L
    deltas = [delta]
    for l in range(len(params) - 2, -1, -1):  # BP2, last hidden layer to first
        a_in = activations[l + 1] if masks is None else activations[l + 1] * masks[l]  # what layer l+1 took in
        g = params[l + 1].backward(delta, a_in)  # (w^{l+1})ᵀ δ^{l+1}
        if masks is not None:
            g = g * masks[l]  # ⊙ m^l, dropout
        delta = params[l].act.backward(zs[l], activations[l + 1], g)  # ⊙ σ'(z^l)
        deltas.append(delta)
    return deltas[::-1]


def deltas(params: list, x: Array, y: Array, cost) -> list:
    """BP1 and BP2 for one example: the list [δ^1, …, δ^L], δ^l of shape (n_l,).

    Example:
      >>> import jax, jax.numpy as jnp, fbp
      >>> params = fbp.init_mlp(jax.random.key(0), [3, 4, 2])
      >>> [d.shape for d in fbp.deltas(params, jnp.ones(3), jnp.array([0., 1.]), "quadratic")]
      [(4,), (2,)]
    """
    validate_params(params)
    cost = check_cost(params, cost)
    x = check_inputs(params, x, "x", batched=False)
    y = check_targets(params, y, "y")
    return _deltas_and_inputs(params, x, y, cost)[0]


def backward(params: list, x: Array, y: Array, cost) -> list:
    """BP1–BP4 for one example: ∂C/∂params, with the same pytree structure as params."""
    validate_params(params)
    cost = check_cost(params, cost)
    x = check_inputs(params, x, "x", batched=False)
    y = check_targets(params, y, "y")
    ds, a_prev = _deltas_and_inputs(params, x, y, cost)
    return like_params(params, [layer.grads(d, a) for layer, d, a in zip(params, ds, a_prev)])  # BP3, BP4


def check_batch(params: list, X, Y, cost, names: tuple = ("X", "Y")):
    """Validate params, a batch and a cost together; returns ``(cost, X, Y)`` as
    a ``Cost`` and arrays. Shapes and dtypes only, so it runs at trace time.
    ``names`` are what the messages call X and Y."""
    validate_params(params)
    cost = check_cost(params, cost)
    X = check_inputs(params, X, names[0], batched=True)
    if X.shape[0] == 0:  # the mean over it is 0/0, and every per-example quantity is empty
        raise ValueError(f"{names[0]} holds no examples (shape {X.shape}); a batch needs at least one.")
    Y = check_targets(params, Y, names[1], batch=X.shape[0], inputs=names[0])
    return cost, X, Y


def batch_deltas(params: list, X: Array, Y: Array, cost, scale=None, masks=None, names: tuple = ("X", "Y")):
    """The stacked recursion: (Δ^1..Δ^L, A^0..A^{L−1}), Δ^l of shape (B, n_l).

    Row n of Δ^l is δ^l of example n (times ``scale``); row n of A^{l−1} is its
    a^{l−1}. Everything per-example in ``fbp.stats`` is built from these pairs.
    ``masks``: dropout's (``fbp.dropout_masks``), row n for example n.
    ``names``: what an error calls X and Y.
    """
    cost, X, Y = check_batch(params, X, Y, cost, names)
    check_masks(params, masks, X.shape[0])
    fn = functools.partial(_deltas_and_inputs, params, cost=cost, scale=scale)
    return jax.vmap(fn)(X, Y, masks=masks)


def batch_trace(params: list, X: Array, Y: Array, cost, scale=None, masks=None):
    """``batch_deltas`` with each example's cost from the same forward pass:
    ``(C (B,), [Δ^l], [A^{l−1}])``; the costs are not scaled."""
    cost, X, Y = check_batch(params, X, Y, cost)
    check_masks(params, masks, X.shape[0])

    def one(x, y, m):
        zs, activations = forward_trace(params, x, m)
        ds = _deltas_from(params, zs, activations, y, cost, scale, m)
        return _example_loss_from(params, zs, activations, y, cost), ds, layer_inputs(activations, m)

    return jax.vmap(one)(X, Y, masks)


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def batch_backward(params: list, X: Array, Y: Array, cost, reduction: str = "mean", masks=None) -> list:
    """The gradient of the batch cost, by the hand-written recursion, jitted.

    The recursion is vmapped over the batch; BP3/BP4 summed over the batch are
    ``1ᵀΔ`` and one matrix product ``Δᵀ A`` per layer. With ``reduction="mean"``
    the cost is (1/B) Σ_n C_n, and δ^L is scaled by 1/B before the recursion
    (as reverse-mode autodiff does), so every δ carries it.

    Args:
      params: ``list[Dense]``.
      X: inputs, (B, n_in), floating.
      Y: targets, (B, n_out), floating (one-hot for classification).
      cost: a cost name (``"quadratic"``, ``"mse"``, ``"cross_entropy"``,
        ``"log_likelihood"``) or an ``fbp.Cost``.
      reduction: ``"mean"`` or ``"sum"`` over the batch.
      masks: dropout masks for this batch (``fbp.dropout_masks``), or None:
        the gradient of the network thinned by them.

    Returns:
      Gradients with the structure of params.
    """
    ds, a_prev = batch_deltas(params, X, Y, cost, scale=_scale(X, reduction), masks=masks)
    return like_params(params, [layer.batch_grads(d, a) for layer, d, a in zip(params, ds, a_prev)])


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def value_and_batch_backward(params: list, X: Array, Y: Array, cost, reduction: str = "mean", masks=None):
    """``(loss, grads)`` from one forward pass: the batch cost beside ``batch_backward``.

    The loss is the same number ``fbp.loss`` gives; the gradient is the
    hand-written one. The training step uses this, so the cost it reports
    costs nothing extra. With dropout ``masks``, both are those of the
    thinned network.
    """
    losses, ds, a_prev = batch_trace(params, X, Y, cost, scale=_scale(X, reduction), masks=masks)
    grads = like_params(params, [layer.batch_grads(d, a) for layer, d, a in zip(params, ds, a_prev)])
    return reduce(losses, reduction), grads


# --- the cost itself, shared by the autodiff reference and evaluation -----
def example_loss(params: list, x: Array, y: Array, cost: Cost, masks=None) -> Array:
    """C(a^L, y) for one example; from z^L in closed form for the matched pairs.
    ``masks``: this example's dropout masks, or None."""
    zs, activations = forward_trace(params, x, masks)
    return _example_loss_from(params, zs, activations, y, get_cost(cost))


def _example_loss_from(params, zs, activations, y, cost: Cost) -> Array:
    pair = closed_form(cost, params[-1].act)
    if pair is not None:
        return pair.loss(zs[-1], y)
    return cost.fn(activations[-1], y)


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def loss(params: list, X: Array, Y: Array, cost, reduction: str = "mean", masks=None) -> Array:
    """The batch cost: (1/B) Σ_n C_n (``mean``) or Σ_n C_n (``sum``), jitted.
    With dropout ``masks`` (``fbp.dropout_masks``), that of the thinned
    network: ``jax.grad`` of it is the reference for the hand-written
    gradient with the same masks."""
    _check_reduction(reduction)
    cost, X, Y = check_batch(params, X, Y, cost)
    check_masks(params, masks, X.shape[0])
    per_example = jax.vmap(lambda x, y, m: example_loss(params, x, y, cost, m))(X, Y, masks)  # (B,)
    return reduce(per_example, reduction)

"""Per-example gradient quantities from the stacked δ's, at the cost of one gradient.

BP4 says example n's gradient for layer l is the outer product δ^l_n (a^{l−1}_n)ᵀ.
``batch_deltas`` gives Δ^l (B, n_l) and A^{l−1} (B, n_{l−1}); everything here is
built from those pairs, never from B copies of the parameters (except
``per_example_grads``, which is asked for exactly that).

All functions take ``(params, X, Y, cost)`` with X (B, n_in), Y (B, n_out)
(``tracin`` and ``self_influence`` a list of (params, weight) pairs, a run's
checkpoints, in place of params), are jitted, and refer to the per-example
cost C_n (not divided by B).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from fbp.backprop import _check_reduction, _deltas_and_inputs, batch_deltas, batch_trace, check_batch, propagate, reduce
from fbp.network import check_int, forward_trace, like_params

Array = jax.Array


def _sq(x):  # row-wise squared norm: (B, n) -> (B,); one example's (n,) -> ()
    return jnp.sum(x * x, axis=-1)


def _layer_sq_norms(params: list, ds, a_prev) -> list:
    """‖g_n^l‖² per layer, each (B,) (or a scalar each for one example's
    δ's and inputs); for a Dense layer ‖δ_n a_nᵀ‖²_F + ‖δ_n‖² = ‖δ_n‖² (‖a_n‖² + 1)."""
    return [layer.sq_norms(d, a) for layer, d, a in zip(params, ds, a_prev)]


@functools.partial(jax.jit, static_argnames=("cost", "chunk_size"))
def per_example_grads(params: list, X: Array, Y: Array, cost, chunk_size: Optional[int] = None) -> list:
    """The materialised per-example gradients: leaves with a leading batch axis.

    Identity: g_n = (δ_n aᵀ_n, δ_n) per layer (BP4, BP3). ``chunk_size`` forms
    them ``chunk_size`` examples at a time under ``lax.map``, so the working
    set stays chunk × parameters (the result itself is B × parameters).
    """
    cost, X, Y = check_batch(params, X, Y, cost)

    def one(xy):
        ds, a_prev = _deltas_and_inputs(params, xy[0], xy[1], cost)
        return like_params(params, [layer.grads(d, a) for layer, d, a in zip(params, ds, a_prev)])

    if chunk_size is None:
        return jax.vmap(one)((X, Y))
    check_int("chunk_size", chunk_size, 1, " or None")
    return jax.lax.map(one, (X, Y), batch_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("cost", "per_layer"))
def per_example_grad_norms(params: list, X: Array, Y: Array, cost, per_layer: bool = False) -> Array:
    """‖g_n‖₂ for each example, (B,), or per layer, (B, L) with ``per_layer=True``.

    Identity: ‖δ aᵀ‖²_F = ‖δ‖² ‖a‖², and ‖∂C_n/∂b‖² = ‖δ‖²; no outer product is formed.
    """
    sq = _layer_sq_norms_of(params, X, Y, cost)  # (B, L)
    return jnp.sqrt(sq) if per_layer else jnp.sqrt(jnp.sum(sq, axis=1))


@functools.partial(jax.jit, static_argnames=("cost", "chunk_size"))
def _layer_sq_norms_of(params: list, X: Array, Y: Array, cost, chunk_size: Optional[int] = None) -> Array:
    """‖g^l_n‖² of each example and layer, (B, L), ``chunk_size`` examples at a time (``lax.map``) or all at once."""
    cost, X, Y = check_batch(params, X, Y, cost)
    if chunk_size is None:
        ds, a_prev = batch_deltas(params, X, Y, cost)
        return jnp.stack(_layer_sq_norms(params, ds, a_prev), axis=1)

    def one(xy):
        ds, a_prev = _deltas_and_inputs(params, xy[0], xy[1], cost)
        return jnp.stack(_layer_sq_norms(params, ds, a_prev))

    return jax.lax.map(one, (X, Y), batch_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("cost", "chunk_size"))
def grad_gram(params: list, X: Array, Y: Array, cost, X2: Optional[Array] = None, Y2: Optional[Array] = None,
              chunk_size: Optional[int] = None) -> Array:
    """The inner products of per-example gradients: (B, B2), entry (n, m)
    g_n · g'_m over all the params, for the examples of (X, Y) and those of
    (X2, Y2) (by default (X, Y) again: the Gram matrix of the gradients).

    Identity, for a Dense layer: (δ_n a_nᵀ) · (δ'_m a'_mᵀ) + δ_n · δ'_m =
    (δ_n · δ'_m)(a_n · a'_m + 1), so two products of the stacked δ's and
    inputs, Δ Δ'ᵀ ⊙ (A A'ᵀ + 1), give each layer's part; no gradient is formed
    (a Conv layer's are). A step of SGD on example n moves example m's cost
    by about −η g_n · g'_m: a positive entry is an example whose step helps m
    (the TracIn score of one checkpoint, Pruthi et al. 2020). ``chunk_size``
    takes the rows of (X, Y) that many at a time (``lax.map``), against
    all of (X2, Y2): the memory of a chunk's δ's, not of all of them.
    """
    if (X2 is None) != (Y2 is None):
        raise ValueError("grad_gram takes X2 and Y2 together (the second set of examples), or neither "
                         "(the Gram matrix of X's own).")
    cost, X, Y = check_batch(params, X, Y, cost)
    ds2, a2 = batch_deltas(params, X, Y, cost) if X2 is None or Y2 is None else \
        batch_deltas(params, X2, Y2, cost, names=("X2", "Y2"))

    def rows(ds, a_prev):  # (chunk, B2)
        return sum(layer.grad_gram(d, a, d2, b) for layer, d, a, d2, b in zip(params, ds, a_prev, ds2, a2))

    if chunk_size is None:
        return rows(*batch_deltas(params, X, Y, cost))
    check_int("chunk_size", chunk_size, 1, " or None")

    def one(xy):
        ds, a_prev = _deltas_and_inputs(params, xy[0], xy[1], cost)
        return rows([d[None] for d in ds], [a[None] for a in a_prev])[0]

    return jax.lax.map(one, (X, Y), batch_size=chunk_size)


def tracin(checkpoints, X: ArrayLike, Y: ArrayLike, cost, X2: Optional[ArrayLike] = None,
           Y2: Optional[ArrayLike] = None, chunk_size: Optional[int] = None, cosine: bool = False) -> Array:
    """TracIn over checkpoints (TracInCP, Pruthi et al. 2020): (B, B2),
    entry (n, m) Σ_i η_i g_n(w_i) · g'_m(w_i), ``checkpoints`` a sequence of
    pairs (params w_i, weight η_i), each term a ``grad_gram``.

    Summed over the checkpoints of a run (``fit(keep_every=...)`` keeps them
    spread over it), it follows what the steps on example n did to example
    m's cost over training, where one checkpoint's ``grad_gram`` gives what
    one step does there. The paper's η_i is the step size at checkpoint i,
    for checkpoints evenly spaced; where they are not (fit keeps the newest
    three beside every ``keep_every``-th), weigh each by the epochs it
    stands for too, as ``fbp evaluate --over-checkpoints`` does. With
    momentum or Adam the step size is only the base rate. The networks must
    have one structure; X2, Y2 and ``chunk_size`` as in ``grad_gram``.

    ``cosine``: each entry over the norms of the two gradients stacked over
    the checkpoints, each times the √ of its weight, Σ_i η_i g_n · g'_m /
    (√(Σ_i η_i ‖g_n‖²) √(Σ_i η_i ‖g'_m‖²)) (``self_influence`` gives the
    sums under the roots): in [−1, 1], how nearly the two examples' steps
    point the same way, however large they are. A product grows with
    ‖g_n‖, so the examples of the largest gradients (late in training,
    those not fitted, mislabelled ones above all) head the products' lists
    of many examples; the cosine's lists hold examples like the one
    explained (``experiments/explanations.py``). A zero gradient gives 0."""
    checkpoints = _checked_checkpoints("tracin", checkpoints)
    X, Y = jnp.asarray(X), jnp.asarray(Y)  # on the device once, not once per checkpoint
    X2, Y2 = (None if a is None else jnp.asarray(a) for a in (X2, Y2))
    parts = [lr * grad_gram(params, X, Y, cost, X2, Y2, chunk_size=chunk_size) for params, lr in checkpoints]
    products = sum(parts[1:], parts[0])
    if not cosine:
        return products
    norms = jnp.sqrt(self_influence(checkpoints, X, Y, cost, chunk_size=chunk_size))
    norms2 = norms if X2 is None or Y2 is None else jnp.sqrt(self_influence(checkpoints, X2, Y2, cost,
                                                                            chunk_size=chunk_size))
    scale = norms[:, None] * norms2[None, :]
    return jnp.where(scale > 0, products / jnp.where(scale > 0, scale, 1), 0)


def _checked_checkpoints(name: str, checkpoints) -> list:
    """``checkpoints`` as a list of (params, step size) pairs of one structure, or a ValueError naming ``name``."""
    checkpoints = list(checkpoints)
    if not checkpoints or not all(isinstance(c, (tuple, list)) and len(c) == 2 for c in checkpoints):
        raise ValueError(f"{name} takes a non-empty list of (params, step size) pairs, one per checkpoint.")
    structures = {jax.tree.structure(params) for params, _ in checkpoints}
    if len(structures) > 1:
        raise ValueError(f"{name}'s checkpoints differ in structure ({len(structures)} kinds of network): "
                         f"give the checkpoints of one run.")
    for _, lr in checkpoints:
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) or not lr >= 0 \
                or not np.isfinite(lr):
            raise ValueError(f"{name} takes (params, step size) pairs, the step sizes finite numbers ≥ 0; got "
                             f"{lr!r} for one.")
    return checkpoints


def self_influence(checkpoints, X: ArrayLike, Y: ArrayLike, cost, layers=None,
                   chunk_size: Optional[int] = None) -> Array:
    """TracIn's self-influence over checkpoints (Pruthi et al. 2020): (B,),
    Σ_i η_i ‖g_n(w_i)‖² for each example n, ``checkpoints`` a sequence of
    pairs (params w_i, weight η_i) as ``tracin`` takes them: the diagonal of
    ``tracin(checkpoints, X, Y, cost)`` without the B × B matrix.

    Summed over a run's checkpoints, an example's self-influence is in
    proportion to what its own steps lowered its own cost by over the run;
    wrong labels gather among the largest (``fbp evaluate --worst N
    --over-checkpoints``, experiments/mislabelled.py). Identity: ‖g_n‖² =
    Σ_l ‖δ^l_n‖² (‖a^{l−1}_n‖² + 1) (BP3, BP4), no gradient formed. ``layers``
    (None: all) takes the sum over those layers only, an index or a list of
    them (``layers=-1``: the output layer's part, which the hidden units' σ'
    does not blur). ``chunk_size`` as in ``grad_gram``."""
    checkpoints = _checked_checkpoints("self_influence", checkpoints)
    if not isinstance(checkpoints[0][0], (list, tuple)):
        raise TypeError(f"self_influence takes (params, step size) pairs, params a list of layers (as fbp.init_mlp "
                        f"gives), got {type(checkpoints[0][0]).__name__}.")
    n_layers = len(checkpoints[0][0])
    picked = list(range(n_layers)) if layers is None else [layers] if isinstance(layers, (int, np.integer)) \
        else list(layers) if isinstance(layers, (list, tuple)) else []
    if not picked or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n_layers <= i < n_layers
                         for i in picked):
        raise ValueError(f"self_influence's layers must be None, or a layer's index or a list of them, each in "
                         f"[-{n_layers}, {n_layers}) for this network of {n_layers} layers; got {layers!r}.")
    X, Y = jnp.asarray(X), jnp.asarray(Y)  # on the device once, not once per checkpoint
    columns = jnp.asarray(sorted({i % n_layers for i in picked}))
    parts = [lr * jnp.sum(_layer_sq_norms_of(params, X, Y, cost, chunk_size=chunk_size)[:, columns], axis=1)
             for params, lr in checkpoints]
    return sum(parts[1:], parts[0])


def _clip_factors(params, ds, a_prev, clip_norm):
    sq = sum(_layer_sq_norms(params, ds, a_prev))  # (B,)
    norms = jnp.sqrt(sq)
    # min(1, C/‖g‖), with ‖g‖ = 0 giving 1 (nothing to clip)
    return jnp.where(norms > clip_norm, clip_norm / jnp.where(norms > 0, norms, 1.0), 1.0), norms


def clipped_grad(params: list, X: Array, Y: Array, cost, clip_norm, reduction: str = "mean", masks=None) -> list:
    """Σ_n min(1, C/‖g_n‖) g_n (÷ B for ``mean``): each example's gradient clipped to norm C.

    Identity: Σ_n c_n δ_n a_nᵀ = (c ⊙ Δ)ᵀ A, with ‖g_n‖ from ‖δ‖ and ‖a‖.
    C must be > 0 (checked here unless it is traced). With dropout ``masks``
    (``fbp.dropout_masks``), g_n is the gradient of example n's thinned network.
    """
    _check_clip_norm(clip_norm)
    return _clipped_grad(params, X, Y, cost, clip_norm, reduction, masks)


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def _clipped_grad(params, X, Y, cost, clip_norm, reduction, masks=None):
    _check_reduction(reduction)
    ds, a_prev = batch_deltas(params, X, Y, cost, masks=masks)
    return _clipped_sum(params, ds, a_prev, clip_norm, reduction)


def _check_clip_norm(clip_norm) -> None:
    """ValueError for a clip norm known now (not traced) that is not > 0: with
    C ≤ 0 or NaN every clipped gradient would be zero or NaN, silently."""
    try:
        positive = bool(clip_norm > 0)
    except jax.errors.ConcretizationTypeError:  # traced under jit: not known yet
        return
    if not positive:
        raise ValueError(f"clip norm must be > 0, got {clip_norm!r}.")


def _clipped_sum(params, ds, a_prev, clip_norm, reduction):
    c, _ = _clip_factors(params, ds, a_prev, clip_norm)  # (B,)
    if reduction == "mean":
        c = c / ds[0].shape[0]
    return like_params(params, [layer.batch_grads(d * c[:, None], a) for layer, d, a in zip(params, ds, a_prev)])


@functools.partial(jax.jit, static_argnames=("cost",))
def grad_second_moment(params: list, X: Array, Y: Array, cost) -> list:
    """Σ_n g_n² per parameter (elementwise square), with the structure of params.

    Identity: Σ_n (δ_n a_nᵀ)² = (Δ ⊙ Δ)ᵀ (A ⊙ A), and Σ_n δ_n² for biases.
    """
    ds, a_prev = batch_deltas(params, X, Y, cost)
    with _exact_products():
        return like_params(params, [layer.sum_sq_grads(d[:, None], a) for layer, d, a in zip(params, ds, a_prev)])


@functools.partial(jax.jit, static_argnames=("cost", "ddof"))
def grad_variance(params: list, X: Array, Y: Array, cost, ddof: int = 0) -> list:
    """The per-parameter variance of the per-example gradients over the batch.

    Identity: Var = (Σ g² − (Σ g)²/B) / (B − ddof), both sums from Δ and A.
    Being a difference of sums, it loses relative accuracy where the variance is
    tiny next to the squared mean (about ε · mean² / var).
    """
    ds, a_prev = batch_deltas(params, X, Y, cost)
    B = X.shape[0]
    if B - ddof <= 0:
        raise ValueError(f"the variance needs more than ddof={ddof} examples, got a batch of {B}.")
    out = []
    for layer, d, a in zip(params, ds, a_prev):
        with _exact_products():
            s1 = layer.batch_grads(d, a)
            s2 = layer.sum_sq_grads(d[:, None], a)
        out.append(jax.tree.map(lambda m1, m2: jnp.maximum(m2 - m1 * m1 / B, 0.0) / (B - ddof), s1, s2))
    return like_params(params, out)


def _exact_products():
    """Float32 matrix products at full float32 precision inside this block.

    The statistics below are differences of two sums, one of them a product
    (Δᵀ A) and the other elementwise; on a GPU, jax's default float32
    product rounds its inputs to TensorFloat-32 (10-bit mantissas), and the
    difference then keeps that error, not the float32 one: the noise scale of
    eight copies of one example came out 3.5e-4 instead of 0 on an H200. On a
    CPU float32 products are exact to float32 anyway, and float64 is
    untouched, so only the GPU pays."""
    return jax.default_matmul_precision("highest")


def _gradient_sums(params: list, ds, a_prev) -> tuple[Union[Array, int], list]:
    """From a batch's δ's and inputs, the two sums the gradient noise scale
    needs: (Σ_n ‖g_n‖², Σ_n g_n), the second with the structure of params.
    Sums add up over chunks of a larger set."""
    with _exact_products():
        return sum(jnp.sum(sq) for sq in _layer_sq_norms(params, ds, a_prev)), [
            layer.batch_grads(d, a) for layer, d, a in zip(params, ds, a_prev)]


def _noise_scale(sq_sum, grad_sum, n):
    """B_simple = tr Σ / ‖G‖² from ``_gradient_sums`` over n examples."""
    g2 = sum(jnp.sum(jnp.square(leaf / n)) for leaf in jax.tree.leaves(grad_sum))  # ‖G‖², G the mean gradient
    # tr Σ = E‖g_n‖² − ‖G‖², at least 0: where the examples' gradients agree
    # (one example, or copies of one) the difference of sums is rounding, of
    # either sign, and a negative noise scale would mean nothing.
    return jnp.maximum(sq_sum / n - g2, 0) / g2


@functools.partial(jax.jit, static_argnames=("cost",))
def gradient_noise_scale(params: list, X: Array, Y: Array, cost) -> Array:
    """The gradient noise scale B_simple = tr Σ / ‖G‖² over the batch (a scalar).

    G is the mean gradient and Σ the covariance of the per-example gradients
    g_n (over the batch as a population): tr Σ = (1/B) Σ_n ‖g_n‖² − ‖G‖².
    McCandlish et al. (2018, "An Empirical Model of Large-Batch Training")
    show it predicts the critical batch size: a mini-batch of B_simple
    examples has about as much noise in its gradient as signal; much smaller
    ones spend steps on the noise, much larger ones buy little per step.

    Identity: ‖g_n‖² = Σ_l ‖δ^l_n‖² (‖a^{l−1}_n‖² + 1), and Σ_n g_n = (Δᵀ A, 1ᵀΔ)
    per layer, so no per-example gradient is formed. Being a difference of
    sums, tr Σ loses relative accuracy where the noise is tiny next to ‖G‖²
    (about ε · E‖g‖² / tr Σ); it is kept from going below 0, so a batch of one
    example gives 0 or a rounding error above it. ‖G‖² = 0 gives inf (or NaN
    when every g_n is 0). ``fbp.train.evaluate(..., noise_scale=True)`` gives
    the same a chunk at a time, on bytes too.
    """
    ds, a_prev = batch_deltas(params, X, Y, cost)
    return _noise_scale(*_gradient_sums(params, ds, a_prev), X.shape[0])


@functools.partial(jax.jit, static_argnames=("cost", "average"))
def delta_norms(params: list, X: Array, Y: Array, cost, average: str = "deltas") -> Array:
    """‖δ^l‖ for each layer l = 1..L, (L,): the "speed of learning" of each layer (NNDL ch. 5).

    ``average="deltas"``: ‖(1/B) Σ_n δ^l_n‖, the norm of ∂C/∂b^l for the mean
    cost (the book's measurement). ``average="norms"``: (1/B) Σ_n ‖δ^l_n‖.
    """
    if average not in ("deltas", "norms"):
        raise ValueError(f"average must be 'deltas' or 'norms', got {average!r}.")
    ds, _ = batch_deltas(params, X, Y, cost)
    if average == "deltas":
        return jnp.stack([jnp.linalg.norm(jnp.mean(d, axis=0)) for d in ds])
    return jnp.stack([jnp.mean(jnp.sqrt(_sq(d))) for d in ds])


def layer_deltas(params: list, X: Array, Y: Array, cost) -> list:
    """The stacked δ's, [Δ^1, …, Δ^L], Δ^l of shape (B, n_l): row n is δ^l of example n."""
    return batch_deltas(params, X, Y, cost)[0]


# --- the Gauss-Newton diagonal --------------------------------------------
def _output_hessian_factor(params, z_L, a_L, y, cost):
    """S with S Sᵀ = the Hessian of C in the output the cost is convex in, pulled
    back to ∂/∂z^L: returns the n_out columns of Jᵀ S as a (n_out, n_out) array,
    row c being the δ^L that column c sends back."""
    out = params[-1].act
    n = z_L.shape[0]
    if (cost.name, out.name) == ("log_likelihood", "softmax"):
        p = out.fn(z_L)  # H_z = (Σy)(diag p − p pᵀ) = S Sᵀ, S = √Σy (diag √p − p √pᵀ)
        sp = jnp.sqrt(p)
        S = jnp.diag(sp) - jnp.outer(p, sp)
        return jnp.sqrt(jnp.sum(y)) * S.T
    if (cost.name, out.name) == ("cross_entropy", "sigmoid"):
        s = out.fn(z_L)  # H_z = diag σ(1 − σ)
        return jnp.diag(jnp.sqrt(s * (1.0 - s)))
    if cost.name in ("quadratic", "mse"):
        scale = 1.0 if cost.name == "quadratic" else (2.0 / n) ** 0.5  # H_a = I or (2/n) I
        eye = scale * jnp.eye(n, dtype=z_L.dtype)
        return jax.vmap(lambda e: out.backward(z_L, a_L, e))(eye)  # rows: J_σᵀ e_c
    raise ValueError(
        f"diag_ggn knows the output Hessian of quadratic, mse, softmax + log_likelihood and "
        f"sigmoid + cross_entropy; got cost {cost.name!r} with output activation {out.name!r}."
    )


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def diag_ggn(params: list, X: Array, Y: Array, cost, reduction: str = "mean") -> list:
    """The exact diagonal of the generalised Gauss-Newton matrix Σ_n J_nᵀ H_n J_n.

    Identity: with H_n = S_n S_nᵀ, push each column of S_n back through BP2 as
    a δ, then diag = Σ_n Σ_c (δ_{n,c} ⊙ δ_{n,c}) (a_n ⊙ a_n)ᵀ (÷ B for ``mean``).
    """
    _check_reduction(reduction)
    cost, X, Y = check_batch(params, X, Y, cost)

    def one(x, y):
        zs, activations = forward_trace(params, x)
        S = _output_hessian_factor(params, zs[-1], activations[-1], y, cost)  # (n_out, n_out)
        ds = jax.vmap(lambda d: propagate(params, zs, activations, d))(S)  # [(n_out, n_l)]: a δ per column
        return ds, activations[:-1]

    ds, a_prev = jax.vmap(one)(X, Y)  # [(B, n_out, n_l)], [(B, n_{l-1})]
    scale = 1.0 / X.shape[0] if reduction == "mean" else 1.0
    return like_params(params, [jax.tree.map(lambda s: s * scale, layer.sum_sq_grads(d, a))
                                for layer, d, a in zip(params, ds, a_prev)])


# --- DP-SGD -----------------------------------------------------------------
def dp_value_and_grad(cost, clip_norm: float):
    """``(params, X, Y[, masks]) -> (loss, clipped mean gradient)`` for
    ``fbp.train.make_train_step(grad=...)``; the loss comes from the same
    forward pass as the δ's. With dropout (``make_train_step(dropout=...)``
    passes the ``masks``), each example's gradient is its thinned network's,
    clipped as any other: the masks do not depend on the data."""
    _check_clip_norm(clip_norm)

    def value_and_grad(params, X, Y, masks=None):
        losses, ds, a_prev = batch_trace(params, X, Y, cost, masks=masks)
        return reduce(losses, "mean"), _clipped_sum(params, ds, a_prev, clip_norm, "mean")

    return value_and_grad


class DPNoiseState(NamedTuple):
    key: Array  # PRNG key, split once per step


def dp_noise(noise_multiplier: float, clip_norm: float, batch_size: int, seed: int = 0) -> optax.GradientTransformation:
    """Add the Gaussian mechanism's noise N(0, (σ C / B)²) to a clipped mean gradient.

    Chain it before the optimizer: ``optax.chain(dp_noise(σ, C, B), optax.sgd(η))``,
    with the gradient from ``dp_value_and_grad(cost, C)`` (Abadi et al. 2016's
    DP-SGD). The PRNG key lives in the state, so the same seed gives the same noise.
    Every mini-batch must hold B examples: the shorter last one of
    ``fit(drop_last=False)`` would get less noise than σC on its sum.
    """
    if not noise_multiplier >= 0:
        raise ValueError(f"noise multiplier must be ≥ 0, got {noise_multiplier!r}.")
    _check_clip_norm(clip_norm)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size > 0):
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}.")
    std = noise_multiplier * clip_norm / batch_size

    def init(params):
        del params
        return DPNoiseState(jax.random.key(seed))

    def update(updates, state, params=None):
        del params
        key, sub = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sub, len(leaves))
        noisy = [g + std * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, noisy), DPNoiseState(key)

    return optax.GradientTransformation(init, update)

"""Per-example gradient quantities from the stacked δ's, at the cost of one gradient.

BP4 says example n's gradient for layer l is the outer product δ^l_n (a^{l−1}_n)ᵀ.
``batch_deltas`` gives Δ^l (B, n_l) and A^{l−1} (B, n_{l−1}); everything here is
built from those pairs, never from B copies of the parameters (except
``per_example_grads``, which is asked for exactly that).

All functions take ``(params, X, Y, cost)`` with X (B, n_in), Y (B, n_out)
(``tracin``, ``self_influence`` and ``grad_dots`` a list of (params, weight)
pairs, a run's checkpoints, in place of params), are jitted, and refer to
the per-example cost C_n (not divided by B).
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


def _fits(grad, params) -> bool:
    """Whether ``grad`` has the structure of ``params`` and each leaf its shape (a gradient of that network)."""
    return len({jax.tree.structure(grad), jax.tree.structure(params)}) == 1 and all(
        jnp.shape(g) == jnp.shape(w) for g, w in zip(jax.tree.leaves(grad), jax.tree.leaves(params)))


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
    raise ValueError(gauss_newton_problem(cost.name, out.name))


def gauss_newton_problem(cost: str, output: str) -> Optional[str]:
    """Why the Gauss-Newton matrix of a cost (by name) and output activation is not known here, or None."""
    if cost in ("quadratic", "mse") or (cost, output) in (("log_likelihood", "softmax"), ("cross_entropy", "sigmoid")):
        return None
    return (f"the Gauss-Newton matrix (diag_ggn, kfac_factors, influence) is known for the costs quadratic and mse "
            f"with any output, log_likelihood with a softmax output and cross_entropy with a sigmoid one; got cost "
            f"{cost!r} with output activation {output!r}.")


def _ggn_deltas(params, cost, x, y):
    """One example's δ's of the Gauss-Newton matrix: each column of the
    output Hessian's factor S pushed back through BP2, [(n_out, n_l)] (row c
    the δ^l that column c gives), and the layers' inputs [(n_{l−1},)]; the
    example's GGN is Σ_c g_c g_cᵀ, g_c the gradient BP3 and BP4 make of
    column c's δ's."""
    zs, activations = forward_trace(params, x)
    S = _output_hessian_factor(params, zs[-1], activations[-1], y, cost)  # (n_out, n_out)
    ds = jax.vmap(lambda d: propagate(params, zs, activations, d))(S)  # [(n_out, n_l)]: a δ per column
    return ds, activations[:-1]


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def diag_ggn(params: list, X: Array, Y: Array, cost, reduction: str = "mean") -> list:
    """The exact diagonal of the generalised Gauss-Newton matrix Σ_n J_nᵀ H_n J_n.

    Identity: with H_n = S_n S_nᵀ, push each column of S_n back through BP2 as
    a δ, then diag = Σ_n Σ_c (δ_{n,c} ⊙ δ_{n,c}) (a_n ⊙ a_n)ᵀ (÷ B for ``mean``).
    """
    _check_reduction(reduction)
    cost, X, Y = check_batch(params, X, Y, cost)
    ds, a_prev = jax.vmap(functools.partial(_ggn_deltas, params, cost))(X, Y)  # [(B, n_out, n_l)], [(B, n_{l-1})]
    scale = 1.0 / X.shape[0] if reduction == "mean" else 1.0
    return like_params(params, [jax.tree.map(lambda s: s * scale, layer.sum_sq_grads(d, a))
                                for layer, d, a in zip(params, ds, a_prev)])


# --- K-FAC and influence ------------------------------------------------------
INFLUENCE_DAMPING = 1e-3  # influence's default ε: each Kronecker factor gets √ε times its mean eigenvalue


@functools.partial(jax.jit, static_argnames=("cost",))
def _kfac_sums(params: list, X: Array, Y: Array, cost) -> list:
    cost, X, Y = check_batch(params, X, Y, cost)
    ds, a_prev = jax.vmap(functools.partial(_ggn_deltas, params, cost))(X, Y)
    with _exact_products():
        return [layer.kfac_sums(d, a) for layer, d, a in zip(params, ds, a_prev)]


def kfac_factors(params: list, X: ArrayLike, Y: ArrayLike, cost, chunk_size: Optional[int] = None) -> list:
    """The Kronecker factors of K-FAC (Martens & Grosse 2015) for each layer,
    [(A^l, G^l)]: for a Dense layer A^l = (1/B) Σ_n ā_n ā_nᵀ, ā_n = [a^{l−1}_n, 1]
    the layer's inputs with the bias's 1 last ((n_{l−1} + 1)², float), and
    G^l = (1/B) Σ_n Σ_c δ^l_{n,c} (δ^l_{n,c})ᵀ (n_l × n_l), δ^l_{n,c} the δ's
    that column c of the output Hessian's factor sends back through BP2 (as
    ``diag_ggn``'s).

    For one example, BP4 makes column c's gradient of [w^l | b^l] the outer
    product δ_c āᵀ, so the layer's block of the generalised Gauss-Newton
    matrix (the Fisher, for softmax with the log-likelihood and sigmoid with
    the cross-entropy), Σ_c vec(δ_c āᵀ) vec(δ_c āᵀ)ᵀ, is exactly A ⊗ G, with
    vec stacking columns (the bias's column last). Over a batch, K-FAC takes
    the mean of those products as the product of the means: the
    approximation is there.

    A Conv layer's are KFC's (Grosse & Martens 2016), over [W | b], W the
    kernels as a (C_out, C_in·k·k) matrix: A = (1/B) Σ_n Σ_t ā_{n,t} ā_{n,t}ᵀ,
    ā_{n,t} the patch of input the kernels meet at position t of the
    convolution with a 1 last, and G = (1/B) Σ_n (1/T) Σ_t Σ_c δ̃_{n,c,t}
    δ̃_{n,c,t}ᵀ, δ̃ the maps' unpooled δ's at t, T the positions: A ⊗ G is the
    GGN block if the δ's at two positions are uncorrelated and every position
    alike (``Conv.kfac_sums``), exactly so for one example when there is one
    position. ``chunk_size`` sums that many examples at a time (each its
    n_out δ's per layer)."""
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    B = X.shape[0]
    size = B if chunk_size is None else check_int("chunk_size", chunk_size, 1, " or None")
    sums = _kfac_sums(params, X[:size], Y[:size], cost)
    for at in range(size, B, size):
        part = _kfac_sums(params, X[at:at + size], Y[at:at + size], cost)
        sums = [(a + pa, g + pg) for (a, g), (pa, pg) in zip(sums, part)]
    return [(a / B, g / B) for a, g in sums]


def _damped(factor: Array, damping) -> Array:
    """factor + γ I, γ = √ε m, m = tr(factor)/dim its mean eigenvalue (1 where the trace is 0): K-FAC's
    factored Tikhonov damping (its §6.3), (A + γ_A I) ⊗ (G + γ_G I) = A ⊗ G + γ_G A ⊗ I + γ_A I ⊗ G
    + ε m_A m_G I."""
    dim = factor.shape[0]
    mean = jnp.trace(factor) / dim
    gamma = jnp.sqrt(jnp.asarray(damping, factor.dtype)) * jnp.where(mean > 0, mean, 1)
    return factor + gamma * jnp.eye(dim, dtype=factor.dtype)


def _check_damping(damping) -> None:
    if isinstance(damping, bool) or not isinstance(damping, (int, float, np.integer, np.floating)) \
            or not (damping > 0 and np.isfinite(damping)):
        raise ValueError(f"damping (ε) must be a number > 0, such as {INFLUENCE_DAMPING}; got {damping!r}.")


def _solves(factors, damping) -> list:
    """Each layer's two damped factors, Cholesky-factored once: [(Ã⁻¹, G̃⁻¹)], each a function applying the
    inverse to the columns of an array."""
    cho, solve = jax.scipy.linalg.cho_factor, jax.scipy.linalg.cho_solve
    return [(functools.partial(solve, cho(_damped(A, damping))), functools.partial(solve, cho(_damped(G, damping))))
            for A, G in factors]


def _preconditioned(params, solves, ds, a_prev) -> list:
    """H̃⁻¹ g for each example of the stacked δ's and inputs, per layer in the layer's own form
    (``kfac_preconditioned``: for a Dense layer the factors of an outer product)."""
    with _exact_products():
        return [layer.kfac_preconditioned(inv_a, inv_g, d, a)
                for layer, (inv_a, inv_g), d, a in zip(params, solves, ds, a_prev)]


def _kfac_products(params, ds, a_prev, pre):
    """(B, B2): g_nᵀ H̃⁻¹ g'_m, summed over the layers, from the δ's and inputs of the B and pre of the B2."""
    return sum(layer.kfac_products(d, a, p) for layer, d, a, p in zip(params, ds, a_prev, pre))


def _kfac_diagonal(params, ds, a_prev, pre):
    """(B,): g_nᵀ H̃⁻¹ g_n of each example, from its δ's and inputs and its own pre."""
    return sum(layer.kfac_diagonal(d, a, p) for layer, d, a, p in zip(params, ds, a_prev, pre))


@functools.partial(jax.jit, static_argnames=("cost", "chunk_size"))
def _influence_diagonal(params, factors, X, Y, cost, damping, chunk_size):
    cost, X, Y = check_batch(params, X, Y, cost)
    solves = _solves(factors, damping)

    def diagonal(ds, a_prev):
        return _kfac_diagonal(params, ds, a_prev, _preconditioned(params, solves, ds, a_prev))

    if chunk_size is None:
        return diagonal(*batch_deltas(params, X, Y, cost))

    def one(xy):
        ds, a_prev = _deltas_and_inputs(params, xy[0], xy[1], cost)
        return diagonal([d[None] for d in ds], [a[None] for a in a_prev])[0]

    return jax.lax.map(one, (X, Y), batch_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("cost", "chunk_size"))
def _influence(params, factors, X, Y, cost, X2, Y2, damping, chunk_size):
    cost, X, Y = check_batch(params, X, Y, cost)
    ds2, a2 = batch_deltas(params, X2, Y2, cost, names=("X2", "Y2"))
    pre = _preconditioned(params, _solves(factors, damping), ds2, a2)  # H̃⁻¹ g'_m for the examples of (X2, Y2)

    if chunk_size is None:
        ds, a_prev = batch_deltas(params, X, Y, cost)
        return _kfac_products(params, ds, a_prev, pre)

    def one(xy):
        ds, a_prev = _deltas_and_inputs(params, xy[0], xy[1], cost)
        return _kfac_products(params, [d[None] for d in ds], [a[None] for a in a_prev], pre)[0]

    return jax.lax.map(one, (X, Y), batch_size=chunk_size)


def _influence_args(name, params, X, Y, cost, factors, damping, chunk_size):
    """The arguments of influence and influence_diagonal checked, and the factors computed where none are given."""
    _check_damping(damping)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, 1, " or None")
    X, Y = jnp.asarray(X), jnp.asarray(Y)
    if factors is None:
        return X, Y, kfac_factors(params, X, Y, cost, chunk_size)
    return X, Y, _checked_factors(name, params, factors)


def _checked_factors(name: str, params, factors) -> list:
    """``factors`` as arrays of the params' dtype, or a ValueError naming ``name`` if they are not
    ``kfac_factors``' of this network."""
    if len(factors) != len(params) or not all(
            isinstance(f, (tuple, list)) and len(f) == 2 and jnp.shape(f[0]) == (layer.kfac_shapes[0],) * 2
            and jnp.shape(f[1]) == (layer.kfac_shapes[1],) * 2 for f, layer in zip(factors, params)):
        raise ValueError(f"{name}'s factors must be kfac_factors' of this network: one (A, G) pair per layer, A "
                         f"(n_in + 1)² and G n_out² for a Dense one, (C_in·k·k + 1)² and C_out² for a Conv one; "
                         f"compute them with fbp.stats.kfac_factors(params, X, Y, cost).")
    dtype = params[0].w.dtype
    return [(jnp.asarray(A, dtype), jnp.asarray(G, dtype)) for A, G in factors]


def influence(params: list, X: ArrayLike, Y: ArrayLike, cost, X2: Optional[ArrayLike] = None,
              Y2: Optional[ArrayLike] = None, *, factors: Optional[list] = None,
              damping: float = INFLUENCE_DAMPING, cosine: bool = False, chunk_size: Optional[int] = None) -> Array:
    """Influence functions (Koh & Liang 2017) with K-FAC's curvature: (B, B2),
    entry (n, m) g_nᵀ H̃⁻¹ g'_m, g_n the gradient of example n of (X, Y) (the
    training set) and g'_m that of example m of (X2, Y2) (by default (X, Y)
    again), H̃ the block-diagonal K-FAC approximation of the mean cost's
    Gauss-Newton matrix, each layer's block (A + γ_A I) ⊗ (G + γ_G I).

    Weighing example n up by a small ε in the mean training cost moves the
    minimum by −ε H⁻¹ g_n, and m's cost by about −ε g'_mᵀ H⁻¹ g_n: a positive
    entry is a training example that helps m, whose removal raises m's cost
    by about the entry / B. Where TracIn's product g_n · g'_m follows one
    step of SGD, this follows the trained network's minimum.

    ``factors``: ``kfac_factors``' of the training set (by default those of
    (X, Y)); pass them when (X, Y) is a part of it, or to reuse them.
    ``damping`` ε > 0 adds √ε times each factor's mean eigenvalue to its
    diagonal (K-FAC's factored Tikhonov damping). The K-FAC block is a
    Kronecker product, so for a Dense layer H̃⁻¹ g'_m = vec(G̃⁻¹ δ'_m (Ã⁻¹
    ā'_m)ᵀ) is again an outer product and its part of entry (n, m) is
    (δ_n · G̃⁻¹ δ'_m)(ā_n · Ã⁻¹ ā'_m): no gradient and no inverse of H̃ is
    formed, only each factor's Cholesky solves. A Conv layer's gradients
    (KFC's factors, ``kfac_factors``) are formed, small as they are, and
    H̃⁻¹ g'_m = G̃⁻¹ g'_m Ã⁻¹. ``chunk_size`` as in ``grad_gram``.

    ``cosine``: each entry over √(g_nᵀ H̃⁻¹ g_n) √(g'_mᵀ H̃⁻¹ g'_m)
    (``influence_diagonal``), the cosine of the two gradients where lengths
    are measured by H̃⁻¹; it ranks each example's training examples as
    RelatIF's ℓ-relative influence does (Barshan et al. 2020), which found
    influence itself led by the same few outliers for every example.
    ``experiments/explanations.py`` measures what both list and
    ``experiments/removals.py`` what the network does without it."""
    X, Y, factors = _influence_args("influence", params, X, Y, cost, factors, damping, chunk_size)
    if (X2 is None) != (Y2 is None):
        raise ValueError("influence takes X2 and Y2 together (the examples to explain), or neither (X's own).")
    X2, Y2 = (X, Y) if X2 is None or Y2 is None else (jnp.asarray(X2), jnp.asarray(Y2))
    products = _influence(params, factors, X, Y, cost, X2, Y2, damping, chunk_size)
    if not cosine:
        return products
    norms = jnp.sqrt(_influence_diagonal(params, factors, X, Y, cost, damping, chunk_size))
    norms2 = jnp.sqrt(_influence_diagonal(params, factors, X2, Y2, cost, damping, chunk_size))
    scale = norms[:, None] * norms2[None, :]
    return jnp.where(scale > 0, products / jnp.where(scale > 0, scale, 1), 0)


def influence_diagonal(params: list, X: ArrayLike, Y: ArrayLike, cost, *, factors: Optional[list] = None,
                       damping: float = INFLUENCE_DAMPING, chunk_size: Optional[int] = None) -> Array:
    """(B,): g_nᵀ H̃⁻¹ g_n for each example, the diagonal of ``influence(params, X, Y, cost)`` without the rest
    of the matrix: Koh & Liang's self-influence (how much an example's own cost rests on its being in the
    training set; they rank training labels for checking by it). Arguments as ``influence``'s."""
    X, Y, factors = _influence_args("influence_diagonal", params, X, Y, cost, factors, damping, chunk_size)
    return _influence_diagonal(params, factors, X, Y, cost, damping, chunk_size)


# --- products with one given gradient (a test set's mean gradient, say) ----
def mean_grad(params: list, X: ArrayLike, Y: ArrayLike, cost, chunk_size: Optional[int] = None) -> list:
    """The gradient of the mean cost (1/B) Σ_n C_n over (X, Y), the params'
    structure: ``batch_backward``'s, summed ``chunk_size`` examples at a
    time (the memory of a chunk's δ's, not of all of them). With a test
    set's, ``grad_dots`` and ``kfac_solve`` rank the training examples by
    what they do to the test set's mean cost."""
    from fbp.backprop import batch_backward

    X, Y = jnp.asarray(X), jnp.asarray(Y)
    B = X.shape[0]
    size = B if chunk_size is None else check_int("chunk_size", chunk_size, 1, " or None")
    total = batch_backward(params, X[:size], Y[:size], cost, reduction="sum")
    for at in range(size, B, size):
        total = jax.tree.map(jnp.add, total, batch_backward(params, X[at:at + size], Y[at:at + size], cost,
                                                            reduction="sum"))
    return jax.tree.map(lambda g: g / B, total)


def grad_dots(checkpoints, X: ArrayLike, Y: ArrayLike, cost, grads, chunk_size: Optional[int] = None) -> Array:
    """(B,): Σ_i η_i g_n(w_i) · v_i for each example n of (X, Y),
    ``checkpoints`` pairs (params w_i, weight η_i) as ``tracin`` takes them
    and ``grads`` one gradient v_i of each, of its structure.

    With v_i the mean gradient of a test set at w_i (``mean_grad``), entry n
    is the mean of row n of ``tracin(checkpoints, X, Y, cost, X_test,
    Y_test)`` (the product is linear in the second gradient), from one pass
    over (X, Y) instead of the whole matrix: what the steps on n did to the
    test set's mean cost, −η times it for one step. With v = H̃⁻¹ of that
    mean gradient (``kfac_solve``), the mean of ``influence``'s row n, what
    weighing n up does to it at the trained minimum. Identity, for a Dense
    layer: (δ_n a_nᵀ) · v_w + δ_n · v_b = δ_n · (v_w a_n + v_b), no gradient
    formed (nor for a Conv layer: v's kernels meet each example's patches).
    ``chunk_size`` as in ``grad_gram``."""
    checkpoints = _checked_checkpoints("grad_dots", checkpoints)
    grads = list(grads)
    if len(grads) != len(checkpoints) or not all(_fits(v, params) for (params, _), v in zip(checkpoints, grads)):
        raise ValueError(f"grad_dots takes one gradient for each of its {len(checkpoints)} checkpoints, each of its "
                         f"network's structure and shapes (as mean_grad gives it); got {len(grads)} that do not "
                         f"all fit.")
    X, Y = jnp.asarray(X), jnp.asarray(Y)  # on the device once, not once per checkpoint
    parts = [lr * _grad_dots(params, X, Y, cost, v, chunk_size) for (params, lr), v in zip(checkpoints, grads)]
    return sum(parts[1:], parts[0])


@functools.partial(jax.jit, static_argnames=("cost", "chunk_size"))
def _grad_dots(params, X, Y, cost, v, chunk_size):
    cost, X, Y = check_batch(params, X, Y, cost)
    if chunk_size is not None:
        check_int("chunk_size", chunk_size, 1, " or None")

    def dots(ds, a_prev):
        return sum(layer.grad_dots(d, a, g) for layer, d, a, g in zip(params, ds, a_prev, v))

    if chunk_size is None:
        return dots(*batch_deltas(params, X, Y, cost))

    def one(xy):
        ds, a_prev = _deltas_and_inputs(params, xy[0], xy[1], cost)
        return dots([d[None] for d in ds], [a[None] for a in a_prev])[0]

    return jax.lax.map(one, (X, Y), batch_size=chunk_size)


def kfac_solve(params: list, grad, factors: list, damping: float = INFLUENCE_DAMPING) -> list:
    """H̃⁻¹ v for a gradient v (``grad``, the params' structure), H̃ the
    damped K-FAC Gauss-Newton matrix of ``factors`` (``kfac_factors``' of
    the training set; ``damping`` as ``influence``'s): each layer's block
    (Ã ⊗ G̃)⁻¹ applied as G̃⁻¹ [v_w | v_b] Ã⁻¹, by Cholesky solves of the two
    factors. ``grad_dots`` of the training set with it gives each training
    example's influence g_nᵀ H̃⁻¹ v on the cost whose gradient v is, and the
    sum of v's leaves times its own, vᵀ H̃⁻¹ v."""
    _check_damping(damping)
    factors = _checked_factors("kfac_solve", params, factors)
    if not _fits(grad, params):
        raise ValueError("kfac_solve's grad must have the params' structure and shapes (as mean_grad gives it).")
    return like_params(params, _kfac_solve(params, grad, factors, damping))


@jax.jit
def _kfac_solve(params, grad, factors, damping):
    with _exact_products():
        return [layer.kfac_solved(inv_a, inv_g, v) for layer, (inv_a, inv_g), v in
                zip(params, _solves(factors, damping), grad)]


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

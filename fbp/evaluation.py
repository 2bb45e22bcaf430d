"""Evaluation: the cost and accuracy of a network on a data set, in one
jitted pass a chunk at a time, and from the same pass what autodiff does not
give (each layer's ‖∂C/∂b^l‖, the gradient noise scale, each example's cost
and gradient norm); ``predict``, and ``vote``, the class an ensemble of
networks votes for (``vote_of`` from their outputs). ``fbp.train``
re-exports them and monitors with ``evaluate`` after each epoch.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from fbp.backprop import _deltas_from, _example_loss_from, check_batch
from fbp.epoch import decode_inputs
from fbp.network import check_inputs, check_int, forward_trace, validate_params
from fbp.stats import _gradient_sums, _layer_sq_norms, _noise_scale

Array = jax.Array
Chunk = Union[int, str, None]  # a chunk_size: examples at a time, "auto" (chunk_for) or None (all at once)

CHUNK_FLOATS = 2 ** 25  # the numbers a chunk of "auto" size holds at once, about (128 MB in float32)


def chunk_for(params) -> int:
    """``chunk_size="auto"``: as many examples as hold about ``CHUNK_FLOATS``
    numbers at once in a pass and back through the network (each layer's
    ``example_floats``), from 100 to 10,000. A fully connected network of a
    few hundred units takes 10,000 at a time; the book's first convolutional
    network (20 maps of 24×24) about 700. Timed over Fashion-MNIST's 10,000
    test images (2 CPU cores, jax 0.10.2), that network's evaluation with
    each example's gradient norm took 0.63 s and a 0.8 GB peak in chunks of
    1,000, 1.6 s and 2.6 GB in chunks of 10,000; [784, 100, 10]'s 50,000
    training images took about 0.16 s in chunks of 1,000, 2,000 or 10,000."""
    floats = sum(layer.example_floats for layer in params)
    return int(min(10_000, max(100, CHUNK_FLOATS // floats)))


def _chunk(params, chunk_size: Chunk) -> Optional[int]:
    """``chunk_size`` checked, and "auto" resolved to ``chunk_for(params)``."""
    if chunk_size is None:
        return None
    if chunk_size == "auto":
        return chunk_for(params)
    return check_int("chunk_size", chunk_size, 1, ", 'auto' or None")


def _chunked(one: Callable, xs, chunk_size: Optional[int]):
    """``one`` (a function of one example) over the leading axis of ``xs``:
    ``chunk_size`` examples at a time under ``lax.map`` (which vmaps each
    chunk and the remainder), or all at once for None (``_chunk`` checks it)."""
    if chunk_size is None:
        return jax.vmap(one)(xs)
    return jax.lax.map(one, xs, batch_size=chunk_size)


def _chunked_sums(one: Callable, xs, chunk_size: Optional[int], sums: Callable):
    """``_chunked`` for a ``one`` that returns ``(kept, more)``: the kept
    outputs stacked over the examples, and ``sums(more stacked over a chunk)``
    added up over the chunks, so that what is summed takes a chunk's memory,
    not the whole set's. A ``lax.scan`` over the full chunks carries the
    sums; the remainder goes through after."""
    def run(chunk):
        kept, more = jax.vmap(one)(chunk)
        return kept, sums(more)

    n = jax.tree.leaves(xs)[0].shape[0]
    if chunk_size is None or n <= chunk_size:
        return run(xs)
    k = n // chunk_size
    head = jax.tree.map(lambda a: a[: k * chunk_size].reshape((k, chunk_size) + a.shape[1:]), xs)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        jax.eval_shape(lambda c: run(c)[1], jax.tree.map(lambda a: a[0], head)))

    def body(total, chunk):
        kept, summed = run(chunk)
        return jax.tree.map(jnp.add, total, summed), kept

    total, kept = jax.lax.scan(body, zero, head)
    kept = jax.tree.map(lambda a: a.reshape((k * chunk_size,) + a.shape[2:]), kept)
    if n % chunk_size:
        kept_r, summed_r = run(jax.tree.map(lambda a: a[k * chunk_size:], xs))
        kept = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), kept, kept_r)
        total = jax.tree.map(jnp.add, total, summed_r)
    return kept, total


@functools.partial(jax.jit, static_argnames=("cost", "chunk_size", "predictions", "outputs", "deltas",
                                             "noise_scale", "per_example"))
def evaluate(params: list, X: Array, Y: Array, cost, chunk_size: Chunk = "auto",
             predictions: bool = False, outputs: bool = False, deltas: bool = False, noise_scale: bool = False,
             per_example: bool = False) -> dict:
    """Mean cost and accuracy (argmax of the output against argmax of Y),
    and ``correct``, the number of examples whose class is right: the
    accuracy is that count over n, a float32 in a float32 program
    (0.71388888359 for 257 of 360), and ``correct / n`` on the host is the
    exact fraction, which ``fit``'s records and ``fbp train`` report. With
    ``predictions=True`` also each example's predicted class, (n,) ints,
    from the same pass (what ``predict`` gives); with ``outputs=True`` each
    example's output a^L, ``outputs`` (n, n_out), as ``vote_of`` takes them.

    With ``deltas=True`` the same pass also runs the δ recursion (BP1, BP2)
    for each example and gives ``delta_norms``, (L,): for each layer l,
    ‖(1/n) Σ_n δ^l_n‖ = ‖∂C/∂b^l‖ of the mean cost over the set, the "speed
    of learning" of layer l (NNDL ch. 5; ``fbp.stats.delta_norms``, here a
    chunk at a time and on bytes too). It costs about one more pass. With
    ``noise_scale=True`` it also gives ``noise_scale``, the gradient noise
    scale tr Σ / ‖G‖² of the set's per-example gradients
    (``fbp.stats.gradient_noise_scale``), which adds one product Δᵀ A per
    layer and chunk. With ``per_example=True`` it gives each example's cost
    C_n, ``costs`` (n,), and the norm of its gradient over all the params,
    ``grad_norms`` (n,): ‖g_n‖² = Σ_l ‖δ^l_n‖² (‖a^{l−1}_n‖² + 1) by BP3 and
    BP4, no outer product formed (``fbp.stats.per_example_grad_norms``),
    and each layer's part of it, ``grad_norms_by_layer`` (n, L): ‖g^l_n‖,
    first layer to last, whose squares sum to ‖g_n‖².
    The largest norms are the examples that pull hardest on the params;
    mislabelled examples gather among the largest costs (more than among the
    largest norms: experiments/mislabelled.py).

    ``chunk_size`` bounds the memory of that pass: the examples go through
    ``chunk_size`` at a time (``lax.map``), so that a wide network on a large
    set needs chunk_size × width floats per layer, not n × width (None: all at
    once; "auto", the default: ``chunk_for(params)``, 10,000 for a fully
    connected network of a few hundred units, fewer for a convolutional one).
    The accuracy is the same; the cost differs only in rounding. On the
    CPU, 50,000 Fashion-MNIST examples through [784, 100, 10] take the same
    time either way (about 60 ms). X may be the bytes of byte images, as in
    ``make_epoch``; each chunk is decoded as it goes through.
    """
    X = jnp.asarray(X)
    cost, _, Y = check_batch(params, decode_inputs(X), Y, cost)  # bytes are checked as the floats they stand for
    chunk_size = _chunk(params, chunk_size)

    def one(xy):  # C_n and the class predicted for example n, from one forward pass
        x, y = xy
        x = decode_inputs(x)
        zs, activations = forward_trace(params, x)
        kept: tuple = (_example_loss_from(params, zs, activations, y, cost), jnp.argmax(activations[-1]))
        if outputs:
            kept += (activations[-1],)
        if not (deltas or noise_scale or per_example):
            return kept
        ds = _deltas_from(params, zs, activations, y, cost)  # [δ^1_n, …, δ^L_n]
        if per_example:  # ‖g_n‖ and its layers' parts ‖g^l_n‖, (L,): kept, not summed (after the outputs)
            sq = _layer_sq_norms(params, ds, activations[:-1])
            kept += (jnp.sqrt(sum(sq)), jnp.sqrt(jnp.stack(sq)))
        if not (deltas or noise_scale):
            return kept
        return kept, (ds, activations[:-1] if noise_scale else None)  # the inputs a^{l−1}_n only where needed

    def sums(more):  # over a chunk: its stacked δ's Δ^l and inputs A^{l−1}
        ds, a_prev = more
        if noise_scale:  # Σ_n ‖g_n‖² and Σ_n g_n = (Δᵀ A, 1ᵀΔ), whose bias part is Σ_n δ_n
            return _gradient_sums(params, ds, a_prev)
        return None, [jnp.sum(d, axis=0) for d in ds]

    n = X.shape[0]
    if deltas or noise_scale:
        (costs, predicted, *norms), (sq_sum, grad_sum) = _chunked_sums(one, (X, Y), chunk_size, sums)
    else:
        costs, predicted, *norms = _chunked(one, (X, Y), chunk_size)  # (n,) each
    right = predicted == jnp.argmax(Y, axis=1)
    out = dict(cost=jnp.mean(costs), accuracy=jnp.mean(right), correct=jnp.sum(right, dtype=jnp.int32))
    if predictions:
        out["predicted"] = predicted
    if outputs:
        out["outputs"], *norms = norms
    if per_example:
        out["costs"], out["grad_norms"], out["grad_norms_by_layer"] = costs, norms[0], norms[1]
    if deltas:
        delta_sums = [g.b for g in grad_sum] if noise_scale else grad_sum
        out["delta_norms"] = jnp.stack([jnp.linalg.norm(d / n) for d in delta_sums])
    if noise_scale:
        out["noise_scale"] = _noise_scale(sq_sum, grad_sum, n)
    return out


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _outputs(params: list, X: Array, chunk_size: Chunk = "auto") -> Array:
    """Each example's output a^L, (n, n_out), ``chunk_size`` examples at a
    time as in ``evaluate`` (X float, or bytes)."""
    validate_params(params)
    X = jnp.asarray(X)
    check_inputs(params, decode_inputs(X), "X", batched=True)
    return _chunked(lambda x: forward_trace(params, decode_inputs(x))[1][-1], X, _chunk(params, chunk_size))


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def predict(params: list, X: Array, chunk_size: Chunk = "auto") -> Array:
    """The class of each example, argmax of the network's output: (n,) ints,
    ``chunk_size`` examples at a time as in ``evaluate`` (X float, or bytes)."""
    return jnp.argmax(_outputs(params, X, chunk_size), axis=1)


VOTINGS = ("hard", "soft")


def vote(networks: Sequence, X: ArrayLike, chunk_size: Chunk = "auto", voting: str = "hard") -> Array:
    """The class an ensemble of networks gives each example: (n,) ints.

    NNDL ch. 6 trains five convolutional networks, each near 99.6% on
    MNIST, and lets them vote, to 99.67%. With ``voting="hard"``, the
    book's, each network votes for its own class (``predict``'s argmax) and
    the most votes win; a tie goes to the class, among those tied, whose
    outputs summed over the networks are largest (with one network: its
    own class). With ``voting="soft"`` the class is the argmax of the
    outputs summed over the networks (their mean, as scikit-learn's
    ``VotingClassifier(voting="soft")`` takes it): a network sure of its
    class outweighs two that hesitate. The networks may differ in shape, as
    long as they take the same inputs and have the same number of outputs
    (classes). X as in ``predict``; ``vote_of`` does the same from outputs
    already computed (``evaluate(..., outputs=True)``).
    """
    if not isinstance(networks, (list, tuple)):
        raise TypeError(f"vote takes a list of networks, got {type(networks).__name__}.")
    if not networks:
        raise ValueError("vote takes a list of networks, and this one is empty; give at least one.")
    if not all(isinstance(params, (list, tuple)) for params in networks):
        raise TypeError("vote takes a list of networks, each a list of layers; this looks like one network: "
                        "vote([params], X), or predict(params, X).")
    _check_voting(voting)
    return vote_of([_outputs(params, X, chunk_size) for params in networks], voting)


def _check_voting(voting) -> None:
    if voting not in VOTINGS:
        raise ValueError(f"voting must be one of {VOTINGS}, got {voting!r}: 'hard' counts each network's class "
                         f"(the book's), 'soft' sums their outputs.")


def vote_of(outputs: Sequence, voting: str = "hard") -> Array:
    """``vote``'s classes from each network's outputs, a list of (n, n_out)
    arrays (``evaluate(..., outputs=True)["outputs"]`` of each network)."""
    _check_voting(voting)
    if not outputs:
        raise ValueError("vote_of takes each network's outputs, and the list is empty; give at least one.")
    outs = [jnp.asarray(o) for o in outputs]
    shapes = [o.shape for o in outs]
    if any(len(shape) != 2 for shape in shapes) or len({shape[0] for shape in shapes}) > 1:
        raise ValueError(f"vote_of takes one (n, n_out) array of outputs per network, the same n for all; got "
                         f"shapes {shapes}.")
    classes = [shape[1] for shape in shapes]
    if len(set(classes)) > 1:
        raise ValueError(f"the networks' outputs differ in number ({classes}); a vote needs one class per output, "
                         f"the same classes for every network.")
    summed = sum(outs)
    if voting == "soft":
        return jnp.argmax(summed, axis=1)
    votes = sum(jax.nn.one_hot(jnp.argmax(o, axis=1), classes[0], dtype=jnp.int32) for o in outs)  # (n, classes)
    tied = votes == jnp.max(votes, axis=1, keepdims=True)
    return jnp.argmax(jnp.where(tied, summed, -jnp.inf), axis=1)

"""The references: ``jax.grad`` of the same loss, central finite differences,
and a per-leaf comparison report.

Relative error against ``jax.grad`` is per parameter leaf and normwise:
``max_i |g_i − r_i| / max_i |r_i|`` with r the reference. It does not blow up
on entries that are zero in both (a dead ReLU), and a leaf whose reference is
all zeros reports the absolute difference. Against finite differences the
denominator is the largest entry of the whole gradient (see compare_grads).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fbp.backprop import batch_backward, loss
from fbp.network import check_int

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def autodiff_grad(params: list, X: Array, Y: Array, cost, reduction: str = "mean", masks=None) -> list:
    """The reference: ``jax.grad`` of ``fbp.loss`` (same cost, same reduction,
    the same dropout ``masks`` if any), jitted."""
    return jax.grad(loss)(params, X, Y, cost, reduction, masks)


def relative_error(g, ref) -> float:
    """max |g − ref| / max |ref| for one array (absolute when ref is all zero)."""
    g, ref = np.asarray(g, np.float64), np.asarray(ref, np.float64)
    if g.shape != ref.shape:
        raise ValueError(f"shapes differ: {g.shape} vs {ref.shape}")
    if g.size == 0:
        return 0.0
    diff = float(np.max(np.abs(g - ref)))
    scale = float(np.max(np.abs(ref)))
    return diff / scale if scale > 0 else diff


def finite_differences(
    params: list,
    X: Array,
    Y: Array,
    cost,
    reduction: str = "mean",
    *,
    n: int = 20,
    key: Optional[Array] = None,
    eps: Optional[float] = None,
    indices=None,
    masks=None,
):
    """Central differences (L(θ + h e_i) − L(θ − h e_i)) / 2h at n random entries.

    Every leaf gets at least one of the n entries (about n / n_leaves each), so
    biases are checked as well as weights; or pass flat ``indices`` yourself.
    Returns ``(indices, fd)``: flat indices into ``ravel_pytree(params)`` and the
    difference quotients. h = eps · max(1, |θ_i|), eps = (machine ε)^{1/3} by
    default (≈ 6e-6 in float64), which balances truncation and rounding error.
    ``masks``: dropout's, held fixed (the cost of one thinned network).
    """
    flat, _ = ravel_pytree(params)
    if eps is not None and not (isinstance(eps, (int, float, np.floating)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite relative step, got {eps!r}.")
    if key is None:
        key = jax.random.key(0)
    if indices is None:
        check_int("n", n, 1, " (entries to check)")
        indices = _stratified_indices(params, n, key)
    else:
        given = np.asarray(indices)
        if given.ndim != 1 or (given.size and not np.issubdtype(given.dtype, np.integer)):
            raise TypeError(f"indices must be a 1-D sequence of ints (flat indices into ravel_pytree(params)), "
                            f"got {given.dtype} of shape {given.shape}.")
        outside = given[(given < 0) | (given >= flat.size)]
        if outside.size:  # JAX would clamp it to the last entry and report a quotient under a wrong index
            raise ValueError(f"indices must lie in [0, {flat.size}): ravel_pytree(params) has {flat.size} "
                             f"entries; got {outside[0]}.")
    idx = np.asarray(indices, dtype=np.int32)
    if eps is None:
        eps = float(jnp.finfo(flat.dtype).eps) ** (1.0 / 3.0)
    one, eps_ = np.ones((), flat.dtype), np.asarray(eps, flat.dtype)
    h = eps_ * np.maximum(one, np.abs(np.asarray(flat)[idx]))  # (n,), on the host: no compile for its few numbers
    return idx, np.asarray(_quotients(params, idx, h, X, Y, masks, cost, reduction))


@functools.partial(jax.jit, static_argnames=("cost", "reduction"))
def _quotients(params: list, idx: Array, h: Array, X: Array, Y: Array, masks, cost, reduction: str) -> Array:
    """finite_differences' quotients, one a flat index of ``idx``; compiled once for a network's shapes,
    cost and reduction (not again at each call, as a function made inside the call would be)."""
    flat, unravel = ravel_pytree(params)

    def one(i, hi):
        e = jnp.zeros_like(flat).at[i].set(hi)
        up = loss(unravel(flat + e), X, Y, cost, reduction, masks)
        down = loss(unravel(flat - e), X, Y, cost, reduction, masks)
        return (up - down) / (2 * hi)

    return jax.vmap(one)(idx, h)


def _stratified_indices(params, n: int, key) -> np.ndarray:
    sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(params)]
    per_leaf = max(1, -(-n // len(sizes)))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    picks, offset = [], 0
    for size in sizes:
        k = min(per_leaf, size)
        picks.append(offset + rng.choice(size, k, replace=False))
        offset += size
    return np.concatenate(picks)


class LeafReport(NamedTuple):
    path: str  # e.g. "[0].w"
    shape: tuple
    max_abs: float  # max |hand − jax.grad|
    max_rel: float  # max |hand − jax.grad| / max |jax.grad|
    fd_count: int  # finite-difference samples that fell in this leaf
    fd_max_rel: float  # max |hand − fd| over those samples / max |hand| over all leaves (nan if none)


class GradReport(NamedTuple):
    leaves: list  # list[LeafReport]
    dtype: str

    @property
    def max_rel(self) -> float:
        return max(r.max_rel for r in self.leaves)

    @property
    def fd_max_rel(self) -> float:
        vals = [r.fd_max_rel for r in self.leaves if r.fd_count]
        return max(vals) if vals else float("nan")

    def table(self) -> str:
        head = f"{'leaf':<10} {'shape':<14} {'max abs diff':>13} {'max rel diff':>13} {'fd n':>5} {'fd rel diff':>12}"
        lines = [head, "-" * len(head)]
        for r in self.leaves:
            fd = f"{r.fd_max_rel:12.2e}" if r.fd_count else f"{'-':>12}"
            lines.append(
                f"{r.path:<10} {str(r.shape):<14} {r.max_abs:13.2e} {r.max_rel:13.2e} {r.fd_count:5d} {fd}"
            )
        lines.append("-" * len(head))
        lines.append(
            f"{'worst':<10} {self.dtype:<14} {'':>13} {self.max_rel:13.2e} {'':>5} {self.fd_max_rel:12.2e}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def compare_grads(
    params: list,
    X: Array,
    Y: Array,
    cost,
    reduction: str = "mean",
    *,
    fd_samples: int = 20,
    key: Optional[Array] = None,
    masks=None,
) -> GradReport:
    """Compare the hand-written gradient with ``jax.grad`` and with finite differences.

    Returns a ``GradReport``: per leaf, the max absolute and relative difference
    from ``jax.grad``, and the relative difference from central finite
    differences at ``fd_samples`` random entries (spread over all leaves).
    With dropout ``masks`` (``fbp.dropout_masks``), all three are the
    gradient of the network they thin.
    """
    if not isinstance(fd_samples, (int, np.integer)) or fd_samples < 0:
        raise ValueError(f"fd_samples must be an integer ≥ 0 (0: no finite differences), got {fd_samples!r}.")
    hand = batch_backward(params, X, Y, cost, reduction, masks)
    ref = autodiff_grad(params, X, Y, cost, reduction, masks)
    paths_hand, _ = jax.tree_util.tree_flatten_with_path(hand)
    leaves_ref = jax.tree.leaves(ref)

    idx, fd = (np.zeros(0, int), np.zeros(0))
    if fd_samples > 0:
        idx, fd = finite_differences(params, X, Y, cost, reduction, n=fd_samples, key=key, masks=masks)
    hand_flat = np.asarray(ravel_pytree(hand)[0], np.float64)
    # Finite differences carry an absolute error of about ε·|L|/h whatever the
    # entry, so they are judged against the size of the whole gradient: a leaf
    # whose gradient is 1e-7 of the others cannot be resolved by them alone.
    fd_scale = float(np.max(np.abs(hand_flat))) if hand_flat.size else 0.0

    rows, offset = [], 0
    for (path, h), r in zip(paths_hand, leaves_ref):
        size = int(np.size(h))
        in_leaf = (idx >= offset) & (idx < offset + size)
        if in_leaf.any():
            d = np.max(np.abs(hand_flat[idx[in_leaf]] - fd[in_leaf]))
            fd_rel = float(d / fd_scale) if fd_scale > 0 else float(d)
        else:
            fd_rel = float("nan")
        rows.append(
            LeafReport(
                path=jax.tree_util.keystr(path),
                shape=tuple(np.shape(h)),
                max_abs=float(np.max(np.abs(np.asarray(h, np.float64) - np.asarray(r, np.float64)))),
                max_rel=relative_error(h, r),
                fd_count=int(in_leaf.sum()),
                fd_max_rel=fd_rel,
            )
        )
        offset += size
    return GradReport(rows, jnp.dtype(jax.tree.leaves(params)[0].dtype).name)

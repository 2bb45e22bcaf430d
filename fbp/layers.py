"""The layer kinds, each a pytree with its forward and its hand-written
backward side by side: ``Dense`` (``z = w a + b``) and ``Conv`` (the book's
``ConvPoolLayer``, ch. 6: a valid convolution and max-pooling).

Notation of *Neural Networks and Deep Learning*, ch. 2: layer l has weights
``w[j, k]`` (to neuron j of layer l from neuron k of layer l−1, so
``w.shape == (n_out, n_in)``), bias ``b``, weighted input
``z^l = w^l a^{l−1} + b^l`` and activation ``a^l = σ(z^l)``; ``a^0 = x``.

The δ recursion in ``fbp.backprop`` only calls a layer's ``forward``,
``backward`` and ``grads``, so a new layer kind is one more class here and
the recursion does not change (``LAYERS`` lists the kinds for the checks of
params in ``fbp.network`` and for ``fbp.save_params``; those checks and the
checkpoint's layer records name each kind). ``fbp.network`` builds networks
of them.
"""

from __future__ import annotations

import dataclasses
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

from fbp.activations import Activation, get_activation

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer: ``z = w a + b``, ``a_out = σ(z)``.

    ``w`` and ``b`` are pytree leaves; ``activation`` (a name, or an
    ``fbp.Activation``) is static metadata, part of the tree structure, so a
    list of ``Dense`` is an ordinary pytree for ``jax.grad``, ``jax.jit`` and
    optax.
    """

    w: Array  # (n_out, n_in)
    b: Array  # (n_out,)
    activation: Union[str, Activation] = dataclasses.field(
        default="sigmoid", metadata=dict(static=True)
    )

    @property
    def n_in(self) -> int:
        return self.w.shape[1]

    @property
    def n_out(self) -> int:
        return self.w.shape[0]

    @property
    def act(self) -> Activation:
        return get_activation(self.activation)

    # forward: z^l = w^l a^{l-1} + b^l  (one example)
    def forward(self, a_prev: Array) -> Array:
        return self.w @ a_prev + self.b  # (n_out,)

    @property
    def macs(self) -> int:
        """Multiply-adds of one example's forward pass."""
        return int(np.prod(self.w.shape))

    @property
    def example_floats(self) -> int:
        """About how many numbers one example's pass through the layer and
        back holds at once: its input, z and δ (``fbp.evaluation`` sizes
        its chunks by it)."""
        return self.n_in + 2 * self.n_out

    # backward, the matrix half of BP2: (w^l)ᵀ δ^l, the error sent to layer l−1
    # (a_prev, the layer's input, is not needed here; a Conv's pooling needs it)
    def backward(self, delta: Array, a_prev=None) -> Array:
        return delta @ self.w  # (n_in,) ; == wᵀ δ

    # BP3 and BP4 for one example: ∂C/∂b = δ, ∂C/∂w = δ (a^{l−1})ᵀ
    def grads(self, delta: Array, a_prev: Array) -> "Dense":
        return Dense(jnp.outer(delta, a_prev), delta, self.activation)

    # BP3 and BP4 summed over a batch: Σ_n δ_n = 1ᵀΔ, Σ_n δ_n a_nᵀ = Δᵀ A (one matmul)
    def batch_grads(self, deltas: Array, a_prev: Array) -> "Dense":
        # deltas: (B, n_out), a_prev: (B, n_in). BP4 summed over the batch: Δᵀ A.
        # Δᵀ is formed as an array of its own (B × n_out numbers, small beside
        # the product) rather than folded into the product's dimension numbers:
        # XLA's CPU backend hands a product contracting both operands' leading
        # axis to Eigen, and a plain one to YNNPACK, which is faster here
        # (side by side on 2 cores: a [784, 30, 10] mini-batch-10 step 24.6 →
        # 22.6 µs, [784, 100, 10] mini-batch 128 360 → 321 µs; at batch 256
        # of [784, 512, 512, 10] about 4% slower, 3.71 → 3.88 ms).
        dT = jax.lax.optimization_barrier(deltas.T)
        return Dense(dT @ a_prev, jnp.sum(deltas, axis=0), self.activation)

    # The per-example quantities of fbp.stats, from a batch's δ's and inputs
    # without forming a per-example gradient (BP4 is an outer product):
    def sq_norms(self, deltas: Array, a_prev: Array) -> Array:
        """‖∂C_n/∂w‖² + ‖∂C_n/∂b‖² = ‖δ_n‖² (‖a_n‖² + 1) for each row n: (B,)
        (a scalar for one example's δ and input)."""
        return jnp.sum(deltas * deltas, axis=-1) * (jnp.sum(a_prev * a_prev, axis=-1) + 1.0)

    def grad_gram(self, deltas: Array, a_prev: Array, deltas2: Array, a_prev2: Array) -> Array:
        """g_n · g'_m for each row n of (``deltas``, ``a_prev``) and m of
        (``deltas2``, ``a_prev2``): (B, B2). Identity: (δ_n a_nᵀ) · (δ'_m a'_mᵀ)
        + δ_n · δ'_m = (δ_n · δ'_m)(a_n · a'_m + 1), two products."""
        return (deltas @ deltas2.T) * (a_prev @ a_prev2.T + 1.0)

    def sum_sq_grads(self, deltas: Array, a_prev: Array) -> "Dense":
        """Σ_n Σ_k (g_{n,k})², elementwise: ``deltas`` (B, K, n_out) holds K
        δ's sent back for each example, all with the example's input ``a_prev``
        (B, n_in). Identity: Σ_n Σ_k (δ_{n,k} a_nᵀ)² = (Σ_k Δ_k ⊙ Δ_k)ᵀ (A ⊙ A)."""
        return self.batch_grads(jnp.sum(deltas * deltas, axis=1), a_prev * a_prev)

    # K-FAC (fbp.stats.kfac_factors and influence). The gradient of [w | b]
    # (the bias a last column) is one outer product, δ āᵀ with ā = [a, 1], so
    # H̃⁻¹ of it, H̃'s block (Ã ⊗ G̃) a Kronecker product, is again one:
    # G̃⁻¹ δ (Ã⁻¹ ā)ᵀ, and no gradient is formed.
    @property
    def kfac_shapes(self) -> tuple:
        """The sizes of the two Kronecker factors: A over [w | b]'s columns, G over its rows."""
        return self.n_in + 1, self.n_out

    def kfac_sums(self, deltas: Array, a_prev: Array) -> tuple:
        """(Σ_n ā_n ā_nᵀ, Σ_n Σ_k δ_{n,k} δ_{n,k}ᵀ): ``deltas`` (B, K, n_out) K δ's
        sent back for each example (``sum_sq_grads``' kind), ``a_prev`` (B, n_in)."""
        ab = _with_ones(a_prev)
        return ab.T @ ab, jnp.einsum("bki,bkj->ij", deltas, deltas)

    def kfac_preconditioned(self, inv_a, inv_g, deltas: Array, a_prev: Array) -> tuple:
        """H̃⁻¹ g_n for each row n, as its factors (G̃⁻¹ δ_n, Ã⁻¹ ā_n), stacked
        in rows: ``inv_a`` and ``inv_g`` apply Ã⁻¹ and G̃⁻¹ to the columns of
        an array."""
        return inv_g(deltas.T).T, inv_a(_with_ones(a_prev).T).T

    def kfac_products(self, deltas: Array, a_prev: Array, pre: tuple) -> Array:
        """(B, B2): g_n · H̃⁻¹ g'_m = (δ_n · G̃⁻¹ δ'_m)(ā_n · Ã⁻¹ ā'_m), ``pre``
        being ``kfac_preconditioned``'s of the B2 examples."""
        pd, pa = pre
        return (deltas @ pd.T) * (_with_ones(a_prev) @ pa.T)

    def kfac_diagonal(self, deltas: Array, a_prev: Array, pre: tuple) -> Array:
        """(B,): g_n · H̃⁻¹ g_n, ``pre`` being ``kfac_preconditioned``'s of the same rows."""
        pd, pa = pre
        return jnp.sum(deltas * pd, -1) * jnp.sum(_with_ones(a_prev) * pa, -1)

    # A given gradient v of the layer (the mean gradient of a test set, say):
    # each example's product with it, δ_n · (v_w a_n + v_b) (BP4's outer
    # product again: no gradient formed), and H̃⁻¹ v = G̃⁻¹ [v_w | v_b] Ã⁻¹.
    def grad_dots(self, deltas: Array, a_prev: Array, v: "Dense") -> Array:
        """(B,): g_n · v for each row n, ``v`` a gradient of this layer (its w and b)."""
        return jnp.sum(deltas * (a_prev @ v.w.T), axis=-1) + deltas @ v.b

    def kfac_solved(self, inv_a, inv_g, v: "Dense") -> "Dense":
        """H̃⁻¹ v of a gradient ``v`` of this layer, as a layer: G̃⁻¹ [v_w | v_b] Ã⁻¹."""
        m = inv_a(inv_g(jnp.concatenate([v.w, v.b[:, None]], axis=1)).T).T
        return dataclasses.replace(v, w=m[:, :-1], b=m[:, -1])

    def __repr__(self) -> str:
        act = self.activation if isinstance(self.activation, str) else self.activation.name
        return f"Dense(w={_desc(self.w)}, b={_desc(self.b)}, activation={act!r})"


def _with_ones(a: Array) -> Array:
    """ā = [a, 1]: a layer's inputs with the bias's constant input last (along the last axis)."""
    return jnp.concatenate([a, jnp.ones(a.shape[:-1] + (1,), a.dtype)], axis=-1)


def _desc(x) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        return repr(x)
    return f"{jnp.dtype(dtype).name}{list(shape)}"


# --- a convolutional layer (NNDL ch. 6) --------------------------------------
KFAC_BLOCK_BYTES = 1 << 24  # Conv.kfac_sums unpools this many bytes of δ's at a time (read when it is traced)

_CONV_DIMS = ("NCHW", "OIHW", "NCHW")  # lax's names for (example, channel, row, column) and (out, in, row, column)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolutional layer with max-pooling: the book's ``ConvPoolLayer`` (ch. 6).

    Feature map j of the output takes every input channel i through its own
    k×k kernel, z_{j,x,y} = b_j + Σ_i Σ_{l,m} w_{j,i,l,m} a_{i,x+l,y+m}
    (a "valid" cross-correlation, stride 1, as the book's ch. 6 writes it),
    then keeps the largest of each ``pool``×``pool`` block (max-pooling, over
    blocks that do not overlap; the bias, one per map, is added after the
    pooling, and adding it before gives the same z), and ``a_out = σ(z)``.
    Inputs and outputs are flat vectors, as for ``Dense``: ``in_shape`` =
    (channels, rows, columns) says how to read the input, and the output is
    the maps one after the other, (C_out, rows', columns') flattened, so
    dropout masks, σ' and a ``Dense`` layer after it need nothing new.

    The hand-written backward is the δ recursion through the convolution:
    the pooling sends each δ to the unit that was the largest in its block
    (the first, row by row, among ties, as ``jax.grad`` of XLA's max-pooling
    does; which unit of a tie gets it matters little: a blank patch of image
    gives the kernels no gradient whichever it goes to). The error sent back
    is the "full" convolution of those δ's with the kernels turned by 180°,
    what (w^l)ᵀ δ^l is for a ``Dense`` layer; ∂C/∂w is the cross-correlation
    of the input with the δ's, and ∂C/∂b_j the sum of map j's δ's.
    """

    w: Array  # (C_out, C_in, k, k)
    b: Array  # (C_out,)
    in_shape: tuple = dataclasses.field(metadata=dict(static=True))  # (C_in, rows, columns)
    pool: int = dataclasses.field(default=2, metadata=dict(static=True))
    activation: Union[str, Activation] = dataclasses.field(
        default="sigmoid", metadata=dict(static=True)
    )

    def __post_init__(self):
        object.__setattr__(self, "in_shape", tuple(int(n) for n in self.in_shape))

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def conv_shape(self) -> tuple:
        """(C_out, rows, columns) of the convolution, before pooling."""
        _, h, w = self.in_shape
        k = self.w.shape[-1]
        return (self.w.shape[0], h - k + 1, w - k + 1)

    @property
    def out_shape(self) -> tuple:
        """(C_out, rows, columns) of the output: the maps after pooling."""
        c, h, w = self.conv_shape
        return (c, h // self.pool, w // self.pool)

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def act(self) -> Activation:
        return get_activation(self.activation)

    @property
    def macs(self) -> int:
        """Multiply-adds of one example's forward pass."""
        _, h, w = self.conv_shape
        return int(np.prod(self.w.shape)) * h * w

    @property
    def example_floats(self) -> int:
        """As ``Dense.example_floats``: the input, the k·k shifted views of it
        (``_patches``), the maps before pooling and their δ's, and the output
        with its δ's. A convolution holds far more per example than its
        output's size: the book's first network (20 maps of 24×24 over
        28×28) about 42,000, a Dense layer of 100 over 784 about 1,000."""
        maps, channels, k, _ = self.w.shape
        _, h, w = self.conv_shape
        return self.n_in + channels * k * k * h * w + 2 * maps * h * w + 2 * self.n_out

    # The forward's convolution over an input of one channel is XLA's own
    # (lax.conv_general_dilated, channel-first); over several it is written as
    # a matrix product ("im2col"): the kernels, (C_out, C_in·k·k), times the
    # k·k shifted views of the input (_patches). The error sent back is
    # always a product, the kernels' transpose times the δ's, whose k·k
    # pieces are added back where they came from. Inside the epoch's
    # lax.scan, XLA's CPU backend ran the convolutions over several channels
    # slower: the book's second network (40 maps over 20) trained at 3,705
    # examples/s at mini-batch 10 and 4,399 at 128 with them written
    # channel-last, the order of its library kernels (1,415 at 10
    # channel-first), and at 5,472 and 5,508 as products (the forms timed side
    # by side over 5,120 images, 2 CPU cores, jax 0.10.2). Over one channel the
    # forward as a product was the slower: the book's first network, 9,757
    # against 10,707 at 10 and 19,642 against 21,579 at 128 (with the kernels'
    # gradient of batch_grads below either way).
    @property
    def _several_channels(self) -> bool:
        return self.in_shape[0] > 1

    def _patches(self, a_prev: Array) -> Array:
        """(n_in,) -> (C_in·k·k, rows·columns): row (i, l, m) holds channel i
        shifted by (l, m), the inputs that kernel weight w_{·,i,l,m} meets at
        each position of the convolution."""
        k = self.w.shape[-1]
        _, h, w = self.conv_shape
        A = a_prev.reshape(self.in_shape)
        shifted = jnp.stack([A[:, l:l + h, m:m + w] for l in range(k) for m in range(k)], axis=1)
        return shifted.reshape(-1, h * w)

    def _conv(self, a_prev: Array) -> Array:  # (n_in,) -> (C_out, rows, columns), before pooling
        if self._several_channels:
            return (self.w.reshape(self.w.shape[0], -1) @ self._patches(a_prev)).reshape(self.conv_shape)
        dtype = jnp.result_type(a_prev, self.w)  # promoted as the product above is (lax's takes one dtype)
        x = a_prev.reshape((1,) + self.in_shape).astype(dtype)
        return jax.lax.conv_general_dilated(x, self.w.astype(dtype), (1, 1), "VALID", dimension_numbers=_CONV_DIMS)[0]

    def _pool(self, c: Array) -> Array:  # (C, rows, columns) -> the largest of each pool×pool block
        p = self.pool
        return jax.lax.reduce_window(c, -jnp.inf, jax.lax.max, (1, p, p), (1, p, p), "VALID")

    # forward: z = pool(w ⋆ a^{l−1}) + b, flattened
    def forward(self, a_prev: Array) -> Array:
        c = self._conv(a_prev)
        if self.pool > 1:
            c = self._pool(c)
        return (c + self.b[:, None, None]).reshape(-1)

    def _unpool(self, delta: Array, a_prev: Array) -> Array:
        """∂C/∂(w ⋆ a) from δ = ∂C/∂z: each block's δ goes to its largest
        unit, and to the first of them, row by row, where several tie (as
        XLA's max-pooling, and so jax.grad, sends it); (C_out, rows, columns).

        Built from the pool² strided views of the block's positions, one
        elementwise pass each: the same routing from a reduction over a
        (C, rows/p, p, columns/p, p) view took XLA's CPU backend 4× as long."""
        if self.pool == 1:
            return delta.reshape(self.conv_shape)
        p = self.pool
        c = self._conv(a_prev)  # the forward's convolution again: XLA computes it once
        m = self._pool(c)  # and the forward's pooling
        d = delta.reshape(m.shape)
        parts, taken = [], None
        for i in range(p):
            for j in range(p):
                hit = c[:, i::p, j::p] == m  # (C, rows/p, columns/p): unit (i, j) of each block is the largest
                hit = hit if taken is None else hit & ~taken
                taken = hit if taken is None else taken | hit
                parts.append(jnp.where(hit, d, jnp.zeros((), d.dtype)))
        n, h, w = m.shape
        blocks = jnp.stack(parts, axis=-1).reshape(n, h, w, p, p)  # (C, block row, block column, i, j)
        return blocks.transpose(0, 1, 3, 2, 4).reshape(self.conv_shape)

    # backward, the matrix half of BP2: the error sent to layer l−1, the δ's
    # (unpooled) convolved in full with the kernels turned by 180°,
    # Σ_j Σ_{l,m} w_{j,i,l,m} δ̃_{j,x−l,y−m}: written as (w^l)ᵀ δ̃, one row for
    # each kernel weight (i, l, m), each row then added in at its shift (l, m)
    def backward(self, delta: Array, a_prev: Array) -> Array:
        maps, channels, k, _ = self.w.shape
        _, h, w = self.conv_shape
        d = self._unpool(delta, a_prev).reshape(maps, h * w)
        pieces = (self.w.reshape(maps, -1).T @ d).reshape(channels, k, k, h, w)
        g = jnp.zeros(self.in_shape, d.dtype)
        for l in range(k):
            for m in range(k):
                g = g.at[:, l:l + h, m:m + w].add(pieces[:, l, m])
        return g.reshape(-1)  # (n_in,)

    # BP3 and BP4 for one example
    def grads(self, delta: Array, a_prev: Array) -> "Conv":
        return self.batch_grads(delta[None], a_prev[None])

    # BP3 and BP4 summed over a batch: ∂C/∂b_j = Σ_n Σ_{x,y} δ_{n,j,x,y} and
    # ∂C/∂w_{j,i,l,m} = Σ_n Σ_{x,y} δ_{n,j,x,y} a_{n,i,x+l,y+m}, with the δ's unpooled
    # The kernels' gradient is the δ's times the shifted inputs (_patches).
    # Over several channels: one product over the examples and positions
    # together. Over one: each example's own product, then their sum; each
    # product's result is small (maps × k·k) and each example's positions
    # lie together in memory, so nothing is copied to bring them side by
    # side. Timed side by side over 5,120 images (2 CPU cores, jax 0.10.2),
    # the book's first network trained at 21,864 examples/s at mini-batch 128
    # that way, 14,477 with the one product; at mini-batch 10, 11,278 against
    # 10,142 with a convolution of the inputs with the δ's, the examples as
    # its channels (used up to 32 examples before, as the one product was
    # slower there). Over the second layer's 20 channels the sum of the
    # examples' products was the slower: 4,014 against 5,158 at mini-batch 10.
    def batch_grads(self, deltas: Array, a_prev: Array) -> "Conv":
        B, maps = deltas.shape[0], self.w.shape[0]
        d = jax.vmap(self._unpool)(deltas, a_prev).reshape(B, maps, -1)  # (B, C_out, rows·columns)
        shifted = jax.vmap(self._patches)(a_prev)  # (B, C_in·k·k, rows·columns)
        if self._several_channels:
            gw = jnp.einsum("bjp,bqp->jq", d, shifted)
        else:
            gw = jnp.einsum("bjp,bqp->bjq", d, shifted).sum(axis=0)
        gb = jnp.sum(deltas.reshape(B, maps, -1), axis=(0, 2))
        return dataclasses.replace(self, w=gw.reshape(self.w.shape), b=gb)

    # Σ_n ‖g_n‖² and Σ_n g_n² need each example's own gradient: a kernel's is
    # a sum over the positions it visits, not one outer product. They are
    # small (the kernels' size), so they are formed, one per example.
    def sq_norms(self, deltas: Array, a_prev: Array) -> Array:
        """‖∂C_n/∂w‖² + ‖∂C_n/∂b‖² for each row n: (B,) (a scalar for one
        example's δ and input)."""
        if deltas.ndim == 2:
            return jax.vmap(self.sq_norms)(deltas, a_prev)
        g = self.grads(deltas, a_prev)
        return jnp.sum(jnp.square(g.w)) + jnp.sum(jnp.square(g.b))

    def grad_gram(self, deltas: Array, a_prev: Array, deltas2: Array, a_prev2: Array) -> Array:
        """g_n · g'_m, (B, B2), as ``Dense.grad_gram``: here from the B2
        examples' gradients, formed (the sum over the positions does not
        factor as a Dense layer's does), and each g_n formed too where B2 is
        over PATCH_PRODUCTS (``_products``)."""
        return self._products(deltas, a_prev, self._grad_matrices(deltas2, a_prev2))

    def sum_sq_grads(self, deltas: Array, a_prev: Array) -> "Conv":
        """Σ_n Σ_k (g_{n,k})², elementwise: ``deltas`` (B, K, n_out) holds K
        δ's sent back for each example, all with the example's input ``a_prev``
        (B, n_in)."""
        g = jax.vmap(jax.vmap(self.grads, in_axes=(0, None)))(deltas, a_prev)
        return dataclasses.replace(self, w=jnp.sum(jnp.square(g.w), axis=(0, 1)),
                                   b=jnp.sum(jnp.square(g.b), axis=(0, 1)))

    # K-FAC for convolutions: KFC (Grosse & Martens 2016). Example n's
    # gradient of [W | b], W the kernels as a (C_out, C_in·k·k) matrix (the
    # rows of _patches) and b a last column, is Σ_t δ̃_t ā_tᵀ over the T
    # positions t of the convolution: δ̃_t the maps' unpooled δ's there
    # (C_out), ā_t the patch of input the kernels meet there with a 1 under
    # it. Not one outer product, so its GGN block is not one Kronecker
    # product. KFC takes the δ's at two positions as uncorrelated and every
    # position alike, and the block becomes Ω ⊗ Γ with Ω = Σ_t ā_t ā_tᵀ (a sum
    # over the positions) and Γ = (1/T) Σ_t Σ_c δ̃_{c,t} δ̃_{c,t}ᵀ (a mean), each
    # averaged over the examples. With one position (a kernel as large as its
    # input, no pooling) it is exactly a Dense layer's. H̃⁻¹ of the gradient
    # is G̃⁻¹ g Ã⁻¹: each example's gradient is formed (it is small, the
    # kernels' size), as grad_gram does.
    @property
    def kfac_shapes(self) -> tuple:
        """The sizes of the two Kronecker factors: A over [W | b]'s columns (C_in·k·k + 1), G over its rows
        (C_out)."""
        maps, channels, k, _ = self.w.shape
        return channels * k * k + 1, maps

    def kfac_sums(self, deltas: Array, a_prev: Array) -> tuple:
        """(Σ_n Σ_t ā_{n,t} ā_{n,t}ᵀ, Σ_n (1/T) Σ_t Σ_k δ̃_{n,k,t} δ̃_{n,k,t}ᵀ), as
        ``Dense.kfac_sums``: ``deltas`` (B, K, n_out), ``a_prev`` (B, n_in)."""
        maps = self.w.shape[0]
        patches = jax.vmap(lambda a: _with_ones(self._patches(a).T))(a_prev)  # (B, T, C_in·k·k + 1)
        T = self.conv_shape[1] * self.conv_shape[2]
        # G from the unpooled δ's of a few examples at a time (a scan over blocks of KFAC_BLOCK_BYTES of
        # them, the last padded with δ's of 0), a row per δ̃ at a position, the maps last: XLA's CPU backend ran
        # this product, over the leading axis, in 0.27 s where the einsum over the positions last took 0.73
        # (the G of 711 Fashion-MNIST images through the book's first conv net, 2 cores). The blocks, which
        # stay in the cache, took that chunk's factors from 0.48–0.53 s to 0.34–0.39 s (from 0.57 to 0.45 s
        # in another run; on the shared machine at its slowest, 2.5 times as long, the two took the same time),
        # and summing G in blocks takes float32's error in it, against float64, from 1.2e-5 to 5.4e-7 (5,000
        # images). δ's masked by the pooling's choice in place of _unpool's, or Σ_k δ δᵀ per pooled position
        # masked, were no faster.
        B, K = deltas.shape[:2]
        size = max(1, min(B, KFAC_BLOCK_BYTES // (K * maps * T * deltas.dtype.itemsize)))
        blocks = -(-B // size)
        d = jnp.pad(deltas, ((0, blocks * size - B), (0, 0), (0, 0))).reshape(blocks, size, *deltas.shape[1:])
        a = jnp.pad(a_prev, ((0, blocks * size - B), (0, 0))).reshape(blocks, size, -1)

        def add_block(g, block):
            unpooled = jax.vmap(jax.vmap(self._unpool, in_axes=(0, None)))(*block)  # (size, K, C_out, rows, cols)
            rows = jnp.moveaxis(unpooled, 2, -1).reshape(-1, maps)  # (size·K·T, C_out)
            return g + rows.T @ rows, None

        g, _ = jax.lax.scan(add_block, jnp.zeros((maps, maps), deltas.dtype), (d, a))
        return jnp.einsum("btp,btq->pq", patches, patches), g / T

    def _grad_matrices(self, deltas: Array, a_prev: Array) -> Array:
        """(B, C_out, C_in·k·k + 1): each example's gradient of [W | b], formed (grad_gram's and K-FAC's)."""
        g = jax.vmap(self.grads)(deltas, a_prev)
        B, maps = deltas.shape[0], self.w.shape[0]
        return jnp.concatenate([g.w.reshape(B, maps, -1), g.b[:, :, None]], axis=2)

    def kfac_preconditioned(self, inv_a, inv_g, deltas: Array, a_prev: Array) -> Array:
        """H̃⁻¹ g_n = G̃⁻¹ g_n Ã⁻¹ for each row n, (B, C_out, C_in·k·k + 1); ``inv_a``
        and ``inv_g`` apply Ã⁻¹ and G̃⁻¹ to the columns of an array."""
        g = self._grad_matrices(deltas, a_prev)
        B, maps, P = g.shape
        right = inv_a(g.reshape(B * maps, P).T).T.reshape(B, maps, P)  # g Ã⁻¹ (Ã symmetric)
        return inv_g(right.transpose(1, 0, 2).reshape(maps, B * P)).reshape(maps, B, P).transpose(1, 0, 2)

    def kfac_products(self, deltas: Array, a_prev: Array, pre: Array) -> Array:
        """(B, B2): g_n · H̃⁻¹ g'_m, ``pre`` being ``kfac_preconditioned``'s of the B2 examples."""
        return self._products(deltas, a_prev, pre)

    def _products(self, deltas: Array, a_prev: Array, m: Array) -> Array:
        """(B, B2): g_n · m_j for each row n and each of the B2 matrices ``m`` (B2, C_out, C_in·k·k + 1) of
        [W | b]'s shape. For a few m (up to PATCH_PRODUCTS) by ``_patch_products``, as ``grad_dots`` goes, no g_n
        formed; for more, each g_n formed once and multiplied by all of them."""
        if m.shape[0] > PATCH_PRODUCTS:
            g = self._grad_matrices(deltas, a_prev)
            return g.reshape(len(g), -1) @ m.reshape(len(m), -1).T
        return self._patch_products(deltas, a_prev, m)

    def _patch_products(self, deltas: Array, a_prev: Array, m: Array) -> Array:
        """(B, B2): g_n · m_j with no g_n formed: Σ_t δ̃_{n,t} · (m_W ā_{n,t}) + (Σ_t δ_{n,t}) · m_b, each m's
        kernels applied to every example's patches (``m`` as ``_products`` takes it)."""
        B, maps = deltas.shape[0], self.w.shape[0]
        d = jax.vmap(self._unpool)(deltas, a_prev).reshape(B, maps, -1)  # (B, C_out, rows·columns)
        mw = jnp.einsum("mjq,bqt->bmjt", m[:, :, :-1], jax.vmap(self._patches)(a_prev))  # (B, B2, C_out, T)
        return jnp.einsum("bjt,bmjt->bm", d, mw) + jnp.sum(deltas.reshape(B, maps, -1), axis=2) @ m[:, :, -1].T

    def kfac_diagonal(self, deltas: Array, a_prev: Array, pre: Array) -> Array:
        """(B,): g_n · H̃⁻¹ g_n, ``pre`` being ``kfac_preconditioned``'s of the same rows."""
        return jnp.sum(self._grad_matrices(deltas, a_prev) * pre, axis=(1, 2))

    def _matrix(self, v: "Conv") -> Array:
        """A gradient of this layer as the (C_out, C_in·k·k + 1) matrix [W | b]."""
        return jnp.concatenate([v.w.reshape(self.w.shape[0], -1), v.b[:, None]], axis=1)

    def grad_dots(self, deltas: Array, a_prev: Array, v: "Conv") -> Array:
        """(B,): g_n · v for each row n, ``v`` a gradient of this layer (its w and b): Σ_t δ̃_{n,t} · (v_W ā_{n,t})
        + (Σ_t δ_{n,t}) · v_b, v's kernels applied to every example's patches in one product, no g_n formed
        (on the book's first conv net and 20,000 Fashion-MNIST images 3.6 s against 6.0 s forming each g_n)."""
        return self._patch_products(deltas, a_prev, self._matrix(v)[None])[:, 0]

    def kfac_solved(self, inv_a, inv_g, v: "Conv") -> "Conv":
        """H̃⁻¹ v of a gradient ``v`` of this layer, as a layer: G̃⁻¹ [W | b] Ã⁻¹."""
        m = inv_a(inv_g(self._matrix(v)).T).T
        return dataclasses.replace(v, w=m[:, :-1].reshape(self.w.shape), b=m[:, -1])

    def __repr__(self) -> str:
        act = self.activation if isinstance(self.activation, str) else self.activation.name
        return (f"Conv(w={_desc(self.w)}, b={_desc(self.b)}, in_shape={self.in_shape}, pool={self.pool}, "
                f"activation={act!r})")


PATCH_PRODUCTS = 2  # Conv._products: up to this many matrices applied to the patches, more to formed gradients
LAYERS = (Dense, Conv)  # the layer kinds
Params = list  # list of Dense and Conv layers

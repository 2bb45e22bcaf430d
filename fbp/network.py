"""The network: ``Dense`` layers as pytrees, ``init_mlp``, a pure ``forward``.

Notation of *Neural Networks and Deep Learning*, ch. 2: layer l has weights
``w[j, k]`` (to neuron j of layer l from neuron k of layer l−1, so
``w.shape == (n_out, n_in)``), bias ``b``, weighted input
``z^l = w^l a^{l−1} + b^l`` and activation ``a^l = σ(z^l)``; ``a^0 = x``.

A layer kind keeps its forward and its hand-written backward side by side
(``Dense.forward`` / ``Dense.backward`` / ``Dense.grads``); the δ recursion in
``fbp.backprop`` only calls those three, so a new layer kind is one more class.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from fbp.activations import ACTIVATIONS, Activation, _unknown, get_activation

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

    def sum_sq_grads(self, deltas: Array, a_prev: Array) -> "Dense":
        """Σ_n Σ_k (g_{n,k})², elementwise: ``deltas`` (B, K, n_out) holds K
        δ's sent back for each example, all with the example's input ``a_prev``
        (B, n_in). Identity: Σ_n Σ_k (δ_{n,k} a_nᵀ)² = (Σ_k Δ_k ⊙ Δ_k)ᵀ (A ⊙ A)."""
        return self.batch_grads(jnp.sum(deltas * deltas, axis=1), a_prev * a_prev)

    def __repr__(self) -> str:
        act = self.activation if isinstance(self.activation, str) else self.activation.name
        return f"Dense(w={_desc(self.w)}, b={_desc(self.b)}, activation={act!r})"


def _desc(x) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or dtype is None:
        return repr(x)
    return f"{jnp.dtype(dtype).name}{list(shape)}"


# --- a convolutional layer (NNDL ch. 6) --------------------------------------
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
        x = a_prev.reshape((1,) + self.in_shape)
        return jax.lax.conv_general_dilated(x, self.w, (1, 1), "VALID", dimension_numbers=_CONV_DIMS)[0]

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

    def sum_sq_grads(self, deltas: Array, a_prev: Array) -> "Conv":
        """Σ_n Σ_k (g_{n,k})², elementwise: ``deltas`` (B, K, n_out) holds K
        δ's sent back for each example, all with the example's input ``a_prev``
        (B, n_in)."""
        g = jax.vmap(jax.vmap(self.grads, in_axes=(0, None)))(deltas, a_prev)
        return dataclasses.replace(self, w=jnp.sum(jnp.square(g.w), axis=(0, 1)),
                                   b=jnp.sum(jnp.square(g.b), axis=(0, 1)))

    def __repr__(self) -> str:
        act = self.activation if isinstance(self.activation, str) else self.activation.name
        return (f"Conv(w={_desc(self.w)}, b={_desc(self.b)}, in_shape={self.in_shape}, pool={self.pool}, "
                f"activation={act!r})")


LAYERS = (Dense, Conv)  # the layer kinds
Params = list  # list of Dense and Conv layers


# --- initialisation -------------------------------------------------------
# Each scheme: (w_std(n_in, n_out), b_std). The book's network.py uses `large`;
# its network2.py uses `normalized` (default_weight_initializer).
INITS = {
    "large": (lambda n_in, n_out: 1.0, 1.0),
    "normalized": (lambda n_in, n_out: n_in ** -0.5, 1.0),
    "glorot": (lambda n_in, n_out: (2.0 / (n_in + n_out)) ** 0.5, 0.0),
    "he": (lambda n_in, n_out: (2.0 / n_in) ** 0.5, 0.0),
}


def init_mlp(
    key: Array,
    sizes: Sequence[int],
    *,
    activation: Union[str, Activation] = "sigmoid",
    output_activation: Union[str, Activation, None] = None,
    init: str = "normalized",
    dtype=jnp.float32,
) -> list:
    """Random parameters for a multilayer perceptron.

    Args:
      key: a ``jax.random.key``.
      sizes: layer widths, input first: ``[784, 30, 10]`` is 784 inputs, one
        hidden layer of 30 and 10 outputs.
      activation: σ of the hidden layers (a name or an ``fbp.Activation``).
      output_activation: σ of the output layer; ``None`` uses ``activation``.
      init: ``large`` (w, b ~ N(0, 1), the book's ch. 1), ``normalized``
        (w ~ N(0, 1/n_in), b ~ N(0, 1), the book's ch. 3), ``glorot``
        (w ~ N(0, 2/(n_in+n_out)), b = 0) or ``he`` (w ~ N(0, 2/n_in), b = 0).
      dtype: floating dtype of w and b.

    Returns:
      ``list[Dense]``, one per layer.

    Example:
      >>> import jax, fbp
      >>> params = fbp.init_mlp(jax.random.key(0), [4, 3, 2], activation="tanh",
      ...                       output_activation="softmax")
      >>> [p.w.shape for p in params]
      [(3, 4), (2, 3)]
    """
    check_key(key)
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(
            f"sizes must list at least an input and an output width, got {sizes!r}; "
            f"e.g. sizes=[784, 30, 10]."
        )
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(
                f"every entry of sizes must be a positive int, got {s!r} in {sizes!r}."
            )
    _check_init(init, dtype)
    hidden = get_activation(activation)
    out = hidden if output_activation is None else get_activation(output_activation)
    acts = [hidden] * (len(sizes) - 2) + [out]
    names = tuple(_by_name(a) for a in acts)
    params = _init_mlp(key, tuple(sizes), names, init, jnp.dtype(dtype))
    validate_params(params)
    return params


def _by_name(act: Activation) -> Union[str, Activation]:
    """A built-in activation by its name (readable, and hashable for jit); another as it is."""
    return act.name if ACTIVATIONS.get(act.name) is act else act


def _positive_ints(numbers) -> bool:
    return all(not isinstance(n, bool) and isinstance(n, (int, np.integer)) and n >= 1 for n in numbers)


def _check_init(init: str, dtype) -> None:
    """An init scheme by name and a floating dtype, as init_mlp and init_convnet take them."""
    if init not in INITS:
        raise _unknown("init", init, INITS)
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype!r}; use jnp.float32.")


def _init_mlp(key, sizes, activations, init, dtype):
    # One N(0, 1) draw for the whole network, cut into layers on the host: a
    # single compiled random call per network size instead of two per layer.
    w_std, b_std = INITS[init]
    shapes = [((n_out, n_in), (n_out,)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    total = sum(o * i + o for (o, i), _ in shapes)
    flat = np.asarray(jax.random.normal(key, (total,), dtype))
    params, offset = [], 0
    for l, ((n_out, n_in), _) in enumerate(shapes):
        w = flat[offset:offset + n_out * n_in].reshape(n_out, n_in) * w_std(n_in, n_out)
        offset += n_out * n_in
        b = flat[offset:offset + n_out] * b_std
        offset += n_out
        params.append(Dense(jnp.asarray(w, dtype), jnp.asarray(b, dtype), activations[l]))
    return params


def init_convnet(
    key: Array,
    in_shape: Sequence[int],
    conv: Sequence[Sequence[int]],
    sizes: Sequence[int],
    *,
    activation: Union[str, Activation] = "sigmoid",
    output_activation: Union[str, Activation, None] = None,
    init: str = "normalized",
    dtype=jnp.float32,
) -> list:
    """Random parameters for a convolutional network, the book's ch. 6 kind:
    ``Conv`` layers (each with its max-pooling), then ``Dense`` ones.

    Args:
      key: a ``jax.random.key``.
      in_shape: the input images, (rows, columns) or (channels, rows,
        columns): (28, 28) for MNIST. An example is still a flat vector of
        their product (784), as the data sets give it.
      conv: one ``(maps, k, pool)`` per convolutional layer: ``maps`` feature
        maps, k×k kernels, pool×pool max-pooling (1 for none). The book's
        first ch. 6 net is ``[(20, 5, 2)]``.
      sizes: the widths of the ``Dense`` layers after them, output last:
        ``[100, 10]``.
      activation, output_activation, init, dtype: as for ``init_mlp``; the
        convolutional layers use ``activation``, and ``init`` reads a kernel's
        fan-in as channels·k² and its fan-out as maps·k²/pool² (the book's
        network3).

    Example:
      >>> import jax, fbp
      >>> params = fbp.init_convnet(jax.random.key(0), (28, 28), [(20, 5, 2)], [100, 10])
      >>> [p.n_out for p in params]
      [2880, 100, 10]
    """
    check_key(key)
    shape = tuple(in_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3 or not _positive_ints(shape):
        raise ValueError(f"in_shape must be (rows, columns) or (channels, rows, columns) of positive ints, "
                         f"got {tuple(in_shape)!r}.")
    layers = [tuple(c) if isinstance(c, (list, tuple)) else c for c in conv]
    for c in layers:
        if not isinstance(c, tuple) or len(c) != 3 or not _positive_ints(c):
            raise ValueError(f"each conv layer must be (maps, k, pool) of positive ints, got {c!r}; "
                             f"e.g. conv=[(20, 5, 2)].")
    if not layers:
        raise ValueError("conv lists no convolutional layer; for a network of Dense layers only use fbp.init_mlp.")
    _check_init(init, dtype)
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes must list at least the output width of the Dense layers, e.g. sizes=[100, 10].")
    w_std, b_std = INITS[init]
    hidden = _by_name(get_activation(activation))
    k_conv, k_dense = jax.random.split(key)
    params = []
    for l, (maps, k, pool) in enumerate(layers):
        kw, kb = jax.random.split(jax.random.fold_in(k_conv, l))
        channels = shape[0]
        w = jax.random.normal(kw, (maps, channels, k, k), dtype) * w_std(channels * k * k, maps * k * k / pool**2)
        b = jax.random.normal(kb, (maps,), dtype) * b_std
        layer = Conv(w.astype(dtype), b.astype(dtype), shape, pool, hidden)
        validate_params([layer, Dense(jnp.zeros((1, layer.n_out), dtype), jnp.zeros(1, dtype))])
        params.append(layer)
        shape = layer.out_shape
    dense = init_mlp(k_dense, [params[-1].n_out] + sizes, activation=activation,
                     output_activation=output_activation, init=init, dtype=dtype)
    params += dense
    validate_params(params)
    return params


# --- forward --------------------------------------------------------------
def forward_trace(params: list, x: Array, masks=None):
    """Forward pass for one example, keeping what backward needs.

    Returns ``(zs, activations)``: ``zs[l]`` is z^{l+1}, shape (n_{l+1},);
    ``activations[l]`` is a^l with ``activations[0] = x``, so that
    ``activations[l]`` is the input of ``params[l]``.

    With dropout ``masks`` (one example's row of each of ``dropout_masks``),
    hidden layer l hands on m^l ⊙ a^l: ``activations`` keep a^l = σ(z^l)
    itself (σ' is read from it), and ``layer_inputs`` gives what each layer
    took in.
    """
    a = x
    zs, activations = [], [x]
    for l, layer in enumerate(params):
        z = layer.forward(a if masks is None or l == 0 else a * masks[l - 1])
        a = layer.act.fn(z)
        zs.append(z)
        activations.append(a)
    return zs, activations


def layer_inputs(activations: list, masks=None) -> list:
    """What each layer took in, from a forward trace: a^0 = x, then m^l ⊙ a^l
    (a^l without masks), one per layer; the a^{l−1} of BP4."""
    if masks is None:
        return activations[:-1]
    return activations[:1] + [a * m for a, m in zip(activations[1:-1], masks)]


# --- dropout (NNDL ch. 3) ---------------------------------------------------
def dropout_masks(key: Array, params: list, batch: int, rate: float) -> list:
    """Dropout masks for a batch: one (batch, n_l) array per hidden layer, each
    entry 0 (the unit is dropped, with probability ``rate``) or 1/(1 − rate).

    The book's ch. 3 drops hidden units while training and halves the outgoing
    weights afterwards; scaling the kept units by 1/(1 − rate) while training
    ("inverted" dropout) gives the same expected input to every layer, so the
    trained network is used as it is (``forward``, ``evaluate``). Pass the
    masks to ``batch_backward``, ``value_and_batch_backward`` or ``loss``:
    the hand-written BP2 multiplies each error sent back by the same mask,
    δ^l = ((w^{l+1})ᵀ δ^{l+1}) ⊙ m^l ⊙ σ'(z^l), and BP4 takes m^l ⊙ a^l.
    A one-layer network has no hidden layer and gets ``[]``.

    Example:
      >>> import jax, fbp
      >>> params = fbp.init_mlp(jax.random.key(0), [4, 3, 2])
      >>> [m.shape for m in fbp.dropout_masks(jax.random.key(1), params, 5, 0.5)]
      [(5, 3)]
    """
    check_key(key)
    batch = check_int("batch", batch, 1)
    rate = check_rate("rate", rate)
    widths = [layer.n_out for layer in params[:-1]]
    # One draw of 32 random bits per hidden unit of every layer: a unit is kept
    # where they reach rate·2³², so P(kept) = 1 − rate to within 2⁻³². (Drawing
    # each layer's with jax.random.bernoulli, from keys split for the layers,
    # cost a mini-batch-10 step of [784, 30, 10] 4 µs more.)
    bits = jax.random.bits(key, (batch, sum(widths)), jnp.uint32)
    threshold = np.uint32(min(round(rate * 2.0**32), 2**32 - 1))
    masks, start = [], 0
    for width, layer in zip(widths, params[:-1]):
        kept = bits[:, start:start + width] >= threshold
        masks.append(jnp.where(kept, jnp.asarray(1.0 / (1.0 - rate), layer.w.dtype), jnp.zeros((), layer.w.dtype)))
        start += width
    return masks


def check_masks(params: list, masks, batch: int) -> None:
    """``None``, or one (batch, n_l) floating array per hidden layer, as
    ``dropout_masks`` gives: else a ValueError naming what is wrong."""
    if masks is None:
        return
    fix = "make them with fbp.dropout_masks(key, params, batch, rate)"
    hidden = params[:-1]
    if not isinstance(masks, (list, tuple)) or len(masks) != len(hidden):
        got = f"{len(masks)} arrays" if isinstance(masks, (list, tuple)) else type(masks).__name__
        raise ValueError(f"masks must be a list of one array per hidden layer ({len(hidden)}), got {got}; {fix}.")
    for l, (m, layer) in enumerate(zip(masks, hidden)):
        shape, dtype = getattr(m, "shape", None), getattr(m, "dtype", None)
        if shape is None or dtype is None:
            got = type(m).__name__
        elif tuple(shape) != (batch, layer.n_out) or not jnp.issubdtype(dtype, jnp.floating):
            got = f"{jnp.dtype(dtype).name}{list(shape)}"
        else:
            continue
        raise ValueError(f"masks[{l}] must be a floating ({batch}, {layer.n_out}) array (hidden layer {l + 1}, "
                         f"a batch of {batch}), got {got}; {fix}.")


def forward(params: list, x: Array) -> Array:
    """The network's output a^L for x of shape (n_in,) or (batch, n_in). Pure."""
    validate_params(params)
    x = check_inputs(params, x, "x")
    if x.ndim == 2:
        return jax.vmap(lambda xi: forward_trace(params, xi)[1][-1])(x)
    return forward_trace(params, x)[1][-1]


# --- validation: runs on shapes and dtypes only, so at trace time ---------
def validate_params(params) -> None:
    """Check that params is a non-empty, consistent list of layers
    (``Dense``, ``Conv``) whose widths chain."""
    if isinstance(params, LAYERS):
        raise TypeError(f"params must be a list of layers, got a single {type(params).__name__}; wrap it: [layer].")
    if not isinstance(params, (list, tuple)):
        raise TypeError(
            f"params must be a list of fbp.Dense (as returned by fbp.init_mlp) or fbp.Conv layers, "
            f"got {type(params).__name__}."
        )
    if len(params) == 0:
        raise ValueError("params is empty: a network needs at least one Dense layer (see fbp.init_mlp).")
    for l, layer in enumerate(params):
        if not isinstance(layer, LAYERS):
            raise TypeError(f"params[{l}] is a {type(layer).__name__}, not an fbp.Dense or fbp.Conv.")
        if isinstance(layer, Conv):
            _validate_conv(l, layer, last=l == len(params) - 1)
        else:
            _validate_dense(l, layer)
        act = layer.act  # raises on an unknown name
        if not act.elementwise and l != len(params) - 1:
            raise ValueError(
                f"params[{l}] uses {act.name!r}, which is only supported on the output layer "
                f"(layer {len(params) - 1}); use an elementwise activation for hidden layers."
            )
        if act.name == "softmax" and layer.n_out == 1:
            raise ValueError(
                f"params[{l}] is a softmax over a single unit, which is always 1 and learns nothing; "
                f"use output_activation='sigmoid' for one output, or give the layer 2 or more units."
            )
        if l > 0 and params[l - 1].n_out != layer.n_in:
            raise ValueError(
                f"params[{l}] expects {layer.n_in} inputs ({_shape_note(layer, 'in')}) but params[{l - 1}] "
                f"gives {params[l - 1].n_out} outputs ({_shape_note(params[l - 1], 'out')}); the layer widths "
                f"must chain."
            )


def _shape_note(layer, side: str) -> str:
    if isinstance(layer, Dense):
        return f"w.shape={tuple(layer.w.shape)}"
    shape = layer.in_shape if side == "in" else layer.out_shape
    return f"{'in_shape' if side == 'in' else 'maps of'} {'×'.join(map(str, shape))}"


def _validate_dense(l: int, layer: "Dense") -> None:
    w_shape = getattr(layer.w, "shape", None)
    b_shape = getattr(layer.b, "shape", None)
    if w_shape is None or len(w_shape) != 2:
        raise ValueError(f"params[{l}].w must be a 2-D (n_out, n_in) array, got shape {w_shape!r}.")
    if b_shape is None or tuple(b_shape) != (w_shape[0],):
        raise ValueError(
            f"params[{l}].b has shape {b_shape!r} but params[{l}].w has shape {tuple(w_shape)!r}; "
            f"b must have shape ({w_shape[0]},)."
        )


def _validate_conv(l: int, layer: "Conv", last: bool) -> None:
    w_shape = getattr(layer.w, "shape", None)
    b_shape = getattr(layer.b, "shape", None)
    if len(layer.in_shape) != 3 or min(layer.in_shape) < 1:
        raise ValueError(f"params[{l}].in_shape must be (channels, rows, columns), got {layer.in_shape!r}.")
    if w_shape is None or len(w_shape) != 4 or w_shape[2] != w_shape[3]:
        raise ValueError(f"params[{l}].w must be a 4-D (maps, channels, k, k) array of square kernels, "
                         f"got shape {w_shape!r}.")
    if w_shape[1] != layer.in_shape[0]:
        raise ValueError(f"params[{l}].w takes {w_shape[1]} channels (w.shape={tuple(w_shape)}) but its "
                         f"in_shape {layer.in_shape} has {layer.in_shape[0]}; they must agree.")
    if b_shape is None or tuple(b_shape) != (w_shape[0],):
        raise ValueError(f"params[{l}].b has shape {b_shape!r}; a Conv has one bias per map: ({w_shape[0]},).")
    _, h, w = layer.in_shape
    k, p = w_shape[2], layer.pool
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"params[{l}].pool must be a positive int (1 for no pooling), got {p!r}.")
    if k > min(h, w):
        raise ValueError(f"params[{l}] has {k}×{k} kernels, larger than its {h}×{w} input; use k ≤ {min(h, w)}.")
    if (h - k + 1) % p or (w - k + 1) % p:
        raise ValueError(f"params[{l}]: its {h - k + 1}×{w - k + 1} maps ({h}×{w} input, {k}×{k} kernels) do not "
                         f"split into {p}×{p} blocks for the pooling; choose k or pool so that {p} divides both.")
    if last:
        raise ValueError(f"params[{l}] is a Conv as the output layer; end the network with a Dense layer "
                         f"(the book's ch. 6 nets end with a fully connected softmax layer).")


def check_int(name: str, value, minimum: int, note: str = "") -> int:
    """``value`` as a Python int, or a ValueError that names ``name``: a bool,
    a float (even 3.0) or an int below ``minimum`` is refused, where Python
    and JAX would fail later with a TypeError of their own or go on with it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int ≥ {minimum}"
        raise ValueError(f"{name} must be {kind}{note}, got {value!r}.")
    return int(value)


def check_rate(name: str, value) -> float:
    """A dropout rate, the probability of dropping a unit, as a float in
    [0, 1); else a ValueError that names ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 <= value < 1:
        raise ValueError(f"{name} is the probability of dropping a hidden unit and must be in [0, 1) "
                         f"(0 for none; the book's ch. 3 drops half, 0.5), got {value!r}.")
    return float(value)


def check_key(key) -> None:
    """TypeError unless ``key`` is one PRNG key: a typed ``jax.random.key`` or
    a raw uint32[2] ``jax.random.PRNGKey``."""
    if isinstance(key, (jax.Array, np.ndarray)):
        typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        if (typed and key.shape == ()) or (not typed and key.dtype == np.uint32 and key.shape == (2,)):
            return
        got = f"an array of shape {key.shape} and dtype {key.dtype}"
    else:
        got = f"{type(key).__name__} {key!r}"
    raise TypeError(f"key must be one PRNG key, such as jax.random.key(0); got {got}.")


def check_inputs(params: list, x, what: str = "X", batched: Union[bool, None] = None) -> Array:
    """Check x against the first layer: floating dtype, last axis n_in.

    ``batched=None`` accepts (n_in,) or (batch, n_in); True asks for (batch, n_in);
    False for (n_in,).
    """
    x = jnp.asarray(x)
    n_in = params[0].n_in
    if not jnp.issubdtype(x.dtype, jnp.floating):
        scale = " / 255 for the bytes of images" if x.dtype == jnp.uint8 else ""
        raise TypeError(
            f"{what} has dtype {x.dtype.name}, but backpropagation needs floating inputs; "
            f"convert it first, e.g. {what if what.isidentifier() else 'with '}.astype(jnp.float32){scale}."
        )
    allowed = {None: (1, 2), True: (2,), False: (1,)}[batched]
    want = {None: f"({n_in},) or (batch, {n_in})", True: f"(batch, {n_in})", False: f"({n_in},)"}[batched]
    if x.ndim not in allowed or x.shape[-1] != n_in:
        raise ValueError(
            f"{what} has shape {tuple(x.shape)} but the first layer takes {n_in} inputs; "
            f"pass {what} of shape {want}."
        )
    return x


def check_targets(params: list, y, what: str = "Y", batch: Union[int, None] = None, inputs: str = "X") -> Array:
    """Check targets against the output layer: floating, width n_out (one-hot labels);
    with ``batch``, also one row per row of the inputs (called ``inputs`` in the message)."""
    y = jnp.asarray(y)
    n_out = params[-1].n_out
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(
            f"{what} has dtype {y.dtype.name}; targets must be floating vectors of width {n_out}. "
            f"For integer class labels pass jax.nn.one_hot(labels, {n_out})."
        )
    want_ndim = 1 if batch is None else 2
    if y.ndim != want_ndim or y.shape[-1] != n_out:
        want = f"({n_out},)" if batch is None else f"({batch}, {n_out})"
        raise ValueError(
            f"{what} has shape {tuple(y.shape)} but the output layer has {n_out} units; "
            f"pass {what} of shape {want} (one-hot labels: jax.nn.one_hot(labels, {n_out}))."
        )
    if batch is not None and y.shape[0] != batch:
        raise ValueError(
            f"{what} has {y.shape[0]} rows but {inputs} has {batch}; inputs and targets must pair up."
        )
    return y

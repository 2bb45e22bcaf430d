"""The network: a list of layers (``fbp.layers``' ``Dense`` and ``Conv``),
made by ``init_mlp`` and ``init_convnet``, run by a pure ``forward``; the
book's dropout masks; and the checks that fbp's functions run on what they
are given before any arithmetic (params, inputs, targets and masks, on
their shapes and dtypes, so at trace time; counts, rates and keys).
``Dense``, ``Conv`` and ``LAYERS`` are re-exported here. The notation
(the book's ch. 2: ``w^l`` of shape (n_out, n_in), ``z^l``, ``a^l``) is
``fbp.layers``'.
"""

from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from fbp.activations import ACTIVATIONS, Activation, _unknown, get_activation
from fbp.layers import LAYERS, Conv, Dense, Params  # noqa: F401  (re-exported: fbp.network.Dense, …)

Array = jax.Array


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
      ``list[Dense]``, one per layer. Under ``jax.jit`` the same numbers but
      perhaps their last bit (XLA may fuse the draw with its scaling);
      ``jax.eval_shape`` gives the layers' shapes without a draw.

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
    # Inside jax.jit or jax.eval_shape the draw is a tracer, cut by jax.numpy.
    w_std, b_std = INITS[init]
    shapes = [((n_out, n_in), (n_out,)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    total = sum(o * i + o for (o, i), _ in shapes)
    drawn = jax.random.normal(key, (total,), dtype)
    flat = drawn if isinstance(drawn, jax.core.Tracer) else np.asarray(drawn)
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


def like_params(params, layers: list):
    """``layers``, one for each layer of ``params`` (its gradient, say), as
    ``jax.grad`` returns a gradient: in the sequence params came in (a list
    for a list, and for a tuple the same tuple type) and each leaf in the
    dtype of the params' own (a float32 layer's gradient is float32 even
    where float64 inputs made its products float64). The two trees then
    match leaf for leaf, so that optax can pair them."""
    return in_params_sequence(params, [jax.tree.map(lambda g, w: g.astype(w.dtype), g, layer)
                                       for g, layer in zip(layers, params)])


def in_params_sequence(params, layers: list):
    """``layers``, one for each layer of ``params``, in the sequence params
    came in: a list for a list, and for a tuple the same tuple type."""
    if type(params) is list:
        return layers
    return jax.tree.unflatten(jax.tree.structure(params, is_leaf=lambda x: isinstance(x, LAYERS)), layers)


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
    dtype = jnp.result_type(params[0].w)
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(x.dtype).bits < jnp.finfo(dtype).bits:
        # float32 inputs of a float64 network, as fbp.data gives them: widened (exactly), so that the products of
        # two inputs (grad_gram's a_n · a_m, K-FAC's Σ ā āᵀ, ‖a‖²) keep the network's precision, as every product
        # with a weight does by jax's promotion anyway
        x = x.astype(dtype)
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

"""``fbp trace``: backpropagation for one example of a small network, every
number printed in the book's notation (ch. 2): the forward pass z^l, a^l,
the cost, then BP1 (δ^L), BP2 (each δ^l from δ^{l+1}), BP3 (∂C/∂b^l) and BP4
(∂C/∂w^l), each with the factors that make it, with --lr the step of
gradient descent they give, and at the end the difference from
``jax.grad`` of the same cost. For following the algorithm
by hand, or setting it as an exercise (``fbp.cli`` parses the flags and
calls ``cmd_trace``)."""

from __future__ import annotations

import functools
from typing import Optional

from fbp.cli import _cost_pairing, _error, _one_unit_softmax_problem, saved_network, with_json

MAX_UNITS = 16  # each layer's width at most: every weight is printed
_SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")

COST_TEXT = {"quadratic": "½‖a{L} − y‖²", "mse": "(1/n) Σ_j (a{L}_j − y_j)²",
             "cross_entropy": "−Σ_j [y_j ln a{L}_j + (1 − y_j) ln(1 − a{L}_j)]",
             "log_likelihood": "−Σ_j y_j ln a{L}_j"}
GRAD_TEXT = {"quadratic": "a{L} − y", "mse": "2(a{L} − y)/n", "cross_entropy": "(a{L} − y) / (a{L} ⊙ (1 − a{L}))",
             "log_likelihood": "−y / a{L}"}


def sup(l: int) -> str:
    """A layer's number as a superscript: 2 → ², 12 → ¹²."""
    return str(l).translate(_SUP)


def cmd_trace(args) -> int:
    """fbp trace: the printed trace; with --json the same numbers as one JSON object."""
    return with_json("trace", args.json, _trace, args)


def _numbers(flag: str, text: str) -> list:
    """The comma-separated finite numbers of --input or --target; ValueError naming the flag otherwise."""
    import math

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text}: expected numbers separated by commas") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{flag} {text}: expected finite numbers, not NaN or infinity")
    return values


def _trace(args, record: dict) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)  # every number in float64
    import jax.numpy as jnp
    import numpy as np

    import fbp
    from fbp.costs import closed_form
    from fbp.network import INITS

    fail = functools.partial(_error, "trace")
    # NumPy's legacy generator, whose streams never change, rather than jax.random, whose numbers for a seed
    # changed with jax 0.5 (threefry_partitionable): a trace set as an exercise reads the same on any jax
    rs = np.random.RandomState(args.seed)
    digits = args.round
    if args.params is not None:
        loaded = saved_network(args, jnp.float64)
        if isinstance(loaded, str):
            return fail(loaded)
        params, cost = loaded
        if not all(isinstance(layer, fbp.Dense) for layer in params):
            return fail(f"--params {args.params} starts with convolutional layers; fbp trace shows fully "
                        f"connected ones (fbp check compares a convolutional network's gradient)")
        digits = None  # a saved network's numbers as they are
    else:
        args.activation, args.init = args.activation or "sigmoid", args.init or "normalized"
        sizes = args.sizes or [2, 3, 2]
        problem = _one_unit_softmax_problem(sizes, args.output_activation or args.activation) or (
            _too_wide(sizes) if max(sizes) > MAX_UNITS else None)
        if problem:
            return fail(problem)
        w_std, b_std = INITS[args.init]  # fbp.init_mlp's scales, drawn here from rs
        params = []
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            w, b = rs.standard_normal((n_out, n_in)) * w_std(n_in, n_out), rs.standard_normal(n_out) * b_std
            if digits is not None:  # numbers a hand calculation can start from
                w, b = _rounded(w, digits), _rounded(b, digits)
            last = l == len(sizes) - 2
            params.append(fbp.Dense(jnp.asarray(w), jnp.asarray(b),
                                    (args.output_activation or args.activation) if last else args.activation))
        cost = args.cost or "quadratic"
    sizes = [params[0].n_in] + [layer.n_out for layer in params]
    if max(sizes) > MAX_UNITS:
        return fail(_too_wide(sizes))
    mismatch = _cost_pairing(params, cost)
    if mismatch:
        return fail(mismatch)
    n_in, n_out = sizes[0], sizes[-1]
    try:
        given_x = _numbers("--input", args.input) if args.input is not None else None
        target = _numbers("--target", args.target) if args.target is not None else None
    except ValueError as e:
        return fail(str(e))
    if given_x is None:
        x_np = rs.uniform(size=n_in)
        x_np = _rounded(x_np, digits) if digits is not None else x_np
    elif len(given_x) != n_in:
        return fail(f"--input {args.input}: {len(given_x)} numbers, and the network takes {n_in}")
    else:
        x_np = np.asarray(given_x)
    label: Optional[int] = None
    if target is None:
        if n_out == 1:
            y_np = rs.uniform(size=1)
            y_np = _rounded(y_np, digits) if digits is not None else y_np
        else:
            label = int(rs.randint(n_out))
    elif len(target) == 1 and n_out > 1:
        if target[0] != int(target[0]) or not 0 <= target[0] < n_out:
            return fail(f"--target {args.target}: one number is a class, 0 to {n_out - 1}; or give the {n_out} "
                        f"outputs wanted, separated by commas")
        label = int(target[0])
    elif len(target) != n_out:
        return fail(f"--target {args.target}: {len(target)} numbers, and the network gives {n_out}")
    else:
        y_np = np.asarray(target)
    if label is not None:
        y_np = np.eye(n_out)[label]
    x, y = jnp.asarray(x_np, jnp.float64), jnp.asarray(y_np, jnp.float64)
    batch_masks = None
    if args.dropout:  # fbp.dropout_masks' 0 or 1/(1 − P) for each hidden unit, drawn from rs
        batch_masks = [jnp.asarray((rs.uniform(size=(1, layer.n_out)) >= args.dropout) / (1 - args.dropout))
                       for layer in params[:-1]]
    masks = None if batch_masks is None else [m[0] for m in batch_masks]  # this example's: m^l of each hidden layer
    try:
        zs, acts = fbp.forward_trace(params, x, masks)
        stacked, _ = fbp.batch_deltas(params, x[None], y[None], cost, masks=batch_masks)  # BP1, BP2 (⊙ m^l)
        ds = [d[0] for d in stacked]
        grads = fbp.batch_backward(params, x[None], y[None], cost, masks=batch_masks)  # BP3, BP4 of one example
        c = fbp.example_loss(params, x, y, fbp.get_cost(cost), masks)
        auto = fbp.autodiff_grad(params, x[None], y[None], cost, masks=batch_masks)
    except (ValueError, TypeError) as e:  # an input or target the library refuses (its message says why)
        return fail(str(e))

    fmt = functools.partial(_fmt, digits=args.digits)
    L = len(sizes)
    out_act, hidden_act = params[-1].act, params[0].act
    print(f"fbp trace: sizes={','.join(map(str, sizes))} activation={hidden_act.name} output={out_act.name} "
          f"cost={cost}" + (f" dropout={args.dropout:g}" if args.dropout else "")
          + (f" network={args.params}" if args.params is not None else
                            f" init={args.init} seed={args.seed}"
                            + (f" (weights, biases and input rounded to {digits} decimals)" if digits is not None
                               else "")))
    print(f"numbered as in the book's ch. 2: layer 1 is the input, a¹ = x; w^l and b^l lead into layer l "
          f"(shown to {args.digits} decimals; computed in float64)")
    print()
    print(f"input   a¹ = x = {fmt(x)}")
    print(f"target  y = {fmt(y)}" + (f"  (class {label})" if label is not None else ""))
    print()
    print("forward: z^l = w^l a^(l−1) + b^l, a^l = σ(z^l)" + (
        f"; dropout hands on m^l ⊙ a^l, m^l a unit's 0 (dropped, with probability {args.dropout:g}) or "
        f"1/(1 − {args.dropout:g})" if masks else ""))
    for i, layer in enumerate(params):
        l = i + 2
        kind = "output" if l == L else "hidden"
        print(f"  layer {l} ({kind}, {layer.act.name})")
        print(_matrix(f"    w{sup(l)} = ", layer.w, args.digits))
        print(f"    b{sup(l)} = {fmt(layer.b)}")
        handed = f"(m{sup(l - 1)} ⊙ a{sup(l - 1)})" if masks and i > 0 else f"a{sup(l - 1)}"
        print(f"    z{sup(l)} = w{sup(l)} {handed} + b{sup(l)} = {fmt(zs[i])}")
        print(f"    a{sup(l)} = {layer.act.name}(z{sup(l)}) = {fmt(acts[i + 1])}")
        if masks and l < L:
            print(f"    m{sup(l)} = {fmt(masks[i])}, handed on m{sup(l)} ⊙ a{sup(l)} = {fmt(masks[i] * acts[i + 1])}")
    aL = f"a{sup(L)}"
    print(f"cost    C = {COST_TEXT.get(cost, cost).format(L=sup(L))} = {float(c):.{args.digits}f}")
    print()
    print("backward:")
    cost_fn = fbp.get_cost(cost)
    closed = closed_form(cost_fn, out_act)
    if closed is not None:
        why = ("σ'(z) cancels the cross-entropy's 1/(a(1 − a))" if out_act.name == "sigmoid" else
               "the softmax's Jacobian turns the log-likelihood's −y/a into it")
        print(f"  BP1  δ{sup(L)} = {aL} − y  ({why})")
    elif out_act.prime is None:  # softmax with another cost: its Jacobian, written by hand
        print(f"  BP1  δ{sup(L)} = J(z{sup(L)})ᵀ ∇_a C, the softmax's Jacobian J = diag({aL}) − {aL} ({aL})ᵀ")
        print(f"       ∇_a C = {GRAD_TEXT[cost].format(L=sup(L))} = {fmt(cost_fn.grad(acts[-1], y))}")
    else:
        print(f"  BP1  δ{sup(L)} = ∇_a C ⊙ σ'(z{sup(L)})")
        print(f"       ∇_a C = {GRAD_TEXT.get(cost, '∇_a C').format(L=sup(L))} = {fmt(cost_fn.grad(acts[-1], y))}")
        print(f"       σ'(z{sup(L)}) = {fmt(out_act.prime(zs[-1]))}")
    print(f"       δ{sup(L)} = {fmt(ds[-1])}")
    for i in range(len(params) - 2, -1, -1):
        l = i + 2
        mask = f" ⊙ m{sup(l)}" if masks else ""
        print(f"  BP2  δ{sup(l)} = ((w{sup(l + 1)})ᵀ δ{sup(l + 1)}){mask} ⊙ σ'(z{sup(l)})")
        print(f"       (w{sup(l + 1)})ᵀ δ{sup(l + 1)} = {fmt(params[i + 1].w.T @ ds[i + 1])}")
        if masks:
            print(f"       m{sup(l)} = {fmt(masks[i])}")
        print(f"       σ'(z{sup(l)}) = {fmt(params[i].act.prime(zs[i]))}")
        print(f"       δ{sup(l)} = {fmt(ds[i])}")
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        print(f"  BP3  ∂C/∂b{sup(l)} = δ{sup(l)} = {fmt(grads[i].b)}")
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        handed = f"(m{sup(l - 1)} ⊙ a{sup(l - 1)})" if masks and i > 0 else f"(a{sup(l - 1)})"
        print(_matrix(f"  BP4  ∂C/∂w{sup(l)} = δ{sup(l)} {handed}ᵀ = ", grads[i].w, args.digits))
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(auto)))
    worst = max(fbp.relative_error(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(auto)))
    if args.lr is not None:  # the book's update, one example: w^l → w^l − η ∂C/∂w^l, b^l → b^l − η ∂C/∂b^l
        stepped = [fbp.Dense(layer.w - args.lr * g.w, layer.b - args.lr * g.b, layer.activation)
                   for layer, g in zip(params, grads)]
        after = float(fbp.example_loss(stepped, x, y, cost_fn, masks))  # the same units dropped
        print()
        print(f"a step of gradient descent, η = {args.lr:g}: w^l → w^l − η ∂C/∂w^l, b^l → b^l − η ∂C/∂b^l")
        for i, layer in enumerate(stepped):
            l = i + 2
            print(_matrix(f"  w{sup(l)} = ", layer.w, args.digits))
            print(f"  b{sup(l)} = {fmt(layer.b)}")
        print(f"cost    C = {after:.{args.digits}f} after the step ({float(c):.{args.digits}f} before)")
        record["step"] = dict(lr=args.lr, cost=after, layers=[dict(layer=i + 2, w=_list(layer.w), b=_list(layer.b))
                                                              for i, layer in enumerate(stepped)])
    print()
    print(f"jax.grad of the same C: the largest difference from BP3 and BP4 {diff:.1e} (relative {worst:.1e})")
    record.update(sizes=sizes, activation=hidden_act.name, output_activation=out_act.name, cost_function=cost,
                  x=_list(x), y=_list(y), label=label, cost=float(c), layers=[
                      dict(layer=i + 2, w=_list(layer.w), b=_list(layer.b), z=_list(zs[i]), a=_list(acts[i + 1]),
                           delta=_list(ds[i]), grad_w=_list(grads[i].w), grad_b=_list(grads[i].b))
                      for i, layer in enumerate(params)],
                  autodiff_max_difference=diff, autodiff_max_relative=worst,
                  dropout=args.dropout or None, masks=None if masks is None else [_list(m) for m in masks])
    return 0


def _too_wide(sizes) -> str:
    return (f"the network {','.join(map(str, sizes))} has a layer of {max(sizes)} units; fbp trace prints every "
            f"weight, so give {MAX_UNITS} units a layer or fewer (fbp check compares a larger network's gradient "
            f"with jax.grad)")


def _rounded(a, digits: int):
    """``a`` with each number the float nearest to it written to ``digits`` decimals (0.29, not 0.29000000000000004)."""
    import numpy as np

    a = np.asarray(a, np.float64)
    return np.asarray([float(f"{v:.{digits}f}") for v in a.reshape(-1)], np.float64).reshape(a.shape)


def _list(a) -> list:
    import numpy as np

    return np.asarray(a, np.float64).tolist()


def _fmt(a, digits: int) -> str:
    """A vector as [0.1234, -0.5678], each to ``digits`` decimals."""
    import numpy as np

    return "[" + ", ".join(_number(v, digits) for v in np.asarray(a, np.float64).reshape(-1)) + "]"


def _number(v: float, digits: int) -> str:
    """``v`` to ``digits`` decimals, without the sign of a number that rounds to 0 (−0.00001 is 0.0000)."""
    return f"{round(float(v), digits) + 0.0:.{digits}f}"


def _matrix(lead: str, a, digits: int) -> str:
    """A matrix after ``lead``, a row a line, the columns aligned under one another."""
    import numpy as np

    a = np.asarray(a, np.float64)
    cells = [[_number(v, digits) for v in row] for row in a]
    width = max(len(cell) for row in cells for cell in row)
    rows = ["[" + ", ".join(cell.rjust(width) for cell in row) + "]" for row in cells]
    pad = " " * (len(lead) + 1)
    return lead + "[" + (",\n" + pad).join(rows) + "]"

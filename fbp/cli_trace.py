"""``fbp trace``: backpropagation for one example of a small network, every
number printed in the book's notation (ch. 2): the forward pass z^l, a^l,
the cost, then BP1 (δ^L), BP2 (each δ^l from δ^{l+1}), BP3 (∂C/∂b^l) and BP4
(∂C/∂w^l), each with the factors that make it, with --lr the step of
gradient descent they give, and at the end the difference from
``jax.grad`` of the same cost and from finite differences (ch. 2's way). With --conv, convolutional layers first (the
book's ch. 6): each map, the δ's sent back through the pooling (δ̃^l), BP2
through a convolution, BP3 and BP4 as sums over the positions. With
--batch, a mini-batch: a row an example (each example in turn, for conv
layers), BP3 and BP4 of the mean cost, and each example's gradient norm. For
following the algorithm by hand, or setting it as an exercise (``fbp.cli``
parses the flags and calls ``cmd_trace``)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

from fbp.cli import (_cost_pairing, _error, _one_unit_softmax_problem, make_network, network_text,
                     saved_network, with_json)

CONV_UNITS = ("a convolutional layer's units are maps, numbered from 0: z^l_{j,x,y} is row x, column y of map j;\n"
              "w^l_{j,i,p,q} is row p, column q of the kernel that map j sweeps over map (channel) i of layer l−1")
MAX_UNITS = 16  # each layer's width at most: every weight is printed
MAX_SIDE = 12  # a convolutional layer's input at most 12×12: every unit of its maps is printed
MAX_KERNELS = 16  # and its maps × channels at most
MAX_BATCH = 16  # --batch's examples at most: every example is a row
MAX_STEPS = 100_000  # --steps at most
STEPS_SHOWN = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)  # --steps' costs
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
    from fbp.backprop import _example_loss_from

    fail = functools.partial(_error, "trace")
    # NumPy's legacy generator, whose streams never change, rather than jax.random, whose numbers for a seed
    # changed with jax 0.5 (threefry_partitionable): a trace set as an exercise reads the same on any jax
    rs = np.random.RandomState(args.seed)
    digits = args.round
    if args.train_size is not None and not args.l2 and not args.l1:
        return fail(f"--train-size {args.train_size} is the n of --l2's and --l1's λ/n; give --l2 or --l1 too")
    if args.steps is not None and args.lr is None:
        return fail(f"--steps {args.steps} takes --lr's step of gradient descent again and again; give --lr too")
    if args.momentum is not None and args.steps is None:
        return fail(f"--momentum {args.momentum:g} carries a velocity from step to step; give --lr and --steps N too "
                    f"(its first step, from v = 0, is plain gradient descent's)")
    if args.steps is not None and args.steps > MAX_STEPS:
        return fail(f"--steps {args.steps}: {MAX_STEPS:,} at most (each step runs BP1-BP4 again)")
    loaded = None
    if args.params is not None:  # first: what it was trained on is --data's default
        loaded = saved_network(args, jnp.float64, with_meta=True)
        if isinstance(loaded, str):
            return fail(loaded)
    dataset = None
    if any(value is not None for value in (args.data, args.data_dir, args.row, args.split, args.validation)):
        dataset = _dataset(args, loaded[2] if loaded else {})
        if isinstance(dataset, str):
            return fail(dataset)
    made = _network(args, rs, digits, dataset, loaded)
    if isinstance(made, str):
        return fail(made)
    params, cost, digits = made
    sizes = [params[0].n_in] + [layer.n_out for layer in params]
    problem = _too_big(params)
    if problem:
        return fail(problem)
    mismatch = _cost_pairing(params, cost)
    if mismatch:
        return fail(mismatch)
    batch = _batch_size(args)
    if isinstance(batch, str):
        return fail(batch)
    taken = None
    if dataset is not None:
        split, dataset_flag = args.split or "test", loaded[2].get("data_flag") if loaded else None
        part = getattr(dataset, split)
        if (dataset.n_in, dataset.n_classes) != (sizes[0], sizes[-1]):
            fix = ("give the --data it was trained on" if args.params is not None else
                   f"give --sizes {dataset.n_in},…,{dataset.n_classes}")
            return fail(f"--data {args.data or dataset_flag}: its examples are {dataset.n_in} numbers in "
                        f"{dataset.n_classes} classes, and the network takes {sizes[0]} and gives {sizes[-1]}; {fix}")
        if batch > len(part):
            return fail(f"--batch {batch}: the {split} split of {dataset.name} has {len(part)} examples")
        rows = args.row or sorted(np.random.default_rng(args.seed).choice(len(part), batch, replace=False).tolist())
        taken = _Taken(np.asarray(part.X[rows], np.float64), [int(c) for c in np.argmax(part.Y[rows], axis=1)],
                       rows, dataset.name, split)
        record["data"] = dict(name=dataset.name, split=split, rows=rows)
    if batch > 1:
        return _trace_batch(args, record, params, cost, rs, digits, batch, taken)
    if taken is not None:
        x_np, label = taken.X[0], taken.labels[0]
        y_np = np.eye(sizes[-1])[label]
    else:
        example = _one_example(args, rs, digits, sizes[0], sizes[-1])
        if isinstance(example, str):
            return fail(example)
        x_np, y_np, label = example
    x, y = jnp.asarray(x_np, jnp.float64), jnp.asarray(y_np, jnp.float64)
    batch_masks = _dropout_masks(args, rs, params, 1)
    masks = None if batch_masks is None else [m[0] for m in batch_masks]  # this example's: m^l of each hidden layer

    def forward_and_deltas(ps, x, y, masks, batch_masks):  # one compiled program, not one for each operation
        zs, acts = fbp.forward_trace(ps, x, masks)
        stacked, _ = fbp.batch_deltas(ps, x[None], y[None], cost, masks=batch_masks)  # BP1, BP2 (⊙ m^l)
        return zs, acts, [d[0] for d in stacked]

    try:
        zs, acts, ds = jax.jit(forward_and_deltas)(params, x, y, masks, batch_masks)
        # C from that pass, as fbp.example_loss goes on from it; eager, since XLA's fused sum would move its last bit
        c = _example_loss_from(params, zs, acts, y, fbp.get_cost(cost))
        grads = fbp.batch_backward(params, x[None], y[None], cost, masks=batch_masks)  # BP3, BP4 of one example
        auto = fbp.autodiff_grad(params, x[None], y[None], cost, masks=batch_masks)
    except (ValueError, TypeError) as e:  # an input or target the library refuses (its message says why)
        return fail(str(e))

    fmt = functools.partial(_fmt, digits=args.digits)
    L = len(sizes)
    out_act, hidden_act = params[-1].act, params[0].act
    conv = isinstance(params[0], fbp.Conv)
    handed_in = fbp.network.layer_inputs(acts, masks)  # what each layer takes in: x, then m^l ⊙ a^l
    swept = {i: layer._conv(handed_in[i]) for i, layer in enumerate(params)  # c^l, before the pooling
            if isinstance(layer, fbp.Conv)}

    print(f"fbp trace: sizes={network_text(params)} activation={hidden_act.name} output={out_act.name} "
          f"cost={cost}" + (f" dropout={args.dropout:g}" if args.dropout else "")
          + _made(args, digits, taken, "input"))
    print(f"numbered as in the book's ch. 2: layer 1 is the input, a¹ = x; w^l and b^l lead into layer l "
          f"(shown to {args.digits} decimals; computed in float64)")
    if taken is not None:
        print(f"the example: {taken.split} image {taken.rows[0]} of {taken.name} ({taken.evaluates()} row "
              f"{taken.rows[0]}), its class {taken.labels[0]}")
    if conv:
        print(CONV_UNITS)
    print()
    if conv:
        print(f"input   a¹ = x, {_image_text(params[0].in_shape)}:")
        print(_maps("  a¹", x, params[0].in_shape, args.digits))
    else:
        print(f"input   a¹ = x = {fmt(x)}")
    print(f"target  y = {fmt(y)}" + (f"  (class {label})" if label is not None else ""))
    print()
    print("forward: z^l = w^l a^(l−1) + b^l, a^l = σ(z^l)" + (
        f"; dropout hands on m^l ⊙ a^l, m^l a unit's 0 (dropped, with probability {args.dropout:g}) or "
        f"1/(1 − {args.dropout:g})" if masks else ""))
    if conv:
        _print_conv_rule(params)
    _print_forward(args, params, zs, acts, handed_in, swept, masks)
    penalty = _penalty(args, 1)
    print(f"cost    {'C₀' if penalty else 'C'} = {COST_TEXT.get(cost, cost).format(L=sup(L))} = "
          f"{float(c):.{args.digits}f}")
    if penalty:
        print(penalty.cost_line(float(c), params, args.digits))
    dC = "∂C₀" if penalty else "∂C"  # BP4 gives the gradient of C₀; the weights' term adds its own
    print()
    print("backward:")
    cost_fn = fbp.get_cost(cost)
    unpooled = _print_deltas(args, params, cost, y, zs, acts, ds, handed_in, masks)
    _print_sums(args, params, grads, masks, dC, mean=False)
    totals = penalty.add(params, grads, args.digits) if penalty else grads  # ∂C/∂w^l = ∂C₀/∂w^l + the term's
    speeds = [float(jnp.linalg.norm(d)) for d in ds]  # ‖δ^l‖: the book's speed of learning of layer l (ch. 5)
    print(f"  ‖δ^l‖{' (‖∂C/∂b^l‖ of a fully connected layer)' if conv else ' = ‖∂C/∂b^l‖'}, how fast each layer "
          f"learns (the book's ch. 5), layer 2 to {L}: " + ", ".join(_number(v, args.digits) for v in speeds))
    diff, worst = _autodiff_gap(grads, auto)
    if args.lr is not None:  # the book's update, one example: w^l → w^l − η ∂C/∂w^l, b^l → b^l − η ∂C/∂b^l
        _step(args, record, params, totals, penalty,  # the same units dropped after the step
              lambda stepped: float(fbp.example_loss(stepped, x, y, cost_fn, masks)), float(c),
              f"a step of gradient descent, η = {args.lr:g}: w^l → w^l − η ∂C/∂w^l, b^l → b^l − η ∂C/∂b^l",
              (x[None], y[None], cost, batch_masks))
    nudged, fd_worst = _finite_differences(params, x[None], y[None], cost, batch_masks, grads)
    print()
    print(f"jax.grad of the same {'C₀' if penalty else 'C'}: the largest difference from BP3 and BP4 {diff:.1e} "
          f"(relative {worst:.1e}); {_nudged_text(nudged)}: relative {fd_worst:.1e}")
    record.update(finite_differences_max_relative=fd_worst)
    layers = []
    for i, layer in enumerate(params):
        entry = dict(layer=i + 2, kind="convolutional" if isinstance(layer, fbp.Conv) else "fully_connected",
                     w=_list(layer.w), b=_list(layer.b), z=_list(zs[i]), a=_list(acts[i + 1]), delta=_list(ds[i]),
                     grad_w=_list(grads[i].w), grad_b=_list(grads[i].b))
        if isinstance(layer, fbp.Conv):  # the maps, (maps, rows, columns), before the pooling
            entry.update(in_shape=list(layer.in_shape), pool=layer.pool,
                         conv=_list(swept[i]), delta_unpooled=_list(unpooled[i]))
        if penalty:
            entry.update(grad_w_total=_list(totals[i].w))
        layers.append(entry)
    if penalty:
        record["penalty"] = penalty.record(float(c), params)
    record.update(sizes=sizes, activation=hidden_act.name, output_activation=out_act.name, cost_function=cost,
                  x=_list(x), y=_list(y), label=label, cost=float(c), layers=layers, delta_norms=speeds,
                  autodiff_max_difference=diff, autodiff_max_relative=worst,
                  dropout=args.dropout or None, masks=None if masks is None else [_list(m) for m in masks])
    return 0


def _print_sums(args, params: list, grads, masks, dC: str, mean: bool) -> None:
    """BP3 and BP4 of each layer, last to first, a convolutional layer's as sums over its positions: one
    example's, or with ``mean`` a mini-batch's, the mean over its examples n of theirs (a conv net's mini-batch
    is traced an example at a time; a fully connected one's as rows, in _trace_batch). ``dC``: ∂C or ∂C₀."""
    import fbp

    fmt = functools.partial(_fmt, digits=args.digits)
    over, n = ("(1/m) Σ_n ", "n,") if mean else ("", "")
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        if isinstance(params[i], fbp.Conv):
            print(f"  BP3  ∂C/∂b{sup(l)}_j = {over}Σ_{{x,y}} δ{sup(l)}_{{{n}j,x,y}} = {fmt(grads[i].b)}")
        else:
            print(f"  BP3  ∂C/∂b{sup(l)} = {over}δ{sup(l)}{'_n' if mean else ''} = {fmt(grads[i].b)}")
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        a_text = f"(m{sup(l - 1)} ⊙ a{sup(l - 1)})" if masks and i > 0 else f"a{sup(l - 1)}"
        if isinstance(params[i], fbp.Conv):
            print(f"  BP4  {dC}/∂w{sup(l)}_{{j,i,p,q}} = {over}Σ_{{x,y}} δ̃{sup(l)}_{{{n}j,x,y}} "
                  f"{a_text}_{{{n}i,x+p,y+q}}:")
            print(_kernels(f"       {dC}/∂w{sup(l)}", grads[i].w, args.digits))
        else:
            outer = (f"δ{sup(l)}_n ({a_text}_n)ᵀ" if mean else
                     f"δ{sup(l)} {a_text if a_text.startswith('(') else f'({a_text})'}ᵀ")
            print(_matrix(f"  BP4  {dC}/∂w{sup(l)} = {over}{outer} = ", grads[i].w, args.digits))


def _print_conv_rule(params: list) -> None:
    """How a convolutional layer's z^l comes from the maps before it."""
    import fbp

    print("  a convolutional layer sweeps its kernels over the maps before it, "
          "c^l_{j,x,y} = Σ_i Σ_{p,q} w^l_{j,i,p,q} a^(l−1)_{i,x+p,y+q},")
    print("  and keeps the largest of each pool×pool block: z^l_{j,x,y} = max of c^l_j over block (x, y) + b^l_j"
          if any(isinstance(layer, fbp.Conv) and layer.pool > 1 for layer in params) else
          "  and adds its bias: z^l_{j,x,y} = c^l_{j,x,y} + b^l_j")


def _print_forward(args, params: list, zs, acts, handed_in, swept: dict, masks, weights: bool = True) -> None:
    """One example's forward pass, layer by layer: w^l and b^l (unless not ``weights``: a mini-batch's second
    example on), z^l and a^l (a convolutional layer's c^l, ``swept``, and maps), dropout's m^l; ``handed_in``
    what each layer takes in."""
    import fbp

    fmt = functools.partial(_fmt, digits=args.digits)
    units = functools.partial(_units, digits=args.digits)
    L = len(params) + 1
    for i, layer in enumerate(params):
        l = i + 2
        kind = "output" if l == L else "hidden"
        handed = f"(m{sup(l - 1)} ⊙ a{sup(l - 1)})" if masks and i > 0 else f"a{sup(l - 1)}"
        if isinstance(layer, fbp.Conv):
            maps, _, k, _ = layer.w.shape
            pooling = f", {layer.pool}×{layer.pool} max-pooling" if layer.pool > 1 else ", no pooling"
            print(f"  layer {l} (convolutional: {maps} map{'s' if maps > 1 else ''} of {k}×{k} kernels over "
                  f"{_image_text(layer.in_shape)}{pooling}, {layer.act.name})")
            if weights:
                print(_kernels(f"    w{sup(l)}", layer.w, args.digits))
                print(f"    b{sup(l)} = {fmt(layer.b)}")
            print(f"    c{sup(l)} = the kernels swept over {handed}:")
            print(_maps(f"    c{sup(l)}", swept[i], layer.conv_shape, args.digits))
            p = layer.pool
            print(f"    z{sup(l)} = " + (f"the largest c{sup(l)} of each {p}×{p} block" if p > 1 else f"c{sup(l)}")
                  + f" + b{sup(l)}:")
            print(units(f"    z{sup(l)}", zs[i], layer))
            print(f"    a{sup(l)} = {layer.act.name}(z{sup(l)}):")
            print(units(f"    a{sup(l)}", acts[i + 1], layer))
        else:
            print(f"  layer {l} ({kind}, {layer.act.name})")
            if weights:
                print(_matrix(f"    w{sup(l)} = ", layer.w, args.digits))
                print(f"    b{sup(l)} = {fmt(layer.b)}")
            if i > 0 and isinstance(params[i - 1], fbp.Conv):
                print(f"    {handed} as one vector, map after map, row by row: {fmt(handed_in[i])}")
            print(f"    z{sup(l)} = w{sup(l)} {handed} + b{sup(l)} = {fmt(zs[i])}")
            print(f"    a{sup(l)} = {layer.act.name}(z{sup(l)}) = {fmt(acts[i + 1])}")
        if masks and l < L:
            if isinstance(layer, fbp.Conv):
                print(units(f"    m{sup(l)}", masks[i], layer))
                print(f"    handed on, m{sup(l)} ⊙ a{sup(l)}:")
                print(units(f"    (m{sup(l)} ⊙ a{sup(l)})", masks[i] * acts[i + 1], layer))
            else:
                print(f"    m{sup(l)} = {fmt(masks[i])}, handed on m{sup(l)} ⊙ a{sup(l)} = "
                      f"{fmt(masks[i] * acts[i + 1])}")


def _print_deltas(args, params: list, cost: str, y, zs, acts, ds, handed_in, masks) -> dict:
    """One example's BP1 and BP2, from the output back: each δ^l, and a convolutional layer's δ̃^l (its δ's
    sent back through the pooling), which it returns, by layer index."""
    import fbp
    from fbp.costs import closed_form

    fmt = functools.partial(_fmt, digits=args.digits)
    units = functools.partial(_units, digits=args.digits)
    L, out_act = len(params) + 1, params[-1].act
    aL = f"a{sup(L)}"
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
    unpooled = {}  # δ̃^l of each convolutional layer: its δ's sent back through the pooling
    for i in range(len(params) - 2, -1, -1):
        l = i + 2
        layer, above = params[i], params[i + 1]
        mask = f" ⊙ m{sup(l)}" if masks else ""
        if isinstance(above, fbp.Conv):
            sent_name = f"(w{sup(l + 1)} ⋆ δ̃{sup(l + 1)})"
            print(f"  BP2  δ{sup(l)} = {sent_name}{mask} ⊙ σ'(z{sup(l)}), the full convolution of δ̃{sup(l + 1)} "
                  f"with the kernels turned by 180° (what (w)ᵀ δ is for a fully connected layer):")
            print(f"       {sent_name}_{{i,x,y}} = Σ_j Σ_{{p,q}} w{sup(l + 1)}_{{j,i,p,q}} "
                  f"δ̃{sup(l + 1)}_{{j,x−p,y−q}}")
            sent = above.backward(ds[i + 1], handed_in[i + 1])
        else:
            sent_name = f"(w{sup(l + 1)})ᵀ δ{sup(l + 1)}"
            print(f"  BP2  δ{sup(l)} = ({sent_name}){mask} ⊙ σ'(z{sup(l)})")
            sent = above.w.T @ ds[i + 1]
        print(units(f"       ({sent_name})" if isinstance(layer, fbp.Conv) and not isinstance(above, fbp.Conv)
                    else f"       {sent_name}", sent, layer))
        if masks:
            print(units(f"       m{sup(l)}", masks[i], layer))
        print(units(f"       σ'(z{sup(l)})", layer.act.prime(zs[i]), layer))
        print(units(f"       δ{sup(l)}", ds[i], layer))
        if isinstance(layer, fbp.Conv):
            unpooled[i] = layer._unpool(ds[i], handed_in[i]).reshape(layer.conv_shape)
            if layer.pool > 1:
                print(f"       δ̃{sup(l)}: each δ{sup(l)}_{{j,x,y}} sent back through the pooling to the unit of its "
                      f"block that was the largest in c{sup(l)}, 0 to the others")
                print(_maps(f"       δ̃{sup(l)}", unpooled[i], layer.conv_shape, args.digits))
            else:
                print(f"       δ̃{sup(l)} = δ{sup(l)} (no pooling)")
    return unpooled


def _network(args, rs, digits: Optional[int], dataset, loaded):
    """The network to trace and its cost: a saved one (--params, ``loaded`` by saved_network), one typed in
    (--weights, --biases), or a new one drawn from ``rs`` (--sizes, --conv, --init; its numbers rounded to
    ``digits``); with the rounding left to the example (None for a saved network's numbers, as they are). Or
    the one-line problem."""
    import jax.numpy as jnp

    import fbp
    from fbp import plot
    from fbp.network import INITS

    if loaded is not None:
        params, cost, _ = loaded
        digits = None  # a saved network's numbers as they are
    elif args.weights is not None or args.biases is not None:
        if args.weights is None:
            return "--biases gives each b^l; give each w^l too, with --weights (layers separated by '|')"
        args.activation = args.activation or "sigmoid"
        given = _given_network(args, args.sizes, dataset)
        if isinstance(given, str):
            return given
        if given[-1].act.name == "softmax" and given[-1].n_out == 1:
            return ("--output-activation softmax over the one output neuron of --weights is always 1 and learns "
                    "nothing; use --output-activation sigmoid, or give the last w^l two rows or more")
        params, cost = given, args.cost or "quadratic"
    else:
        args.activation, args.init = args.activation or "sigmoid", args.init or "normalized"
        sizes = args.sizes or ([dataset.n_in, dataset.n_classes] if dataset is not None
                               else [36, 2] if args.conv else [2, 3, 2])
        problem = _one_unit_softmax_problem(sizes, args.output_activation or args.activation) or (
            _too_wide(sizes, dataset) if not args.conv and max(sizes) > MAX_UNITS else None)
        if problem:
            return problem
        if args.conv and plot.image_side(sizes[0]) is None:
            return (f"--sizes {','.join(map(str, sizes))}: with --conv the input is a square image, and "
                    f"{sizes[0]} numbers are not one (36 are 6×6)")
        try:  # the layers' shapes and activations, and the library's checks of them, from fbp.init_mlp/init_convnet
            shaped = _shaped(args, sizes)
        except ValueError as e:
            return str(e)
        problem = _too_big(shaped)  # before a draw the size of a large network
        if problem:
            return problem
        w_std, b_std = INITS[args.init]  # their scales, the weights drawn here from rs
        params = []
        for layer in shaped:
            maps, channels, k = layer.w.shape[:3] if isinstance(layer, fbp.Conv) else (0, 0, 0)
            fans = ((layer.n_in, layer.n_out) if isinstance(layer, fbp.Dense) else
                    (channels * k * k, maps * k * k / layer.pool**2))
            w, b = rs.standard_normal(layer.w.shape) * w_std(*fans), rs.standard_normal(layer.b.shape) * b_std
            if digits is not None:  # numbers a hand calculation can start from
                w, b = _rounded(w, digits), _rounded(b, digits)
            params.append(dataclasses.replace(layer, w=jnp.asarray(w), b=jnp.asarray(b)))
        cost = args.cost or "quadratic"
    return params, cost, digits


def _shaped(args, sizes: list) -> list:
    """The layers fbp train would make of ``args`` and ``sizes`` (the library's checks of them included), their
    w and b only shapes (jax.ShapeDtypeStruct): the numbers are drawn or given here, so none is drawn by jax."""
    import jax
    import jax.numpy as jnp

    return jax.eval_shape(lambda key: make_network(args, key, sizes, jnp.float64), jax.random.key(0))


def _one_example(args, rs, digits: Optional[int], n_in: int, n_out: int):
    """(x, y, its class or None) of --input and --target, each drawn by --seed where not given; or the
    one-line problem."""
    examples = _batch_examples(args, rs, digits, 1, n_in, n_out)
    if isinstance(examples, str):
        return examples
    X, Y, labels = examples
    return X[0], Y[0], None if labels is None else labels[0]


def _batch_examples(args, rs, digits: Optional[int], m: int, n_in: int, n_out: int):
    """(X, Y, their classes or None) of --input's and --target's rows (one example's numbers, for m = 1),
    drawn by --seed where not given; or the one-line problem."""
    import numpy as np

    read = _rows if m > 1 else lambda flag, text: [_numbers(flag, text)]
    try:
        given_x = read("--input", args.input) if args.input is not None else None
        target = read("--target", args.target) if args.target is not None else None
    except ValueError as e:
        return str(e)

    def row(n: int) -> str:  # which row a message is about, where there are rows
        return f"row {n + 1} has " if m > 1 else ""

    if given_x is None:
        x_np = rs.uniform(size=(m, n_in))
        x_np = _rounded(x_np, digits) if digits is not None else x_np
    else:
        wrong = [n for n, numbers in enumerate(given_x) if len(numbers) != n_in]
        if wrong:
            return (f"--input {args.input}: {row(wrong[0])}{_count(len(given_x[wrong[0]]), 'number')}, and the "
                    f"network takes {n_in}")
        x_np = np.asarray(given_x)
    labels: Optional[list] = None
    if target is None:
        if n_out == 1:
            y_np = rs.uniform(size=(m, 1))
            y_np = _rounded(y_np, digits) if digits is not None else y_np
        else:
            labels = [int(c) for c in rs.randint(n_out, size=m)]
            y_np = np.eye(n_out)[labels]
    else:  # a row each: a class (one number) or the outputs wanted
        y_rows = []
        for n, wanted in enumerate(target):
            if len(wanted) == 1 and n_out > 1:
                if wanted[0] != int(wanted[0]) or not 0 <= wanted[0] < n_out:
                    one, outputs = ("one number a row", "the row's") if m > 1 else ("one number", "the")
                    return (f"--target {args.target}: {one} is a class, 0 to {n_out - 1}; or give {outputs} {n_out} "
                            f"outputs wanted, separated by commas")
                y_rows.append(np.eye(n_out)[int(wanted[0])])
            elif len(wanted) != n_out:
                return f"--target {args.target}: {row(n)}{_count(len(wanted), 'number')}, and the network gives {n_out}"
            else:
                y_rows.append(np.asarray(wanted))
        if all(len(wanted) == 1 for wanted in target) and n_out > 1:
            labels = [int(wanted[0]) for wanted in target]
        y_np = np.stack(y_rows)
    return x_np, y_np, labels


def _made(args, digits: Optional[int], taken, inputs: str) -> str:
    """The header's words for where the network and the example come from, and which numbers are rounded."""
    if args.params is not None:  # a saved network's example: given, a data set's, or drawn (say so: not data)
        drawn = args.input is None and taken is None
        rows = "--row N takes one" if inputs == "input" else "--row N,N,… takes them from one"
        return f" network={args.params}" + (f" seed={args.seed} ({inputs} drawn uniformly from [0, 1), not a data "
                                            f"set's: {rows})" if drawn else "")
    given = args.weights is not None
    rounded = ([] if given else ["weights", "biases"]) + ([inputs] if args.input is None and taken is None else [])
    text = (" weights and biases given" if given else f" init={args.init}") + f" seed={args.seed}"
    if digits is not None and rounded:
        words = ", ".join(rounded[:-1]) + " and " + rounded[-1] if len(rounded) > 1 else rounded[0]
        text += f" ({words} rounded to {digits} decimals)"
    return text


def _given_network(args, sizes: Optional[list], dataset=None):
    """--weights' and --biases' layers, each w^l a row of numbers for each neuron of layer l (rows separated
    by ';', layers by '|'), as fbp.Dense layers (--activation, --output-activation), after --conv's layers
    where it is given (their kernels typed in first: _given_conv_network, the image's size from ``sizes``,
    ``dataset`` or --input); or the one-line problem."""
    import jax.numpy as jnp

    import fbp

    if args.biases is None:
        return "--weights gives each w^l; give each b^l too, with --biases (layers separated by '|')"
    if args.init is not None:
        return "--weights gives the network's numbers; drop --init"
    ws: list = []  # w^l: its rows
    bs: list = []
    for flag, text, parse, into in (("--weights", args.weights, _rows, ws), ("--biases", args.biases, _numbers, bs)):
        for l, layer in enumerate(text.split("|"), 2):
            try:
                into.append(parse(flag, layer))
            except ValueError as e:  # the whole flag, and which layer
                what = str(e)[len(f"{flag} {layer}: "):]
                return f"{flag} {text}: {flag[2]}{sup(l)}: {what}"
    if args.conv:
        return _given_conv_network(args, sizes, ws, bs, dataset)
    for l, w in enumerate(ws, 2):
        if len({len(row) for row in w}) > 1:
            return (f"--weights: w{sup(l)}'s rows have {', '.join(str(len(row)) for row in w)} numbers; each row is "
                    f"one neuron's weights, one for each unit of layer {l - 1}")
    shape = [len(ws[0][0])] + [len(w) for w in ws]
    for l, (w, n_in) in enumerate(zip(ws[1:], shape[1:-1]), 3):
        if len(w[0]) != n_in:
            return (f"--weights: w{sup(l)} has {len(w[0])} numbers a row, and layer {l - 1} has {n_in} neurons (w"
                    f"{sup(l - 1)}'s rows); each row takes one number for each neuron of the layer before")
    if len(bs) != len(ws) or any(len(b) != len(w) for b, w in zip(bs, ws)):
        return (f"--biases: {'|'.join(str(len(b)) for b in bs)} numbers, and --weights' layers have "
                f"{'|'.join(str(len(w)) for w in ws)} neurons; give one b^l for each w^l, one number a neuron")
    if sizes is not None and sizes != shape:
        return (f"--sizes {','.join(map(str, sizes))}, and --weights makes {','.join(map(str, shape))}; give one or "
                f"the other")
    out = args.output_activation or args.activation
    return [fbp.Dense(jnp.asarray(w, jnp.float64), jnp.asarray(b, jnp.float64),
                      out if l == len(ws) - 1 else args.activation) for l, (w, b) in enumerate(zip(ws, bs))]


def _given_conv_network(args, sizes: Optional[list], ws: list, bs: list, dataset=None):
    """--weights and --biases with --conv: its layers' kernels first, each a row of k·k numbers (row by row of
    the kernel) for each map j and channel i of the layer before, row j·channels + i; then the fully connected
    layers' w^l as without --conv. The image's size from --sizes' first number, --data's images or --input's
    count. Or the one-line problem."""
    import argparse

    import jax.numpy as jnp

    import fbp
    from fbp.cli import conv_text

    n_conv = len(args.conv)
    if len(ws) <= n_conv:
        return (f"--weights has {len(ws)} layer{'s' if len(ws) > 1 else ''}, and --conv {conv_text(args.conv)} gives "
                f"{n_conv} convolutional; give their kernels, then each fully connected layer's w^l (the output's "
                f"at least), layers separated by '|'")
    if len(bs) != len(ws):
        return (f"--biases has {len(bs)} layer{'s' if len(bs) > 1 else ''}, and --weights {len(ws)}; give one b^l "
                f"for each w^l, layers separated by '|'")
    try:
        n_in = (sizes[0] if sizes else dataset.n_in if dataset is not None else
                len(_rows("--input", args.input)[0]) if args.input is not None else None)
    except ValueError as e:
        return str(e)
    if n_in is None:
        return ("--weights with --conv: kernels do not say how large the image is; give --sizes N,… (N its "
                "pixels, like 16 for a 4×4 image), --input or --data")
    shape = [n_in] + [len(w) for w in ws[n_conv:]]
    if sizes is not None and sizes != shape:
        return (f"--sizes {','.join(map(str, sizes))}, and --weights makes {','.join(map(str, shape))} after its "
                f"kernels; give the image's size and the fully connected layers' as --weights has them")
    try:  # the layers' shapes, as fbp train --conv makes them; their numbers are replaced
        shaped = _shaped(argparse.Namespace(**{**vars(args), "init": "normalized"}), shape)
    except ValueError as e:
        return str(e)
    params = []
    for i, (layer, w, b) in enumerate(zip(shaped, ws, bs)):
        l = i + 2
        if isinstance(layer, fbp.Conv):
            maps, channels, k, _ = layer.w.shape
            if len(w) != maps * channels or any(len(row) != k * k for row in w):
                return (f"--weights: w{sup(l)} has {len(w)} row{'s' if len(w) > 1 else ''} of "
                        f"{', '.join(str(len(row)) for row in w)} numbers, and layer {l} (--conv "
                        f"{conv_text([args.conv[i]])}) sweeps {maps} map{'s' if maps > 1 else ''} over {channels} "
                        f"channel{'s' if channels > 1 else ''}: give {maps * channels} kernel"
                        f"{'s' if maps * channels > 1 else ''} (map j over channel i in row j·{channels} + i + 1), "
                        f"each {k}×{k} = {k * k} numbers, row by row")
        elif len({len(row) for row in w}) > 1 or len(w[0]) != layer.n_in:
            return (f"--weights: w{sup(l)}'s rows have {', '.join(str(len(row)) for row in w)} numbers, and layer "
                    f"{l - 1} hands on {layer.n_in} (its units, map after map); give each neuron of layer {l} one "
                    f"number for each")
        if len(b) != len(w) // (layer.w.shape[1] if isinstance(layer, fbp.Conv) else 1):
            return (f"--biases: b{sup(l)} has {_count(len(b), 'number')}, and layer {l} has "
                    f"{_count(layer.b.shape[0], 'map' if isinstance(layer, fbp.Conv) else 'neuron')}; give one "
                    f"number for each")
        params.append(dataclasses.replace(layer, w=jnp.asarray(w, jnp.float64).reshape(layer.w.shape),
                                          b=jnp.asarray(b, jnp.float64)))
    return params


class _Penalty(NamedTuple):
    """--l2 and --l1, the book's ch. 3 terms of the cost over every weight
    (not the biases): C = C₀ + (λ/2n) Σ_l ‖w^l‖² (L2) + (λ/n) Σ_l Σ |w^l| (L1),
    n the training set's size; they add (λ/n) w^l and (λ/n) sgn(w^l) to
    ∂C/∂w^l, with sgn(0) = 0 (fbp train's --l2 and --l1)."""
    l2: float
    l1: float
    n: int

    def _lambdas(self) -> tuple:  # how the text names them: λ, or λ₂ and λ₁ where both are given
        return ("λ₂", "λ₁") if self.l2 and self.l1 else ("λ", "λ")

    def term(self, params, xp):
        """The cost's term, (λ₂/2n) Σ_l ‖w^l‖² + (λ₁/n) Σ_l Σ |w^l|, in ``xp``: NumPy for the printed figures,
        jax.numpy inside --steps' jitted descent."""
        return sum(self.l2 / (2 * self.n) * xp.sum(xp.square(layer.w)) + self.l1 / self.n * xp.sum(xp.abs(layer.w))
                   for layer in params)

    def with_term(self, grad_w, w, xp):
        """∂C/∂w = ∂C₀/∂w (``grad_w``) + (λ₂/n) w + (λ₁/n) sgn(w), sgn(0) = 0, in ``xp``: NumPy for the printed
        figures, jax.numpy inside --steps' jitted descent."""
        return grad_w + self.l2 / self.n * w + self.l1 / self.n * xp.sign(w)

    def cost(self, params) -> float:
        import numpy as np

        return float(self.term(params, np))

    def grad_text(self, l: str) -> str:
        a, b = self._lambdas()
        return " + ".join(([f"({a}/n) w{l}"] if self.l2 else []) + ([f"({b}/n) sgn(w{l})"] if self.l1 else []))

    def cost_line(self, c0: float, params, digits: int) -> str:
        a, b = self._lambdas()
        term = " + ".join(([f"({a}/2n) Σ_l ‖w^l‖²"] if self.l2 else []) + ([f"({b}/n) Σ_l Σ |w^l|"] if self.l1 else []))
        values = ", ".join(([f"{a} = {self.l2:g}"] if self.l2 else []) + ([f"{b} = {self.l1:g}"] if self.l1 else [])
                           + [f"n = {self.n}"])
        t = self.cost(params)
        return (f"        C = C₀ + {term} = {c0:.{digits}f} + {t:.{digits}f} = {c0 + t:.{digits}f}  ({values}; "
                f"the biases have no term)")

    def add(self, params, grads, digits: int) -> list:
        """∂C/∂w^l of each layer, printed, last layer first: BP4's ∂C₀/∂w^l and the term's; the gradients with them."""
        import numpy as np

        import fbp

        print(f"  the weights' term: ∂C/∂w^l = ∂C₀/∂w^l + {self.grad_text('^l')} (∂C/∂b^l = ∂C₀/∂b^l)")
        totals = [dataclasses.replace(g, w=self.with_term(np.asarray(g.w), np.asarray(layer.w), np))
                  for layer, g in zip(params, grads)]
        for i in range(len(params) - 1, -1, -1):
            lead = f"       ∂C/∂w{sup(i + 2)}"
            print(_kernels(lead, totals[i].w, digits) if isinstance(params[i], fbp.Conv)
                  else _matrix(f"{lead} = ", totals[i].w, digits))
        return totals

    def step_text(self) -> str:  # the book's own form of the step where it gives one (ch. 3)
        if self.l2 and not self.l1:
            return "; with the L2 term that is w^l → (1 − ηλ/n) w^l − η ∂C₀/∂w^l, the book's weight decay"
        if self.l1 and not self.l2:
            return "; with the L1 term that is w^l → w^l − (ηλ/n) sgn(w^l) − η ∂C₀/∂w^l"
        return ""

    def record(self, c0: float, params) -> dict:
        t = self.cost(params)
        return dict(l2=self.l2, l1=self.l1, n=self.n, term=t, cost=c0 + t)


def _step(args, record: dict, params: list, totals: list, penalty: Optional[_Penalty], cost0, c0: float,
          heading: str, examples: tuple) -> None:
    """--lr's step, printed: each w^l and b^l moved by −η times its gradient (``totals``, the weights' term
    in them), and the cost after it against before (``cost0`` of a network: its C₀; the weights' term added
    here, as to ``c0``); kept in ``record``. With --steps N, the step taken N times from the same start on the
    same ``examples`` (X, Y, the cost, dropout's masks), each from BP1-BP4 again (_descend): its first cost is
    this step's."""
    import numpy as np

    # on the host: the numbers jax.numpy gives (one rounding an operation either way), without a compile each
    stepped = [dataclasses.replace(layer, w=np.asarray(layer.w) - args.lr * np.asarray(g.w),
                                   b=np.asarray(layer.b) - args.lr * np.asarray(g.b))
               for layer, g in zip(params, totals)]
    after = cost0(stepped) + (penalty.cost(stepped) if penalty else 0.0)
    before = c0 + (penalty.cost(params) if penalty else 0.0)
    print()
    print(heading + (penalty.step_text() if penalty else ""))
    _print_network(stepped, args.digits)
    print(f"cost    C = {after:.{args.digits}f} after the step ({before:.{args.digits}f} before)")
    record["step"] = dict(lr=args.lr, cost=after, layers=_network_record(stepped))
    if args.steps is not None and args.steps > 1:
        final, costs = _descend(args, params, penalty, *examples)
        shown = [n for n in STEPS_SHOWN if n < args.steps] + [args.steps]
        momentum = (f", with the book's momentum, v → {args.momentum:g} v − η ∇C, w → w + v, v = 0 before step 1"
                    if args.momentum else "")
        print(f"the same step taken {args.steps} times (BP1-BP4 again before each, the example"
              f"{'s' if len(examples[0]) > 1 else ''} and masks the same{momentum}): C after step "
              + ", ".join(f"{n}: {costs[n - 1]:.{args.digits}f}" for n in shown))
        print(f"the network after step {args.steps}:")
        _print_network(final, args.digits)
        record["step"].update(steps=args.steps, momentum=args.momentum, costs=[float(v) for v in costs],
                              final=_network_record(final))


def _print_network(params: list, digits: int) -> None:
    """Each layer's w^l (a conv layer's kernels) and b^l, printed, layer 2 first."""
    import fbp

    for i, layer in enumerate(params):
        l = i + 2
        print(_kernels(f"  w{sup(l)}", layer.w, digits) if isinstance(layer, fbp.Conv)
              else _matrix(f"  w{sup(l)} = ", layer.w, digits))
        print(f"  b{sup(l)} = {_fmt(layer.b, digits)}")


def _network_record(params: list) -> list:
    """Each layer's w^l and b^l for --json, layer 2 first."""
    return [dict(layer=i + 2, w=_list(layer.w), b=_list(layer.b)) for i, layer in enumerate(params)]


def _descend(args, params: list, penalty: Optional[_Penalty], X, Y, cost, masks) -> tuple:
    """--steps: --lr's step taken args.steps times on the same examples, the gradient by BP1-BP4
    (``fbp.batch_backward``) before each, with the weights' term of --l2 and --l1 and --momentum's velocity;
    one jitted scan. Returns (the network after the last step, the cost C after each step)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import fbp

    penalty = penalty or _Penalty(0.0, 0.0, 1)  # no term: C = C₀
    mu = args.momentum or 0.0  # the book's ch. 3: v → μ v − η ∇C, w → w + v; plain gradient descent at μ = 0
    cost_fn = fbp.get_cost(cost)

    def step(carry, _):
        ps, vs = carry
        grads = fbp.batch_backward(ps, X, Y, cost, masks=masks)
        vs = [dataclasses.replace(v, w=mu * v.w - args.lr * penalty.with_term(g.w, layer.w, jnp),
                                  b=mu * v.b - args.lr * g.b) for layer, v, g in zip(ps, vs, grads)]
        ps = [dataclasses.replace(layer, w=layer.w + v.w, b=layer.b + v.b) for layer, v in zip(ps, vs)]
        return (ps, vs), fbp.loss(ps, X, Y, cost_fn, "mean", masks) + penalty.term(ps, jnp)

    still = jax.tree.map(jnp.zeros_like, params)  # v = 0 before the first step, which is then plain SGD's
    (final, _), costs = jax.jit(lambda ps, vs: jax.lax.scan(step, (ps, vs), None, length=args.steps))(params, still)
    return final, np.asarray(costs)


def _penalty(args, examples: int) -> Optional[_Penalty]:
    """--l2 and --l1's terms, n from --train-size (default: the examples traced); None without them."""
    if not args.l2 and not args.l1:
        return None
    return _Penalty(args.l2, args.l1, args.train_size or examples)


class _Taken(NamedTuple):
    """--data's examples: their inputs (m, n_in), classes and rows of the split, the data set's name and the
    split's."""
    X: Any  # np.ndarray
    labels: list
    rows: list
    name: str
    split: str

    def evaluates(self) -> str:  # the command whose rows these are
        return "fbp evaluate's" if self.split == "test" else f"fbp evaluate --split {self.split}'s"


def _dataset(args, meta: dict):
    """--data's data set (by default, with --params, the one it was trained on, ``meta`` saying which, with its
    --data-dir and --validation), or the one-line problem (--data-dir, --split, --validation or --row without a
    --data, --input or --target beside it, a --row past its split)."""
    from fbp.cli_evaluate import trained_data

    if args.data is None and not meta.get("data_flag"):
        flag = next(flag for flag, value in (("--data-dir", args.data_dir), ("--split", args.split),
                                             ("--validation", args.validation), ("--row", args.row))
                    if value is not None)
        return (f"{flag} is for the examples of --data; give --data too" +
                (f" (--params {args.params} does not say what it was trained on)" if args.params else ""))
    mine = [flag for flag, value in (("--input", args.input), ("--target", args.target)) if value is not None]
    if mine:
        return (f"{' and '.join(mine)} give{'s' if len(mine) == 1 else ''} an example of your own, and --data "
                f"{args.data or meta['data_flag']} takes it from a data set; give one or the other")
    split = args.split or "test"
    ds = trained_data(args, meta, split)
    if isinstance(ds, str):
        return ds
    part = getattr(ds, split)
    if not len(part):
        return f"{ds.name} has no {split} examples (--validation 0?)"
    past = [row for row in args.row or () if row >= len(part)]
    if past:
        return f"--row {past[0]}: the {split} split of {ds.name} has {len(part)} examples, rows 0 to {len(part) - 1}"
    return ds


def _batch_size(args):
    """The examples to trace: --batch, or the rows of --input (or of --target) separated by ';'; 1 by
    default. The one-line problem where they disagree."""
    given = [(flag, text.count(";") + 1) for flag, text in (("--input", args.input), ("--target", args.target))
             if text is not None]
    if args.row is not None:  # --data's rows (beside which --input and --target are refused)
        given = [("--row", len(args.row))]
        if args.batch not in (None, len(args.row)):
            return (f"--row {','.join(map(str, args.row))} lists {len(args.row)} example"
                    f"{'s' if len(args.row) > 1 else ''}, and --batch gives {args.batch}; give one or the other")
    if args.batch is not None:
        given.insert(0, ("--batch", args.batch))
    if not given:
        return 1
    flag, m = given[0]
    for other, rows in given[1:]:
        if rows != m:
            return (f"{other} has {rows} row{'s' if rows > 1 else ''} separated by ';', and {flag} gives {m} "
                    f"example{'s' if m > 1 else ''}; give one row for each example")
    if m > MAX_BATCH:
        return f"{flag} gives {m} examples; fbp trace prints every example's numbers, so give {MAX_BATCH} or fewer"
    return m


def _rows(flag: str, text: str) -> list:
    """--input's or --target's rows, separated by ';', each of numbers separated by commas."""
    rows = []
    for n, row in enumerate(text.split(";"), 1):
        try:
            rows.append(_numbers(flag, row))
        except ValueError as e:  # the whole flag, and which row
            raise ValueError(f"{flag} {text}: row {n}: {str(e).split(': ', 1)[1]}") from None
    return rows


def _trace_batch(args, record: dict, params: list, cost: str, rs, digits: Optional[int], m: int,
                 taken) -> int:
    """fbp trace --batch M: the mini-batch as the library computes it, each
    example a row. The forward pass and the δ recursion for all M at once
    (row n of Z^l, A^l and Δ^l is example n's z^l, a^l, δ^l), then BP3 and
    BP4 of the mean cost, (1/m) 1ᵀΔ^l and (1/m) (Δ^l)ᵀ A^(l−1), one matrix
    product for the batch; then what the same Δ and A give and autodiff of
    the batch cost does not: each example's gradient norm, ‖δ‖ ‖a‖ (DESIGN.md)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import fbp
    from fbp.costs import closed_form

    fail = functools.partial(_error, "trace")
    n_in, n_out = params[0].n_in, params[-1].n_out
    if taken is not None:
        x_np, labels = taken.X, taken.labels
        y_np = np.eye(n_out)[labels]
    else:
        examples = _batch_examples(args, rs, digits, m, n_in, n_out)
        if isinstance(examples, str):
            return fail(examples)
        x_np, y_np, labels = examples
    X, Y = jnp.asarray(x_np, jnp.float64), jnp.asarray(y_np, jnp.float64)
    masks = _dropout_masks(args, rs, params, m)
    cost_fn = fbp.get_cost(cost)
    try:
        costs, ds, handed = fbp.backprop.batch_trace(params, X, Y, cost, masks=masks)  # δ_n unscaled, rows
        zs, acts = jax.vmap(fbp.forward_trace, in_axes=(None, 0, 0))(params, X, masks)
        grads = fbp.batch_backward(params, X, Y, cost, masks=masks)  # of the mean cost
        auto = fbp.autodiff_grad(params, X, Y, cost, masks=masks)

        def each_grad(ps, X, Y, masks):  # vmap(jax.grad): each example's gradient, formed; one compiled program
            return jax.vmap(lambda x, y, mask: jax.grad(fbp.example_loss)(ps, x, y, cost_fn, mask))(X, Y, masks)

        each = jax.jit(each_grad)(params, X, Y, masks)
    except (ValueError, TypeError) as e:  # an input or target the library refuses (its message says why)
        return fail(str(e))
    c = float(jnp.mean(costs))
    penalty = _penalty(args, m)
    if isinstance(params[0], fbp.Conv):
        _batch_header(args, params, cost, m, digits, taken,
                      f"a mini-batch of m = {m} examples, each traced as one example is (its units are maps, not "
                      f"a row), then BP3 and BP4 of their mean cost, (1/m) Σ_n of each example's sums\n"
                      + CONV_UNITS)
        layers, total, totals = _print_conv_batch(args, params, cost, X, Y, labels, taken, masks, costs, ds,
                                                  handed, zs, acts, grads, penalty)
        record.update(sizes=[n_in] + [layer.n_out for layer in params], activation=params[0].act.name,
                      output_activation=params[-1].act.name, cost_function=cost, batch=m, x=_list(X), y=_list(Y),
                      labels=labels, costs=_list(costs), cost=c, layers=layers)
        return _batch_end(args, record, params, cost_fn, X, Y, masks, c, grads, auto, each, total, totals, penalty)
    fmt = functools.partial(_fmt, digits=args.digits)
    mat = functools.partial(_matrix, digits=args.digits)
    L = len(params) + 1
    out_act, hidden_act = params[-1].act, params[0].act

    def M(l: int) -> str:  # what layer l hands on: A^l, or M^l ⊙ A^l with dropout
        return f"(M{sup(l)} ⊙ A{sup(l)})" if masks and 1 < l < L else f"A{sup(l)}"

    def row(l: int) -> str:  # the same for example n: a^l_n, or m^l_n ⊙ a^l_n
        return f"m{sup(l)}_n ⊙ a{sup(l)}_n" if masks and 1 < l < L else f"a{sup(l)}_n"

    _batch_header(args, params, cost, m, digits, taken,
                  f"a mini-batch of m = {m} examples, one a row: row n of X is x_n, and row n of Z^l, A^l and Δ^l "
                  f"is example n's z^l, a^l and δ^l")
    print(mat("input   A¹ = X = ", X))
    print(mat("target  Y = ", Y) + (f"  (classes {', '.join(map(str, labels))})" if labels is not None else ""))
    print()
    print("forward, every example at once: Z^l = A^(l−1) (w^l)ᵀ + b^l (row n: z^l_n = w^l a^(l−1)_n + b^l), "
          "A^l = σ(Z^l)" + (f"; dropout hands on M^l ⊙ A^l, M^l each example's mask, a unit's 0 (dropped, with "
                            f"probability {args.dropout:g}) or 1/(1 − {args.dropout:g})" if masks else ""))
    for i, layer in enumerate(params):
        l = i + 2
        print(f"  layer {l} ({'output' if l == L else 'hidden'}, {layer.act.name})")
        print(mat(f"    w{sup(l)} = ", layer.w))
        print(f"    b{sup(l)} = {fmt(layer.b)}")
        print(mat(f"    Z{sup(l)} = {M(l - 1)} (w{sup(l)})ᵀ + b{sup(l)} = ", zs[i]))
        print(mat(f"    A{sup(l)} = {layer.act.name}(Z{sup(l)}) = ", acts[i + 1]))
        if masks and l < L:
            print(mat(f"    M{sup(l)} = ", masks[i]))
    C = "C₀" if penalty else "C"
    dC = f"∂{C}"
    print(f"cost    {C} = (1/m) Σ_n C_n, C_n = "
          f"{COST_TEXT.get(cost, cost).format(L=sup(L)).replace('1/n', f'1/{n_out}')} of example n's a{sup(L)} and y:")
    print(f"        C_n = {fmt(costs)}, {C} = {c:.{args.digits}f}")
    if penalty:
        print(penalty.cost_line(c, params, args.digits))
    print()
    print("backward, every example at once (the recursion vmapped): row n of Δ^l is δ^l_n")
    aL = f"A{sup(L)}"
    closed = closed_form(cost_fn, out_act)
    grad_text = GRAD_TEXT.get(cost, "∇_a C").format(L=sup(L)).replace("/n", f"/{n_out}")  # n is an example here
    if closed is not None:
        print(f"  BP1  Δ{sup(L)} = {aL} − Y, row by row")
    elif out_act.prime is None:
        print(f"  BP1  Δ{sup(L)}: row n is J(z{sup(L)}_n)ᵀ ∇_a C_n, the softmax's Jacobian")
        print(mat(f"       ∇_a C_n = {grad_text}, a row an example = ", jax.vmap(cost_fn.grad)(acts[-1], Y)))
    else:
        print(f"  BP1  Δ{sup(L)} = ∇_a C ⊙ σ'(Z{sup(L)}), row by row")
        print(mat(f"       ∇_a C_n = {grad_text}, a row an example = ", jax.vmap(cost_fn.grad)(acts[-1], Y)))
        print(mat(f"       σ'(Z{sup(L)}) = ", out_act.prime(zs[-1])))
    print(mat(f"       Δ{sup(L)} = ", ds[-1]))
    for i in range(len(params) - 2, -1, -1):
        l = i + 2
        mask = f" ⊙ M{sup(l)}" if masks else ""
        print(f"  BP2  Δ{sup(l)} = (Δ{sup(l + 1)} w{sup(l + 1)}){mask} ⊙ σ'(Z{sup(l)})  "
              f"(row n: ((w{sup(l + 1)})ᵀ δ{sup(l + 1)}_n){mask.replace('M', 'm')}{'_n' if masks else ''} "
              f"⊙ σ'(z{sup(l)}_n))")
        print(mat(f"       Δ{sup(l + 1)} w{sup(l + 1)} = ", ds[i + 1] @ params[i + 1].w))
        if masks:
            print(mat(f"       M{sup(l)} = ", masks[i]))
        print(mat(f"       σ'(Z{sup(l)}) = ", params[i].act.prime(zs[i])))
        print(mat(f"       Δ{sup(l)} = ", ds[i]))
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        print(f"  BP3  ∂C/∂b{sup(l)} = (1/m) Σ_n δ{sup(l)}_n, the mean of Δ{sup(l)}'s rows = {fmt(grads[i].b)}")
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        print(mat(f"  BP4  {dC}/∂w{sup(l)} = (1/m) Σ_n δ{sup(l)}_n ({row(l - 1)})ᵀ = (1/m) (Δ{sup(l)})ᵀ "
                  f"{M(l - 1)} = ", grads[i].w))
    totals = penalty.add(params, grads, args.digits) if penalty else grads  # ∂C/∂w^l = ∂C₀/∂w^l + the term's
    # each example's gradient norm from the same rows: ‖δ aᵀ‖_F = ‖δ‖ ‖a‖, ‖∂C_n/∂b‖ = ‖δ‖
    d_norms = [jnp.linalg.norm(d, axis=1) for d in ds]
    a_norms = [jnp.linalg.norm(a, axis=1) for a in handed]
    w_norms = [dn * an for dn, an in zip(d_norms, a_norms)]
    total = jnp.sqrt(sum(dn ** 2 * (an ** 2 + 1) for dn, an in zip(d_norms, a_norms)))
    print()
    print("each example's own gradient, from the same Δ^l and A^(l−1), none of them formed "
          f"(‖δ aᵀ‖ = ‖δ‖ ‖a‖; jax.grad of {C} gives only their mean):")
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        print(f"  ‖∂C_n/∂w{sup(l)}‖ = ‖δ{sup(l)}_n‖ ‖{row(l - 1)}‖ = {fmt(d_norms[i])} ⊙ {fmt(a_norms[i])} = "
              f"{fmt(w_norms[i])};  ‖∂C_n/∂b{sup(l)}‖ = ‖δ{sup(l)}_n‖")
    print(f"  ‖∂C_n/∂θ‖ = (Σ_l ‖δ^l_n‖² (‖a^(l−1)_n‖² + 1))^½ = {fmt(total)}")
    record.update(sizes=[n_in] + [layer.n_out for layer in params], activation=hidden_act.name,
                  output_activation=out_act.name, cost_function=cost, batch=m, x=_list(X), y=_list(Y),
                  labels=labels, costs=_list(costs), cost=c, layers=[
                      dict(layer=i + 2, kind="fully_connected", w=_list(layer.w), b=_list(layer.b), z=_list(zs[i]),
                           a=_list(acts[i + 1]), delta=_list(ds[i]), grad_w=_list(grads[i].w),
                           grad_b=_list(grads[i].b), delta_norms=_list(d_norms[i]), grad_w_norms=_list(w_norms[i]),
                           **(dict(grad_w_total=_list(totals[i].w)) if penalty else {}))
                      for i, layer in enumerate(params)])
    return _batch_end(args, record, params, cost_fn, X, Y, masks, c, grads, auto, each, total, totals, penalty)


def _print_conv_batch(args, params: list, cost: str, X, Y, labels, taken, masks, costs, ds, handed, zs, acts,
                      grads, penalty) -> tuple:
    """fbp trace --batch for a network with convolutional layers: each example traced as one is (its maps; w^l
    and b^l with the first), then BP3 and BP4 of the mean cost, (1/m) Σ_n of each example's sums over the
    positions, and each example's own gradient norm: a convolutional layer's formed from its δ̃^l and inputs,
    since a sum over the positions does not factor as ‖δ‖ ‖a‖ does. Returns (the layers' record, each
    example's gradient norm, the gradient with --l2's or --l1's term)."""
    import jax
    import jax.numpy as jnp

    import fbp

    fmt = functools.partial(_fmt, digits=args.digits)
    m, L = X.shape[0], len(params) + 1
    C = "C₀" if penalty else "C"
    convs = [i for i, layer in enumerate(params) if isinstance(layer, fbp.Conv)]
    swept: dict = {i: [] for i in convs}  # c^l of each example, before the pooling
    unpooled: dict = {i: [] for i in convs}  # δ̃^l of each example
    print("forward, an example at a time: z^l = w^l a^(l−1) + b^l, a^l = σ(z^l)" + (
        f"; dropout hands on m^l ⊙ a^l, m^l the example's mask, a unit's 0 (dropped, with probability "
        f"{args.dropout:g}) or 1/(1 − {args.dropout:g})" if masks else ""))
    _print_conv_rule(params)
    for n in range(m):
        def of_n(arrays):  # example n's row of each layer's
            return None if arrays is None else [a[n] for a in arrays]

        zs_n, acts_n, ds_n, handed_n, masks_n = of_n(zs), of_n(acts), of_n(ds), of_n(handed), of_n(masks)
        convolved = {i: params[i]._conv(handed_n[i]) for i in convs}
        print()
        print(f"example {n} of the mini-batch" + (f", {taken.split} image {taken.rows[n]} of {taken.name}"
                                                  if taken is not None else "")
              + ("" if n == 0 else " (w^l and b^l as for example 0)") + ":")
        print(f"input   a¹ = x, {_image_text(params[0].in_shape)}:")
        print(_maps("  a¹", X[n], params[0].in_shape, args.digits))
        print(f"target  y = {fmt(Y[n])}" + (f"  (class {labels[n]})" if labels is not None else ""))
        _print_forward(args, params, zs_n, acts_n, handed_n, convolved, masks_n, weights=n == 0)
        print(f"cost    {C}_{n} = {COST_TEXT.get(cost, cost).format(L=sup(L))} = {float(costs[n]):.{args.digits}f}")
        print("backward:")
        sent_back = _print_deltas(args, params, cost, Y[n], zs_n, acts_n, ds_n, handed_n, masks_n)
        for i in convs:
            swept[i].append(convolved[i])
            unpooled[i].append(sent_back[i])
    c = float(jnp.mean(costs))
    print()
    print(f"the mini-batch's cost  {C} = (1/m) Σ_n {C}_n = {c:.{args.digits}f}")
    if penalty:
        print(penalty.cost_line(c, params, args.digits))
    print("BP3 and BP4 of the mean cost: each example's sums over the positions, averaged over the examples")
    _print_sums(args, params, grads, masks, f"∂{C}", mean=True)
    totals = penalty.add(params, grads, args.digits) if penalty else grads  # ∂C/∂w^l = ∂C₀/∂w^l + the term's
    # each example's own gradient: a convolutional layer's formed (its sum over the positions), a fully
    # connected layer's norms from its δ and a, ‖δ aᵀ‖_F = ‖δ‖ ‖a‖, ‖∂C_n/∂b‖ = ‖δ‖
    w_norms, b_norms = [], []
    for i, layer in enumerate(params):
        if i in convs:
            formed = jax.vmap(layer.grads)(ds[i], handed[i])  # BP3 and BP4 of each example, one a row
            w_norms.append(jnp.sqrt(jnp.sum(jnp.square(formed.w).reshape(m, -1), axis=1)))
            b_norms.append(jnp.linalg.norm(formed.b.reshape(m, -1), axis=1))
        else:
            b_norms.append(jnp.linalg.norm(ds[i], axis=1))
            w_norms.append(b_norms[-1] * jnp.linalg.norm(handed[i], axis=1))
    total = jnp.sqrt(sum(w ** 2 + b ** 2 for w, b in zip(w_norms, b_norms)))
    print()
    print(f"each example's own gradient (jax.grad of {C} gives only their mean): a convolutional layer's formed from "
          f"its δ̃^l and inputs, whose sum over the positions does not factor; a fully connected layer's from ‖δ‖ ‖a‖, "
          f"none formed:")
    for i in range(len(params) - 1, -1, -1):
        l = i + 2
        a_text = f"(m{sup(l - 1)} ⊙ a{sup(l - 1)})" if masks and i > 0 else f"a{sup(l - 1)}"
        if i in convs:
            print(f"  ‖∂C_n/∂w{sup(l)}‖ = ‖Σ_{{x,y}} δ̃{sup(l)}_{{n,j,x,y}} {a_text}_{{n,i,x+p,y+q}}‖ = "
                  f"{fmt(w_norms[i])};  ‖∂C_n/∂b{sup(l)}‖ = ‖Σ_{{x,y}} δ{sup(l)}_{{n,j,x,y}}‖ = {fmt(b_norms[i])}")
        else:
            print(f"  ‖∂C_n/∂w{sup(l)}‖ = ‖δ{sup(l)}_n‖ ‖{a_text}_n‖ = {fmt(w_norms[i])};  ‖∂C_n/∂b{sup(l)}‖ = "
                  f"‖δ{sup(l)}_n‖ = {fmt(b_norms[i])}")
    print(f"  ‖∂C_n/∂θ‖ = (Σ_l ‖∂C_n/∂w^l‖² + ‖∂C_n/∂b^l‖²)^½ = {fmt(total)}")
    layers = []
    for i, layer in enumerate(params):
        entry = dict(layer=i + 2, kind="convolutional" if i in convs else "fully_connected", w=_list(layer.w),
                     b=_list(layer.b), z=_list(zs[i]), a=_list(acts[i + 1]), delta=_list(ds[i]),
                     grad_w=_list(grads[i].w), grad_b=_list(grads[i].b), grad_w_norms=_list(w_norms[i]),
                     grad_b_norms=_list(b_norms[i]))
        if i in convs:  # each example's maps, (maps, rows, columns), before the pooling
            entry.update(in_shape=list(layer.in_shape), pool=layer.pool, conv=_list(jnp.stack(swept[i])),
                         delta_unpooled=_list(jnp.stack(unpooled[i])))
        if penalty:
            entry.update(grad_w_total=_list(totals[i].w))
        layers.append(entry)
    return layers, total, totals


def _batch_header(args, params: list, cost: str, m: int, digits: Optional[int], taken, how: str) -> None:
    """A traced mini-batch's opening lines: the network, the numbering, ``how`` the examples are shown, and
    where they come from."""
    print(f"fbp trace: sizes={network_text(params)} activation={params[0].act.name} output={params[-1].act.name} "
          f"cost={cost} batch={m}" + (f" dropout={args.dropout:g}" if args.dropout else "")
          + _made(args, digits, taken, "inputs"))
    print(f"numbered as in the book's ch. 2: layer 1 is the input; w^l and b^l lead into layer l "
          f"(shown to {args.digits} decimals; computed in float64)")
    print(how)
    if taken is not None:
        print(f"the examples: {taken.split} images {', '.join(map(str, taken.rows))} of {taken.name} "
              f"({taken.evaluates()} rows), their classes {', '.join(map(str, taken.labels))}")
    print()


def _batch_end(args, record: dict, params: list, cost_fn, X, Y, masks, c: float, grads, auto, each, total, totals,
               penalty) -> int:
    """A traced mini-batch's last lines: the --lr step, and BP3 and BP4 against jax.grad of the mean cost, each
    example's gradient norm ``total`` against those of ``each``, its gradient by vmap(jax.grad); and their
    record."""
    import jax
    import jax.numpy as jnp

    import fbp

    m = X.shape[0]
    each_norms = jnp.sqrt(sum(jnp.sum(jnp.square(leaf).reshape(m, -1), axis=1) for leaf in jax.tree.leaves(each)))
    norm_worst = fbp.relative_error(total, each_norms)
    diff, worst = _autodiff_gap(grads, auto)
    if args.lr is not None:  # the book's update_mini_batch: w^l → w^l − (η/m) Σ_n ∂C_n/∂w^l
        _step(args, record, params, totals, penalty,  # the same units dropped after the step
              lambda stepped: float(fbp.loss(stepped, X, Y, cost_fn, "mean", masks)), c,
              f"a step of the book's SGD on this mini-batch, η = {args.lr:g}: w^l → w^l − (η/m) Σ_n ∂C_n/∂w^l"
              + (f" − η ({penalty.grad_text('^l')})" if penalty else "") + ", b^l → b^l − (η/m) Σ_n ∂C_n/∂b^l",
              (X, Y, cost_fn, masks))
    nudged, fd_worst = _finite_differences(params, X, Y, cost_fn, masks, grads)
    print()
    print(f"jax.grad of the same {'C₀' if penalty else 'C'}: the largest difference from BP3 and BP4 {diff:.1e} "
          f"(relative {worst:.1e}); {_nudged_text(nudged)}: relative {fd_worst:.1e}; vmap(jax.grad) of each C_n, "
          f"its gradient formed: the norms' relative difference {norm_worst:.1e}")
    record.update(example_grad_norms=_list(total), autodiff_max_difference=diff, autodiff_max_relative=worst,
                  finite_differences_max_relative=fd_worst, example_norms_max_relative=norm_worst,
                  dropout=args.dropout or None,
                  masks=None if masks is None else [_list(mk) for mk in masks])
    if penalty:
        record["penalty"] = penalty.record(c, params)
    return 0


def _dropout_masks(args, rs, params: list, m: int):
    """fbp.dropout_masks' 0 or 1/(1 − P) for each hidden unit of each of ``m`` examples (a row each), drawn
    from ``rs`` (--dropout P); None without dropout."""
    import jax.numpy as jnp

    if not args.dropout:
        return None
    return [jnp.asarray((rs.uniform(size=(m, layer.n_out)) >= args.dropout) / (1 - args.dropout))
            for layer in params[:-1]]


def _autodiff_gap(grads, auto) -> tuple:
    """BP3 and BP4's ``grads`` against jax.grad's ``auto``: (the largest difference, the largest relative one
    of a leaf)."""
    import jax
    import numpy as np

    import fbp

    pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(auto))]
    return (max(float(np.max(np.abs(a - b))) for a, b in pairs), max(fbp.relative_error(a, b) for a, b in pairs))


def _finite_differences(params: list, X, Y, cost, masks, grads) -> tuple:
    """The book's ch. 2 way to the gradient, before backpropagation: each weight and bias θ_i nudged both
    ways, (C(θ + h e_i) − C(θ − h e_i)) / 2h (fbp.check.finite_differences, dropout's ``masks`` held), two
    costs a parameter. Returns (the parameters, the largest relative difference from BP3 and BP4's ``grads``)."""
    import numpy as np
    from jax.flatten_util import ravel_pytree

    import fbp

    flat, _ = ravel_pytree(params)
    indices, quotients = fbp.check.finite_differences(params, X, Y, cost, "mean", indices=np.arange(flat.size),
                                                      masks=masks)
    return int(flat.size), fbp.relative_error(quotients, np.asarray(ravel_pytree(grads)[0])[indices])


def _nudged_text(n: int) -> str:
    return f"finite differences, the book's ch. 2 way (each of the {n} weights and biases nudged by ±h, {2 * n} costs)"


def _too_big(params) -> Optional[str]:
    """Why fbp trace will not print this network (a layer with more numbers than a page holds), or None."""
    import fbp

    if all(isinstance(layer, fbp.Dense) for layer in params):
        sizes = [params[0].n_in] + [layer.n_out for layer in params]
        return _too_wide(sizes) if max(sizes) > MAX_UNITS else None
    for i, layer in enumerate(params):
        if isinstance(layer, fbp.Conv):
            maps, channels, _, _ = layer.w.shape
            if max(layer.in_shape[1:]) > MAX_SIDE:
                return (f"layer {i + 2}, convolutional, takes {_image_text(layer.in_shape)}; fbp trace prints every "
                        f"number of its maps, so give images of {MAX_SIDE}×{MAX_SIDE} or smaller (fbp check "
                        f"compares a larger network's gradient with jax.grad)")
            if maps * channels > MAX_KERNELS:
                return (f"layer {i + 2}, convolutional, has {maps * channels} kernels ({maps} maps over {channels} "
                        f"channels); fbp trace prints every weight, so give {MAX_KERNELS} kernels a layer or fewer")
        elif max(layer.n_in, layer.n_out) > MAX_UNITS:
            maps = layer.n_in > MAX_UNITS and isinstance(params[i - 1], fbp.Conv)
            return (f"layer {i + 2}, fully connected, has {layer.n_out} units over {layer.n_in} inputs"
                    + (f" (layer {i + 1}'s maps, one after the other)" if maps else "")
                    + f"; fbp trace prints every weight, so give it {MAX_UNITS} or fewer of each"
                    + (": fewer maps, or more pooling, before it" if maps else ""))
    return None


def _units(lead: str, a, layer, digits: int) -> str:
    """A layer's units: a vector, or a convolutional layer's maps."""
    import fbp

    return _maps(lead, a, layer.out_shape, digits) if isinstance(layer, fbp.Conv) else f"{lead} = {_fmt(a, digits)}"


def _count(n: int, noun: str) -> str:
    """``1 number``, ``3 numbers``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _image_text(shape) -> str:
    """(channels, rows, columns) in words: "a 6×6 image", "2 maps of 4×4"."""
    channels, h, w = shape
    return (f"{'an' if str(h).startswith('8') or h in (11, 18) else 'a'} {h}×{w} image" if channels == 1
            else f"{channels} maps of {h}×{w}")


def _too_wide(sizes, dataset=None) -> str:
    if dataset is not None and sizes[0] > MAX_UNITS:  # --data's images, too many pixels for a fully connected layer
        return (f"--data {dataset.name}: its examples are {sizes[0]} numbers, and fbp trace shows a fully connected "
                f"layer of {MAX_UNITS} inputs at most; start the network with --conv, which shows the image as one "
                f"(like --conv 4:5:2 --sizes 64,10 for the bundled 8×8 digits)")
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


def _maps(lead: str, a, shape, digits: int) -> str:
    """A convolutional layer's units (or an image), ``a`` read as ``shape``
    (maps, rows, columns): a matrix a map, lead_0 = …, lead_1 = …"""
    import numpy as np

    maps = np.asarray(a, np.float64).reshape(shape)
    return "\n".join(_matrix(f"{lead}_{j} = ", m, digits) for j, m in enumerate(maps))


def _kernels(lead: str, w, digits: int) -> str:
    """A convolutional layer's kernels, (maps, channels, k, k): lead_{j,i} = … for map j over channel i."""
    import numpy as np

    w = np.asarray(w, np.float64)
    return "\n".join(_matrix(f"{lead}_{{{j},{i}}} = ", w[j, i], digits)
                     for j in range(w.shape[0]) for i in range(w.shape[1]))


def _matrix(lead: str, a, digits: int) -> str:
    """A matrix after ``lead``, a row a line, the columns aligned under one another."""
    import unicodedata

    import numpy as np

    a = np.asarray(a, np.float64)
    cells = [[_number(v, digits) for v in row] for row in a]
    width = max(len(cell) for row in cells for cell in row)
    rows = ["[" + ", ".join(cell.rjust(width) for cell in row) + "]" for row in cells]
    pad = " " * (sum(not unicodedata.combining(ch) for ch in lead) + 1)  # δ̃'s tilde takes no column
    return lead + "[" + (",\n" + pad).join(rows) + "]"

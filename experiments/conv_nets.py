"""Convolutional networks, the book's ch. 6 progression, with the conv layer's backward written by hand.

The book (NNDL ch. 6, `network3.py`) trains, on MNIST, one network after
another, each a step from the last: a fully connected [784, 100, 10]
(sigmoid hidden, softmax output, log-likelihood cost, SGD η = 0.1,
mini-batch 10), 97.80%; then a convolutional layer in front, 20 maps of
5×5 kernels with 2×2 max-pooling, 98.78%; then a second one, 40 maps of
5×5 over the first's 20, 99.06%; then ReLU in place of the sigmoid, with
η = 0.03 and L2 λ = 0.1, 99.23% (the book's figures, 60 epochs each, best
validation epoch). Here the same four networks, built from `fbp.Conv` and
`fbp.Dense`, trained by `fbp.train.fit` with the hand-written gradient:

- their validation and test accuracy, epoch by epoch (the test accuracy
  reported is that of the best validation epoch, as the book reports it);
- what the first layer learned: the 20 kernels of the one-conv network,
  drawn as the book draws them (ch. 6, "the 20 images correspond to 20
  different feature maps");
- whether the hand-written gradient trains as `jax.grad`'s does: each
  network's first epoch twice from the same start and the same batches,
  once with each gradient, and the largest difference between the
  parameters they end with, in float32 and in float64.

Data: Fashion-MNIST when installed (MNIST is not on this machine), else
scikit-learn's 8×8 digits. The book's inits differ a little from fbp's
`normalized` one (network3 draws weights with variance 1/fan-out and starts
the softmax layer at zero); fbp's is used for all four. `--quick` runs
digits, with kernels that fit 8×8 images, for 25 epochs (0.03 s each).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import fbp
from common import fashion_mnist_or_digits, parser, pyplot, save
from fbp import train as ftrain
from fbp.epoch import make_train_step

COST = "log_likelihood"


def networks(quick: bool):
    """(name, conv layers, hidden widths, hidden activation, η, L2 λ): the
    book's four ch. 6 networks, or versions that fit 8×8 images."""
    if quick:
        first, second = (8, 3, 2), (16, 2, 1)
    else:
        first, second = (20, 5, 2), (40, 5, 2)
    return [
        ("fully connected", [], [100], "sigmoid", 0.1, 0.0),
        (f"conv {first[0]}:{first[1]}:{first[2]}", [first], [100], "sigmoid", 0.1, 0.0),
        (f"+ conv {second[0]}:{second[1]}:{second[2]}", [first, second], [100], "sigmoid", 0.1, 0.0),
        ("+ ReLU, η 0.03, λ 0.1", [first, second], [100], "relu", 0.03, 0.1),
    ]


def init(ds, conv, hidden, activation, seed):
    key = jax.random.key(seed)
    sizes = hidden + [ds.n_classes]
    if not conv:
        return fbp.init_mlp(key, [ds.n_in] + sizes, activation=activation, output_activation="softmax")
    side = int(round(ds.n_in ** 0.5))
    return fbp.init_convnet(key, (side, side), conv, sizes, activation=activation, output_activation="softmax")


@jax.jit
def max_apart(a, b):
    """The largest |difference| between two pytrees of the same shape (params or gradients)."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(u - v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))]))


def hand_vs_autodiff(ds, params, lr, lmbda, seed, sizes):
    """One epoch over the first n training images (each n of ``sizes``) with
    each gradient, from the same parameters and batches, in float32 and in
    float64: the largest |difference| between the parameters they end with,
    and the largest parameter, for scale."""
    out = {}
    for dtype in (jnp.float32, jnp.float64):
        start = jax.tree.map(lambda a: a.astype(dtype), params)
        for n in sizes:
            X, Y = ds.train.X[:n].astype(dtype), ds.train.Y[:n].astype(dtype)
            ends = {}
            for grad in ("hand", "autodiff"):
                r = ftrain.fit(start, (X, Y), cost=COST, epochs=1, batch_size=10, key=jax.random.key(seed + 1),
                               optimizer=ftrain.make_optimizer("sgd", lr, l2=lmbda, n_train=len(ds.train.X)),
                               grad=grad, monitor_training=False, monitor_evaluation=False)
                ends[grad] = r.params
            diff = float(max_apart(ends["hand"], ends["autodiff"]))
            scale = float(max_apart(ends["autodiff"], jax.tree.map(jnp.zeros_like, ends["autodiff"])))
            out[f"{jnp.dtype(dtype).name}, {len(X)} examples"] = dict(
                dtype=jnp.dtype(dtype).name, examples=len(X), max_abs_difference=diff, max_abs_param=scale)
    return out


def where_they_part(ds, params, lr, lmbda, seed, n):
    """The two gradients' float32 runs step by step in lockstep over ``n``
    shuffled training images: the first step after which their parameters
    are more than 1e-5 apart (a hundred times float32's rounding of them;
    None: they never are), and, at that step's mini-batch, how far the two
    gradients are apart at the same parameters (rounding) and how far the
    hand-written gradient moves between the two runs' parameters (a jump
    there is a kink crossed: a ReLU unit at 0, or a pooling block whose
    largest unit changed)."""
    opt = ftrain.make_optimizer("sgd", lr, l2=lmbda, n_train=len(ds.train.X))
    steps = {g: jax.jit(make_train_step(opt, COST, grad=g)) for g in ("hand", "autodiff")}
    order = np.random.default_rng(seed).permutation(len(ds.train.X))[:n]
    X, Y = ds.train.X[order], ds.train.Y[order]
    p, s = {g: params for g in steps}, {g: opt.init(params) for g in steps}

    def apart(a, b):
        return float(max_apart(a, b))

    gap, gaps, parted = 0.0, [], None
    for t in range(n // 10):
        xb, yb = X[10 * t: 10 * t + 10], Y[10 * t: 10 * t + 10]
        before = dict(p)
        for g in steps:
            p[g], s[g], _ = steps[g](p[g], s[g], xb, yb)
        last, gap = gap, apart(p["hand"], p["autodiff"])
        gaps.append(float(f"{gap:.2g}"))
        if gap > 1e-5 and parted is None:
            P, Q = before["hand"], before["autodiff"]
            hand_at_P = fbp.batch_backward(P, xb, yb, COST)
            parted = dict(step=t + 1, apart_before=last, apart_after=gap,
                          hand_vs_jax_grad_same_params=apart(hand_at_P, fbp.autodiff_grad(P, xb, yb, COST)),
                          hand_at_both_runs_params=apart(hand_at_P, fbp.batch_backward(Q, xb, yb, COST)))
    return dict(parted or dict(step=None), steps=n // 10, final_apart=gap, apart_by_step=gaps)


def run(ds, conv, hidden, activation, lr, lmbda, epochs, seed):
    params = init(ds, conv, hidden, activation, seed)
    t0 = time.perf_counter()
    r = ftrain.fit(params, ds.train, optimizer=ftrain.make_optimizer("sgd", lr, l2=lmbda, n_train=len(ds.train.X)),
                   cost=COST, epochs=epochs, batch_size=10, key=jax.random.key(seed + 1), evaluation=ds.validation,
                   monitor_training=False)
    seconds = time.perf_counter() - t0
    test = ftrain.evaluate(r.best_params, ds.test.X, ds.test.Y, COST)
    val = [e["evaluation_accuracy"] for e in r.history]
    return dict(
        conv=conv, hidden=hidden, activation=activation, lr=lr, l2=lmbda, epochs=epochs, seconds=seconds,
        seconds_per_epoch=seconds / epochs, validation_accuracy=[round(v, 5) for v in val],
        best_validation_accuracy=max(val), best_epoch=r.best_epoch, test_accuracy_at_best=int(test["correct"]) / len(ds.test),
        test_cost_at_best=float(test["cost"]),
        parameters=int(sum(np.size(leaf) for leaf in jax.tree.leaves(params))),
        kernels=np.asarray(r.best_params[0].w) if conv else None,
    )


def draw(results, kernels, side_note):
    plt = pyplot()
    fig, (acc_ax, k_ax) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw=dict(width_ratios=[1.5, 1]))
    for name, r in results["runs"].items():
        epochs = np.arange(1, len(r["validation_accuracy"]) + 1)
        acc_ax.plot(epochs, 100 * np.asarray(r["validation_accuracy"]),
                    label=f"{name}: test {100 * r['test_accuracy_at_best']:.2f}%")
    acc_ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy (%)")
    acc_ax.legend(fontsize=8, loc="lower right")
    acc_ax.grid(alpha=0.3)
    acc_ax.set_title(f"{results['data']}: {side_note}", fontsize=9)
    # the kernels of the one-conv network, each map's k×k weights as a small
    # image, dark for large (the book's convention)
    maps, k = kernels.shape[0], kernels.shape[-1]
    cols = min(maps, 10)
    rows = -(-maps // cols)
    board = np.full((rows * (k + 1) - 1, cols * (k + 1) - 1), np.nan)
    for j in range(maps):
        r, c = divmod(j, cols)
        board[r * (k + 1): r * (k + 1) + k, c * (k + 1): c * (k + 1) + k] = kernels[j, 0]
    k_ax.imshow(board, cmap="binary", interpolation="nearest")
    k_ax.set_axis_off()
    k_ax.set_title(f"the {maps} learned {k}×{k} kernels of the first conv layer", fontsize=9)
    return fig


def main():
    jax.config.update("jax_enable_x64", True)  # for the float64 runs; the training runs stay float32
    p = parser(__doc__)
    p.add_argument("--epochs", type=int, default=None, help="epochs per network (default 20; 25 with --quick)")
    args = p.parse_args()
    ds = fashion_mnist_or_digits(args.quick)
    epochs = args.epochs or (25 if args.quick else 20)
    results = dict(data=ds.name, epochs=epochs, batch_size=10, cost=COST, init="normalized", seed=args.seed,
                   book_mnist_60_epochs={"fully connected": 0.9780, "conv 20:5:2": 0.9878, "+ conv 40:5:2": 0.9906,
                                         "+ ReLU, η 0.03, λ 0.1": 0.9923},
                   runs={}, hand_vs_autodiff={}, where_float32_runs_part={})
    kernels = None
    for name, conv, hidden, activation, lr, lmbda in networks(args.quick):
        params = init(ds, conv, hidden, activation, args.seed)
        sizes = [len(ds.train.X)] if args.quick else [1000, 5000]
        agree = results["hand_vs_autodiff"][name] = hand_vs_autodiff(ds, params, lr, lmbda, args.seed, sizes)
        part = results["where_float32_runs_part"][name] = where_they_part(ds, params, lr, lmbda, args.seed, sizes[-1])
        r = run(ds, conv, hidden, activation, lr, lmbda, epochs, args.seed)
        if kernels is None and r["kernels"] is not None:
            kernels = r["kernels"]
            results["first_conv_kernels"] = dict(network=name, w=kernels)
        del r["kernels"]
        results["runs"][name] = r
        print(f"{ds.name} {name:24s} best validation {r['best_validation_accuracy']:.4f} (epoch {r['best_epoch']}), "
              f"test {r['test_accuracy_at_best']:.4f} | {r['seconds_per_epoch']:.2f} s/epoch | "
              f"hand vs jax.grad, params after one epoch: "
              + ", ".join(f"{k} {a['max_abs_difference']:.1e}" for k, a in agree.items())
              + (f"; float32 runs part at step {part['step']}: {part['apart_before']:.1e} -> "
                 f"{part['apart_after']:.1e} apart, gradients at the same params "
                 f"{part['hand_vs_jax_grad_same_params']:.1e} apart, hand's at both runs' params "
                 f"{part['hand_at_both_runs_params']:.1e}" if part["step"] else ""))
    fig = draw(results, kernels, f"the book's ch. 6 networks, mini-batch 10, {epochs} epochs, seed {args.seed}")
    save(args.out, "conv_nets", results, fig)


if __name__ == "__main__":
    main()

"""Overfitting, and what L2 and L1 regularization, dropout and expanded data do about it (NNDL ch. 3).

The book's demonstration: train a [784, 30, 10] network (sigmoid output,
cross-entropy cost, the `large` N(0, 1) init, SGD η = 0.5, mini-batch 10) on
only the first 1,000 training images for 400 epochs, monitoring cost and
accuracy on those 1,000 and on held-out data. The training cost falls all
the way; the held-out accuracy stops improving long before, and the
held-out cost turns up: the network learns the peculiarities of its 1,000
images. Then the same run with the book's L2 term, λ = 0.1
(w → (1 − ηλ/n) w − η∇C with n = 1,000, `make_optimizer(l2=0.1, n_train=1000)`,
optax's `add_decayed_weights` on the weights, not the biases); then with
its L1 term instead, λ = 0.1 (w → w − (ηλ/n) sgn(w) − η∇C), which the book
says concentrates the weight in a few connections and drives the others
toward 0 (measured here: the share of weights within 0.01 of 0, and the
share of Σ|w| the largest tenth hold). Then, with neither, the book's
other remedy of ch. 3, dropout: each hidden unit dropped
with probability 0.5 at each step (`fit(dropout=0.5)`; the kept ones scaled
by 2 while training, so the whole network is monitored and tested as it is).
Last, its third: the same 1,000 images artificially expanded, each with
its copies shifted a pixel up, down, left and right (`fbp.data.expand`, the
book's `expand_mnist.py`), 5,000 examples.

Here the held-out data is the 10,000 validation images (the book monitors
its test set in this demonstration, and then explains why it should not);
the test set is used once, at the end. Data: Fashion-MNIST when installed
(MNIST is not on this machine), else digits; `--quick` runs digits
([64, 30, 10], 300 training images, 150 epochs).
"""

import time

import jax
import numpy as np

import fbp
from common import fashion_mnist_or_digits, parser, save
from fbp import data as fdata
from fbp import plot as fplot
from fbp import train as ftrain

COST = "cross_entropy"


def run(ds, n_train, epochs, lmbda, seed, tail, lr=0.5, dropout=0.0, l1=0.0, expand=False):
    params = fbp.init_mlp(jax.random.key(seed), [ds.n_in, 30, ds.n_classes], output_activation="sigmoid",
                          init="large")
    X, Y = ds.train.X[:n_train], ds.train.Y[:n_train]
    if expand:  # the same images and their one-pixel shifts: 5 × n_train examples, n_train images
        X, Y = fdata.expand(fdata.Split(X, Y))
    t0 = time.perf_counter()
    # With λ: each epoch's L2 (or L1) term beside the cross-entropy, the two making the cost the steps descend
    def terms(p):
        return ftrain.penalty_terms(p, len(X), l2=lmbda, l1=l1)

    r = ftrain.fit(params, (X, Y), optimizer=ftrain.make_optimizer("sgd", lr, l2=lmbda, l1=l1, n_train=len(X)),
                   cost=COST, epochs=epochs, batch_size=10, key=jax.random.key(seed + 1), evaluation=ds.validation,
                   monitor=terms if lmbda or l1 else None, dropout=dropout)
    seconds = time.perf_counter() - t0
    test = ftrain.evaluate(r.params, ds.test.X, ds.test.Y, COST)
    h = r.history
    val_acc = [e["evaluation_accuracy"] for e in h]
    val_cost = [e["evaluation_cost"] for e in h]
    w = np.sort(np.abs(np.concatenate([np.asarray(layer.w, np.float64).ravel() for layer in r.params])))[::-1]
    return dict(
        lmbda=lmbda, l1=l1, dropout=dropout, expand=expand, examples=len(X), seconds=seconds, history=h,
        curves={k: [round(e[k], 5) for e in h] for k in
                ("training_cost", "training_accuracy", "evaluation_cost", "evaluation_accuracy", "l2_cost", "l1_cost")
                if k in h[0]},
        final_training_accuracy=h[-1]["training_accuracy"], final_training_cost=h[-1]["training_cost"],
        final_l2_cost=h[-1].get("l2_cost", 0.0), final_l1_cost=h[-1].get("l1_cost", 0.0),
        # how the weight is spread: the share of weights within 0.01 of 0, and the share of Σ|w| that the
        # largest tenth of them hold (the book: L1 concentrates it in a few connections, the rest near 0)
        near_zero_fraction=float(np.mean(w < 0.01)), top_tenth_share=float(np.sum(w[: len(w) // 10]) / np.sum(w)),
        best_validation_accuracy=max(val_acc), best_validation_epoch=int(np.argmax(val_acc)) + 1,
        final_validation_accuracy=val_acc[-1], tail_validation_accuracy=float(np.mean(val_acc[-tail:])),
        lowest_validation_cost=min(val_cost), lowest_validation_cost_epoch=int(np.argmin(val_cost)) + 1,
        final_validation_cost=val_cost[-1], tail_validation_cost=float(np.mean(val_cost[-tail:])),
        test_accuracy=int(test["correct"]) / len(ds.test),
        weight_norm=float(sum(np.sum(np.square(np.asarray(layer.w))) for layer in r.params) ** 0.5),
    )


def main():
    p = parser(__doc__)
    p.add_argument("--lmbda", type=float, default=0.1, help="the book's λ for the regularized run")
    p.add_argument("--l1", type=float, default=0.1, help="the book's λ for the L1 run")
    p.add_argument("--dropout", type=float, default=0.5, help="the dropout rate of the last run (the book's 0.5)")
    p.add_argument("--seeds", type=int, default=3, help="runs per setting")
    args = p.parse_args()
    ds = fashion_mnist_or_digits(args.quick)
    n_train, epochs, tail = (300, 150, 30) if args.quick else (1000, 400, 100)
    seeds = [args.seed] if args.quick else [args.seed + 10 * k for k in range(args.seeds)]
    results = dict(data=ds.name, sizes=[ds.n_in, 30, ds.n_classes], n_train=n_train, epochs=epochs, lr=0.5,
                   cost=COST, init="large", seeds=seeds, tail_epochs=tail, runs={}, mean={})
    settings = (("unregularized", 0.0, 0.0, 0.0, False), (f"L2, λ = {args.lmbda:g}", args.lmbda, 0.0, 0.0, False),
                (f"L1, λ = {args.l1:g}", 0.0, args.l1, 0.0, False),
                (f"dropout, p = {args.dropout:g}", 0.0, 0.0, args.dropout, False),
                ("expanded ×5 (shifts)", 0.0, 0.0, 0.0, True))
    for name, lmbda, l1, dropout, expand in settings:
        runs = [run(ds, n_train, epochs, lmbda, seed, tail, dropout=dropout, l1=l1, expand=expand) for seed in seeds]
        results["runs"][name] = runs
        keys = [k for k, v in runs[0].items()
                if isinstance(v, float) and k not in ("lmbda", "l1", "dropout", "expand", "seconds")]
        mean = results["mean"][name] = {k: float(np.mean([r[k] for r in runs])) for k in keys}
        print(f"{ds.name} {name:16s} (mean of {len(seeds)}) training acc {mean['final_training_accuracy']:.4f} "
              f"cost {mean['final_training_cost']:.4f} (+ L2, L1 terms {mean['final_l2_cost']:.4f}, "
              f"{mean['final_l1_cost']:.4f}) | validation acc best {mean['best_validation_accuracy']:.4f}, "
              f"last {tail} epochs {mean['tail_validation_accuracy']:.4f}; cost lowest "
              f"{mean['lowest_validation_cost']:.4f}, last {tail} epochs {mean['tail_validation_cost']:.4f} | "
              f"test acc {mean['test_accuracy']:.4f} | ‖w‖ {mean['weight_norm']:.1f}, |w| < 0.01: "
              f"{mean['near_zero_fraction']:.3f}, top tenth {mean['top_tenth_share']:.3f} | "
              f"{sum(r['seconds'] for r in runs):.1f} s")
    fig = fplot.figure([(f"{name} (seed {seeds[0]})", runs[0]["history"]) for name, runs in results["runs"].items()],
                       held_out="validation")
    fig.suptitle(f"{ds.name}: [{ds.n_in}, 30, {ds.n_classes}] on {n_train} training images, η = 0.5, "
                 f"mini-batch 10 (solid: those {n_train}; dashed: the validation set)", fontsize=10)
    fig.tight_layout()
    for runs in results["runs"].values():  # the JSON keeps the four curves of the plotted run, not every record
        for k, r in enumerate(runs):
            del r["history"]
            if k:
                del r["curves"]
    save(args.out, "overfitting", results, fig)


if __name__ == "__main__":
    main()

"""What the lists of ``fbp evaluate --explain`` show: products or cosines.

``--explain ROW`` lists the training examples n whose gradients g_n have the
largest and the most negative products g_n · g_x with a test example's g_x
(a step of SGD on n changes x's cost by about −η g_n · g_x: TracIn, Pruthi et
al. 2020); ``--explain-by cosine`` ranks by g_n · g_x / (‖g_n‖ ‖g_x‖)
instead. A product grows with ‖g_n‖, and the examples of the largest
gradients late in training are those the network has not fitted, mislabelled
ones above all (experiment 8): do they head the lists of many test examples
whatever those show, where the cosine lists examples like the one explained?

The test: flip the labels of 2% of the training set (as experiment 8), train
the default network of ``fbp train`` ([n_in, 100, 10], sigmoid, softmax and
log-likelihood, SGD η = 0.5, mini-batch 10, 30 epochs) on the noisy labels,
and for the first 1,000 test examples, each with its true class as the
target, rank all training examples by product and by cosine, at the last
epoch's params and over the checkpoints of epochs 10, 20 and 30 (each
weighing η × 10 epochs, as ``--over-checkpoints`` does). Reported, for the
five of each list ("helps", "hurts") and each ranking: the share of flipped
examples (2% by chance), the share of "helps" whose (noisy) label is the test
example's class, how many distinct training examples the lists hold (out of
5,000), how often the most listed one recurs, and the median ‖g_n‖ of the
listed examples against all; and for three test examples, their "helps" by
each ranking, drawn.

Beside TracIn's two, influence functions (Koh & Liang 2017, ``--explain-by
influence``): g_nᵀ H̃⁻¹ g_x at the last epoch's params, H̃ the damped K-FAC
Gauss-Newton matrix of the (noisy) training set, which follows the trained
minimum rather than one step; and ``influence-cosine``, the same over
√(g_nᵀ H̃⁻¹ g_n) √(g_xᵀ H̃⁻¹ g_x), which ranks as RelatIF does (Barshan et
al. 2020). The same shares for the damping ε from 10⁻⁴ to 1.

Data: Fashion-MNIST when installed, else digits; ``--quick`` runs digits
([64, 30, 10], 5% flipped, all 360 test examples).
"""

import time

import jax
import numpy as np

import fbp
from common import fashion_mnist_or_digits, parser, pyplot, save
from fbp import stats
from fbp import train as ftrain
from mislabelled import COST, LR, flip_labels

LISTED = 5  # each way, as --explain lists
SAVED = (10, 20, 30)  # the epochs whose params make the checkpoints of the TracIn sum
DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # influence's ε: the default (stats.INFLUENCE_DAMPING) and around it


def lists_of(scores):
    """For each column of ``scores`` (n, k), its LISTED largest positive rows ("helps") and most negative rows
    ("hurts"), as --explain picks them (a list is shorter where fewer are of that sign)."""
    order = np.argsort(-scores, axis=0, kind="stable")
    helps = [[r for r in order[:LISTED, j] if scores[r, j] > 0] for j in range(scores.shape[1])]
    hurts = [[r for r in order[::-1][:LISTED, j] if scores[r, j] < 0] for j in range(scores.shape[1])]
    return helps, hurts


def summary(helps, hurts, flipped, labels, test_labels, norms):
    """What a ranking's lists hold, over all the test examples."""
    out = {}
    for name, lists in (("helps", helps), ("hurts", hurts)):
        rows = np.array([r for rows in lists for r in rows], int)
        out[name] = dict(
            listed=len(rows), flipped_share=float(flipped[rows].mean()),
            same_class_share=float(np.mean([labels[r] == test_labels[j] for j, rows in enumerate(lists)
                                            for r in rows])),
            distinct=len(set(rows.tolist())), most_repeated=int(np.bincount(rows).max()),
            median_norm_listed=float(np.median(norms[rows])))
    return out


def show(over: str, by: str, s: dict, fraction: float, median_norm: float) -> None:
    """A ranking's two lines: what its "helps" and "hurts" hold (``summary``'s)."""
    for name in ("helps", "hurts"):
        e = s[name]
        print(f"  {over:>18}, by {by:7}: {name} {e['flipped_share']:.3f} flipped (chance {fraction:.2f})"
              + (f", {e['same_class_share']:.3f} of the test example's class" if name == "helps" else "")
              + f", {e['distinct']} distinct of {e['listed']}, the most listed {e['most_repeated']} times, "
              f"median ‖g_n‖ {e['median_norm_listed']:.3g} (all {median_norm:.3g})")


def main():
    p = parser(__doc__)
    p.add_argument("--fraction", type=float, default=None, help="fraction of training labels flipped "
                   "(default 0.02; 0.05 with --quick)")
    p.add_argument("--examples", type=int, default=1000, help="test examples explained (--quick: all of digits')")
    args = p.parse_args()
    ds = fashion_mnist_or_digits(args.quick)
    fraction = args.fraction if args.fraction is not None else (0.05 if args.quick else 0.02)
    hidden = 30 if args.quick else 100
    n_test = len(ds.test) if args.quick else min(args.examples, len(ds.test))
    X, Y_true = ds.train.X, ds.train.Y
    Y, flipped = flip_labels(Y_true, fraction, args.seed)
    params = fbp.init_mlp(jax.random.key(args.seed), [ds.n_in, hidden, ds.n_classes], output_activation="softmax")
    saved = {}

    def monitor(p):
        saved[len(saved) + 1] = p
        return {}

    t0 = time.perf_counter()
    r = ftrain.fit(params, (X, Y), optimizer=ftrain.make_optimizer("sgd", LR), cost=COST, epochs=max(SAVED),
                   batch_size=10, key=jax.random.key(args.seed + 1000), monitor_training=False, monitor=monitor)
    trained = time.perf_counter() - t0
    test_X, test_Y = ds.test.X[:n_test], ds.test.Y[:n_test]
    accuracy = int(ftrain.evaluate(r.params, ds.test.X, ds.test.Y, COST)["correct"]) / len(ds.test)
    labels, test_labels = Y.argmax(1), test_Y.argmax(1)
    results = dict(data=ds.name, sizes=[ds.n_in, hidden, ds.n_classes], n_train=len(X), fraction=fraction,
                   flipped=int(flipped.sum()), lr=LR, batch_size=10, cost=COST, epochs=max(SAVED),
                   test_accuracy=accuracy, explained=n_test, seconds_training=trained, by={})
    print(f"{ds.name}: {fraction:.0%} of {len(X)} training labels flipped ({int(flipped.sum())}); "
          f"[{ds.n_in}, {hidden}, {ds.n_classes}] trained {max(SAVED)} epochs in {trained:.1f} s, test accuracy "
          f"{accuracy:.4f}; the lists of {n_test} test examples, each with its true class:")
    shown = {}
    for over, checkpoints in (("last epoch", [(r.params, 1.0)]),
                              (f"epochs {', '.join(map(str, SAVED))}", [(saved[e], LR * 10) for e in SAVED])):
        t0 = time.perf_counter()
        dots = np.asarray(stats.tracin(checkpoints, X, Y, COST, test_X, test_Y, chunk_size=ftrain.chunk_for(params)),
                          np.float64)
        norms = np.sqrt(np.asarray(stats.self_influence(checkpoints, X, Y, COST), np.float64))
        own = np.sqrt(np.asarray(stats.self_influence(checkpoints, test_X, test_Y, COST), np.float64))
        seconds = time.perf_counter() - t0
        cosines = dots / np.maximum(norms[:, None] * own[None, :], np.finfo(np.float64).tiny)
        results["by"][over] = dict(seconds=seconds, median_norm_all=float(np.median(norms)))
        for by, scores in (("product", dots), ("cosine", cosines)):
            helps, hurts = lists_of(scores)
            s = results["by"][over][by] = summary(helps, hurts, flipped, labels, test_labels, norms)
            shown[over, by] = helps
            show(over, by, s, fraction, np.median(norms))
        print(f"  {over:>18}: {seconds:.1f} s for the products and norms")
        if over != "last epoch":
            continue
        # Influence functions at the trained params (one network: no sum over checkpoints), H̃ the damped K-FAC
        # Gauss-Newton matrix of the (noisy) training set; ranked by g_nᵀ H̃⁻¹ g_x and by its cosine in H̃⁻¹'s lengths
        t0 = time.perf_counter()
        chunk = ftrain.chunk_for(r.params)
        factors = stats.kfac_factors(r.params, X, Y, COST, chunk_size=chunk)
        results["influence"] = {}
        for eps in sorted(DAMPINGS, key=lambda e: e != stats.INFLUENCE_DAMPING):  # the default first, timed
            infl = np.asarray(stats.influence(r.params, X, Y, COST, test_X, test_Y, factors=factors, damping=eps,
                                              chunk_size=chunk), np.float64)
            own_h = np.asarray(stats.influence_diagonal(r.params, X, Y, COST, factors=factors, damping=eps,
                                                        chunk_size=chunk), np.float64)
            own_x = np.asarray(stats.influence_diagonal(r.params, test_X, test_Y, COST, factors=factors,
                                                        damping=eps), np.float64)
            if eps == stats.INFLUENCE_DAMPING:
                seconds = time.perf_counter() - t0
            relative = infl / np.maximum(np.sqrt(own_h)[:, None] * np.sqrt(own_x)[None, :], np.finfo(np.float64).tiny)
            results["influence"][f"{eps:g}"] = {}
            for by, scores in (("influence", infl), ("influence-cosine", relative)):
                helps, hurts = lists_of(scores)
                s = summary(helps, hurts, flipped, labels, test_labels, norms)
                results["influence"][f"{eps:g}"][by] = s
                if eps != stats.INFLUENCE_DAMPING:
                    continue
                results["by"][over][by] = s
                shown[over, by] = helps
                show(over, by, s, fraction, np.median(norms))
        results["by"][over]["seconds_influence"] = seconds
        print(f"  {over:>18}: {seconds:.1f} s for the K-FAC factors, the influences and their norms (damping "
              f"{stats.INFLUENCE_DAMPING:g})")
        for eps in DAMPINGS:
            by = results["influence"][f"{eps:g}"]
            print(f"  damping {eps:>6g}: helps flipped by influence {by['influence']['helps']['flipped_share']:.3f}, "
                  f"by its cosine {by['influence-cosine']['helps']['flipped_share']:.3f}; of the test example's "
                  f"class {by['influence']['helps']['same_class_share']:.3f} and "
                  f"{by['influence-cosine']['helps']['same_class_share']:.3f}")

    plt = pyplot()
    picks = list(range(3))
    rows = [(j, by) for j in picks for by in ("product", "cosine", "influence", "influence-cosine")]
    fig, axes = plt.subplots(len(rows), LISTED + 1, figsize=(1.5 * (LISTED + 1), 1.6 * len(rows)))
    side = int(round(np.sqrt(ds.n_in)))
    for (j, by), ax_row in zip(rows, axes):
        for ax in ax_row:
            ax.set_axis_off()
        ax_row[0].imshow(test_X[j].reshape(side, side), cmap="gray_r")
        ax_row[0].set_title(f"test {j}, class {test_labels[j]}\nlisted by {by}", fontsize=7)
        for ax, n in zip(ax_row[1:], shown["last epoch", by][j]):
            ax.imshow(X[n].reshape(side, side), cmap="gray_r")
            ax.set_title(f"row {n}, label {labels[n]}" + (" (flipped)" if flipped[n] else ""), fontsize=7,
                         color="red" if flipped[n] else "black")
    fig.suptitle(f"{ds.name}, {fraction:.0%} of the labels flipped: the training examples that help each test "
                 f"example most,\nby g_n · g_x, by its cosine, by influence g_nᵀ H̃⁻¹ g_x and by its cosine",
                 fontsize=9)
    save(args.out, "explanations", results, fig)


if __name__ == "__main__":
    main()

"""Do the training examples ``--explain`` lists matter? Remove them and train again.

``fbp evaluate --explain ROW`` and ``fbp predict --explain`` list the
training examples that help an example most (their removal should raise its
cost) and hurt it most (their removal should lower it), ranked by the
product g_n · g_x (TracIn: what a step on n does), its cosine, influence
g_nᵀ H̃⁻¹ g_x (Koh & Liang 2017, H̃ the K-FAC Gauss-Newton matrix: what
weighing n up does at the trained minimum) or influence's cosine in H̃⁻¹'s
lengths (``--explain-by``), or by the product summed over the params of
epochs 10, 20 and 30, each weighing η × 10 epochs (TracIn over checkpoints,
``--over-checkpoints``). Experiment 13 asked what kind of examples each
ranking lists; this one asks what the network does without them.

The test: the default network of ``fbp train`` on digits ([64, 100, 10],
sigmoid, softmax and log-likelihood, SGD η = 0.5, mini-batch 10, 30 epochs,
seed 0), and for each of the first test examples (its true class the
target) the k training examples (k = 10 and 40 of 1,257) of the largest
scores by each ranking, then of the most negative, removed and the network
trained again from the same initial params with the same key; against k
removed at random (two draws). Reported for each: how the example's cost
moves (the median of new / old, and the share of examples whose cost went
the way the list says), and how often its predicted class changes; and how
well influence's own forecast of the change, Σ_{n removed} g_nᵀ H̃⁻¹ g_x / N,
and the product's, (epochs · η / m) Σ g_n · g_x, the steps on n that
removal takes away, rank the changes measured (Spearman's ρ over every
example and removal). Last, influence's lists at the damping ε from 10⁻⁵
to 1 (k = 40), removed likewise.

``--conv`` does it all for a convolutional network, 10 maps of 3×3
kernels over the 8×8 images with 2×2 max-pooling, then [100, 10] (the
book's ch. 6 kind, ``fbp train --conv 10:3:2 --sizes 64,100,10``): influence
then uses KFC's factors for the convolution (Grosse & Martens 2016), which
take its positions as uncorrelated and alike; written to removals_conv.

Digits only: a run takes 0.05 s there (0.33 s with ``--conv``), so the
~3,400 retrainings take a few minutes (a Fashion-MNIST run takes 15 s).
``--quick`` explains 10 test examples with k = 10 only, at the dampings
10⁻⁵, 10⁻³ (the default) and 1.
"""

import time

import jax
import numpy as np

import fbp
from common import parser, pyplot, save
from fbp import data as fdata
from fbp import stats
from fbp import train as ftrain

COST = "log_likelihood"
LR, BATCH, EPOCHS = 0.5, 10, 30  # fbp train's defaults
RANKINGS = ("product", "cosine", "influence", "influence-cosine", "tracin")
SAVED = (10, 20, 30)  # the epochs whose params make the checkpoints of "tracin", the product summed over them
CONV = [(10, 3, 2)]  # --conv's convolutional layer: (maps, k, pool)
RANDOM_DRAWS = 2
DAMPINGS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # influence's ε, for the largest k: the default and around it
QUICK_DAMPINGS = (1e-5, 1e-3, 1.0)  # --quick's: the ends and the default


def spearman(a, b) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks (ties in their order: the values here are floats)."""
    ra, rb = (np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main():
    p = parser(__doc__)
    p.add_argument("--examples", type=int, default=100, help="test examples explained (--quick: 10)")
    p.add_argument("--conv", action="store_true", help=f"a convolutional network: {CONV} then [100, 10]")
    args = p.parse_args()
    ds = fdata.digits()
    X, Y = ds.train.X, ds.train.Y
    n = len(X)
    ks = (10,) if args.quick else (10, 40)
    n_test = 10 if args.quick else min(args.examples, len(ds.test))
    test_X, test_Y = ds.test.X[:n_test], ds.test.Y[:n_test]

    optimizer = ftrain.make_optimizer("sgd", LR)
    epoch = ftrain.make_epoch(ftrain.make_train_step(optimizer, COST), BATCH)
    if args.conv:
        init = fbp.init_convnet(jax.random.key(args.seed), (8, 8), CONV, [100, ds.n_classes],
                                output_activation="softmax")
    else:
        init = fbp.init_mlp(jax.random.key(args.seed), [ds.n_in, 100, ds.n_classes], output_activation="softmax")
    network = f"conv {CONV} then [100, {ds.n_classes}]" if args.conv else f"[{ds.n_in}, 100, {ds.n_classes}]"

    saved = {}  # the full run's params at the epochs of SAVED

    def train(keep):
        """The network trained on the training rows ``keep``, from ``init`` with the run's key."""
        params, state, key = init, optimizer.init(init), jax.random.key(args.seed + 1)
        Xk, Yk = jax.numpy.asarray(X[keep]), jax.numpy.asarray(Y[keep])
        for e in range(1, EPOCHS + 1):
            key, k = jax.random.split(key)
            params, state, _ = epoch(params, state, k, Xk, Yk)
            if len(keep) == n and e in SAVED:
                saved[e] = params
        return params

    def outputs(params):
        m = ftrain.evaluate(params, test_X, test_Y, COST, per_example=True)
        return np.asarray(m["costs"], np.float64), np.argmax(np.asarray(fbp.forward(params, test_X)), axis=1)

    t0 = time.perf_counter()
    every = np.arange(n)
    params = train(every)
    base_cost, base_class = outputs(params)
    accuracy = int(ftrain.evaluate(params, ds.test.X, ds.test.Y, COST)["correct"]) / len(ds.test)
    factors = stats.kfac_factors(params, X, Y, COST)
    products = np.asarray(stats.grad_gram(params, X, Y, COST, test_X, test_Y), np.float64)
    influence = np.asarray(stats.influence(params, X, Y, COST, test_X, test_Y, factors=factors), np.float64)
    scores = dict(product=products,
                  cosine=np.asarray(stats.tracin([(params, 1.0)], X, Y, COST, test_X, test_Y, cosine=True)),
                  influence=influence,
                  **{"influence-cosine": np.asarray(stats.influence(params, X, Y, COST, test_X, test_Y,
                                                                    factors=factors, cosine=True))},
                  tracin=np.asarray(stats.tracin([(saved[e], LR * 10) for e in SAVED], X, Y, COST, test_X, test_Y)))
    # the forecasts of the change in x's cost when the rows S go: influence's first-order Σ_S g_nᵀ H̃⁻¹ g_x / N,
    # and the product's, the steps on S that the run no longer takes (each lowered x's cost by about η/m g_n · g_x)
    forecast = dict(influence=lambda S, j: influence[S, j].sum() / n,
                    product=lambda S, j: EPOCHS * LR / BATCH * products[S, j].sum())
    rng = np.random.default_rng(args.seed)
    # every removal: (k, what was removed, test example, its new cost, its new class, each forecast)
    removals = []
    for j in range(n_test):
        for k in ks:
            sets = []
            for name in RANKINGS:
                order = np.argsort(-scores[name][:, j], kind="stable")
                sets += [(f"{name}: helps", order[:k]), (f"{name}: hurts", order[::-1][:k])]
            sets += [("random", rng.choice(n, k, replace=False)) for _ in range(RANDOM_DRAWS)]
            for what, S in sets:
                cost, cls = outputs(train(np.setdiff1d(every, S)))
                removals.append(dict(k=k, removed=what, example=j, cost=cost[j], cls=int(cls[j]),
                                     **{f: float(fn(S, j)) for f, fn in forecast.items()}))
    # influence's lists at other dampings (the largest k only): removed, and trained again
    k = ks[-1]
    by_damping = {}
    dampings = QUICK_DAMPINGS if args.quick else DAMPINGS
    for eps in dampings:
        if eps == stats.INFLUENCE_DAMPING:  # the runs above
            rows = [r for r in removals if r["k"] == k and r["removed"].startswith("influence:")]
        else:
            scores_eps = np.asarray(stats.influence(params, X, Y, COST, test_X, test_Y, factors=factors, damping=eps),
                                    np.float64)
            rows = []
            for j in range(n_test):
                order = np.argsort(-scores_eps[:, j], kind="stable")
                for what, S in (("influence: helps", order[:k]), ("influence: hurts", order[::-1][:k])):
                    cost, _ = outputs(train(np.setdiff1d(every, S)))
                    rows.append(dict(removed=what, example=j, cost=cost[j]))
        by_damping[f"{eps:g}"] = {what: float(np.median([r["cost"] / base_cost[r["example"]] for r in rows
                                                         if r["removed"] == f"influence: {what}"]))
                                  for what in ("helps", "hurts")}
    seconds = time.perf_counter() - t0
    retrainings = len(removals) + (len(dampings) - 1) * n_test * 2

    results = dict(data=ds.name, sizes=[ds.n_in, 100, ds.n_classes], conv=CONV if args.conv else None, n_train=n,
                   lr=LR, batch_size=BATCH,
                   epochs=EPOCHS, cost=COST, test_accuracy=accuracy, explained=n_test, ks=list(ks),
                   damping=stats.INFLUENCE_DAMPING, random_draws=RANDOM_DRAWS, retrainings=retrainings,
                   seconds=seconds, base_costs=base_cost, by={}, damping_k=k, by_damping=by_damping)
    print(f"{ds.name}: {network} trained {EPOCHS} epochs (test accuracy {accuracy:.4f}); "
          f"{n_test} test examples, {retrainings} networks trained again without k of the {n} training "
          f"examples, {seconds:.0f} s:")
    kinds = [f"{name}: {way}" for name in RANKINGS for way in ("helps", "hurts")] + ["random"]
    for k in ks:
        results["by"][k] = {}
        for what in kinds:
            rows = [r for r in removals if r["k"] == k and r["removed"] == what]
            j = np.array([r["example"] for r in rows])
            ratio = np.array([r["cost"] for r in rows]) / base_cost[j]
            up = "hurts" not in what  # the way the list says the cost goes: up without those that help
            e = results["by"][k][what] = dict(
                median_cost_ratio=float(np.median(ratio)), cost_ratio_5_95=np.percentile(ratio, [5, 95]),
                went_as_listed=float(np.mean(ratio > 1 if up else ratio < 1)),
                class_changed=float(np.mean([r["cls"] != base_class[r["example"]] for r in rows])))
            print(f"  k {k:>2}, without {what:<24}: cost × {e['median_cost_ratio']:7.3f} (median), "
                  f"{'up' if up else 'down'} for {e['went_as_listed']:.0%}, class changed for "
                  f"{e['class_changed']:.0%}")
        rows = [r for r in removals if r["k"] == k]
        change = np.array([r["cost"] - base_cost[r["example"]] for r in rows])
        results["by"][k]["forecasts"] = {f: spearman([r[f] for r in rows], change) for f in forecast}
        print(f"  k {k:>2}: Spearman ρ of the cost changes with influence's forecast "
              f"{results['by'][k]['forecasts']['influence']:+.3f}, with the product's "
              f"{results['by'][k]['forecasts']['product']:+.3f} (over {len(rows)} removals)")

    for eps, e in by_damping.items():
        print(f"  k {k:>2}, damping {eps:>6}: without influence's helps cost × {e['helps']:7.3f}, without its hurts "
              f"× {e['hurts']:.3f} (medians)")

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8), gridspec_kw=dict(width_ratios=[1.5, 1]))
    k = ks[-1]
    names = kinds
    ratios = [np.array([r["cost"] / base_cost[r["example"]] for r in removals if r["k"] == k and r["removed"] == w])
              for w in names]
    axes[0].boxplot([np.log10(r) for r in ratios], showfliers=False)
    axes[0].set_xticks(range(1, len(names) + 1), [w.replace("-", "-\n").replace(": ", "\n") for w in names],
                       fontsize=7)
    axes[0].axhline(0, color="gray", lw=0.8)
    axes[0].set_ylabel("log10(cost without them / cost with them)")
    axes[0].set_title(f"test examples' cost without the k = {k} training examples listed", fontsize=9)
    rows = [r for r in removals if r["k"] == k]
    change = np.array([r["cost"] - base_cost[r["example"]] for r in rows])
    axes[1].scatter([r["influence"] for r in rows], change, s=4, alpha=0.4)
    axes[1].set_xscale("symlog", linthresh=1e-3)
    axes[1].set_yscale("symlog", linthresh=1e-3)
    axes[1].set_xlabel("influence's forecast Σ g_nᵀ H̃⁻¹ g_x / N")
    axes[1].set_ylabel("the change measured")
    axes[1].set_title(f"k = {k}: Spearman ρ {results['by'][k]['forecasts']['influence']:+.2f}", fontsize=9)
    fig.suptitle(f"{ds.name}, {network}: removing the training examples each ranking lists, and training again",
                 fontsize=10)
    save(args.out, "removals_conv" if args.conv else "removals", results, fig)


if __name__ == "__main__":
    main()

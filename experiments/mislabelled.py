"""Finding mislabelled training examples by their own gradients.

Each example's gradient g_x = ∂C_x/∂params comes from its δ's by BP3 and
BP4, and its norm without forming g_x: ‖g_x‖² = Σ_l ‖δ^l‖² (‖a^{l−1}‖² + 1)
(``fbp.train.evaluate(..., per_example=True)``, ``fbp evaluate --worst``).
An example whose label is wrong disagrees with what the rest of the data
teaches the network, so it should keep a large δ^L = a − y, and a large
gradient, after the others have been learned.

The test: flip the labels of 2% of the training set to another class drawn
at random, train the default network of ``fbp train`` ([n_in, 100, 10],
sigmoid, softmax and log-likelihood, SGD η = 0.5, mini-batch 10) on the
noisy labels, and after epochs 1, 3, 10 and 30 rank the training examples by
‖g_x‖. Reported: the precision of the top k (k = the number flipped: what
fraction of them are flipped; 2% by chance), the recall in the top 2k, the
same for ranking by cost C_x from the same pass, by TracIn's self-influence
Σ_e η ‖g_x(w_e)‖² over the epochs so far (Pruthi et al. 2020, each epoch a
checkpoint; of all the params, and of the output layer), by the cost averaged
over the epochs so far, and how many flipped
examples the network has come to predict as their wrong label (memorized).
Then the effect on the test set: the network trained on clean labels, on the
noisy ones, and on the noisy ones less k examples (the top k by ‖g_x‖ after
10 epochs, the top k by cost, by the cost averaged over those 10 epochs, or
k at random; dropped, and trained again
from the same start), with the gradient noise scale of the training set at
epoch 10's params, whole and less each dropped set.

Data: Fashion-MNIST when installed, else digits; ``--quick`` runs digits
([64, 30, 10], 5% flipped, 30 epochs).
"""

import time

import jax
import numpy as np

import fbp
from common import fashion_mnist_or_digits, parser, pyplot, save
from fbp import data as fdata
from fbp import train as ftrain

COST = "log_likelihood"
LR = 0.5  # fbp train's default η, plain SGD


def flip_labels(Y, fraction, seed):
    """Y with ``fraction`` of its rows relabelled to another class at random; and which rows."""
    rng = np.random.default_rng(seed)
    n, c = Y.shape
    rows = rng.choice(n, int(round(fraction * n)), replace=False)
    labels = Y.argmax(1)
    labels[rows] = (labels[rows] + rng.integers(1, c, len(rows))) % c  # never the true class
    flipped = np.zeros(n, bool)
    flipped[rows] = True
    return fdata.one_hot(labels, c), flipped


def ranking(scores, flipped):
    """Precision in the top k (k = number flipped) and recall in the top 2k, ranking by ``scores``, largest first."""
    k = int(flipped.sum())
    order = np.argsort(-scores, kind="stable")
    return dict(precision_at_k=float(flipped[order[:k]].mean()), recall_at_2k=float(flipped[order[:2 * k]].sum() / k))


def train(ds, X, Y, hidden, epochs, seed, watch=False):
    """fit for ``epochs`` epochs; with ``watch``, after every epoch (through
    fit's ``monitor``) the per-example costs and gradient norms on (X, Y),
    the output layer's part of the norms, the predicted classes and the params."""
    params = fbp.init_mlp(jax.random.key(seed), [ds.n_in, hidden, ds.n_classes], output_activation="softmax")
    seen = []

    def monitor(p):
        m = ftrain.evaluate(p, X, Y, COST, predictions=True, per_example=True)
        last_layer = np.asarray(m["grad_norms_by_layer"])[:, -1]  # the output layer's part of ‖g_x‖
        seen.append(dict(epoch=len(seen) + 1, costs=np.asarray(m["costs"]), norms=np.asarray(m["grad_norms"]),
                         last_layer=last_layer, predicted=np.asarray(m["predicted"]), params=p))
        return {"median_grad_norm": float(np.median(seen[-1]["norms"]))}

    t0 = time.perf_counter()
    # The same key for every run: the clean and the noisy labels are shuffled alike, and so are the
    # runs less k examples among themselves.
    r = ftrain.fit(params, (X, Y), optimizer=ftrain.make_optimizer("sgd", LR), cost=COST, epochs=epochs,
                   batch_size=10, key=jax.random.key(seed + 1000), monitor_training=False,
                   monitor=monitor if watch else None)
    seconds = time.perf_counter() - t0
    test = ftrain.evaluate(r.params, ds.test.X, ds.test.Y, COST)
    return r.params, seen, int(test["correct"]) / len(ds.test), seconds


def one_seed(ds, fraction, epochs, hidden, drop_after, seed):
    X, Y_true = ds.train.X, ds.train.Y
    Y, flipped = flip_labels(Y_true, fraction, seed)
    k = int(flipped.sum())
    clean_test = train(ds, X, Y_true, hidden, epochs, seed)[2]
    _, seen, noisy_test, seconds = train(ds, X, Y, hidden, epochs, seed, watch=True)
    by_epoch = []
    # TracIn's self-influence (Pruthi et al. 2020), every epoch a checkpoint: Σ_{e' ≤ e} η ‖g_x(w_e')‖², each
    # example's own steps' drop in its own cost summed over the run so far; and the same of the output layer alone
    # And each example's cost averaged over the epochs so far (its sum ranks alike): how hard it was over the run
    influence, influence_last, cost_sum = np.zeros(len(X)), np.zeros(len(X)), np.zeros(len(X))
    for s in seen:
        influence = influence + LR * np.asarray(s["norms"], np.float64) ** 2
        influence_last = influence_last + LR * np.asarray(s["last_layer"], np.float64) ** 2
        cost_sum = cost_sum + np.asarray(s["costs"], np.float64)
        by_epoch.append(dict(
            epoch=s["epoch"], by_grad_norm=ranking(s["norms"], flipped), by_cost=ranking(s["costs"], flipped),
            by_output_layer_grad_norm=ranking(s["last_layer"], flipped),
            by_tracin_self_influence=ranking(influence, flipped),
            by_tracin_output_layer=ranking(influence_last, flipped),
            by_mean_cost=ranking(cost_sum / s["epoch"], flipped),
            memorized=float(np.mean(s["predicted"][flipped] == Y[flipped].argmax(1))),
            median_norm_flipped=float(np.median(s["norms"][flipped])),
            median_norm_others=float(np.median(s["norms"][~flipped])),
            median_cost_flipped=float(np.median(s["costs"][flipped])),
            median_cost_others=float(np.median(s["costs"][~flipped])),
        ))
    after = next(s for s in seen if s["epoch"] == drop_after)
    test, dropped_flipped = dict(clean=clean_test, noisy=noisy_test), {}
    # The gradient noise scale tr Σ / ‖G‖² of the training set at epoch drop_after's params, whole and less
    # each dropped set: how much of SGD's step-to-step noise the dropped examples made.
    noise = dict(noisy=float(ftrain.evaluate(after["params"], X, Y, COST, noise_scale=True)["noise_scale"]))
    random_order = np.random.default_rng(seed + 1).permutation(len(X))
    mean_cost = np.mean([np.asarray(s["costs"], np.float64) for s in seen[:drop_after]], axis=0)  # to drop_after
    for by, order in (("grad_norm", np.argsort(-after["norms"], kind="stable")),
                      ("cost", np.argsort(-after["costs"], kind="stable")),
                      ("mean_cost", np.argsort(-mean_cost, kind="stable")), ("random", random_order)):
        keep = np.ones(len(X), bool)
        keep[order[:k]] = False
        test[f"less_top_k_by_{by}"] = train(ds, X[keep], Y[keep], hidden, epochs, seed)[2]
        dropped_flipped[by] = int(flipped[~keep].sum())
        noise[f"less_top_k_by_{by}"] = float(
            ftrain.evaluate(after["params"], X[keep], Y[keep], COST, noise_scale=True)["noise_scale"])
    last = seen[-1]
    return dict(seed=seed, flipped=k, by_epoch=by_epoch, seconds_noisy=seconds, test_accuracy=test,
                noise_scale_at_drop=noise, dropped_that_were_flipped=dropped_flipped,
                final_norms=dict(flipped=last["norms"][flipped], others=last["norms"][~flipped]))


def main():
    p = parser(__doc__)
    p.add_argument("--fraction", type=float, default=None, help="fraction of training labels flipped "
                   "(default 0.02; 0.05 with --quick)")
    p.add_argument("--seeds", type=int, default=3, help="runs")
    args = p.parse_args()
    ds = fashion_mnist_or_digits(args.quick)
    fraction = args.fraction if args.fraction is not None else (0.05 if args.quick else 0.02)
    hidden = 30 if args.quick else 100
    epochs, drop_after, shown = 30, 10, [1, 3, 10, 30]
    seeds = [args.seed] if args.quick else [args.seed + 10 * k for k in range(args.seeds)]
    runs = [one_seed(ds, fraction, epochs, hidden, drop_after, seed) for seed in seeds]
    results = dict(data=ds.name, sizes=[ds.n_in, hidden, ds.n_classes], n_train=len(ds.train), fraction=fraction,
                   flipped=runs[0]["flipped"], lr=LR, batch_size=10, cost=COST, epochs=epochs,
                   drop_after=drop_after, seeds=seeds, runs=runs, mean={})
    mean = results["mean"]
    for i in range(epochs):
        epoch = i + 1
        rows = [r["by_epoch"][i] for r in runs]
        mean[f"epoch {epoch}"] = {
            "precision_at_k by ‖g‖": float(np.mean([e["by_grad_norm"]["precision_at_k"] for e in rows])),
            "recall_at_2k by ‖g‖": float(np.mean([e["by_grad_norm"]["recall_at_2k"] for e in rows])),
            "precision_at_k by cost": float(np.mean([e["by_cost"]["precision_at_k"] for e in rows])),
            "recall_at_2k by cost": float(np.mean([e["by_cost"]["recall_at_2k"] for e in rows])),
            "precision_at_k by output layer ‖g^L‖": float(np.mean([e["by_output_layer_grad_norm"]["precision_at_k"]
                                                                   for e in rows])),
            "precision_at_k by TracIn self-influence": float(np.mean([e["by_tracin_self_influence"]["precision_at_k"]
                                                                      for e in rows])),
            "recall_at_2k by TracIn self-influence": float(np.mean([e["by_tracin_self_influence"]["recall_at_2k"]
                                                                   for e in rows])),
            "precision_at_k by TracIn self-influence, output layer": float(np.mean(
                [e["by_tracin_output_layer"]["precision_at_k"] for e in rows])),
            "precision_at_k by the mean cost so far": float(np.mean([e["by_mean_cost"]["precision_at_k"]
                                                                     for e in rows])),
            "memorized": float(np.mean([e["memorized"] for e in rows])),
        }
        m = mean[f"epoch {epoch}"]
        if epoch in shown:
            print(f"{ds.name} epoch {epoch:2d}: top-{runs[0]['flipped']} by ‖g_x‖ {m['precision_at_k by ‖g‖']:.3f} "
                  f"flipped (chance {fraction:.3f}), top-2k recall {m['recall_at_2k by ‖g‖']:.3f}; by the output "
                  f"layer's ‖g^L‖ {m['precision_at_k by output layer ‖g^L‖']:.3f}; by cost "
                  f"{m['precision_at_k by cost']:.3f}, top-2k recall {m['recall_at_2k by cost']:.3f}; by TracIn "
                  f"self-influence Σ η ‖g_x‖² {m['precision_at_k by TracIn self-influence']:.3f}, of the output "
                  f"layer {m['precision_at_k by TracIn self-influence, output layer']:.3f}; by the mean cost over "
                  f"the epochs so far {m['precision_at_k by the mean cost so far']:.3f}; flipped ones "
                  f"predicted as their wrong label {m['memorized']:.3f}")
    for name in runs[0]["test_accuracy"]:
        mean[f"test accuracy, {name}"] = float(np.mean([r["test_accuracy"][name] for r in runs]))
    for by in ("grad_norm", "cost", "mean_cost", "random"):
        mean[f"dropped by {by} that were flipped"] = float(np.mean([r["dropped_that_were_flipped"][by] for r in runs]))
    for name in runs[0]["noise_scale_at_drop"]:
        mean[f"noise scale at epoch {drop_after}, {name}"] = float(np.mean([r["noise_scale_at_drop"][name]
                                                                             for r in runs]))
    print(f"test accuracy (mean of {len(seeds)}): clean labels {mean['test accuracy, clean']:.4f}, "
          f"{fraction:.0%} flipped {mean['test accuracy, noisy']:.4f}; less the top {runs[0]['flipped']} after epoch "
          f"{drop_after} by ‖g_x‖ {mean['test accuracy, less_top_k_by_grad_norm']:.4f} "
          f"({mean['dropped by grad_norm that were flipped']:.0f} of them flipped), by cost "
          f"{mean['test accuracy, less_top_k_by_cost']:.4f} ({mean['dropped by cost that were flipped']:.0f}), by "
          f"the mean cost of epochs 1 to {drop_after} {mean['test accuracy, less_top_k_by_mean_cost']:.4f} "
          f"({mean['dropped by mean_cost that were flipped']:.0f}), at random "
          f"{mean['test accuracy, less_top_k_by_random']:.4f} ({mean['dropped by random that were flipped']:.0f})")
    print(f"gradient noise scale tr Σ / ‖G‖² at epoch {drop_after}'s params: all "
          f"{mean[f'noise scale at epoch {drop_after}, noisy']:.0f}, less the top k by ‖g_x‖ "
          f"{mean[f'noise scale at epoch {drop_after}, less_top_k_by_grad_norm']:.0f}, by cost "
          f"{mean[f'noise scale at epoch {drop_after}, less_top_k_by_cost']:.0f}, by the mean cost "
          f"{mean[f'noise scale at epoch {drop_after}, less_top_k_by_mean_cost']:.0f}, at random "
          f"{mean[f'noise scale at epoch {drop_after}, less_top_k_by_random']:.0f}")

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    r0 = runs[0]
    logs = {k: np.log10(np.maximum(v, 1e-12)) for k, v in r0["final_norms"].items()}
    bins = np.linspace(min(v.min() for v in logs.values()), max(v.max() for v in logs.values()), 60)
    for label, key in (("labels kept", "others"), ("labels flipped", "flipped")):
        ax1.hist(logs[key], bins=bins, alpha=0.6, label=f"{label} ({len(logs[key])})", density=True)
    ax1.set_xlabel("log10 ‖∂C_x/∂params‖ after the last epoch (from the δ's)")
    ax1.set_ylabel("density (each group its own)")
    ax1.set_title(f"seed {r0['seed']}, epoch {epochs}")
    ax1.legend()
    for key, label in (("precision_at_k by ‖g‖", "top k by ‖g_x‖: flipped"),
                       ("precision_at_k by output layer ‖g^L‖", "top k by the output layer's ‖g^L_x‖"),
                       ("precision_at_k by cost", "top k by C_x: flipped"),
                       ("precision_at_k by TracIn self-influence", "top k by Σ_e η ‖g_x‖² (TracIn)"),
                       ("precision_at_k by TracIn self-influence, output layer", "top k by Σ_e η ‖g^L_x‖²"),
                       ("precision_at_k by the mean cost so far", "top k by the mean of C_x over the epochs"),
                       ("memorized", "flipped, predicted as their wrong label")):
        ax2.plot(range(1, epochs + 1), [mean[f"epoch {e}"][key] for e in range(1, epochs + 1)], ".-", label=label)
    ax2.axhline(fraction, color="grey", ls=":", label="chance")
    ax2.axvline(drop_after, color="grey", ls="--", lw=0.8)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1.15)
    ax2.set_title(f"mean of {len(seeds)} seeds, k = {runs[0]['flipped']}")
    ax2.legend(fontsize=7, loc="upper center", ncol=2)
    fig.suptitle(f"{ds.name}: {fraction:.0%} of {len(ds.train)} training labels flipped, "
                 f"[{ds.n_in}, {hidden}, {ds.n_classes}], η = 0.5, mini-batch 10", fontsize=10)
    for r in runs:  # the histograms' numbers are in the figure; the JSON keeps their medians
        r["final_norms"] = {k: float(np.median(v)) for k, v in r["final_norms"].items()}
    save(args.out, "mislabelled", results, fig)


if __name__ == "__main__":
    main()

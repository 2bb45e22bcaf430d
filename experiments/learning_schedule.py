"""Does the book's learning schedule (NNDL ch. 3) beat a fixed learning rate?

The schedule: hold η until validation accuracy has gone N epochs without
improving, then halve it; stop when it is down to η/128 (the book's exercise
uses N = 10; `fit(lr_halving=N)`). Against it, in the same run: the same
network with η fixed for 30 epochs (fbp train's default) and for 60 epochs.
Each run is tested twice: with its last params, and with the params of its
best validation epoch (`FitResult.best_params`).

Network: [n_in, 100, n_classes], sigmoid hidden, softmax output,
log-likelihood, SGD η = 0.5, mini-batch 10, the `normalized` init (fbp train's
defaults). Data: Fashion-MNIST (50,000 / 10,000 / 10,000) when installed,
else digits; `--quick` runs digits with one seed.
"""

import time

import jax
import optax

import fbp
from common import fashion_mnist_or_digits, parser, pyplot, save
from fbp import train as ftrain

COST = "log_likelihood"


def run(ds, seed, epochs, lr, lr_halving=None):
    params = fbp.init_mlp(jax.random.key(seed), [ds.n_in, 100, ds.n_classes], output_activation="softmax")
    t0 = time.perf_counter()
    r = ftrain.fit(params, ds.train, optimizer=optax.sgd(lr), cost=COST, epochs=epochs, batch_size=10,
                   key=jax.random.key(seed + 1), evaluation=ds.validation, monitor_training=False,
                   lr_halving=lr_halving)
    seconds = time.perf_counter() - t0

    def test(p):
        return int(ftrain.evaluate(p, ds.test.X, ds.test.Y, COST)["correct"]) / len(ds.test)

    return dict(
        epochs_run=r.epochs_run, stop_reason=r.stop_reason, best_epoch=r.best_epoch, seconds=seconds,
        test_last=test(r.params), test_best=test(r.best_params),
        validation=[h["evaluation_accuracy"] for h in r.history],
        lr_factor=[h.get("lr_factor", 1.0) for h in r.history],
    )


def main():
    p = parser(__doc__)
    p.add_argument("--seeds", type=int, default=3, help="runs per setting")
    p.add_argument("--halving", type=int, default=5, help="N of the no-improvement-in-N rule")
    p.add_argument("--lr", type=float, default=0.5)
    args = p.parse_args()
    ds = fashion_mnist_or_digits(args.quick)
    seeds = [args.seed] if args.quick else [args.seed + 10 * k for k in range(args.seeds)]
    fixed = (10,) if args.quick else (30, 60)
    halving = 2 if args.quick else args.halving
    max_epochs = 60 if args.quick else 120
    settings = {f"fixed η, {e} epochs": dict(epochs=e) for e in fixed}
    settings[f"schedule, N = {halving}"] = dict(epochs=max_epochs, lr_halving=halving)
    results = dict(data=ds.name, sizes=[ds.n_in, 100, ds.n_classes], lr=args.lr, seeds=seeds, runs={})
    for name, kw in settings.items():
        runs = [run(ds, s, lr=args.lr, **kw) for s in seeds]
        results["runs"][name] = runs
        print(f"{ds.name} {name:22s} test (last params) {[round(r['test_last'], 4) for r in runs]}  "
              f"(best validation epoch) {[round(r['test_best'], 4) for r in runs]}  "
              f"epochs {[r['epochs_run'] for r in runs]}  {[round(r['seconds'], 1) for r in runs]} s")
    results["mean_test_last"] = {k: sum(r["test_last"] for r in v) / len(v) for k, v in results["runs"].items()}
    results["mean_test_best"] = {k: sum(r["test_best"] for r in v) / len(v) for k, v in results["runs"].items()}

    plt = pyplot()
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=(3, 1))
    for (name, runs), color in zip(results["runs"].items(), ("tab:gray", "tab:blue", "tab:red")):
        v = runs[0]["validation"]
        ax.plot(range(1, len(v) + 1), v, color=color, label=f"{name} (seed {seeds[0]})")
        ax_lr.step(range(1, len(v) + 1), runs[0]["lr_factor"], where="mid", color=color)
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{ds.name}: [{ds.n_in}, 100, {ds.n_classes}], η = {args.lr}, mini-batch 10")
    ax.legend(fontsize=8)
    ax_lr.set_yscale("log", base=2)
    ax_lr.set_ylabel("η / η₀")
    ax_lr.set_xlabel("epoch")
    save(args.out, "learning_schedule", results, fig)


if __name__ == "__main__":
    main()

"""Per-example gradients during training, and DP-SGD accuracy against the noise.

1. The distribution of per-example gradient norms ‖∂C_n/∂θ‖ over the digits
   training set at initialisation and after 1, 5 and 20 epochs
   (``fbp.stats.per_example_grad_norms``, computed from ‖δ‖‖a‖).
2. DP-SGD (clip C = 1, batch 32, 30 epochs) test accuracy against the noise
   multiplier σ.
"""

import jax
import numpy as np
import optax

import fbp
from common import parser, pyplot, save
from fbp import data as fdata
from fbp import stats
from fbp import train as ftrain

COST = "log_likelihood"


def norms_during_training(ds, checkpoints, seed):
    params = fbp.init_mlp(jax.random.key(seed), [64, 30, 10], output_activation="softmax")
    out = {0: np.asarray(stats.per_example_grad_norms(params, ds.train.X, ds.train.Y, COST))}
    opt = optax.sgd(0.5)
    state, done = opt.init(params), 0
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, COST), 10)
    for target in checkpoints:
        while done < target:
            done += 1
            params, state, _ = epoch(params, state, jax.random.key(seed + done), ds.train.X, ds.train.Y)
        out[target] = np.asarray(stats.per_example_grad_norms(params, ds.train.X, ds.train.Y, COST))
    return out


def dp_accuracy(ds, sigma, epochs, seed):
    params = fbp.init_mlp(jax.random.key(seed), [64, 100, 10], output_activation="softmax")
    if sigma is None:
        opt, grad = optax.sgd(0.5), "hand"
    else:
        opt = optax.chain(stats.dp_noise(sigma, 1.0, 32, seed=seed), optax.sgd(0.5))
        grad = stats.dp_value_and_grad(COST, 1.0)
    r = ftrain.fit(params, ds.train, optimizer=opt, cost=COST, epochs=epochs, batch_size=32,
                   key=jax.random.key(seed + 1), grad=grad, monitor_training=False)
    return int(ftrain.evaluate(r.params, ds.test.X, ds.test.Y, COST)["correct"]) / len(ds.test)


def main():
    args = parser(__doc__).parse_args()
    ds = fdata.digits()
    checkpoints = [1, 2] if args.quick else [1, 5, 20]
    norms = norms_during_training(ds, checkpoints, args.seed)
    results = dict(norm_quantiles={e: np.quantile(v, [0.1, 0.5, 0.9, 0.99]).tolist() for e, v in norms.items()})
    for e, q in results["norm_quantiles"].items():
        print(f"epoch {e:2d}: per-example gradient norm quantiles 10/50/90/99% = {np.round(q, 4).tolist()}")
    sigmas = [None, 1.0] if args.quick else [None, 0.0, 0.5, 1.0, 2.0, 4.0]
    epochs = 3 if args.quick else 30
    results["dp"] = {("no DP" if s is None else f"sigma={s}"): dp_accuracy(ds, s, epochs, args.seed) for s in sigmas}
    for k, v in results["dp"].items():
        print(f"DP-SGD {k}: test accuracy {v:.4f}")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.logspace(-4, 1.5, 50)
    for e, v in norms.items():
        axes[0].hist(v, bins=bins, histtype="step", label=f"epoch {e}")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("per-example gradient norm")
    axes[0].set_ylabel("examples")
    axes[0].set_title("[64, 30, 10] on digits, sigmoid/softmax")
    axes[0].legend()
    xs = [s for s in sigmas if s is not None]
    axes[1].plot(xs, [results["dp"][f"sigma={s}"] for s in xs], "o-", label="DP-SGD, clip 1")
    axes[1].axhline(results["dp"]["no DP"], color="gray", ls="--", label="no clipping, no noise")
    axes[1].set_xlabel("noise multiplier σ")
    axes[1].set_ylabel("test accuracy")
    axes[1].set_title("DP-SGD on digits, batch 32, 30 epochs")
    axes[1].legend()
    save(args.out, "per_example", results, fig)


if __name__ == "__main__":
    main()

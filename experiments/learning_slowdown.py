"""Learning slowdown: the quadratic cost learns slowly from a saturated start, cross-entropy does not.

Part 1 is the book's single sigmoid neuron (ch. 3): input 1, target 0, η = 0.15,
300 epochs, starting from w = 0.6, b = 0.9 and from w = b = 2.0, with the
quadratic and the cross-entropy cost. Part 2 compares full networks on digits:
quadratic vs cross-entropy (sigmoid outputs) vs softmax + log-likelihood, with
and without L2, `large` vs `normalized` init.
"""

import jax
import jax.numpy as jnp
import numpy as np

import fbp
from common import parser, pyplot, save
from fbp import data as fdata
from fbp import train as ftrain

jax.config.update("jax_enable_x64", True)
THRESHOLD = 0.2  # epoch at which the output first falls below this (target 0)


def neuron(w, b, cost, epochs, eta=0.15):
    params = [fbp.Dense(jnp.array([[w]]), jnp.array([b]), "sigmoid")]
    x, y = jnp.array([1.0]), jnp.array([0.0])
    c = fbp.get_cost(cost)

    def step(params, _):
        a = fbp.forward(params, x)[0]
        value = fbp.example_loss(params, x, y, c)
        g = fbp.backward(params, x, y, cost)
        return jax.tree.map(lambda p, d: p - eta * d, params, g), (value, a)

    _, (costs, outputs) = jax.jit(lambda p: jax.lax.scan(step, p, None, length=epochs))(params)
    costs, outputs = np.asarray(costs).tolist(), np.asarray(outputs).tolist()
    below = next((e for e, a in enumerate(outputs) if a < THRESHOLD), None)
    return dict(cost=costs, output=outputs, epoch_below_threshold=below)


def networks(epochs, seed, quick=False):
    ds = fdata.digits()
    out = {}
    configs = [("quadratic", "sigmoid"), ("cross_entropy", "sigmoid"), ("log_likelihood", "softmax")]
    for cost, act in configs:
        for l2 in (0.0,) if quick else (0.0, 5.0):
            for init in ("normalized",) if quick else ("large", "normalized"):
                params = fbp.init_mlp(jax.random.key(seed), [64, 30, 10], output_activation=act, init=init,
                                      dtype=jnp.float32)
                opt = ftrain.make_optimizer("sgd", 0.5, l2=l2, n_train=len(ds.train))
                r = ftrain.fit(params, ds.train, optimizer=opt, cost=cost, epochs=epochs, batch_size=10,
                               key=jax.random.key(seed + 1), evaluation=ds.validation, monitor_training=False)
                acc = [h["evaluation_accuracy"] for h in r.history]
                out[f"{cost}/{act} l2={l2} {init}"] = dict(accuracy=acc, final=acc[-1], best=max(acc))
    return out


def main():
    p = parser(__doc__)
    args = p.parse_args()
    epochs = 300
    results = dict(threshold=THRESHOLD, neuron={})
    for w, b in ((0.6, 0.9), (2.0, 2.0)):
        for cost in ("quadratic", "cross_entropy"):
            results["neuron"][f"{cost} w={w} b={b}"] = neuron(w, b, cost, epochs)
    for k, r in results["neuron"].items():
        print(f"{k:32s} output < {THRESHOLD} from epoch {r['epoch_below_threshold']}, final output {r['output'][-1]:.4f}")
    results["networks"] = networks(3 if args.quick else 30, args.seed, args.quick)
    for k, r in results["networks"].items():
        print(f"{k:44s} validation accuracy final {r['final']:.4f} best {r['best']:.4f}")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, r in results["neuron"].items():
        axes[0].plot(r["output"], label=k)
    axes[0].axhline(THRESHOLD, color="gray", lw=0.8, ls=":")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("output a (target 0)")
    axes[0].set_title("One sigmoid neuron, η = 0.15 (NNDL ch. 3)")
    axes[0].legend(fontsize=8)
    for k, r in results["networks"].items():
        if "normalized" in k or "l2=0.0" in k:
            axes[1].plot(range(1, len(r["accuracy"]) + 1), r["accuracy"], label=k)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation accuracy")
    axes[1].set_title("[64, 30, 10] on digits, η = 0.5, mini-batch 10")
    axes[1].legend(fontsize=6)
    save(args.out, "learning_slowdown", results, fig)


if __name__ == "__main__":
    main()

"""The vanishing gradient (NNDL ch. 5): ‖δ^l‖, the speed at which each hidden layer learns.

‖δ^l‖ = ‖∂C/∂b^l‖ for the mean cost over the first 1,000 training images
(``fbp.stats.delta_norms``), for sigmoid networks with 2, 3 and 4 hidden layers
of 30, at initialisation (the book's default, ``normalized``) and during
training; then tanh and ReLU, and ``large`` vs ``normalized`` init. Data: MNIST
with --data-dir, else Fashion-MNIST when installed, else digits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fbp
from common import parser, pyplot, save
from fbp import data as fdata
from fbp import stats
from fbp import train as ftrain

BOOK = {2: [0.066, 0.309], 3: [0.012, 0.060, 0.283], 4: [0.003, 0.017, 0.070, 0.285]}  # NNDL ch. 5, MNIST


def load(data_dir, quick):
    if data_dir:
        return fdata.idx(data_dir, 0, name="mnist")
    if not quick:
        try:
            return fdata.fashion_mnist(n_validation=0)
        except fdata.DataError:
            pass
    return fdata.digits(n_validation=0)


def run(ds, hidden, activation, init, epochs, seed, n=1000):
    X, Y = ds.train.X[:n], ds.train.Y[:n]
    sizes = [ds.n_in] + [30] * hidden + [10]
    params = fbp.init_mlp(jax.random.key(seed), sizes, activation=activation, output_activation="sigmoid", init=init)
    cost = "cross_entropy"
    norms = [np.asarray(stats.delta_norms(params, X, Y, cost))[:-1]]  # hidden layers only
    epoch = ftrain.make_epoch(ftrain.make_train_step(optax.sgd(0.1), cost), 10)
    opt_state = optax.sgd(0.1).init(params)
    for e in range(epochs):
        params, opt_state, _ = epoch(params, opt_state, jax.random.key(seed + e + 1), jnp.asarray(X), jnp.asarray(Y))
        norms.append(np.asarray(stats.delta_norms(params, X, Y, cost))[:-1])
    return np.stack(norms)  # (epochs + 1, hidden)


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None, help="MNIST IDX files (the book's data)")
    args = p.parse_args()
    ds = load(args.data_dir, args.quick)
    epochs = 3 if args.quick else 30
    results = dict(data=ds.name, book_mnist_at_init=BOOK, runs={})
    for hidden in (2, 3, 4):
        r = run(ds, hidden, "sigmoid", "normalized", epochs, args.seed)
        results["runs"][f"sigmoid normalized {hidden} hidden"] = r
        print(f"sigmoid, {hidden} hidden, at init: {np.round(r[0], 4).tolist()}   (book, MNIST: {BOOK[hidden]})")
    for act, init in (("tanh", "normalized"), ("relu", "he"), ("sigmoid", "large")):
        r = run(ds, 4, act, init, epochs, args.seed)
        results["runs"][f"{act} {init} 4 hidden"] = r
        print(f"{act} {init}, 4 hidden, at init: {np.round(r[0], 4).tolist()}")
    results["at_init"] = {k: v[0] for k, v in results["runs"].items()}
    results["ratio_first_to_last_at_init"] = {k: float(v[0][0] / v[0][-1]) for k, v in results["runs"].items()}
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    r = results["runs"]["sigmoid normalized 4 hidden"]
    for l in range(r.shape[1]):
        axes[0].semilogy(r[:, l], label=f"hidden layer {l + 1}")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("‖δ^l‖ = ‖∂C/∂b^l‖")
    axes[0].set_title(f"Sigmoid [n, 30×4, 10] on {ds.name} (first 1,000)")
    axes[0].legend(fontsize=8)
    for k, v in results["at_init"].items():
        axes[1].semilogy(range(1, len(v) + 1), v, "o-", label=k)
    for h, v in BOOK.items():
        axes[1].semilogy(range(1, len(v) + 1), v, "k:", lw=0.8, label="book, MNIST" if h == 4 else None)
    axes[1].set_xlabel("hidden layer l")
    axes[1].set_ylabel("‖δ^l‖ at initialisation")
    axes[1].set_title("Earlier layers learn slower")
    axes[1].legend(fontsize=7)
    save(args.out, "vanishing_gradient", results, fig)


if __name__ == "__main__":
    main()

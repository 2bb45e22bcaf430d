"""The book's first network (NNDL ch. 1): input-30-10, sigmoid, quadratic cost,
SGD η = 3.0, mini-batch 10, 30 epochs, the `large` N(0, 1) init, with the
hand-written gradient and, in the same run, with jax.grad, epoch by epoch.

Data: digits always; Fashion-MNIST when installed; MNIST when --data-dir
points at its IDX files. The book reports 95.42% on MNIST (best of three runs;
96.59% with 100 hidden neurons).
"""

import jax
import optax

import fbp
from common import parser, pyplot, save
from fbp import data as fdata
from fbp import train as ftrain


def datasets(data_dir, quick):
    sets = [fdata.digits(n_validation=0)]
    if not quick:
        try:
            sets.append(fdata.fashion_mnist(n_validation=0))
        except fdata.DataError:
            pass
    if data_dir:
        sets.append(fdata.idx(data_dir, 0, name="mnist"))
    return sets


def train(ds, hidden, grad, epochs, seed):
    params = fbp.init_mlp(jax.random.key(seed), [ds.n_in, hidden, ds.n_classes], init="large")
    r = ftrain.fit(params, ds.train, optimizer=optax.sgd(3.0), cost="quadratic", epochs=epochs, batch_size=10,
                   key=jax.random.key(seed + 1), evaluation=ds.test, monitor_training=False, grad=grad)
    return [h["evaluation_accuracy"] for h in r.history], r.params


def main():
    p = parser(__doc__)
    p.add_argument("--data-dir", default=None, help="MNIST IDX files")
    p.add_argument("--runs", type=int, default=3, help="runs per setting (the book reports the best of three)")
    args = p.parse_args()
    epochs = 3 if args.quick else 30
    runs = 1 if args.quick else args.runs
    results = dict(book_mnist=dict(hidden_30=0.9542, hidden_100=0.9659), data={})
    for ds in datasets(args.data_dir, args.quick):
        entry = {}
        for hidden in (30,) if args.quick else (30, 100):
            for grad in ("hand", "autodiff"):
                accs = [train(ds, hidden, grad, epochs, args.seed + 10 * k)[0] for k in range(runs)]
                entry[f"{hidden} hidden, {grad}"] = dict(per_run=accs, best_final=max(a[-1] for a in accs))
                print(f"{ds.name:14s} {hidden:3d} hidden, {grad:8s}: final test accuracy per run "
                      f"{[round(a[-1], 4) for a in accs]}")
            h, a = entry[f"{hidden} hidden, hand"]["per_run"], entry[f"{hidden} hidden, autodiff"]["per_run"]
            entry[f"{hidden} hidden, max |hand − autodiff| accuracy"] = max(
                abs(x - y) for ra, rb in zip(h, a) for x, y in zip(ra, rb))
        results["data"][ds.name] = entry
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in results["data"].items():
        for k, v in entry.items():
            if isinstance(v, dict) and k.startswith("30 hidden"):
                style = "-" if "hand" in k else ":"
                ax.plot(range(1, epochs + 1), v["per_run"][0], style, label=f"{name}, {k}")
    ax.axhline(0.9542, color="gray", lw=0.8, ls="--", label="book, MNIST, best of 3 (95.42%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("NNDL ch. 1 network: [n, 30, 10], sigmoid, quadratic, η = 3.0")
    ax.legend(fontsize=7)
    save(args.out, "first_network", results, fig)


if __name__ == "__main__":
    main()

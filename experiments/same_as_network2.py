"""fbp trains as the book's network2.py does: its SGD (NNDL ch. 3: sigmoid
layers, the cross-entropy cost, L2 weight decay λ/n, mini-batch 10) written
out in NumPy as network2.py has it, one Python backprop per example, and
fbp's jitted epoch, from the same initial network (saved in network2's JSON
and read by fbp.load_params) over the same mini-batches, epoch by epoch, in
float64, at η = 0.1 and at η = 0.5. Beside them, network2 again with each
mini-batch's gradients summed in the other order: how far rounding alone
takes two runs of the same arithmetic apart. At the end fbp writes its
network back in network2's JSON, which network2's load reads.

Data: the first 10,000 Fashion-MNIST training images and its 10,000 test
images (--quick, or without Fashion-MNIST: digits).
"""

import json
import os
import tempfile
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import fbp  # noqa: E402
from common import parser, pyplot, save  # noqa: E402
from fbp import data as fdata  # noqa: E402
from fbp import train as ftrain  # noqa: E402


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


class Network2:
    """The parts of network2.py's ``Network`` that its ``SGD`` uses, in
    Python 3: ``default_weight_initializer``, ``feedforward``,
    ``update_mini_batch`` (with L2), ``backprop`` with ``CrossEntropyCost``
    (δ^L = a − y), ``accuracy``, and ``save``/``load`` in its JSON."""

    def __init__(self, sizes, rng):
        self.num_layers = len(sizes)
        self.sizes = sizes
        self.biases = [rng.randn(y, 1) for y in sizes[1:]]
        self.weights = [rng.randn(y, x) / np.sqrt(x) for x, y in zip(sizes[:-1], sizes[1:])]

    def feedforward(self, a):
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def update_mini_batch(self, mini_batch, eta, lmbda, n, reverse=False):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in (reversed(mini_batch) if reverse else mini_batch):  # reverse: the sums in the other order
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [(1 - eta * (lmbda / n)) * w - (eta / len(mini_batch)) * nw
                        for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = activations[-1] - y  # CrossEntropyCost.delta
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return (nabla_b, nabla_w)

    def accuracy(self, data):
        return sum(int(np.argmax(self.feedforward(x)) == y) for x, y in data)

    def save(self, filename):
        data = {"sizes": self.sizes, "weights": [w.tolist() for w in self.weights],
                "biases": [b.tolist() for b in self.biases], "cost": "CrossEntropyCost"}
        with open(filename, "w") as f:
            json.dump(data, f)


def load(filename):
    """network2.py's ``load``."""
    with open(filename) as f:
        data = json.load(f)
    net = Network2.__new__(Network2)
    net.sizes, net.num_layers = data["sizes"], len(data["sizes"])
    net.weights = [np.array(w) for w in data["weights"]]
    net.biases = [np.array(b) for b in data["biases"]]
    return net


def _difference(weights, biases, params) -> float:
    """The largest relative difference, leaf by leaf, of a NumPy network's weights and biases from ``params``."""
    return max(max(fbp.relative_error(p.w, w), fbp.relative_error(p.b, b[:, 0]))
               for w, b, p in zip(weights, biases, params))


def run(ds, X, Y, test, eta, epochs, seed, lmbda=5.0, m=10):
    """network2, network2 summing the other way, and fbp's epoch, from one network over the same mini-batches."""
    n, sizes = len(X), [ds.n_in, 30, ds.n_classes]
    book, other = Network2(sizes, np.random.RandomState(seed)), Network2(sizes, np.random.RandomState(seed))
    with tempfile.TemporaryDirectory() as tmp:
        book.save(os.path.join(tmp, "init.json"))
        params = fbp.load_params(os.path.join(tmp, "init.json"))  # the same network, read from network2's file
    optimizer = ftrain.make_optimizer("sgd", eta, l2=lmbda, n_train=n)
    state = optimizer.init(params)
    epoch = ftrain.make_epoch(ftrain.make_train_step(optimizer, "cross_entropy"), m, drop_last=False)
    data = [(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(X, Y)]
    key = jax.random.key(seed)
    Xt = np.stack([x[:, 0] for x, _ in test])
    rows = []
    for e in range(1, epochs + 1):
        k = jax.random.fold_in(key, e)
        order = np.asarray(ftrain.shuffle(k, n))  # the book's SGD shuffles with random.shuffle; here all take this
        t = time.perf_counter()
        for start in range(0, n, m):
            book.update_mini_batch([data[i] for i in order[start:start + m]], eta, lmbda, n)
        numpy_s = time.perf_counter() - t
        for start in range(0, n, m):
            other.update_mini_batch([data[i] for i in order[start:start + m]], eta, lmbda, n, reverse=True)
        t = time.perf_counter()
        params, state, _ = epoch(params, state, k, X, Y)
        jax.block_until_ready(params)
        fbp_s = time.perf_counter() - t
        other_params = [fbp.Dense(w, b[:, 0]) for w, b in zip(other.weights, other.biases)]
        row = dict(epoch=e, fbp_vs_network2=_difference(book.weights, book.biases, params),
                   reversed_sums_vs_network2=_difference(book.weights, book.biases, other_params),
                   test_accuracy_network2=book.accuracy(test) / len(test),
                   test_accuracy_reversed_sums=other.accuracy(test) / len(test),
                   test_accuracy_fbp=float(np.mean(np.asarray(ftrain.predict(params, Xt)) ==
                                                   np.array([y for _, y in test]))),
                   seconds_network2=numpy_s, seconds_fbp=fbp_s)
        rows.append(row)
        print(f"η = {eta}, epoch {e}: fbp within {row['fbp_vs_network2']:.1e} of network2, network2 summing the "
              f"other way within {row['reversed_sums_vs_network2']:.1e} (the largest leaf's relative difference); "
              f"test accuracy {row['test_accuracy_network2']:.4f}, {row['test_accuracy_reversed_sums']:.4f}, "
              f"{row['test_accuracy_fbp']:.4f}; {numpy_s:.2f} s and {fbp_s:.2f} s")
    return rows, params


def main():
    p = parser(__doc__)
    args = p.parse_args()
    quick = args.quick
    try:
        ds = fdata.digits(n_validation=0) if quick else fdata.fashion_mnist(n_validation=0)
    except fdata.DataError:
        ds = fdata.digits(n_validation=0)
    n = min(len(ds.train), 10_000)
    X, Y = np.asarray(ds.train.X[:n], np.float64), np.asarray(ds.train.Y[:n], np.float64)
    test = [(x.reshape(-1, 1).astype(np.float64), int(np.argmax(y))) for x, y in zip(ds.test.X, ds.test.Y)]
    epochs = 2 if quick else 3
    runs = {}
    for eta in (0.1, 0.5):
        runs[f"eta {eta}"], params = run(ds, X, Y, test, eta, epochs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:  # the last run's network, back into network2's JSON
        path = fbp.save_network2(os.path.join(tmp, "fbp.json"), params, "cross_entropy")
        back = load(path)  # network2's load of fbp's file
    same = all(np.array_equal(w, np.asarray(p.w)) and np.array_equal(b[:, 0], np.asarray(p.b))
               for w, b, p in zip(back.weights, back.biases, params))
    back_acc = back.accuracy(test) / len(test)
    print(f"fbp's network saved in network2's JSON and read by its load: the same numbers {same}, test accuracy "
          f"{back_acc:.4f}")
    results = dict(data=ds.name, n_train=n, n_test=len(test), sizes=[ds.n_in, 30, ds.n_classes], lmbda=5.0,
                   mini_batch=10, runs=runs, saved_and_loaded_by_network2=dict(bitwise_same=same,
                                                                               test_accuracy=back_acc))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (name, rows), color in zip(runs.items(), ("C0", "C3")):
        epochs_run = [r["epoch"] for r in rows]
        ax.semilogy(epochs_run, [max(r["fbp_vs_network2"], 1e-17) for r in rows], "o-", color=color,
                    label=f"fbp vs network2, {name.replace('eta', 'η =')}")
        ax.semilogy(epochs_run, [max(r["reversed_sums_vs_network2"], 1e-17) for r in rows], "x:", color=color,
                    label=f"network2 summing the other way, {name.replace('eta', 'η =')}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("largest relative difference")
    ax.set_title(f"fbp's epoch and network2.py's SGD, {ds.name}, float64")
    ax.set_xticks(range(1, epochs + 1))
    ax.legend(fontsize=7)
    save(args.out, "same_as_network2", results, fig)


if __name__ == "__main__":
    main()

"""Training throughput: examples per second for one epoch, side by side.

Same network (sigmoid hidden layer, softmax output, log-likelihood cost, plain
SGD), same mini-batch size, same data, in one run:

- fbp: one jitted epoch (``lax.scan`` over the mini-batches, hand-written gradient);
- PyTorch eager on the CPU (nn.Linear/Sigmoid, F.cross_entropy, optim.SGD), if installed;
- NumPy in the book's style: ``update_mini_batch`` loops over the examples of
  each mini-batch in Python and calls ``backprop`` for each (network.py, ch. 1).

Data: Fashion-MNIST's 60,000 training images when Debian's
``dataset-fashion-mnist`` is installed, else random inputs of the same shape.
Each figure is the median over ``--repeats`` timed epochs after a warm-up; the
NumPy loop, being slow, is timed on the first ``--numpy-examples`` examples.

    python benchmarks/train_throughput.py [--repeats 3] [--json out.json]
"""

import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np
import optax

import fbp
from fbp import data as fdata
from fbp import train as ftrain

CASES = [dict(sizes=[784, 30, 10], batch=10, lr=0.5), dict(sizes=[784, 100, 10], batch=128, lr=0.5)]


def load_data():
    try:
        ds = fdata.fashion_mnist(n_validation=0)
        return "Fashion-MNIST", ds.train.X, ds.train.Y
    except fdata.DataError:
        rng = np.random.default_rng(0)
        X = rng.uniform(size=(60_000, 784)).astype(np.float32)
        return "random (Fashion-MNIST not installed)", X, np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60_000)]


def time_fbp(case, X, Y, repeats):
    params = fbp.init_mlp(jax.random.key(0), case["sizes"], output_activation="softmax")
    opt = optax.sgd(case["lr"])
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood"), case["batch"])
    Xd, Yd = jax.device_put(X), jax.device_put(Y)
    state = opt.init(params)
    jax.block_until_ready(epoch(params, state, jax.random.key(0), Xd, Yd))  # compile
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        params, state, losses = epoch(params, state, jax.random.key(r + 1), Xd, Yd)
        jax.block_until_ready(losses)
        times.append(time.perf_counter() - t)
    n = (len(X) // case["batch"]) * case["batch"]
    return n / statistics.median(times)


def time_torch(case, X, Y, repeats):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    n_in, n_hidden, n_out = case["sizes"]
    net = torch.nn.Sequential(torch.nn.Linear(n_in, n_hidden), torch.nn.Sigmoid(), torch.nn.Linear(n_hidden, n_out))
    opt = torch.optim.SGD(net.parameters(), lr=case["lr"])
    Xt, yt = torch.from_numpy(X), torch.from_numpy(Y.argmax(1))
    bs = case["batch"]
    n = (len(X) // bs) * bs

    def epoch():
        order = torch.randperm(len(X))[:n].view(-1, bs)
        for idx in order:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()

    epoch()  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


# --- the book's network.py, in NumPy: one Python backprop per example -------
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


class BookNetwork:
    def __init__(self, sizes, seed=0):
        rng = np.random.default_rng(seed)
        self.weights = [rng.standard_normal((y, x)) / np.sqrt(x) for x, y in zip(sizes[:-1], sizes[1:])]
        self.biases = [rng.standard_normal((y, 1)) for y in sizes[1:]]

    def update_mini_batch(self, mini_batch, eta):
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        for x, y in mini_batch:
            delta_nabla_b, delta_nabla_w = self.backprop(x, y)
            nabla_b = [nb + dnb for nb, dnb in zip(nabla_b, delta_nabla_b)]
            nabla_w = [nw + dnw for nw, dnw in zip(nabla_w, delta_nabla_w)]
        self.weights = [w - (eta / len(mini_batch)) * nw for w, nw in zip(self.weights, nabla_w)]
        self.biases = [b - (eta / len(mini_batch)) * nb for b, nb in zip(self.biases, nabla_b)]

    def backprop(self, x, y):
        activation, activations, zs = x, [x], []
        for i, (b, w) in enumerate(zip(self.biases, self.weights)):
            z = w @ activation + b
            zs.append(z)
            activation = _softmax(z) if i == len(self.weights) - 1 else _sigmoid(z)
            activations.append(activation)
        delta = activations[-1] - y  # softmax + log-likelihood
        nabla_b = [None] * len(self.biases)
        nabla_w = [None] * len(self.weights)
        nabla_b[-1], nabla_w[-1] = delta, delta @ activations[-2].T
        for l in range(2, len(self.weights) + 1):
            s = _sigmoid(zs[-l])
            delta = (self.weights[-l + 1].T @ delta) * s * (1 - s)
            nabla_b[-l], nabla_w[-l] = delta, delta @ activations[-l - 1].T
        return nabla_b, nabla_w


def time_numpy(case, X, Y, n_examples):
    net = BookNetwork(case["sizes"])
    data = [(x.reshape(-1, 1).astype(np.float64), y.reshape(-1, 1).astype(np.float64))
            for x, y in zip(X[:n_examples], Y[:n_examples])]
    bs = case["batch"]
    batches = [data[k:k + bs] for k in range(0, (len(data) // bs) * bs, bs)]
    net.update_mini_batch(batches[0], case["lr"])  # warm up
    t = time.perf_counter()
    for mb in batches:
        net.update_mini_batch(mb, case["lr"])
    return len(batches) * bs / (time.perf_counter() - t)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--numpy-examples", type=int, default=10_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    name, X, Y = load_data()
    device = jax.devices()[0]
    try:
        import torch
        torch_desc = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch_desc = "torch not installed"
    print(f"data: {name}, {len(X)} examples; jax {jax.__version__} on {device.platform}; {torch_desc}; "
          f"{os.cpu_count()} CPUs, {platform.machine()}")
    print(f"{'case':<28} {'fbp ex/s':>11} {'torch ex/s':>11} {'numpy ex/s':>11} {'fbp/torch':>9} {'fbp/numpy':>9}")
    results = []
    for case in CASES:
        f = time_fbp(case, X, Y, args.repeats)
        t = time_torch(case, X, Y, args.repeats)
        n = time_numpy(case, X, Y, args.numpy_examples)
        r = dict(case=f"{case['sizes']} mini-batch {case['batch']}", fbp=f, torch=t, numpy=n,
                 fbp_over_torch=(f / t) if t else None, fbp_over_numpy=f / n)
        results.append(r)
        ts = f"{t:11.0f}" if t else f"{'-':>11}"
        rt = f"{f / t:9.2f}" if t else f"{'-':>9}"
        print(f"{r['case']:<28} {f:11.0f} {ts} {n:11.0f} {rt} {f / n:9.1f}")
    print("targets: fbp/torch ≥ 4 at mini-batch 10, ≥ 1 at 128; fbp/numpy ≥ 30")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(data=name, device=str(device), results=results), fh, indent=2)


if __name__ == "__main__":
    main()

"""Training throughput: examples per second for one epoch, side by side.

Same network (sigmoid hidden layer, softmax output, log-likelihood cost, plain
SGD), same mini-batch size, same data, in one run:

- fbp: one jitted epoch (``lax.scan`` over the mini-batches, hand-written gradient),
  on the inputs ``fit`` trains on: the bytes of byte images (Fashion-MNIST's),
  decoded one mini-batch at a time; the same epoch on float32 inputs is timed
  beside it;
- PyTorch eager on the CPU (nn.Linear/Sigmoid, F.cross_entropy, optim.SGD), if
  installed, with the faster of one thread and its default thread count (the
  targets' baseline); when jax runs on a GPU and torch sees one, also the same
  eager loop on that GPU, for a comparison on the same device;
- NumPy in the book's style: ``update_mini_batch`` loops over the examples of
  each mini-batch in Python and calls ``backprop`` for each (network.py, ch. 1).

Data: Fashion-MNIST's 60,000 training images when Debian's
``dataset-fashion-mnist`` is installed, else random inputs of the same shape.
Each figure is the median of ``--repeats`` rounds after a warm-up; a round
times one epoch of each contender (fbp on bytes and on floats, torch at each
thread count, the NumPy loop), in an order rotated from round to round, so
that another job on a shared machine slows all of them rather than whichever
happened to be running; the lowest and highest round-by-round ratios are
printed beside the medians. The NumPy loop, being slow, is timed on the first
``--numpy-examples`` examples.

    python benchmarks/train_throughput.py [--repeats 3] [--json out.json] [--breakdown] [--trace] [--data-dir DIR]
    XLA_FLAGS=... python benchmarks/train_throughput.py --fbp-only   # fbp alone, to compare settings

``--breakdown`` also times the pieces of one [784, 30, 10] mini-batch-10 step
(each in a ``lax.scan`` of 6,000 steps, chained so none can be skipped) and the
same forward product in NumPy, to show where the step's time goes; ``--trace``
lists the XLA operations of fit's step with their times from ``jax.profiler``.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import platform
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fbp
from _data import fashion_mnist_or_random
from _timing import interleaved, median_seconds, ratio_spread
from fbp import train as ftrain

CASES = [dict(sizes=[784, 30, 10], batch=10, lr=0.5), dict(sizes=[784, 100, 10], batch=128, lr=0.5)]


def fbp_epochs(case, X, Y, dropout=0.0):
    """fbp's epoch as timers: on the inputs fit trains on (the bytes of byte
    images, else the floats) and, when those are bytes, on the float32 inputs
    too. Returns ({route: timer}, fit's route); each timer runs one epoch
    (compiled here) and returns (examples, seconds). With ``dropout``, the
    epoch of a dropout step (masks drawn each step)."""
    params = fbp.init_mlp(jax.random.key(0), case["sizes"], output_activation="softmax")
    opt = optax.sgd(case["lr"])
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood", dropout=dropout), case["batch"])
    Xf, Yd = jax.device_put(X), jax.device_put(Y)
    Xfit = ftrain.compact_inputs(Xf)  # what fit trains on
    inputs = {"bytes": Xfit, "floats": Xf} if Xfit.dtype == np.uint8 else {"floats": Xf}
    state = opt.init(params)
    n = (len(X) // case["batch"]) * case["batch"]

    def timer(Xd):
        keys = iter(range(1, 1 << 30))

        def run():
            key = jax.random.key(next(keys))
            t = time.perf_counter()
            jax.block_until_ready(epoch(params, state, key, Xd, Yd)[2])
            return n, time.perf_counter() - t
        return run

    timers = {route: timer(Xd) for route, Xd in inputs.items()}
    for Xd in inputs.values():
        jax.block_until_ready(epoch(params, state, jax.random.key(0), Xd, Yd))  # compile
    return timers, next(iter(inputs))


def torch_epochs(case, X, Y, cuda=False):
    """PyTorch eager's epoch as timers, one per thread count: its default
    intra-op count and one (on 2 cores one thread is faster at mini-batch 10,
    53k against 47k examples/s, and slower at 128); with ``cuda`` and a GPU
    torch can use, also the same loop on that GPU (key "cuda"), the data put
    there once and the clock read after a synchronize. {} without torch."""
    try:
        import torch
    except ImportError:
        return {}
    default = torch.get_num_threads()
    n_in, n_hidden, n_out = case["sizes"]
    bs = case["batch"]
    n = (len(X) // bs) * bs

    def timer(device, threads=None):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(n_in, n_hidden), torch.nn.Sigmoid(),
                                  torch.nn.Linear(n_hidden, n_out)).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=case["lr"])
        Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(Y.argmax(1)).to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def run():
            if threads:
                torch.set_num_threads(threads)
            sync()
            t = time.perf_counter()
            order = torch.randperm(len(X), device=device)[:n].view(-1, bs)
            for idx in order:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
            sync()
            seconds = time.perf_counter() - t
            torch.set_num_threads(default)
            return n, seconds
        return run

    timers = {threads: timer("cpu", threads) for threads in sorted({default, 1})}
    timers[1]()  # warm up
    if cuda and torch.cuda.is_available():
        timers["cuda"] = timer("cuda")
        timers["cuda"]()  # warm up: CUDA context, kernels
    return timers


# --- the book's network, in NumPy: one Python backprop per example ---------
# Transcribed from network.py / network2.py (ch. 1-3) line for line, np.dot,
# sigmoid_prime recomputing σ, the zero arrays backprop allocates, float32
# inputs as the book's mnist_loader gives them, with the softmax output and
# log-likelihood cost of ch. 3 (δ^L = a − y) so that all three run the same net.
# An earlier version used `@` and computed σ once; it was slower (17k against
# 22k examples/s at mini-batch 10), so the ratio against it flattered fbp.
def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z):
    return sigmoid(z) * (1 - sigmoid(z))


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / np.sum(e)


class BookNetwork:
    def __init__(self, sizes, seed=0):
        rng = np.random.RandomState(seed)
        self.num_layers = len(sizes)
        self.biases = [rng.randn(y, 1) for y in sizes[1:]]
        self.weights = [rng.randn(y, x) / np.sqrt(x) for x, y in zip(sizes[:-1], sizes[1:])]

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
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for i, (b, w) in enumerate(zip(self.biases, self.weights)):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = softmax(z) if i == len(self.weights) - 1 else sigmoid(z)
            activations.append(activation)
        delta = activations[-1] - y  # softmax + log-likelihood
        nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return (nabla_b, nabla_w)


def numpy_epochs(case, X, Y, n_examples):
    """The book's loop as a timer: ``update_mini_batch`` over the mini-batches
    of the first ``n_examples`` examples (the same ones each round; the
    network goes on training from round to round)."""
    net = BookNetwork(case["sizes"])
    data = [(x.reshape(-1, 1), y.reshape(-1, 1).astype(np.float64)) for x, y in zip(X[:n_examples], Y[:n_examples])]
    bs = case["batch"]
    batches = [data[k:k + bs] for k in range(0, (len(data) // bs) * bs, bs)]
    net.update_mini_batch(batches[0], case["lr"])  # warm up

    def run():
        t = time.perf_counter()
        for mb in batches:
            net.update_mini_batch(mb, case["lr"])
        return len(batches) * bs, time.perf_counter() - t
    return run


def breakdown(X, Y, repeats):
    """Microseconds per step of the pieces of the [784, 30, 10] mini-batch-10 step."""
    bs, steps = 10, len(X) // 10
    params = fbp.init_mlp(jax.random.key(0), [784, 30, 10], output_activation="softmax")
    opt = optax.sgd(0.5)
    step = ftrain.make_train_step(opt, "log_likelihood")
    Xd, Yd = jax.device_put(X[: steps * bs]), jax.device_put(Y[: steps * bs])
    Xb, Yb = Xd.reshape(steps, bs, -1), Yd.reshape(steps, bs, -1)
    W = params[0].w  # (30, 784)
    D = jnp.full((bs, 30), 1e-3, W.dtype)

    def scan(body, carry, xs):
        return jax.jit(lambda c, xs: jax.lax.scan(lambda c, x: (body(c, x), None), c, xs)[0]), (carry, xs)

    pieces = {
        "whole epoch, float32 inputs (shuffle, copy, step)": (ftrain.make_epoch(step, bs), (params, opt.init(params), jax.random.key(0), Xd, Yd)),
    }
    Xfit = ftrain.compact_inputs(Xd)
    if Xfit.dtype == np.uint8:
        pieces["whole epoch on the bytes (what fit runs)"] = (
            ftrain.make_epoch(step, bs), (params, opt.init(params), jax.random.key(0), Xfit, Yd))
    pieces |= {
        "step on batches already in order": scan(lambda c, xy: step(*c, *xy)[:2], (params, opt.init(params)), (Xb, Yb)),
        # The whole product feeds the next step: from one element of it XLA
        # may compute only what that element needs.
        "forward product A·Wᵀ (10×784·784×30)": scan(lambda w, a: w * (1 + 1e-12 * jnp.sum(a @ w.T)), W, Xb),
        "weight gradient and update w − η·ΔᵀA": scan(lambda w, a: w - 1e-9 * (jax.lax.optimization_barrier(D.T * w[0, 0]) @ a), W, Xb),
    }
    out = {name: median_seconds(fn, args, repeats) / steps * 1e6 for name, (fn, args) in pieces.items()}
    a, w = np.asarray(Xb[0]), np.asarray(W)
    t = time.perf_counter()
    for _ in range(20_000):
        np.dot(a, w.T)
    out["the same forward product in NumPy (from Python)"] = (time.perf_counter() - t) / 20_000 * 1e6
    for name, us in out.items():
        print(f"  {name:<48} {us:7.1f} µs")
    return out


def operation_trace(X, Y, steps=3000, top=12):
    """Median µs per step of each XLA operation of fit's [784, 30, 10]
    mini-batch-10 epoch (on the bytes when the inputs are byte images), from
    ``jax.profiler``'s trace: one event per operation run. Tracing adds a
    little to each event, so the sum exceeds the untraced step."""
    bs = 10
    params = fbp.init_mlp(jax.random.key(0), [784, 30, 10], output_activation="softmax")
    opt = optax.sgd(0.5)
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood"), bs)
    Xd, Yd = jax.device_put(X[: steps * bs]), jax.device_put(Y[: steps * bs])
    args = (params, opt.init(params), jax.random.key(0), ftrain.compact_inputs(Xd), Yd)
    jax.block_until_ready(epoch(*args))  # compile outside the trace
    hlo = epoch.lower(*args).compile().as_text()
    shapes = dict(re.findall(r"%([\w.-]+) = (\w+\[[\d,]*\])", hlo))  # each operation's result, to tell them apart
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            jax.block_until_ready(epoch(*args))
        paths = glob.glob(os.path.join(d, "**", "perfetto_trace.json.gz"), recursive=True)
        if not paths:
            print("  (this jax wrote no perfetto trace)")
            return None
        with gzip.open(paths[0]) as fh:
            events = json.load(fh)["traceEvents"]
    durations = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(("$", "end:")):
            durations[e["name"]].append(e["dur"])
    per_step = sorted(((statistics.median(d), name) for name, d in durations.items() if len(d) == steps), reverse=True)
    print(f"  {len(per_step)} operations per step, {sum(us for us, _ in per_step):.1f} µs between them; the largest:")
    for us, name in per_step[:top]:
        print(f"  {name + ' → ' + shapes.get(name, '?'):<54} {us:7.2f} µs")
    return {name: us for us, name in per_step}


def fbp_only(case, X, Y, rounds, dropout=0.0):
    """fbp's epochs alone, on each of its inputs: examples/s (median of the
    rounds) and µs per step, printed and returned. With ``dropout``, the
    dropout epochs too, in the same rounds, and each one's time over the plain
    epoch's."""
    timers, route = fbp_epochs(case, X, Y)
    if dropout:
        timers |= {f"{k}, dropout {dropout:g}": v for k, v in fbp_epochs(case, X, Y, dropout)[0].items()}
    rates = interleaved(timers, rounds)
    out = dict(case=f"{case['sizes']} mini-batch {case['batch']}", fbp_inputs=route, rounds=rates)
    for inputs, r in rates.items():
        med = statistics.median(r)
        out[inputs] = med
        plain = inputs.split(",")[0]  # "bytes, dropout 0.5" → "bytes"
        slower = f"  {statistics.median(rates[plain]) / med:.2f}× the plain epoch's time" if plain != inputs else ""
        print(f"{out['case']:<32} on {inputs:<6} {med:12,.0f} ex/s  {case['batch'] / med * 1e6:6.1f} µs/step  "
              f"(rounds {min(r):,.0f}–{max(r):,.0f}){slower}")
    return out


def cpu_model():
    """The processor's name (figures differ between machines of one kind), else its architecture."""
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds (each times every contender once) and, for --breakdown, timed repeats")
    parser.add_argument("--numpy-examples", type=int, default=10_000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--breakdown", action="store_true", help="also time the pieces of the mini-batch-10 step")
    parser.add_argument("--trace", action="store_true",
                        help="also trace the mini-batch-10 epoch with jax.profiler and list its operations' times")
    parser.add_argument("--fbp-only", action="store_true",
                        help="time fbp's epochs alone (no torch, no NumPy loop): to compare settings such as XLA_FLAGS "
                             "run after run, on the same machine")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="with --fbp-only, also time epochs with this dropout rate, in the same rounds")
    parser.add_argument("--data-dir", default=None,
                        help="the directory of Fashion-MNIST's IDX files (default: where Debian's package puts them)")
    args = parser.parse_args()
    if args.dropout and not args.fbp_only:
        parser.error("--dropout times fbp's dropout epochs beside its plain ones; it goes with --fbp-only")
    name, X, Y = fashion_mnist_or_random(args.data_dir)
    device = jax.devices()[0]
    try:
        import torch
        torch_desc = f"torch {torch.__version__}, best of 1 and {torch.get_num_threads()} threads"
    except ImportError:
        torch_desc = "torch not installed"
    cpu = cpu_model()
    print(f"data: {name}, {len(X)} examples; jax {jax.__version__} on {device.platform} ({device.device_kind}); {torch_desc}; "
          f"{os.cpu_count()} CPUs, {cpu}")
    print(f"each figure: the median of {args.repeats} rounds, each round timing every contender once, in turn")
    if args.fbp_only:
        print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '(not set)')}")
        results = [fbp_only(case, X, Y, args.repeats, args.dropout) for case in CASES]
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(dict(data=name, device=str(device), cpu=cpu, cpus=os.cpu_count(), jax=jax.__version__,
                               xla_flags=os.environ.get("XLA_FLAGS"), results=results), fh, indent=2)
        return
    print(f"{'case':<28} {'fbp ex/s':>11} {'torch ex/s':>11} {'numpy ex/s':>11} {'fbp/torch':>9} {'fbp/numpy':>9}")
    results = []
    for case in CASES:
        fbp_timers, route = fbp_epochs(case, X, Y)
        torch_timers = torch_epochs(case, X, Y, cuda=device.platform == "gpu")
        timers = {("fbp", k): v for k, v in fbp_timers.items()} | {("torch", k): v for k, v in torch_timers.items()}
        timers[("numpy", None)] = numpy_epochs(case, X, Y, args.numpy_examples)
        rates = interleaved(timers, args.repeats)
        med = {k: statistics.median(v) for k, v in rates.items()}
        f, f_floats, n = med[("fbp", route)], med[("fbp", "floats")], med[("numpy", None)]
        cpu_threads = [k for k in torch_timers if k != "cuda"]
        t_threads = max(cpu_threads, key=lambda k: med[("torch", k)], default=None)
        t = med[("torch", t_threads)] if cpu_threads else None
        fbp_rounds = rates[("fbp", route)]
        tc = med.get(("torch", "cuda"))
        over_torch_cuda = ratio_spread(fbp_rounds, rates[("torch", "cuda")]) if tc else None
        over_numpy = ratio_spread(fbp_rounds, rates[("numpy", None)])
        over_torch = ratio_spread(fbp_rounds, rates[("torch", t_threads)]) if t else None
        r = dict(case=f"{case['sizes']} mini-batch {case['batch']}", fbp=f, fbp_inputs=route,
                 fbp_float_inputs=f_floats, torch=t, torch_threads=t_threads, numpy=n,
                 fbp_over_torch=(f / t) if t else None, fbp_over_numpy=f / n,
                 torch_cuda=tc, fbp_over_torch_cuda=(f / tc) if tc else None,
                 fbp_over_torch_cuda_rounds=over_torch_cuda,
                 fbp_over_torch_rounds=over_torch, fbp_over_numpy_rounds=over_numpy,
                 rounds={'/'.join(str(p) for p in k if p is not None): v for k, v in rates.items()})
        results.append(r)
        ts = f"{t:11.0f}" if t else f"{'-':>11}"
        rt = f"{f / t:9.2f}" if t else f"{'-':>9}"
        notes = [f"fbp on {route}" + (f"; {f_floats:.0f} ex/s on float32 inputs" if route == "bytes" else "")]
        if t:
            notes.append(f"torch best with {t_threads} thread{'s' if t_threads > 1 else ''}")
            notes.append(f"round by round fbp/torch {over_torch[0]:.2f}–{over_torch[1]:.2f}")
        notes.append(f"fbp/numpy {over_numpy[0]:.1f}–{over_numpy[1]:.1f}")
        if tc:
            notes.append(f"torch eager on the GPU {tc:.0f} ex/s, fbp/that {f / tc:.2f} "
                         f"[{over_torch_cuda[0]:.2f}–{over_torch_cuda[1]:.2f}]")
        print(f"{r['case']:<28} {f:11.0f} {ts} {n:11.0f} {rt} {f / n:9.1f}   ({'; '.join(notes)})")
    print("targets: fbp/torch ≥ 4 at mini-batch 10, ≥ 1 at 128; fbp/numpy ≥ 30")
    pieces = None
    if args.breakdown:
        print("per step of [784, 30, 10], mini-batch 10 (median of the repeats):")
        pieces = breakdown(X, Y, args.repeats)
    traced = None
    if args.trace:
        print("XLA operations of one [784, 30, 10] mini-batch-10 step, traced (median over 3,000 steps):")
        traced = operation_trace(X, Y)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(data=name, device=str(device), cpu=cpu, cpus=os.cpu_count(), jax=jax.__version__,
                           results=results, breakdown_us=pieces, traced_operations_us=traced), fh, indent=2)


if __name__ == "__main__":
    main()

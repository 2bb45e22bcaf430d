"""Convolutional training throughput: examples per second, side by side.

The book's first convolutional network (ch. 6): 20 feature maps of 5×5
kernels with 2×2 max-pooling, a fully connected layer of 100, a softmax
output, sigmoid hidden units, the log-likelihood cost and plain SGD. In one
run, each an epoch over the same examples with the same mini-batch:

- fbp: one jitted epoch (``lax.scan`` over the mini-batches) with the
  hand-written gradient, the δ recursion through the pooling and the
  convolution (``fbp.Conv``);
- the same epoch with ``jax.grad`` of the same cost for its gradient
  (``make_train_step(..., grad="autodiff")``): same framework, same forward,
  so the ratio is the hand-written backward's against autodiff's;
- PyTorch eager on the CPU, if installed and jax runs on the CPU (Conv2d,
  MaxPool2d, Sigmoid, Linear, F.cross_entropy, optim.SGD), with the faster
  of one thread and its default thread count.

Data: Fashion-MNIST's training images when Debian's ``dataset-fashion-mnist``
is installed, else random images of the same shape; the first ``--examples``
of them make the epoch. Each figure is the median of ``--repeats`` rounds,
each round timing one epoch of every contender in an order rotated from
round to round; the lowest and highest round-by-round ratios are printed
beside the medians.

``--conv 20:5:2,40:5:2`` times the book's second network instead (a second
layer of 40 maps of 5×5 over the first's 20, as ``fbp train --conv`` takes it).

    python benchmarks/conv_throughput.py [--repeats 5] [--examples 10000] [--json out.json] [--data-dir DIR]
                                         [--conv MAPS:K[:POOL],...]
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np
import optax

import fbp
from _data import fashion_mnist_or_random
from _timing import interleaved, ratio_spread
from fbp import train as ftrain
from fbp.cli_args import parse_conv
from train_throughput import cpu_model

CONV, HIDDEN, LR = ((20, 5, 2),), 100, 0.1  # the book's ch. 6 first net; network3 trains it with η = 0.1
BATCHES = (10, 128)


def fbp_epochs(X, Y, batch, conv=CONV):
    """{"hand", "jax.grad"}: timers of one epoch each (compiled here), each
    returning (examples, seconds)."""
    params = fbp.init_convnet(jax.random.key(0), (28, 28), conv, [HIDDEN, 10], output_activation="softmax")
    opt = optax.sgd(LR)
    state = opt.init(params)
    Xd, Yd = jax.device_put(X), jax.device_put(Y)
    n = (len(X) // batch) * batch
    timers = {}
    for name, grad in (("hand", "hand"), ("jax.grad", "autodiff")):
        epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood", grad=grad), batch)
        jax.block_until_ready(epoch(params, state, jax.random.key(0), Xd, Yd))  # compile

        def run(epoch=epoch, keys=iter(range(1, 1 << 30))):
            key = jax.random.key(next(keys))
            t = time.perf_counter()
            jax.block_until_ready(epoch(params, state, key, Xd, Yd)[2])
            return n, time.perf_counter() - t
        timers[name] = run
    return timers


def torch_epochs(X, Y, batch, conv=CONV):
    """PyTorch eager's epoch as timers, one per thread count ({} without torch)."""
    try:
        import torch
    except ImportError:
        return {}
    default = torch.get_num_threads()
    n = (len(X) // batch) * batch

    def timer(threads):
        torch.manual_seed(0)
        layers, channels, side = [], 1, 28
        for maps, k, pool in conv:
            layers += [torch.nn.Conv2d(channels, maps, k), torch.nn.MaxPool2d(pool), torch.nn.Sigmoid()]
            channels, side = maps, (side - k + 1) // pool
        net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(channels * side * side, HIDDEN),
                                  torch.nn.Sigmoid(), torch.nn.Linear(HIDDEN, 10))
        opt = torch.optim.SGD(net.parameters(), lr=LR)
        Xt = torch.from_numpy(np.ascontiguousarray(X.reshape(-1, 1, 28, 28)))
        yt = torch.from_numpy(Y.argmax(1))

        def run():
            torch.set_num_threads(threads)
            t = time.perf_counter()
            for idx in torch.randperm(len(X))[:n].view(-1, batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(Xt[idx]), yt[idx]).backward()
                opt.step()
            seconds = time.perf_counter() - t
            torch.set_num_threads(default)
            return n, seconds
        return run

    timers = {f"torch {t} thread{'s' if t > 1 else ''}": timer(t) for t in sorted({default, 1})}
    for run in timers.values():
        run()  # warm up
    return timers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--conv", type=parse_conv, default=list(CONV), metavar="MAPS:K[:POOL],…",
                        help="the convolutional layers, as fbp train --conv takes them (default 20:5:2)")
    args = parser.parse_args()
    conv = tuple(args.conv)
    name, X, Y = fashion_mnist_or_random(args.data_dir)
    X, Y = np.asarray(X[:args.examples], np.float32), np.asarray(Y[:args.examples], np.float32)
    device = jax.devices()[0]
    print(f"data: {name}, the first {len(X)} examples; jax {jax.__version__} on {device.platform} "
          f"({device.device_kind}); {cpu_model()}; medians of {args.repeats} rounds")
    print("net: " + "; ".join(f"conv {m} maps of {k}×{k}, {p}×{p} max-pooling, sigmoid" for m, k, p in conv)
          + f"; dense {HIDDEN} sigmoid; softmax 10; log-likelihood; SGD η={LR}")
    print(f"{'mini-batch':>10} {'fbp ex/s':>10} {'jax.grad ex/s':>14} {'torch ex/s':>11} {'fbp/jax.grad':>18} "
          f"{'fbp/torch':>18}")
    results = []
    for batch in BATCHES:
        # torch eager runs on the CPU here: beside fbp on a GPU it would compare two devices
        timers = fbp_epochs(X, Y, batch, conv) | (torch_epochs(X, Y, batch, conv) if device.platform == "cpu" else {})
        rates = interleaved(timers, args.repeats)
        med = {k: statistics.median(v) for k, v in rates.items()}
        torch_keys = [k for k in med if k.startswith("torch")]
        best_torch = max(torch_keys, key=med.get) if torch_keys else None
        over_auto = ratio_spread(rates["hand"], rates["jax.grad"])
        over_torch = ratio_spread(rates["hand"], rates[best_torch]) if best_torch else None
        row = dict(batch=batch, fbp=med["hand"], jax_grad=med["jax.grad"], fbp_over_jax_grad=med["hand"] / med["jax.grad"],
                   fbp_over_jax_grad_rounds=over_auto, torch=med.get(best_torch), torch_threads=best_torch,
                   fbp_over_torch=(med["hand"] / med[best_torch]) if best_torch else None,
                   fbp_over_torch_rounds=over_torch, rounds={k: v for k, v in rates.items()})
        results.append(row)
        t = f"{med[best_torch]:11,.0f}" if best_torch else f"{'-':>11}"
        ot = (f"{row['fbp_over_torch']:5.2f} [{over_torch[0]:.2f}–{over_torch[1]:.2f}]" if best_torch else "-")
        print(f"{batch:>10} {med['hand']:10,.0f} {med['jax.grad']:14,.0f} {t} "
              f"{row['fbp_over_jax_grad']:5.2f} [{over_auto[0]:.2f}–{over_auto[1]:.2f}] {ot:>18}"
              + (f"  ({best_torch})" if best_torch else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(data=name, examples=len(X), jax=jax.__version__, device=device.device_kind,
                           cpu=cpu_model(), repeats=args.repeats,
                           net=dict(conv=conv, hidden=HIDDEN, lr=LR), results=results), f, indent=1)


if __name__ == "__main__":
    main()

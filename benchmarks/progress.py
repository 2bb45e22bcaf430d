"""What the progress reports of an epoch cost: ``make_epoch(progress=f)``
(20 reports from inside the jitted scan, each an ordered ``io_callback``
whose answer can end the epoch, what ``fit(on_progress=...)`` and ``fbp
train``'s progress bar use) against the same epoch without them, side by side.

For each case, one round times an epoch of each kind in turn (the order
rotated from round to round, each timed run after an untimed one of its
own); the figures are medians over the rounds, the brackets the lowest and
highest round-by-round ratio. The host function is a no-op, so what is timed
is the callbacks themselves. Both kinds are checked to give bitwise the same
params. Data: Fashion-MNIST's 60,000 training images when installed (random
bytes of that shape otherwise), kept as bytes as ``fit`` keeps them; and the
bundled digits.

    python benchmarks/progress.py [--repeats 5] [--wide-repeats 3] [--no-wide] [--json out.json] [--data-dir DIR]

The wide case, [784, 1000, 1000, 10] at mini-batch 10, takes about 7 s an
epoch on two cores: it is what the reports are for, and what ``fit``'s
threshold (an epoch of a second or more) is set by.
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
from _data import fashion_mnist_or_random
from _timing import interleaved, ratio_spread
from fbp import data as fdata
from fbp import epoch as fepoch

UPDATES = 20


def timers(sizes, batch, X, Y, repeat):
    """{"plain": timer, "reporting": timer}, each running ``repeat`` epochs
    and returning (epochs, seconds); and whether the two give bitwise the
    same params."""
    params = fbp.init_mlp(jax.random.key(0), sizes, output_activation="softmax")
    opt = optax.sgd(0.5)
    step = fepoch.make_train_step(opt, "log_likelihood")
    Xd, Yd = fepoch.compact_inputs(X), jax.device_put(Y)
    args = (params, opt.init(params), jax.random.key(1), Xd, Yd)
    epochs = dict(plain=fepoch.make_epoch(step, batch),
                  reporting=fepoch.make_epoch(step, batch, progress=lambda done, steps: None, updates=UPDATES))
    outs = {}
    for name, epoch in epochs.items():
        outs[name] = jax.block_until_ready(epoch(*args))  # compiled here
    jax.effects_barrier()
    same = all(bool(np.array_equal(a, b)) for a, b in zip(jax.tree.leaves(outs["plain"]),
                                                          jax.tree.leaves(outs["reporting"])))

    def timer(epoch):
        def run():
            t = time.perf_counter()
            for _ in range(repeat):
                jax.block_until_ready(epoch(*args))
            jax.effects_barrier()  # as fit waits for the reports before the next epoch
            return repeat, time.perf_counter() - t
        return run
    return {name: timer(epoch) for name, epoch in epochs.items()}, same


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="rounds for each case but the wide one")
    p.add_argument("--wide-repeats", type=int, default=3, help="rounds for [784, 1000, 1000, 10]")
    p.add_argument("--no-wide", action="store_true", help="leave out [784, 1000, 1000, 10] (7 s an epoch)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--data-dir", help="Fashion-MNIST's IDX files (default: where Debian's package puts them)")
    args = p.parse_args()
    name, X, Y = fashion_mnist_or_random(args.data_dir)
    digits = fdata.digits(n_validation=0)
    cases = [("digits", [64, 100, 10], 10, digits.train.X, digits.train.Y, 20, args.repeats),
             (name, [784, 30, 10], 10, X, Y, 1, args.repeats),
             (name, [784, 100, 10], 128, X, Y, 1, args.repeats)]
    if not args.no_wide:
        cases.append((name, [784, 1000, 1000, 10], 10, X, Y, 1, args.wide_repeats))
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}; {UPDATES} reports an epoch")
    print(f"{'case':<40} {'no reports':>12} {'20 reports':>12} {'cost':>16} {'a report':>9}  bitwise")
    results = []
    for data, sizes, batch, Xc, Yc, repeat, rounds in cases:
        ts, same = timers(sizes, batch, Xc, Yc, repeat)
        rates = interleaved(ts, rounds)  # epochs per second
        plain, reporting = (1 / statistics.median(rates[k]) for k in ("plain", "reporting"))
        lo, hi = ratio_spread(rates["plain"], rates["reporting"])
        per_report_ms = (reporting - plain) / UPDATES * 1e3
        label = f"{sizes} mb {batch}, {data.split(' ')[0]}"
        print(f"{label:<40} {plain * 1e3:9.1f} ms {reporting * 1e3:9.1f} ms "
              f"{reporting / plain - 1:+6.1%} [{lo - 1:+.1%}, {hi - 1:+.1%}] {per_report_ms:6.3f} ms  {same}")
        results.append(dict(data=data, sizes=sizes, batch=batch, n=len(Xc), rounds=rounds,
                            epoch_seconds=plain, reporting_epoch_seconds=reporting,
                            cost_fraction=reporting / plain - 1, cost_fraction_rounds=[lo - 1, hi - 1],
                            per_report_ms=per_report_ms, bitwise_same=same))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(jax=jax.__version__, device=str(device), cpus=os.cpu_count(), updates=UPDATES,
                           results=results), fh, indent=2)


if __name__ == "__main__":
    main()

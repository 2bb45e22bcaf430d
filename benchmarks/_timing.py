"""Timing shared by the benchmark scripts (run as `python benchmarks/NAME.py`)."""

import statistics
import time

import jax


def per_call(fn, args, inner):
    """Seconds per call of ``fn(*args)`` over ``inner`` back-to-back calls, waiting for the last result."""
    t = time.perf_counter()
    for _ in range(inner):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / inner


def median_seconds(fn, args, repeats):
    """Median wall time of ``fn(*args)`` over ``repeats`` calls after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(timers, rounds):
    """Examples/s of each timer over ``rounds`` rounds, each round running
    every timer once, in an order rotated from round to round. A machine
    shared with other jobs slows whatever runs while they do; taking turns
    spreads that over all the contenders instead of one.

    Each timed run follows an untimed one of the same contender, as an epoch
    of training follows the previous epoch. Without it, whichever fbp epoch
    came right after the NumPy loop ran about 10% slower at mini-batch 128
    (2 cores, AMD EPYC: 320k against 360k examples/s, round after round),
    so that the order of the turns decided which of fbp's two routes looked
    faster."""
    names = list(timers)
    rates = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            timers[name]()  # settle (see above)
            n, seconds = timers[name]()
            rates[name].append(n / seconds)
    return rates


def ratio_spread(a, b):
    """The smallest and largest round-by-round ratio a/b."""
    ratios = [x / y for x, y in zip(a, b)]
    return min(ratios), max(ratios)

"""What compiling costs under the installed jax, against what the program
then runs at: run it in two virtual environments (the newest jax, and the
floor's, ``.ci/floor``'s ``.venv-floor``) to compare jax releases.

- the XLA compile time (``.lower(...).compile()``, the tracing and lowering
  left out) of twelve small programs of the kinds the test suite compiles by
  the hundred: ``batch_backward``, ``jax.grad``'s gradient and a whole
  ``make_epoch`` epoch, for four small nets in float64, each shape once;
- the compile time of the [784, 30, 10] mini-batch-10 epoch on 60,000
  random byte images (Fashion-MNIST's shape), and the µs per step it then
  runs at (the median of ``--repeats`` epochs).

Each figure is the median of ``--rounds`` fresh processes, since a process
compiles a program once.

    python benchmarks/compile_time.py [--rounds 3] [--repeats 3] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SMALL_NETS = ([6, 8, 3], [64, 100, 10], [20, 13, 7, 5], [7, 9, 4])


def compile_seconds(fn, args) -> float:
    """XLA's compile time of ``fn`` for ``args``, its tracing and lowering left out."""
    lowered = fn.lower(*args)
    t = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - t


def one_round(repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import fbp
    from _timing import median_seconds
    from fbp import train as ftrain

    jax.config.update("jax_enable_x64", True)
    # A persistent cache (JAX_COMPILATION_CACHE_DIR set) would read programs back instead of compiling them.
    jax.config.update("jax_enable_compilation_cache", False)
    small = 0.0
    for sizes in SMALL_NETS:
        params = fbp.init_mlp(jax.random.key(0), sizes, output_activation="softmax", dtype=jnp.float64)
        X = jnp.ones((12, sizes[0]))
        Y = jnp.eye(sizes[-1])[jnp.zeros(12, int)]
        opt = optax.sgd(0.5)
        programs = (
            (jax.jit(lambda p, X, Y: fbp.batch_backward(p, X, Y, "log_likelihood")), (params, X, Y)),
            (jax.jit(lambda p, X, Y: fbp.autodiff_grad(p, X, Y, "log_likelihood")), (params, X, Y)),
            (ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood"), 4),
             (params, opt.init(params), jax.random.key(0), X, Y)),
        )
        small += sum(compile_seconds(fn, args) for fn, args in programs)

    params = fbp.init_mlp(jax.random.key(0), [784, 30, 10], output_activation="softmax")
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.integers(0, 256, (60_000, 784), dtype=np.uint8))
    Y = jnp.eye(10, dtype=jnp.float32)[rng.integers(0, 10, 60_000)]
    opt = optax.sgd(0.5)
    batch = 10
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood"), batch)
    args = (params, opt.init(params), jax.random.key(0), X, Y)
    epoch_compile = compile_seconds(epoch, args)
    step_s = median_seconds(epoch, args, repeats) / (len(X) // batch)
    return dict(small_programs_s=small, epoch_compile_s=epoch_compile, step_us=step_s * 1e6, jax=jax.__version__,
                device=f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes, each compiling everything once")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs in each process")
    parser.add_argument("--json")
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(one_round(args.repeats)))
        return
    rounds = []
    for _ in range(args.rounds):
        done = subprocess.run([sys.executable, __file__, "--one-round", "--repeats", str(args.repeats)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"compile_time.py: a round failed (exit {done.returncode}):\n{done.stderr}")
        rounds.append(json.loads(done.stdout.strip().splitlines()[-1]))
    from train_throughput import cpu_model

    med = {k: statistics.median(r[k] for r in rounds) for k in ("small_programs_s", "epoch_compile_s", "step_us")}
    flags = os.environ.get("XLA_FLAGS", "")
    print(f"jax {rounds[0]['jax']} on {rounds[0]['device']}, {cpu_model()}; medians of {args.rounds} processes"
          + (f"; XLA_FLAGS={flags}" if flags else ""))
    print(f"  12 small programs (batch_backward, jax.grad, an epoch; 4 nets): {med['small_programs_s']:.2f} s to compile"
          f"  [{min(r['small_programs_s'] for r in rounds):.2f}–{max(r['small_programs_s'] for r in rounds):.2f}]")
    print(f"  [784, 30, 10] mini-batch-10 epoch: {med['epoch_compile_s']:.2f} s to compile, "
          f"then {med['step_us']:.1f} µs a step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(medians=med, rounds=rounds, cpu=cpu_model(), xla_flags=flags), f, indent=1)


if __name__ == "__main__":
    main()

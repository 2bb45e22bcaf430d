"""Data-parallel step time on 1, 2, 4, 8 devices.

On the CPU the devices are forced host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8, set here before jax
starts): they share the machine's cores, so this measures the overhead of
sharding and the all-reduce, not a speed-up. On a machine with several GPUs it
uses the real ones (up to 8).

    python benchmarks/parallel.py [--batch 512] [--rounds 20]
"""

import os

if "--gpu" not in os.sys.argv:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import fbp  # noqa: E402
from fbp import parallel  # noqa: E402
from fbp import train as ftrain  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="784,512,512,10")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--gpu", action="store_true", help="use the real devices, do not force host devices")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    devices = jax.devices()
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    print(f"jax {jax.__version__}: {len(devices)} {devices[0].platform} devices ({devices[0].device_kind}); "
          f"{os.cpu_count()} CPU cores; {sizes} ({n_params:,} parameters, all-reduce {2 * 4 * n_params / 2**20:.1f} MiB/step "
          f"in a ring), batch {args.batch}, {args.steps} steps per call, median of {args.rounds}")
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = fbp.init_mlp(k1, sizes, activation="relu", output_activation="softmax", init="he")
    n = args.batch * args.steps
    X = jax.random.uniform(k2, (n, sizes[0]))
    Y = jax.nn.one_hot(jax.random.randint(k3, (n,), 0, sizes[-1]), sizes[-1])
    opt = optax.sgd(0.1)
    step = ftrain.make_train_step(opt, "log_likelihood")
    print(f"{'devices':>7} {'ms/step':>9} {'× 1 device':>11}")
    base = None
    for d in (1, 2, 4, 8):
        if d > len(devices):
            break
        mesh = parallel.make_mesh(d)
        epoch = parallel.make_sharded_epoch(step, args.batch, mesh)
        p, s = parallel.replicate(mesh, params), parallel.replicate(mesh, opt.init(params))
        order = jnp.arange(n).reshape(args.steps, args.batch)
        data = parallel.batch_sharded(mesh, 1)
        Xb, Yb = jax.device_put(X[order], data), jax.device_put(Y[order], data)
        jax.block_until_ready(epoch.scan(p, s, Xb, Yb))
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            jax.block_until_ready(epoch.scan(p, s, Xb, Yb))
            times.append((time.perf_counter() - t) / args.steps)
        ms = statistics.median(times) * 1e3
        base = base or ms
        print(f"{d:7d} {ms:9.2f} {ms / base:11.2f}")


if __name__ == "__main__":
    main()

"""Influence functions: fbp's outer-product route against per-example gradients from vmap(jax.grad).

``fbp.stats.influence`` gives g_nᵀ H̃⁻¹ g_x for every training example n and
test example x, H̃ the damped K-FAC Gauss-Newton matrix, as Σ_l (δ_n · G̃⁻¹
δ_x)(ā_n · Ã⁻¹ ā_x): two products of the stacked δ's and inputs per layer,
no gradient formed. The route a JAX user would write without it: each
example's gradient by ``jax.vmap(jax.grad)``, each test gradient [∂w | ∂b]
carried through H̃⁻¹ as G̃⁻¹ M Ã⁻¹, and the flattened products. Both from the
same K-FAC factors (computed once, timed on their own), jitted, float32, on
[784, 100, 10] (fbp train's default network on Fashion-MNIST) with N
training and K test examples of Fashion-MNIST (random inputs of the same
shape when it is not installed); interleaved rounds, medians, the ratio,
the largest difference between the two results, and the memory XLA's
compiled programs ask for (temporaries + outputs).

``--conv``: the book's first ch. 6 network, 20 maps of 5×5 kernels over the
28×28 images with 2×2 max-pooling, then [100, 10], whose convolution has
KFC's factors; fbp forms its per-example gradients (20 × 26 numbers), and
the Dense layers' parts are outer products as before.

    python benchmarks/influence.py [--conv] [--train 10000] [--test 100] [--rounds 7] [--json FILE]
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import fbp
from _data import fashion_mnist_or_random
from _timing import per_call
from fbp import stats

COST = "log_likelihood"
SIZES = [784, 100, 10]
CONV = [(20, 5, 2)]  # --conv: (maps, k, pool), then the Dense [100, 10]


def autodiff_route(params, factors, X, Y, X2, Y2, damping):
    """g_nᵀ H̃⁻¹ g'_m from materialised per-example gradients: (N, K)."""
    def grads(A, B):  # per layer, each example's [∂w | ∂b], (n, n_out, n_in + 1) (a Conv's kernels as rows)
        g = jax.vmap(jax.grad(fbp.example_loss), in_axes=(None, 0, 0, None))(params, A, B, COST)
        return [jnp.concatenate([layer.w.reshape(len(A), layer.w.shape[1], -1), layer.b[:, :, None]], axis=2)
                for layer in g]

    total = 0.0
    for (A, G), gn, gm in zip(factors, grads(X, Y), grads(X2, Y2)):
        Ai, Gi = (jnp.linalg.inv(stats._damped(F, damping)) for F in (A, G))
        pre = jnp.einsum("ij,kjl,lm->kim", Gi, gm, Ai)  # H̃⁻¹ g'_m = G̃⁻¹ M Ã⁻¹ (both factors symmetric)
        total = total + gn.reshape(len(gn), -1) @ pre.reshape(len(pre), -1).T
    return total


def memory(fn, args):
    m = fn.lower(*args).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=10_000, help="training examples N")
    p.add_argument("--test", type=int, default=100, help="test examples K")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--conv", action="store_true", help=f"the network {CONV} then [100, 10], not {SIZES}")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args()
    name, X_all, Y_all = fashion_mnist_or_random(args.data_dir)
    X, Y = jnp.asarray(X_all[:args.train]), jnp.asarray(Y_all[:args.train])
    X2, Y2 = jnp.asarray(X_all[-args.test:]), jnp.asarray(Y_all[-args.test:])
    if args.conv:
        params = fbp.init_convnet(jax.random.key(0), (28, 28), CONV, SIZES[1:], output_activation="softmax")
    else:
        params = fbp.init_mlp(jax.random.key(0), SIZES, output_activation="softmax")
    network = f"conv {CONV} then {SIZES[1:]}" if args.conv else str(SIZES)
    damping = stats.INFLUENCE_DAMPING
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); {name}; {network}, N = {args.train} "
          f"training and K = {args.test} test examples; float32; median of {args.rounds} rounds")

    def factors_fn(params, X, Y):
        return stats.kfac_factors(params, X, Y, COST)

    t = time.perf_counter()
    factors = jax.block_until_ready(factors_fn(params, X, Y))
    factors_first = time.perf_counter() - t
    fbp_fn = jax.jit(lambda p, f, a, b, c, d: stats.influence(p, a, b, COST, c, d, factors=f, damping=damping))
    auto_fn = jax.jit(lambda p, f, a, b, c, d: autodiff_route(p, f, a, b, c, d, damping))
    ours = "fbp (KFC, conv gradients formed)" if args.conv else "fbp (outer products)"
    routes = {ours: fbp_fn, "vmap(jax.grad) gradients": auto_fn}
    call = (params, factors, X, Y, X2, Y2)
    out = {}
    for route, fn in routes.items():
        t = time.perf_counter()
        out[route] = np.asarray(jax.block_until_ready(fn(*call)), np.float64)
        print(f"  first call of {route}: {time.perf_counter() - t:.1f} s", flush=True)
    times = {route: [] for route in routes}
    factor_times = []
    for r in range(args.rounds):
        for route in (list(routes) if r % 2 == 0 else list(routes)[::-1]):
            times[route].append(per_call(routes[route], call, 1))
        factor_times.append(per_call(factors_fn, (params, X, Y), 1))
    med = {route: statistics.median(v) for route, v in times.items()}
    fbp_s, auto_s = med[ours], med["vmap(jax.grad) gradients"]
    diff = float(np.abs(out[ours] - out["vmap(jax.grad) gradients"]).max()
                 / np.abs(out["vmap(jax.grad) gradients"]).max())
    mem = {route: memory(fn, call) for route, fn in routes.items()}
    for route in routes:
        print(f"  {route:32} {med[route] * 1e3:9.1f} ms   {mem[route] / 2 ** 20:8.1f} MiB")
    print(f"  K-FAC factors of the N examples {statistics.median(factor_times) * 1e3:9.1f} ms (first call "
          f"{factors_first:.1f} s)")
    less = mem["vmap(jax.grad) gradients"] / mem[ours]
    print(f"  speed-up of fbp's route: {auto_s / fbp_s:.1f}×, memory {less:.0f}× less; largest difference "
          f"{diff:.1e} of the largest influence")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), device_kind=device.device_kind, jax=jax.__version__, data=name,
                           sizes=SIZES, conv=CONV if args.conv else None, train=args.train, test=args.test,
                           rounds=args.rounds, damping=damping,
                           ms={route: v * 1e3 for route, v in med.items()},
                           rounds_ms={route: [x * 1e3 for x in v] for route, v in times.items()},
                           factors_ms=statistics.median(factor_times) * 1e3, memory_bytes=mem,
                           speedup=auto_s / fbp_s, relative_difference=diff), f, indent=1)


if __name__ == "__main__":
    main()

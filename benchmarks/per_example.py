"""Per-example quantities: fbp.stats against the vmap(jax.grad) route and one plain gradient.

For each network, in one run: the time of one plain ``batch_backward``; of
fbp's per-example gradient norms, clipped gradient and gradient second moment
(built from Δ and A); and of the same three through ``jax.vmap(jax.grad)``
(materialised per-example gradients), all jitted, float32, interleaved rounds,
medians. Then the memory the compiled programs need (XLA's own
``memory_analysis``: temporaries + outputs) as the batch grows, for the clipped
gradient and the norms by both routes, as a table and a plot. (XLA fuses the
vmap route's norms into reductions without materialising the per-example
gradients, so there only its time suffers; the clipped gradient needs them.)

    python benchmarks/per_example.py [--rounds 15] [--out benchmarks/results] [--cases 0,1] [--no-memory]
"""

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

import fbp
from _timing import per_call
from fbp import stats

CASES = [
    dict(sizes=[784, 512, 512, 10], batch=256),
    dict(sizes=[784, 1024, 1024, 1024, 1024, 10], batch=256),
]
COST = "log_likelihood"
MEMORY_BATCHES = [64, 256, 1024, 4096]


def problem(sizes, batch):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = fbp.init_mlp(k1, sizes, activation="relu", output_activation="softmax", init="he")
    X = jax.random.uniform(k2, (batch, sizes[0]), jnp.float32)
    Y = jax.nn.one_hot(jax.random.randint(k3, (batch,), 0, sizes[-1]), sizes[-1])
    return params, X, Y


def _per_example(params, X, Y):
    f = lambda p, x, y: fbp.example_loss(p, x, y, COST)  # noqa: E731
    return jax.vmap(jax.grad(f), in_axes=(None, 0, 0))(params, X, Y)


def _flat_sq(g):  # per-example squared norms from materialised grads: (B,)
    return sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1) for leaf in jax.tree.leaves(g))


@jax.jit
def vmap_norms(params, X, Y):
    return jnp.sqrt(_flat_sq(_per_example(params, X, Y)))


@jax.jit
def vmap_clipped(params, X, Y):
    g = _per_example(params, X, Y)
    c = jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.sqrt(_flat_sq(g)), 1e-12))
    return jax.tree.map(lambda leaf: jnp.tensordot(c, leaf, axes=1) / X.shape[0], g)


@jax.jit
def vmap_second_moment(params, X, Y):
    return jax.tree.map(lambda leaf: jnp.sum(leaf * leaf, axis=0), _per_example(params, X, Y))


FUNCS = {
    "plain gradient (batch_backward)": lambda p, X, Y: fbp.batch_backward(p, X, Y, COST),
    "fbp norms": lambda p, X, Y: stats.per_example_grad_norms(p, X, Y, COST),
    "fbp clipped gradient": lambda p, X, Y: stats.clipped_grad(p, X, Y, COST, 1.0),
    "fbp second moment": lambda p, X, Y: stats.grad_second_moment(p, X, Y, COST),
    "vmap(jax.grad) norms": vmap_norms,
    "vmap(jax.grad) clipped gradient": vmap_clipped,
    "vmap(jax.grad) second moment": vmap_second_moment,
}


def time_case(case, rounds):
    """Median seconds per call of each of FUNCS, and the seconds of each one's
    first call (its compilation included), printed as they come: on a GPU a
    first call can take minutes (one [784, 1024×4, 10] run was stopped there
    after 150 s), and this says which."""
    args = problem(case["sizes"], case["batch"])
    first = {}
    for name, fn in FUNCS.items():
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - t
        print(f"  first call of {name} ({case['sizes']}): {first[name]:.1f} s", flush=True)
    times = {name: [] for name in FUNCS}
    for r in range(rounds):
        names = list(FUNCS) if r % 2 == 0 else list(FUNCS)[::-1]
        for name in names:
            times[name].append(per_call(FUNCS[name], args, 2))
    return {name: statistics.median(t) for name, t in times.items()}, first


def memory(fn, args):
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--cases", default=",".join(str(i) for i in range(len(CASES))),
                        help="which networks to time, by index: " + "; ".join(
                            f"{i}: {c['sizes']}" for i, c in enumerate(CASES)))
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table and plot")
    args = parser.parse_args()
    cases = [CASES[int(i)] for i in args.cases.split(",") if i.strip()]
    path = os.path.join(args.out, "per_example.json")
    os.makedirs(args.out, exist_ok=True)
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform}; float32; median of {args.rounds} rounds")
    results = dict(device=str(device), jax=jax.__version__, timing=[], memory=[])
    for case in cases:
        t, first = time_case(case, args.rounds)
        plain = t["plain gradient (batch_backward)"]
        n_params = sum(a * b + b for a, b in zip(case["sizes"][:-1], case["sizes"][1:]))
        print(f"\n{case['sizes']} batch {case['batch']} ({n_params:,} parameters)")
        print(f"{'':34} {'ms':>9} {'× plain':>8} {'vmap route / fbp':>17}")
        rows = {}
        for name, sec in t.items():
            extra = ""
            if name.startswith("fbp "):
                ref = t["vmap(jax.grad) " + name[4:]]
                extra = f"{ref / sec:17.1f}"
                rows[name[4:]] = dict(fbp_ms=sec * 1e3, vmap_ms=ref * 1e3, over_plain=sec / plain, speedup=ref / sec)
            print(f"{name:34} {sec * 1e3:9.2f} {sec / plain:8.2f} {extra}")
        results["timing"].append(dict(sizes=case["sizes"], batch=case["batch"], plain_ms=plain * 1e3, quantities=rows,
                                      first_call_s=first))
        with open(path, "w") as f:  # each network's figures as soon as they are in
            json.dump(results, f, indent=2)
    print("targets: fbp quantity ≤ 1.5 × plain; vmap route / fbp ≥ 20")
    if args.no_memory:
        return

    sizes = CASES[0]["sizes"]
    print(f"\nmemory of the compiled programs, {sizes}, temporaries + outputs (MiB)")
    print(f"{'B':>6} {'plain grad':>11} {'fbp clipped':>12} {'vmap clipped':>13} {'fbp norms':>10} {'vmap norms':>11} "
          f"{'B×params×4':>11} {'B×Σwidths×4':>12}")
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    for B in MEMORY_BATCHES:
        a = problem(sizes, B)
        row = dict(
            batch=B,
            plain=memory(FUNCS["plain gradient (batch_backward)"], a),
            fbp_clipped=memory(FUNCS["fbp clipped gradient"], a),
            vmap_clipped=memory(vmap_clipped, a),
            fbp_norms=memory(FUNCS["fbp norms"], a),
            vmap_norms=memory(vmap_norms, a),
            b_params=B * n_params * 4,
            b_widths=B * sum(sizes) * 4,
        )
        results["memory"].append(row)
        mib = lambda v: v / 2**20  # noqa: E731
        print(f"{B:6d} {mib(row['plain']):11.1f} {mib(row['fbp_clipped']):12.1f} {mib(row['vmap_clipped']):13.1f} "
              f"{mib(row['fbp_norms']):10.1f} {mib(row['vmap_norms']):11.1f} "
              f"{mib(row['b_params']):11.1f} {mib(row['b_widths']):12.1f}")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    Bs = [r["batch"] for r in results["memory"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in [("vmap_clipped", "vmap(jax.grad) clipped gradient", "o-"),
                              ("fbp_clipped", "fbp clipped gradient (c ⊙ Δ)ᵀ A", "s-"),
                              ("vmap_norms", "vmap(jax.grad) norms (XLA fuses)", "x:"), ("fbp_norms", "fbp norms", "d:"),
                              ("plain", "plain gradient", "^--"), ("b_params", "B × parameters × 4 bytes", ":"),
                              ("b_widths", "B × Σ widths × 4 bytes", "-.")]:
        ax.loglog(Bs, [r[key] / 2**20 for r in results["memory"]], style, label=label)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("compiled temporaries + outputs (MiB)")
    ax.set_title(f"Per-example quantities: memory, {sizes}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "per_example_memory.png"), dpi=110)
    print(f"wrote {args.out}/per_example.json and per_example_memory.png")


if __name__ == "__main__":
    main()

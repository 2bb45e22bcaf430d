"""Hand-written batch_backward against jax.jit(jax.grad(loss)), side by side.

Same params, same batch, same cost; both jitted and warmed up. Each round
times `inner` back-to-back calls of each function (interleaved, so that load on
a shared machine hits both alike); the figure is the median over rounds of the
per-call time, and the ratio is hand / jax.grad (≤ 1.05 is the target).

    python benchmarks/grad_vs_autodiff.py [--rounds 30] [--json out.json]
"""

import argparse
import json
import platform
import statistics

import jax
import jax.numpy as jnp

import fbp
from _timing import per_call

CASES = [
    dict(sizes=[784, 30, 10], batch=10, activation="sigmoid", output="sigmoid", cost="quadratic"),
    dict(sizes=[784, 512, 512, 10], batch=256, activation="relu", output="softmax", cost="log_likelihood"),
]


def run_case(case, rounds, target_s=0.05):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = fbp.init_mlp(k1, case["sizes"], activation=case["activation"],
                          output_activation=case["output"], dtype=jnp.float32)
    X = jax.random.uniform(k2, (case["batch"], case["sizes"][0]), jnp.float32)
    Y = jax.nn.one_hot(jax.random.randint(k3, (case["batch"],), 0, case["sizes"][-1]), case["sizes"][-1])
    cost = case["cost"]
    hand = lambda p, x, y: fbp.batch_backward(p, x, y, cost)  # noqa: E731
    ref_jit = jax.jit(jax.grad(fbp.loss), static_argnums=3)
    ref = lambda p, x, y: ref_jit(p, x, y, cost)  # noqa: E731
    args = (params, X, Y)
    for fn in (hand, ref):  # compile and warm
        jax.block_until_ready(fn(*args))
        per_call(fn, args, 5)
    inner = max(1, int(target_s / per_call(ref, args, 10)))
    t_hand, t_ref = [], []
    for r in range(rounds):
        pair = [(hand, t_hand), (ref, t_ref)]
        if r % 2:
            pair.reverse()
        for fn, acc in pair:
            acc.append(per_call(fn, args, inner))
    ratios = [h / a for h, a in zip(t_hand, t_ref)]
    return dict(
        case=f"{case['sizes']} batch {case['batch']} ({case['activation']}/{case['output']}, {cost})",
        hand_us=statistics.median(t_hand) * 1e6,
        jax_grad_us=statistics.median(t_ref) * 1e6,
        ratio_of_medians=statistics.median(t_hand) / statistics.median(t_ref),
        median_ratio=statistics.median(ratios),
        rounds=rounds,
        calls_per_round=inner,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"jax {jax.__version__} on {device.platform} ({device.device_kind}); {platform.processor() or platform.machine()}")
    print(f"{'case':<62} {'hand µs':>9} {'jax.grad µs':>12} {'ratio':>6}")
    results = []
    for case in CASES:
        r = run_case(case, args.rounds)
        results.append(r)
        print(f"{r['case']:<62} {r['hand_us']:9.1f} {r['jax_grad_us']:12.1f} {r['median_ratio']:6.3f}")
    print("ratio = median over rounds of (hand / jax.grad) per-call time; target ≤ 1.05")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=str(device), jax=jax.__version__, results=results), f, indent=2)


if __name__ == "__main__":
    main()

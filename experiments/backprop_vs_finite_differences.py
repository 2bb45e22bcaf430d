"""In what sense is backpropagation a fast algorithm (NNDL ch. 2)?

Time one full gradient by forward differences (one extra forward pass per
parameter, (C(w + ε e_j) − C(w)) / ε, as the book describes) against one
backward pass, as the number of parameters grows. Both jitted, float32, a
batch of 10; log-log plot with the fitted slopes.

On a GPU the finite differences' forward passes run side by side, 64 at a
time, so at the small sizes of --quick their time hardly grows (a slope of
0.47 on an H200, against more than 0.9 on a CPU): the count of passes grows
with P all the same, and the run on the CPU (JAX_PLATFORMS=cpu) shows it.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import fbp
from common import parser, pyplot, save

COST = "quadratic"


def timed(fn, *args, repeats=3):
    """The fastest of ``repeats`` calls after a warm-up: the slopes fitted
    below compare sizes, and on a shared machine a call that another job
    slowed down (the tests run beside other tests) is noise in one point,
    which the minimum leaves out and a median of a few may not."""
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return float(np.min(ts))


def measure(width, seed):
    sizes = [64, width, width, 10]
    params = fbp.init_mlp(jax.random.key(seed), sizes)
    X = jax.random.uniform(jax.random.key(seed + 1), (10, 64))
    Y = jax.nn.one_hot(jnp.arange(10), 10)
    flat, unravel = ravel_pytree(params)
    eps = 1e-3

    @jax.jit
    def fd_grad(flat):
        base = fbp.loss(unravel(flat), X, Y, COST)
        one = lambda j: (fbp.loss(unravel(flat.at[j].add(eps)), X, Y, COST) - base) / eps  # noqa: E731
        return jax.lax.map(one, jnp.arange(flat.size), batch_size=64)

    t_fd = timed(fd_grad, flat, repeats=1 if flat.size > 20000 else 3)
    t_bp = timed(lambda p: fbp.batch_backward(p, X, Y, COST), params, repeats=50)
    rel = fbp.relative_error(fd_grad(flat), ravel_pytree(fbp.batch_backward(params, X, Y, COST))[0])
    return dict(width=width, params=int(flat.size), fd_seconds=t_fd, backprop_seconds=t_bp, fd_vs_backprop_rel=rel)


def slope(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main():
    args = parser(__doc__).parse_args()
    widths = [4, 8, 16, 32] if args.quick else [4, 8, 16, 32, 64, 128]
    rows = []
    for w in widths:
        r = measure(w, args.seed)
        rows.append(r)
        print(f"P = {r['params']:6d}: finite differences {r['fd_seconds'] * 1e3:9.2f} ms, backprop "
              f"{r['backprop_seconds'] * 1e6:7.1f} µs, ratio {r['fd_seconds'] / r['backprop_seconds']:9.0f}")
    P = [r["params"] for r in rows]
    results = dict(rows=rows, slope_fd=slope(P, [r["fd_seconds"] for r in rows]),
                   slope_backprop=slope(P, [r["backprop_seconds"] for r in rows]))
    print(f"log-log slopes: finite differences {results['slope_fd']:.2f}, backprop {results['slope_backprop']:.2f}")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(P, [r["fd_seconds"] for r in rows], "o-", label=f"finite differences (slope {results['slope_fd']:.2f})")
    ax.loglog(P, [r["backprop_seconds"] for r in rows], "s-", label=f"backprop (slope {results['slope_backprop']:.2f})")
    ax.set_xlabel("number of parameters P")
    ax.set_ylabel("seconds per full gradient")
    ax.set_title("One gradient of [64, w, w, 10], batch 10")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    save(args.out, "backprop_vs_finite_differences", results, fig)


if __name__ == "__main__":
    main()

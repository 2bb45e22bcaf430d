"""How closely the hand-written gradient, jax.grad and finite differences agree,
in float32 and float64, as depth grows, for each hidden activation.

Width 16, batch 8, softmax + log-likelihood output, ``normalized`` init. The
largest relative difference (per leaf, normwise, then the worst leaf) for each
case; finite differences are central, h = ε^{1/3}.
"""

import jax
import jax.numpy as jnp
import numpy as np

import fbp
from common import parser, pyplot, save

jax.config.update("jax_enable_x64", True)
HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "softplus", "identity"]


def case(activation, depth, dtype, seed):
    rng = np.random.default_rng(seed)
    sizes = [16] * depth + [10]
    params = fbp.init_mlp(jax.random.key(seed), sizes, activation=activation, output_activation="softmax", dtype=dtype)
    X = jnp.asarray(rng.uniform(size=(8, 16)), dtype)
    Y = jnp.asarray(np.eye(10)[rng.integers(0, 10, 8)], dtype)
    r = fbp.compare_grads(params, X, Y, "log_likelihood", "sum", fd_samples=24, key=jax.random.key(seed))
    return r.max_rel, r.fd_max_rel


def main():
    args = parser(__doc__).parse_args()
    depths = [1, 3, 6] if args.quick else [1, 2, 3, 4, 5, 6, 8, 10]
    acts = HIDDEN[:3] if args.quick else HIDDEN
    results = dict(depths=depths, cases={})
    for dtype in (jnp.float32, jnp.float64):
        name = jnp.dtype(dtype).name
        for act in acts:
            rows = [case(act, d, dtype, args.seed) for d in depths]
            results["cases"][f"{act} {name}"] = dict(vs_jax_grad=[r[0] for r in rows], vs_finite_differences=[r[1] for r in rows])
            print(f"{act:10s} {name}: vs jax.grad max {max(r[0] for r in rows):.1e}, vs finite differences max {max(r[1] for r in rows):.1e}")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, v in results["cases"].items():
        style = "-" if "float64" in k else "--"
        axes[0].semilogy(depths, np.maximum(v["vs_jax_grad"], 1e-18), style, marker="o", label=k)
        axes[1].semilogy(depths, v["vs_finite_differences"], style, marker="s", label=k)
    axes[0].set_title("hand-written vs jax.grad (0 drawn at 1e-18)")
    axes[1].set_title("hand-written vs central finite differences")
    for ax in axes:
        ax.set_xlabel("hidden layers")
        ax.set_ylabel("largest relative difference")
        ax.legend(fontsize=6, ncol=2)
    save(args.out, "gradient_agreement", results, fig)


if __name__ == "__main__":
    main()

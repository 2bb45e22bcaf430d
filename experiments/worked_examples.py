"""Worked examples: the small networks of backpropagation notes, by hand, by fbp, by jax.grad.

1. A chain of one neuron per layer (sigmoid, C = (a − y)²):
   ∂C/∂w^(L) = a^(L−1) σ'(z^(L)) 2(a^(L) − y), and one layer further back.
2. A 2-2-2-2 network, ReLU hidden layers, softmax output, log-likelihood, in the
   row-vector matrix formulas of the notes (X rows are examples, W of shape
   (n_in, n_out) = our wᵀ): dz3 = ŷ − y, dW3 = A2ᵀ dz3, dz2 = dz3 W3ᵀ ⊙ ReLU'(h2), …
3. The shortcut "treat the softmax derivative as 1" (δ^L = a − y): exact with
   log-likelihood, wrong with the quadratic cost, with the numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np

import fbp
from common import parser, pyplot, save

jax.config.update("jax_enable_x64", True)


def chain(seed):
    rng = np.random.default_rng(seed)
    L = 3
    params = [fbp.Dense(jnp.asarray(rng.normal(size=(1, 1))), jnp.asarray(rng.normal(size=1)), "sigmoid") for _ in range(L)]
    x, y = jnp.array([0.7]), jnp.array([0.2])
    zs, acts = fbp.forward_trace(params, x)
    s = fbp.get_activation("sigmoid").prime
    a_L, a_prev = acts[-1][0], acts[-2][0]
    hand_wL = a_prev * s(zs[-1])[0] * 2 * (a_L - y[0])
    hand_wL1 = acts[-3][0] * s(zs[-2])[0] * params[-1].w[0, 0] * s(zs[-1])[0] * 2 * (a_L - y[0])
    g = fbp.backward(params, x, y, "mse")  # mse over one unit is (a − y)²
    ref = jax.grad(lambda p: fbp.example_loss(p, x, y, fbp.get_cost("mse")))(params)
    return dict(
        hand=dict(dC_dwL=float(hand_wL), dC_dwL_minus_1=float(hand_wL1)),
        fbp=dict(dC_dwL=float(g[-1].w[0, 0]), dC_dwL_minus_1=float(g[-2].w[0, 0])),
        jax_grad=dict(dC_dwL=float(ref[-1].w[0, 0]), dC_dwL_minus_1=float(ref[-2].w[0, 0])),
    )


def matrix_form(seed):
    rng = np.random.default_rng(seed + 1)
    params = fbp.init_mlp(jax.random.key(seed), [2, 2, 2, 2], activation="relu", output_activation="softmax",
                          init="normalized", dtype=jnp.float64)
    X = jnp.asarray(rng.uniform(0, 1, size=(3, 2)))  # 3 examples as rows
    Y = jnp.asarray(np.eye(2)[[0, 1, 1]])
    W1, W2, W3 = (p.w.T for p in params)  # the notes' (n_in, n_out) weights
    b1, b2, b3 = (p.b for p in params)
    h1 = X @ W1 + b1
    A1 = np.maximum(h1, 0)
    h2 = A1 @ W2 + b2
    A2 = np.maximum(h2, 0)
    h3 = A2 @ W3 + b3
    Yhat = np.exp(h3) / np.exp(h3).sum(1, keepdims=True)
    dz3 = Yhat - Y
    dW3, db3 = A2.T @ dz3, dz3.sum(0)
    dz2 = (dz3 @ W3.T) * (h2 > 0)
    dW2, db2 = A1.T @ dz2, dz2.sum(0)
    dz1 = (dz2 @ W2.T) * (h1 > 0)
    dW1, db1 = X.T @ dz1, dz1.sum(0)
    hand = dict(dz3=dz3, dz2=dz2, dz1=dz1, dW3=dW3, dW2=dW2, dW1=dW1, db3=db3, db2=db2, db1=db1)
    deltas = fbp.batch_deltas(params, X, Y, "log_likelihood")[0]
    g = fbp.batch_backward(params, X, Y, "log_likelihood", "sum")
    ref = fbp.autodiff_grad(params, X, Y, "log_likelihood", "sum")
    ours = dict(dz1=deltas[0], dz2=deltas[1], dz3=deltas[2])
    for i in range(3):
        ours[f"dW{i + 1}"], ours[f"db{i + 1}"] = g[i].w.T, g[i].b
    auto = {}
    for i in range(3):
        auto[f"dW{i + 1}"], auto[f"db{i + 1}"] = ref[i].w.T, ref[i].b
    diffs = {k: float(np.max(np.abs(np.asarray(hand[k]) - np.asarray(ours[k])))) for k in hand}
    diffs_auto = {k: float(np.max(np.abs(np.asarray(ours[k]) - np.asarray(auto[k])))) for k in auto}
    return dict(hand=hand, fbp=ours, jax_grad=auto, max_abs_hand_vs_fbp=diffs, max_abs_fbp_vs_jax_grad=diffs_auto)


def shortcut(seed):
    rng = np.random.default_rng(seed + 2)
    z = jnp.asarray(rng.normal(size=4) * 2)
    y = jnp.asarray(np.eye(4)[1])
    sm = fbp.get_activation("softmax")
    a = sm.fn(z)
    out = {}
    for cost in ("log_likelihood", "quadratic"):
        c = fbp.get_cost(cost)
        exact = jax.grad(lambda z: c.fn(sm.fn(z), y))(z)  # ∂C/∂z^L by autodiff
        out[cost] = dict(shortcut=a - y, exact=exact, max_abs_error=float(jnp.max(jnp.abs((a - y) - exact))))
    return out


def main():
    args = parser(__doc__).parse_args()
    results = dict(chain=chain(args.seed), matrix_form=matrix_form(args.seed), softmax_shortcut=shortcut(args.seed))
    c = results["chain"]
    print("chain: ∂C/∂w^(L) hand %.12f fbp %.12f jax.grad %.12f" % (c["hand"]["dC_dwL"], c["fbp"]["dC_dwL"], c["jax_grad"]["dC_dwL"]))
    print("2-2-2-2 network, max |hand − fbp|:", {k: f"{v:.1e}" for k, v in results["matrix_form"]["max_abs_hand_vs_fbp"].items()})
    m = results["matrix_form"]
    for k in ("dz3", "dW3", "db3", "dz2", "dW2", "db2", "dz1", "dW1", "db1"):
        line = f"  {k:4s} hand {np.round(np.asarray(m['hand'][k]), 6).tolist()}\n       fbp  {np.round(np.asarray(m['fbp'][k]), 6).tolist()}"
        if k in m["jax_grad"]:
            line += f"\n       jax.grad {np.round(np.asarray(m['jax_grad'][k]), 6).tolist()}"
        print(line)
    for cost, r in results["softmax_shortcut"].items():
        print(f"softmax + {cost}: shortcut a − y vs exact ∂C/∂z, max |error| = {r['max_abs_error']:.3e}")
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    m = results["matrix_form"]
    keys = ["dW1", "dW2", "dW3", "db1", "db2", "db3"]
    hand = np.concatenate([np.ravel(m["hand"][k]) for k in keys])
    ours = np.concatenate([np.ravel(m["fbp"][k]) for k in keys])
    auto = np.concatenate([np.ravel(m["jax_grad"][k]) for k in keys])
    idx = np.arange(len(hand))
    axes[0].bar(idx - 0.25, hand, 0.25, label="matrix formulas by hand")
    axes[0].bar(idx, ours, 0.25, label="fbp.batch_backward")
    axes[0].bar(idx + 0.25, auto, 0.25, label="jax.grad")
    axes[0].set_xlabel("parameter (dW1, dW2, dW3, db1, db2, db3 flattened)")
    axes[0].set_ylabel("gradient")
    axes[0].set_title("2-2-2-2 ReLU/softmax net: three routes, one gradient")
    axes[0].legend(fontsize=8)
    s = results["softmax_shortcut"]
    for i, cost in enumerate(("log_likelihood", "quadratic")):
        axes[1].plot(np.asarray(s[cost]["exact"]), "o-" if i == 0 else "s-", label=f"exact ∂C/∂z, {cost}")
    axes[1].plot(np.asarray(s["quadratic"]["shortcut"]), "k^--", label="shortcut a − y")
    axes[1].set_xlabel("output unit j")
    axes[1].set_ylabel("δ^L_j")
    axes[1].set_title("'softmax derivative = 1': exact with log-likelihood only")
    axes[1].legend(fontsize=8)
    save(args.out, "worked_examples", results, fig)


if __name__ == "__main__":
    main()

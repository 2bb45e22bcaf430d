"""The hand-written gradient against jax.grad and finite differences, over
hypothesis-drawn architectures: every activation × cost × init, depths 1–6,
widths 1–64, batches 1–32, both reductions."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fbp

HIDDEN = sorted(n for n, a in fbp.ACTIVATIONS.items() if a.elementwise)
OUTPUTS = sorted(fbp.ACTIVATIONS)
COSTS = sorted(fbp.COSTS)
INITS = sorted(fbp.INITS)
UNBOUNDED = {"relu", "leaky_relu", "identity", "softplus"}


@st.composite
def problems(draw, max_depth=6, max_width=64, max_batch=32):
    """A network, a batch and a cost that the cost is defined on."""
    cost = draw(st.sampled_from(COSTS))
    if fbp.COSTS[cost].needs_probabilities:
        out = draw(st.sampled_from(["sigmoid", "softmax"]))
    else:
        out = draw(st.sampled_from(OUTPUTS))
    hidden = draw(st.sampled_from(HIDDEN))
    init = draw(st.sampled_from(INITS))
    depth = draw(st.integers(1, max_depth))
    if (cost, out) in (("cross_entropy", "softmax"), ("log_likelihood", "sigmoid")) and (
        init == "large" and hidden in UNBOUNDED
    ):
        # ln(a) with no closed form: an exploding `large`-init net saturates a to
        # exactly 0 or 1 and the cost itself is ±inf for jax.grad as for us.
        init = "normalized"
    sizes = draw(st.lists(st.integers(1, max_width), min_size=depth, max_size=depth))
    sizes.append(draw(st.integers(2 if out == "softmax" else 1, max_width)))  # a 1-unit softmax is an error
    batch = draw(st.integers(1, max_batch))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(sizes=sizes, hidden=hidden, out=out, cost=cost, init=init, batch=batch,
                reduction=reduction, seed=seed)


def make(p, dtype):
    params = fbp.init_mlp(jax.random.key(p["seed"]), p["sizes"], activation=p["hidden"], output_activation=p["out"],
                          init=p["init"], dtype=dtype)
    rng = np.random.default_rng(p["seed"])  # host RNG: no compile per drawn shape
    X = rng.uniform(size=(p["batch"], p["sizes"][0]))
    n_out = p["sizes"][-1]
    if p["out"] == "sigmoid" or p["cost"] in ("quadratic", "mse"):
        Y = rng.integers(0, 2, (p["batch"], n_out))  # independent binary targets
    else:
        Y = np.eye(n_out)[rng.integers(0, n_out, p["batch"])]  # one-hot
    return params, jnp.asarray(X, dtype), jnp.asarray(Y, dtype)


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@settings(max_examples=40, **SETTINGS)
@given(problems())
def test_equals_jax_grad_float64(trees_close, p):
    params, X, Y = make(p, jnp.float64)
    hand = fbp.batch_backward(params, X, Y, p["cost"], p["reduction"])
    ref = fbp.autodiff_grad(params, X, Y, p["cost"], p["reduction"])
    assert jax.tree.leaves(hand)[0].dtype == jnp.float64
    trees_close(hand, ref, 1e-10, what=str(p))


@settings(max_examples=30, **SETTINGS)
@given(problems())
def test_equals_jax_grad_float32(trees_close, p):
    params, X, Y = make(p, jnp.float32)
    hand = fbp.batch_backward(params, X, Y, p["cost"], p["reduction"])
    ref = fbp.autodiff_grad(params, X, Y, p["cost"], p["reduction"])
    assert jax.tree.leaves(hand)[0].dtype == jnp.float32
    trees_close(hand, ref, 1e-4, what=str(p))


@settings(max_examples=20, **SETTINGS)
@given(problems(max_depth=4, max_width=16, max_batch=8))
def test_finite_differences_float64(p):
    params, X, Y = make(p, jnp.float64)
    # glorot/he start with b = 0, so a dead ReLU feeds z = 0 to the next layer:
    # exactly on the kink, where a central difference averages two slopes. Nudge
    # the biases to a generic point; the gradient there is what is checked.
    rng = np.random.default_rng(p["seed"])
    params = [fbp.Dense(l.w, l.b + 0.1 * rng.standard_normal(l.b.shape), l.activation) for l in params]
    report = fbp.compare_grads(params, X, Y, p["cost"], p["reduction"], fd_samples=12,
                               key=jax.random.key(p["seed"]))
    assert report.fd_max_rel <= 1e-6, f"{p}\n{report}"
    assert report.max_rel <= 1e-10, f"{p}\n{report}"


def test_finite_differences_catch_a_wrong_gradient():
    """The check is not vacuous: a gradient off by 0.1% in one entry fails it."""
    params, X, Y = make(dict(sizes=[3, 4, 2], hidden="tanh", out="sigmoid", cost="quadratic",
                             init="normalized", batch=5, reduction="sum", seed=0), jnp.float64)
    hand = fbp.batch_backward(params, X, Y, "quadratic", "sum")
    idx, fd = fbp.finite_differences(params, X, Y, "quadratic", "sum", indices=np.arange(26))
    flat = jax.flatten_util.ravel_pytree(hand)[0]
    assert np.max(np.abs(flat[idx] - fd)) / np.max(np.abs(flat)) < 1e-8
    assert np.max(np.abs(flat[idx].at[7].multiply(1.001) - fd)) / np.max(np.abs(flat)) > 1e-6
    compiled = fbp.check._quotients._cache_size()  # a second call, other entries and steps: no new compile
    again = fbp.finite_differences(params, X, Y, "quadratic", "sum", indices=np.arange(26)[::-1], eps=1e-5)
    assert fbp.check._quotients._cache_size() == compiled
    np.testing.assert_allclose(again[1], fd[::-1], rtol=1e-6)


@settings(max_examples=20, **SETTINGS)
@given(problems(max_width=32, max_batch=16))
def test_vmapped_backward_sums_to_batch_backward(trees_close, p):
    params, X, Y = make(p, jnp.float64)
    per_example = jax.jit(jax.vmap(fbp.backward, in_axes=(None, 0, 0, None)), static_argnums=3)(
        params, X, Y, p["cost"])
    summed = jax.tree.map(lambda g: jnp.sum(g, axis=0), per_example)
    trees_close(summed, fbp.batch_backward(params, X, Y, p["cost"], "sum"), 1e-12)


@pytest.mark.parametrize("hidden,out,cost", [
    ("sigmoid", "sigmoid", "quadratic"),
    ("relu", "softmax", "log_likelihood"),
    ("tanh", "sigmoid", "cross_entropy"),
    ("softplus", "identity", "mse"),
])
def test_jit_vmap_and_eager_agree(trees_close, hidden, out, cost):
    p = dict(sizes=[6, 5, 4, 3], hidden=hidden, out=out, cost=cost, init="normalized",
             batch=7, reduction="sum", seed=3)
    params, X, Y = make(p, jnp.float64)
    eager = [fbp.backward(params, x, y, cost) for x, y in zip(X, Y)]
    jitted = jax.jit(fbp.backward, static_argnums=3)
    for n in range(len(X)):
        trees_close(jitted(params, X[n], Y[n], cost), eager[n], 1e-14)
    vmapped = jax.vmap(fbp.backward, in_axes=(None, 0, 0, None))(params, X, Y, cost)
    for n in range(len(X)):
        trees_close(jax.tree.map(lambda g: g[n], vmapped), eager[n], 1e-14)
    eager_sum = jax.tree.map(lambda *gs: sum(gs), *eager)
    trees_close(fbp.batch_backward(params, X, Y, cost, "sum"), eager_sum, 1e-13)
    # deltas: eager, jitted and vmapped
    d_eager = fbp.deltas(params, X[0], Y[0], cost)
    d_jit = jax.jit(fbp.deltas, static_argnums=3)(params, X[0], Y[0], cost)
    trees_close(d_jit, d_eager, 1e-14)


def test_deltas_follow_bp2(trees_close):
    """δ^l = ((w^{l+1})ᵀ δ^{l+1}) ⊙ σ'(z^l), and BP3/BP4 from them, checked on one example."""
    p = dict(sizes=[4, 5, 3, 2], hidden="tanh", out="sigmoid", cost="quadratic", init="normalized",
             batch=1, reduction="sum", seed=5)
    params, X, Y = make(p, jnp.float64)
    x, y = X[0], Y[0]
    ds = fbp.deltas(params, x, y, "quadratic")
    zs, acts = fbp.forward_trace(params, x)
    s = fbp.get_activation("sigmoid")
    np.testing.assert_allclose(ds[-1], (acts[-1] - y) * s.prime(zs[-1]), rtol=1e-14)  # BP1
    t = fbp.get_activation("tanh")
    for l in range(len(params) - 1):
        np.testing.assert_allclose(ds[l], (params[l + 1].w.T @ ds[l + 1]) * t.prime(zs[l]), rtol=1e-13)
    g = fbp.backward(params, x, y, "quadratic")
    for l in range(len(params)):
        np.testing.assert_allclose(g[l].b, ds[l], rtol=0)  # BP3
        np.testing.assert_allclose(g[l].w, np.outer(ds[l], acts[l]), rtol=1e-15)  # BP4


@pytest.mark.parametrize("cost,out", [("cross_entropy", "sigmoid"), ("log_likelihood", "softmax")])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_saturated_outputs_give_finite_deltas(trees_close, cost, out, dtype):
    """|z^L| ≥ 50 on every output unit: δ^L = a − y stays finite and matches jax.grad."""
    big = jnp.array([[80.0, -70.0, 55.0], [-60.0, 90.0, 55.0], [-55.0, 60.0, -75.0]], dtype)
    params = [fbp.Dense(jnp.eye(3, dtype=dtype), jnp.zeros(3, dtype), "identity"),
              fbp.Dense(big, jnp.zeros(3, dtype), out)]
    X = jnp.eye(3, dtype=dtype)  # z^L of example n is column n of `big`
    Y = jnp.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype)  # the wrong, saturated answers
    zs = jax.vmap(lambda x: fbp.forward_trace(params, x)[0][-1])(X)
    assert np.all(np.abs(zs) >= 50)
    for n in range(3):
        d = fbp.deltas(params, X[n], Y[n], cost)
        for dl in d:
            assert np.all(np.isfinite(dl))
    hand = fbp.batch_backward(params, X, Y, cost, "mean")
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(hand))
    assert np.isfinite(fbp.loss(params, X, Y, cost))
    trees_close(hand, fbp.autodiff_grad(params, X, Y, cost, "mean"), 1e-10 if dtype == jnp.float64 else 1e-4)


def test_forward_batched_and_single_agree():
    params = fbp.init_mlp(jax.random.key(0), [5, 4, 3], output_activation="softmax")
    X = jax.random.uniform(jax.random.key(1), (6, 5), jnp.float32)
    out = fbp.forward(params, X)
    assert out.shape == (6, 3) and out.dtype == jnp.float32
    for n in range(6):
        np.testing.assert_allclose(out[n], fbp.forward(params, X[n]), rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(out, axis=1), 1.0, rtol=1e-6)


def test_params_are_an_ordinary_pytree():
    import optax

    params = fbp.init_mlp(jax.random.key(0), [4, 3, 2], activation="relu", init="he")
    assert len(jax.tree.leaves(params)) == 4
    X = jnp.ones((2, 4), jnp.float32)
    Y = jnp.ones((2, 2), jnp.float32)
    g = fbp.batch_backward(params, X, Y, "quadratic")
    opt = optax.sgd(0.1)
    updates, _ = opt.update(g, opt.init(params))
    new = optax.apply_updates(params, updates)
    assert isinstance(new[0], fbp.Dense) and new[0].activation == "relu"
    np.testing.assert_allclose(new[0].w, params[0].w - 0.1 * g[0].w, rtol=1e-6)


def test_every_gradient_has_the_params_own_structure_a_tuple_of_layers_too(trees_close):
    """jax.grad gives the gradient of a tuple of layers as a tuple: so do the
    hand-written gradient and every params-shaped quantity of fbp.stats, so
    that optax can pair them with the params (it raised a pytree structure
    error on a tuple when these were lists)."""
    import optax

    from fbp import stats, train

    layers = fbp.init_mlp(jax.random.key(0), [5, 4, 3], activation="tanh", output_activation="softmax",
                          dtype=jnp.float64)
    X = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 5)))
    Y = jax.nn.one_hot(jnp.arange(6) % 3, 3, dtype=X.dtype)
    cost = "log_likelihood"
    for params in (list(layers), tuple(layers)):
        want = jax.tree.structure(params)
        ref = fbp.autodiff_grad(params, X, Y, cost)
        assert jax.tree.structure(ref) == want
        got = {
            "backward": fbp.backward(params, X[0], Y[0], cost),
            "batch_backward": fbp.batch_backward(params, X, Y, cost),
            "value_and_batch_backward": fbp.value_and_batch_backward(params, X, Y, cost)[1],
            "per_example_grads": stats.per_example_grads(params, X, Y, cost),
            "per_example_grads chunked": stats.per_example_grads(params, X, Y, cost, chunk_size=4),
            "clipped_grad": stats.clipped_grad(params, X, Y, cost, 1.0),
            "grad_second_moment": stats.grad_second_moment(params, X, Y, cost),
            "grad_variance": stats.grad_variance(params, X, Y, cost),
            "diag_ggn": stats.diag_ggn(params, X, Y, cost),
            "dp_value_and_grad": stats.dp_value_and_grad(cost, 1e6)(params, X, Y)[1],
        }
        for name, g in got.items():
            assert jax.tree.structure(g) == want, (name, type(params).__name__)
        trees_close(got["batch_backward"], ref, 1e-12, "tuple")
        trees_close(got["dp_value_and_grad"], ref, 1e-12, "unclipped")  # C far above every ‖g_n‖
        opt = optax.sgd(0.1)
        step = train.make_train_step(opt, cost)
        new, _, _ = step(params, opt.init(params), X, Y)
        assert type(new) is type(params)


def test_a_float32_networks_gradient_is_float32_from_float64_inputs_too(trees_close):
    """jax.grad gives each parameter's gradient in the parameter's dtype,
    whatever the inputs promoted the products to; so does the hand-written
    gradient (it gave float64 for float32 layers on float64 inputs), and
    the per-example quantities with it."""
    from fbp import stats

    Y = jax.nn.one_hot(jnp.arange(6) % 3, 3, dtype=jnp.float64)
    for kind, params, n_in in (
            ("dense", fbp.init_mlp(jax.random.key(0), [5, 4, 3], output_activation="softmax", dtype=jnp.float32), 5),
            # a convolution over one channel is lax's, which refused float64 inputs to float32 kernels
            ("conv", fbp.init_convnet(jax.random.key(0), (6, 6), [(2, 3, 2)], [3], output_activation="softmax",
                                      dtype=jnp.float32), 36)):
        X = jnp.asarray(np.random.default_rng(0).uniform(size=(6, n_in)), jnp.float64)
        assert fbp.forward(params, X).dtype == jnp.float64  # the products promote, as jnp's do
        ref = fbp.autodiff_grad(params, X, Y, "log_likelihood")
        for name, g in {"batch_backward": fbp.batch_backward(params, X, Y, "log_likelihood"),
                        "backward": fbp.backward(params, X[0], Y[0], "log_likelihood"),
                        "per_example_grads": stats.per_example_grads(params, X, Y, "log_likelihood"),
                        "grad_variance": stats.grad_variance(params, X, Y, "log_likelihood")}.items():
            assert {leaf.dtype for leaf in jax.tree.leaves(g)} == {jnp.dtype(jnp.float32)}, (kind, name)
        trees_close(fbp.batch_backward(params, X, Y, "log_likelihood"), ref, 1e-6, f"{kind}: float32 from float64")


@pytest.mark.parametrize("init", INITS)
def test_init_scales(init):
    params = fbp.init_mlp(jax.random.key(0), [400, 300, 10], init=init, dtype=jnp.float64)
    w_std = {"large": 1.0, "normalized": 400 ** -0.5, "glorot": (2 / 700) ** 0.5, "he": (2 / 400) ** 0.5}[init]
    assert abs(float(jnp.std(params[0].w)) / w_std - 1) < 0.02
    b_std = float(jnp.std(params[0].b))
    assert (b_std == 0.0) if init in ("glorot", "he") else abs(b_std - 1) < 0.2
    assert params[0].w.shape == (300, 400) and params[0].b.shape == (300,)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_init_runs_under_jit_and_eval_shape(dtype):
    # Under jax.jit or jax.eval_shape the draw is a tracer, which init_mlp's cut on the host cannot take: the
    # compiled init gives the eager numbers (to the last bits: XLA fuses the draw with the scaling), and
    # eval_shape the layers' shapes without drawing them.
    inits = {"mlp": lambda key: fbp.init_mlp(key, [5, 4, 3], init="glorot", output_activation="softmax", dtype=dtype),
             "conv": lambda key: fbp.init_convnet(key, (6, 6), [(2, 3, 2)], [4, 3], dtype=dtype)}
    for name, init in inits.items():
        key = jax.random.key(7)
        eager, jitted, shapes = init(key), jax.jit(init)(key), jax.eval_shape(init, key)
        assert jax.tree.structure(eager) == jax.tree.structure(jitted) == jax.tree.structure(shapes), name
        for a, b, s in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), jax.tree.leaves(shapes)):
            assert a.dtype == b.dtype == s.dtype == jnp.dtype(dtype) and a.shape == s.shape, name
            np.testing.assert_array_max_ulp(np.asarray(a), np.asarray(b), maxulp=4)
        assert [layer.act.name for layer in shapes] == [layer.act.name for layer in eager], name

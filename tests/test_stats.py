"""Per-example quantities from Δ and A against the same quantities computed from
vmap(jax.grad(per-example loss)), float64, ≤ 1e-10 relative."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree
from test_backprop import SETTINGS, make, problems

import fbp
from fbp import stats
from fbp import train as ftrain
from fbp.costs import closed_form


def per_example_ref(params, X, Y, cost):
    f = lambda p, x, y: fbp.example_loss(p, x, y, cost)  # noqa: E731
    return jax.jit(jax.vmap(jax.grad(f), in_axes=(None, 0, 0)))(params, X, Y)


@settings(max_examples=15, **SETTINGS)
@given(problems(max_depth=4, max_width=24, max_batch=12))
def test_every_quantity_equals_the_vmap_grad_route(trees_close, p):
    params, X, Y = make(p, jnp.float64)
    cost = p["cost"]
    ref = jax.tree.map(np.asarray, per_example_ref(params, X, Y, cost))  # NumPy leaves (B, ...)
    B = X.shape[0]
    trees_close(stats.per_example_grads(params, X, Y, cost), ref, 1e-10, "per_example_grads")
    trees_close(stats.per_example_grads(params, X, Y, cost, chunk_size=5), ref, 1e-10, "chunked")

    flat = np.concatenate([leaf.reshape(B, -1) for leaf in jax.tree.leaves(ref)], axis=1)  # (B, P)
    norms = np.linalg.norm(flat, axis=1)
    assert fbp.relative_error(stats.per_example_grad_norms(params, X, Y, cost), norms) <= 1e-10
    layer_norms = np.stack([np.sqrt(np.sum(np.asarray(l.w).reshape(B, -1) ** 2, 1) + np.sum(np.asarray(l.b) ** 2, 1))
                            for l in ref], axis=1)
    assert fbp.relative_error(stats.per_example_grad_norms(params, X, Y, cost, per_layer=True), layer_norms) <= 1e-10

    clip = float(np.median(norms)) + 1e-3
    c = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    for reduction, div in (("mean", B), ("sum", 1)):
        expect = jax.tree.map(lambda g: np.tensordot(c, g, axes=1) / div, ref)
        trees_close(stats.clipped_grad(params, X, Y, cost, clip, reduction), expect, 1e-10, "clipped")

    trees_close(stats.grad_second_moment(params, X, Y, cost), jax.tree.map(lambda g: np.sum(g * g, 0), ref),
                1e-10, "second moment")
    for ddof in (0, 1):
        if B - ddof > 0:
            var = stats.grad_variance(params, X, Y, cost, ddof=ddof)
            ref_var = jax.tree.map(lambda g: np.var(g, axis=0, ddof=ddof), ref)
            # the variance is a difference of sums: compare on the scale of the second moment
            for v, r, m in zip(jax.tree.leaves(var), jax.tree.leaves(ref_var),
                               jax.tree.leaves(jax.tree.map(lambda g: np.mean(g * g, 0), ref))):
                scale = max(float(np.max(m)), 1e-300)
                assert float(np.max(np.abs(np.asarray(v) - r))) / scale <= 1e-10

    gram = flat @ flat.T  # g_n · g_m, from the gradients formed by vmap(jax.grad); X against its last two rows,
    # a chunk at a time (the whole Gram matrix, in one piece, is checked below on a problem of its own)
    assert fbp.relative_error(stats.grad_gram(params, X, Y, cost, X[-2:], Y[-2:], chunk_size=5), gram[:, -2:]) <= 1e-10

    mean_b = [np.linalg.norm(np.mean(np.asarray(l.b), 0)) for l in ref]
    assert fbp.relative_error(stats.delta_norms(params, X, Y, cost), mean_b) <= 1e-10
    mean_norm = [np.mean(np.linalg.norm(np.asarray(l.b), axis=1)) for l in ref]
    assert fbp.relative_error(stats.delta_norms(params, X, Y, cost, average="norms"), mean_norm) <= 1e-10

    G = flat.mean(0)  # the mean gradient; the noise scale is tr Σ / ‖G‖²
    g2, trace = float(np.sum(G * G)), float(np.mean(np.sum((flat - G) ** 2, 1)))
    if g2 > 0:  # tr Σ is a difference of sums: compare it on the scale of E‖g‖², as the variance above
        ns = float(stats.gradient_noise_scale(params, X, Y, cost))
        assert abs(ns * g2 - trace) <= 1e-10 * float(np.mean(np.sum(flat * flat, 1)))


def test_grad_gram_is_the_gram_matrix_and_refuses_half_a_second_set():
    params, X, Y = make(dict(sizes=[5, 4, 3], hidden="sigmoid", out="softmax", cost="log_likelihood", batch=6,
                             init="normalized", seed=0), jnp.float64)
    with pytest.raises(ValueError, match="takes X2 and Y2 together"):
        stats.grad_gram(params, X, Y, "log_likelihood", X2=X)
    with pytest.raises(ValueError, match=r"X2 has shape \(6, 4\) but the first layer takes 5 inputs"):
        stats.grad_gram(params, X, Y, "log_likelihood", X[:, :4], Y)
    gram = np.asarray(stats.grad_gram(params, X, Y, "log_likelihood"))
    ref = per_example_ref(params, X, Y, "log_likelihood")
    flat = np.concatenate([np.asarray(leaf).reshape(len(X), -1) for leaf in jax.tree.leaves(ref)], axis=1)
    assert fbp.relative_error(gram, flat @ flat.T) <= 1e-10
    np.testing.assert_allclose(gram, gram.T, rtol=1e-12)  # a Gram matrix: symmetric, its diagonal ‖g_n‖²


def test_tracin_is_each_checkpoints_gradient_products_times_its_weight_summed():
    params, X, Y = make(dict(sizes=[5, 4, 3], hidden="tanh", out="softmax", cost="log_likelihood", batch=6,
                             init="normalized", seed=1), jnp.float64)
    later = jax.tree.map(lambda a: 0.7 * a + 0.1, params)  # a second checkpoint: the same network, other weights
    ref = 0.0
    for net, weight in ((params, 0.5), (later, 1.5)):
        flat = np.concatenate([np.asarray(leaf).reshape(len(X), -1)
                               for leaf in jax.tree.leaves(per_example_ref(net, X, Y, "log_likelihood"))], axis=1)
        ref = ref + weight * flat @ flat[-2:].T
    got = stats.tracin([(params, 0.5), (later, 1.5)], X, Y, "log_likelihood", X[-2:], Y[-2:], chunk_size=4)
    assert got.shape == (6, 2) and fbp.relative_error(got, ref) <= 1e-10
    # cosine=True: over the norms of the gradients stacked over the checkpoints, each times √ of its weight
    sq = 0.0
    for net, weight in ((params, 0.5), (later, 1.5)):
        flat = np.concatenate([np.asarray(leaf).reshape(len(X), -1)
                               for leaf in jax.tree.leaves(per_example_ref(net, X, Y, "log_likelihood"))], axis=1)
        sq = sq + weight * np.sum(flat ** 2, axis=1)
    cos = stats.tracin([(params, 0.5), (later, 1.5)], X, Y, "log_likelihood", X[-2:], Y[-2:], cosine=True)
    assert fbp.relative_error(cos, ref / np.sqrt(sq)[:, None] / np.sqrt(sq[-2:])[None, :]) <= 1e-10
    assert np.allclose(np.diag(np.asarray(cos)[-2:]), 1.0)  # the last two examples, each with itself: 1
    square = stats.tracin([(params, 0.5)], X, Y, "log_likelihood", cosine=True)  # X against itself
    assert np.allclose(np.diag(np.asarray(square)), 1.0) and np.all(np.abs(np.asarray(square)) <= 1 + 1e-12)
    zero = stats.tracin([(params, 0.0)], X, Y, "log_likelihood", cosine=True)  # no step: no gradient, 0 not NaN
    assert np.array_equal(np.asarray(zero), np.zeros((6, 6)))
    one = stats.tracin([(later, 1.5)], X, Y, "log_likelihood")  # one checkpoint: its Gram matrix times η
    assert fbp.relative_error(one, 1.5 * np.asarray(stats.grad_gram(later, X, Y, "log_likelihood"))) <= 1e-12
    for bad, needle in (([], "non-empty list of \\(params, step size\\) pairs"),
                        ([(params,)], "non-empty list of \\(params, step size\\) pairs"),
                        ([params], "the step sizes finite numbers ≥ 0; got Dense"),  # a network, not a pair
                        ([(params, -0.1)], "finite numbers ≥ 0; got -0.1 for one"),
                        ([(params, float("nan"))], "finite numbers ≥ 0; got nan"),
                        ([(params, True)], "finite numbers ≥ 0; got True"),
                        ([(params, 1.0), (params[:1], 1.0)], "differ in structure \\(2 kinds of network\\)")):
        with pytest.raises(ValueError, match=needle):
            stats.tracin(bad, X, Y, "log_likelihood")

def test_self_influence_is_tracins_diagonal_and_sums_the_layers_asked_for():
    params, X, Y = make(dict(sizes=[5, 4, 4, 3], hidden="tanh", out="softmax", cost="log_likelihood", batch=7,
                             init="normalized", seed=2), jnp.float64)
    later = jax.tree.map(lambda a: 0.7 * a + 0.1, params)
    checkpoints = [(params, 0.5), (later, 1.5)]
    by_layer = 0.0  # Σ_i η_i ‖g^l_n(w_i)‖², (B, L), from vmap(jax.grad)'s per-example gradients
    for net, weight in checkpoints:
        grads = per_example_ref(net, X, Y, "log_likelihood")
        by_layer = by_layer + weight * np.stack(
            [sum(np.sum(np.asarray(leaf).reshape(len(X), -1) ** 2, axis=1) for leaf in jax.tree.leaves(layer))
             for layer in grads], axis=1)
    for layers, columns in ((None, [0, 1, 2]), (-1, [2]), (2, [2]), ([0, 1], [0, 1]), ((0, -3), [0])):
        for chunk_size in (None, 3):  # 7 examples: chunks of 3, 3 and 1
            got = stats.self_influence(checkpoints, X, Y, "log_likelihood", layers=layers, chunk_size=chunk_size)
            assert got.shape == (7,) and fbp.relative_error(got, by_layer[:, columns].sum(axis=1)) <= 1e-10
    diagonal = np.diag(np.asarray(stats.tracin(checkpoints, X, Y, "log_likelihood")))
    assert fbp.relative_error(stats.self_influence(checkpoints, X, Y, "log_likelihood"), diagonal) <= 1e-12
    for layers in (3, -4, [], [0, 5], True, "output", 1.0):
        with pytest.raises(ValueError, match=r"layers must be None, or a layer's index or a list of them, each in "
                                             r"\[-3, 3\) for this network of 3 layers"):
            stats.self_influence(checkpoints, X, Y, "log_likelihood", layers=layers)
    with pytest.raises(ValueError, match="self_influence takes a non-empty list of \\(params, step size\\) pairs"):
        stats.self_influence([], X, Y, "log_likelihood")
    with pytest.raises(ValueError, match="self_influence's checkpoints differ in structure"):
        stats.self_influence([(params, 1.0), (params[:2], 1.0)], X, Y, "log_likelihood")


def test_noise_scale_of_examples_that_agree_is_zero_not_negative():
    """One example, or eight copies of it: no noise, tr Σ = 0 up to rounding,
    and a difference of sums in float32 rounds to either sign (10 of these 20
    cases came out negative, down to −5e-7, before tr Σ was kept ≥ 0)."""
    values = []
    for seed in range(10):
        params = fbp.init_mlp(jax.random.key(seed), [20, 16, 10], output_activation="softmax")
        rng = np.random.default_rng(seed)
        x, y = rng.uniform(size=(1, 20)).astype(np.float32), np.eye(10, dtype=np.float32)[[seed]]
        for X, Y in ((x, y), (np.repeat(x, 8, 0), np.repeat(y, 8, 0))):
            values.append(float(stats.gradient_noise_scale(params, X, Y, "log_likelihood")))
            values.append(float(ftrain.evaluate(params, X, Y, "log_likelihood", noise_scale=True)["noise_scale"]))
    assert min(values) >= 0 and max(values) <= 1e-5, values


def ggn_diag_ref(params, X, Y, cost_name, reduction):
    """diag(Σ_n J_nᵀ H_n J_n) from autodiff: J by jacfwd, H by jax.hessian."""
    cost = fbp.get_cost(cost_name)
    pair = closed_form(cost, params[-1].act)
    flat, unravel = ravel_pytree(params)

    def out(theta, x):  # the output the cost is convex in: z^L for the closed forms, a^L otherwise
        zs, acts = fbp.forward_trace(unravel(theta), x)
        return zs[-1] if pair is not None else acts[-1]

    def c(o, y):
        return pair.loss(o, y) if pair is not None else cost.fn(o, y)

    def one(x, y):
        J = jax.jacfwd(out)(flat, x)  # (n_out, P)
        H = jax.hessian(c)(out(flat, x), y)  # (n_out, n_out)
        return jnp.einsum("ip,ij,jp->p", J, H, J)

    d = jnp.sum(jax.jit(jax.vmap(one))(X, Y), axis=0)
    return unravel(d / X.shape[0] if reduction == "mean" else d)


GGN_CASES = st.sampled_from([("quadratic", "sigmoid"), ("quadratic", "softmax"), ("quadratic", "identity"),
                             ("mse", "tanh"), ("log_likelihood", "softmax"), ("cross_entropy", "sigmoid")])


@settings(max_examples=15, **SETTINGS)
@given(problems(max_depth=4, max_width=12, max_batch=6), GGN_CASES)
def test_diag_ggn_equals_autodiff_ggn(trees_close, p, case):
    p = dict(p, cost=case[0], out=case[1])
    if case[1] == "softmax":
        p["sizes"] = p["sizes"][:-1] + [max(2, p["sizes"][-1])]
    params, X, Y = make(p, jnp.float64)
    trees_close(stats.diag_ggn(params, X, Y, p["cost"], p["reduction"]),
                ggn_diag_ref(params, X, Y, p["cost"], p["reduction"]), 1e-10, str(p))


def test_diag_ggn_names_unsupported_pairs():
    params = fbp.init_mlp(jax.random.key(0), [3, 2], output_activation="softmax")
    with pytest.raises(ValueError, match=r"cross_entropy.*softmax"):
        stats.diag_ggn(params, jnp.ones((1, 3)), jnp.ones((1, 2)) / 2, "cross_entropy")


def ggn_block_ref(params, l, x, y, cost_name):
    """One example's GGN block of layer l from autodiff, J_vᵀ H J_v, v = vec([w^l | b^l]) (columns stacked;
    a Conv layer's kernels as a (C_out, C_in·k·k) matrix)."""
    cost = fbp.get_cost(cost_name)
    pair = closed_form(cost, params[-1].act)
    n_out = params[l].w.shape[0]

    def out(v):
        M = v.reshape(-1, n_out).T
        net = list(params)
        net[l] = dataclasses.replace(params[l], w=M[:, :-1].reshape(params[l].w.shape), b=M[:, -1])
        zs, acts = fbp.forward_trace(net, x)
        return zs[-1] if pair is not None else acts[-1]

    v0 = jnp.concatenate([params[l].w.reshape(n_out, -1), params[l].b[:, None]], axis=1).T.reshape(-1)
    J = jax.jacfwd(out)(v0)
    H = jax.hessian(lambda o: pair.loss(o, y) if pair is not None else cost.fn(o, y))(out(v0))
    return J.T @ H @ J


@pytest.mark.parametrize("case", [("quadratic", "sigmoid"), ("mse", "tanh"), ("log_likelihood", "softmax"),
                                  ("cross_entropy", "sigmoid")])
def test_kfac_factors_are_the_gauss_newton_blocks_kronecker_factors(case):
    cost = case[0]
    params, X, Y = make(dict(sizes=[5, 4, 3], hidden="tanh", out=case[1], cost=cost, batch=5, init="normalized",
                             seed=3), jnp.float64)
    blocks = [[ggn_block_ref(params, l, x, y, cost) for x, y in zip(X, Y)] for l in range(2)]
    for n in range(2):  # one example: its GGN block is exactly A ⊗ G
        for (A, G), block in zip(stats.kfac_factors(params, X[n:n + 1], Y[n:n + 1], cost), blocks):
            assert fbp.relative_error(jnp.kron(A, G), block[n]) <= 1e-10
    # a batch: A the mean of ā āᵀ, G the mean of the examples' G's (each its block's bias-by-bias corner, ā's 1 × 1)
    acts = jax.vmap(lambda x: fbp.forward_trace(params, x)[1])(X)
    for chunk in (None, 2):
        for l, (A, G) in enumerate(stats.kfac_factors(params, X, Y, cost, chunk_size=chunk)):
            ab = np.concatenate([np.asarray(acts[l]), np.ones((5, 1))], axis=1)
            n_out = params[l].n_out
            assert fbp.relative_error(A, ab.T @ ab / 5) <= 1e-12
            assert fbp.relative_error(G, sum(b[-n_out:, -n_out:] for b in blocks[l]) / 5) <= 1e-10


def maps_ggn_ref(params, x, y, cost_name):
    """One example's GGN in the first (Conv) layer's maps before pooling, J_eᵀ H J_e, e a change of those
    (C_out·rows·columns) numbers, by autodiff through lax's convolution and max-pooling."""
    cost = fbp.get_cost(cost_name)
    pair = closed_form(cost, params[-1].act)
    conv, p = params[0], params[0].pool

    def out(e):
        c = jax.lax.conv_general_dilated(x.reshape((1,) + conv.in_shape), conv.w, (1, 1), "VALID",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))[0]
        m = jax.lax.reduce_window(c + e.reshape(c.shape), -jnp.inf, jax.lax.max, (1, p, p), (1, p, p), "VALID")
        zs, acts = fbp.forward_trace(params[1:], conv.act.fn(m + conv.b[:, None, None]).reshape(-1))
        return zs[-1] if pair is not None else acts[-1]

    e0 = jnp.zeros(int(np.prod(conv.conv_shape)), x.dtype)
    J = jax.jacfwd(out)(e0)
    H = jax.hessian(lambda o: pair.loss(o, y) if pair is not None else cost.fn(o, y))(out(e0))
    return J.T @ H @ J


@pytest.mark.parametrize("case", [("quadratic", "sigmoid"), ("log_likelihood", "softmax")])
def test_kfac_factors_of_a_conv_layer_are_kfcs(case, monkeypatch):
    cost, out = case
    rng = np.random.default_rng(6)
    # one position (3×3 kernels over 3×3 images, no pooling): the example's GGN block is exactly A ⊗ G
    one = fbp.init_convnet(jax.random.key(5), (2, 3, 3), [(3, 3, 1)], [4, 3], activation="tanh",
                           output_activation=out, dtype=jnp.float64)
    X, Y = rng.random((2, 18)), np.eye(3)[[2, 0]]
    for n in range(2):
        (A, G), _, _ = stats.kfac_factors(one, X[n:n + 1], Y[n:n + 1], cost)
        assert fbp.relative_error(jnp.kron(A, G), ggn_block_ref(one, 0, X[n], Y[n], cost)) <= 1e-10
    # 4×4 positions and 2×2 pooling: A = mean Σ_t ā_t ā_tᵀ over lax's own patches, G = mean (1/T) Σ_t of the
    # GGN of the maps before pooling at (i, t), (j, t)
    net = fbp.init_convnet(jax.random.key(6), (2, 6, 6), [(3, 3, 2)], [4, 3], activation="tanh",
                           output_activation=out, dtype=jnp.float64)
    X, Y = rng.random((5, 72)), np.eye(3)[rng.integers(0, 3, 5)]
    patches = jax.lax.conv_general_dilated_patches(X.reshape(5, 2, 6, 6), (3, 3), (1, 1), "VALID")  # (5, 18, 4, 4)
    ab = np.concatenate([np.asarray(patches).reshape(5, 18, 16), np.ones((5, 1, 16))], axis=1)
    A_ref = np.einsum("npt,nqt->pq", ab, ab) / 5
    G_ref = sum(np.einsum("itjt->ij", np.asarray(maps_ggn_ref(net, x, y, cost)).reshape(3, 16, 3, 16)) / 16
                for x, y in zip(X, Y)) / 5
    for chunk in (None, 2):
        A, G = stats.kfac_factors(net, X, Y, cost, chunk_size=chunk)[0]
        assert fbp.relative_error(A, A_ref) <= 1e-12
        assert fbp.relative_error(G, G_ref) <= 1e-10
    # G summed over blocks of two examples' unpooled δ's (3 maps × 16 positions × 3 columns, float64), the
    # third block padded with δ's of 0
    monkeypatch.setattr(fbp.layers, "KFAC_BLOCK_BYTES", 2 * 3 * 16 * 3 * 8)
    jax.clear_caches()  # the block size is read when the sums are traced
    A, G = stats.kfac_factors(net, X, Y, cost)[0]
    assert fbp.relative_error(A, A_ref) <= 1e-12 and fbp.relative_error(G, G_ref) <= 1e-10


def flat_grads(params, X, Y, cost):
    """Per layer, each example's gradient as vec([w | b]) (columns stacked, a Conv layer's kernels as a
    (C_out, C_in·k·k) matrix), from jax.grad."""
    return [np.concatenate([np.asarray(layer.w).reshape(len(X), layer.w.shape[1], -1),
                            np.asarray(layer.b)[:, :, None]], axis=2).transpose(0, 2, 1).reshape(len(X), -1)
            for layer in per_example_ref(params, X, Y, cost)]


def influence_ref(factors, g1, g2, eps):
    """Σ_l g1 (Ã ⊗ G̃)⁻¹ g2ᵀ, the damped Kronecker products formed and solved by NumPy."""
    ref = 0.0
    for (A, G), a, b in zip(factors, g1, g2):
        A, G = np.asarray(A), np.asarray(G)
        damped = [F + np.sqrt(eps) * np.trace(F) / len(F) * np.eye(len(F)) for F in (A, G)]
        ref = ref + a @ np.linalg.solve(np.kron(*damped), b.T)
    return ref


def test_influence_is_the_gradients_through_the_damped_kfac_inverse():
    params, X, Y = make(dict(sizes=[5, 4, 4, 3], hidden="sigmoid", out="softmax", cost="log_likelihood", batch=7,
                             init="normalized", seed=4), jnp.float64)
    X2, Y2 = X[:3] * 0.5, Y[np.array([2, 0, 1])]
    eps = 0.02
    factors = stats.kfac_factors(params, X, Y, "log_likelihood")
    ref = influence_ref(factors, flat_grads(params, X, Y, "log_likelihood"),
                        flat_grads(params, X2, Y2, "log_likelihood"), eps)
    got = stats.influence(params, X, Y, "log_likelihood", X2, Y2, damping=eps)
    assert got.shape == (7, 3) and fbp.relative_error(got, ref) <= 1e-10
    chunked = stats.influence(params, X, Y, "log_likelihood", X2, Y2, factors=factors, damping=eps, chunk_size=3)
    assert fbp.relative_error(chunked, ref) <= 1e-10
    other = stats.influence(params, X, Y, "log_likelihood", X2, Y2, damping=10 * eps)
    assert fbp.relative_error(other, ref) > 1e-3  # the damping is used
    # the diagonal, and the cosine in H̃⁻¹'s lengths
    square = np.asarray(stats.influence(params, X, Y, "log_likelihood", damping=eps))
    d1 = np.asarray(stats.influence_diagonal(params, X, Y, "log_likelihood", damping=eps))
    d2 = np.asarray(stats.influence_diagonal(params, X2, Y2, "log_likelihood", factors=factors, damping=eps,
                                             chunk_size=2))
    assert fbp.relative_error(d1, np.diag(square)) <= 1e-10 and np.all(d1 > 0)
    cos = stats.influence(params, X, Y, "log_likelihood", X2, Y2, damping=eps, cosine=True)
    assert fbp.relative_error(cos, ref / np.sqrt(np.outer(d1, d2))) <= 1e-10
    for kwargs, needle in ((dict(damping=0.0), "damping \\(ε\\) must be a number > 0"),
                           (dict(damping=True), "damping \\(ε\\) must be a number > 0"),
                           (dict(factors=factors[:1]), "one \\(A, G\\) pair per layer"),
                           (dict(factors=[(G, A) for A, G in factors]), "one \\(A, G\\) pair per layer")):
        with pytest.raises(ValueError, match=needle):
            stats.influence(params, X, Y, "log_likelihood", X2, Y2, **kwargs)
    with pytest.raises(ValueError, match="X2 and Y2 together"):
        stats.influence(params, X, Y, "log_likelihood", X2)


@pytest.mark.parametrize("channels", [1, 2])  # lax's convolution, or the product of the kernels and the patches
def test_influence_of_a_conv_network_is_the_gradients_through_kfc(channels):
    params = fbp.init_convnet(jax.random.key(1), (channels, 7, 7), [(3, 3, 1), (2, 2, 2)], [4, 3],
                              output_activation="softmax", dtype=jnp.float64)
    rng = np.random.default_rng(0)
    X, Y = rng.random((6, channels * 49)), np.eye(3)[rng.integers(0, 3, 6)]
    X2, Y2 = X[:2] * 0.7, Y[[1, 0]]
    eps = 0.05
    factors = stats.kfac_factors(params, X, Y, "log_likelihood")
    assert [tuple(np.shape(A)) + tuple(np.shape(G)) for A, G in factors] == [
        (channels * 9 + 1,) * 2 + (3, 3), (13, 13, 2, 2), (9, 9, 4, 4), (5, 5, 3, 3)]
    ref = influence_ref(factors, flat_grads(params, X, Y, "log_likelihood"),
                        flat_grads(params, X2, Y2, "log_likelihood"), eps)
    for chunk in (None, 4):
        got = stats.influence(params, X, Y, "log_likelihood", X2, Y2, damping=eps, chunk_size=chunk)
        assert fbp.relative_error(got, ref) <= 1e-10
    d = stats.influence_diagonal(params, X, Y, "log_likelihood", damping=eps, chunk_size=4)
    assert fbp.relative_error(d, np.diag(stats.influence(params, X, Y, "log_likelihood", damping=eps))) <= 1e-10
    with pytest.raises(ValueError, match="\\(C_in·k·k \\+ 1\\)² and C_out² for a Conv one"):
        stats.influence(params, X, Y, "log_likelihood", factors=[(G, A) for A, G in factors])


@pytest.mark.parametrize("conv", [False, True])
def test_products_with_a_splits_mean_gradient_are_the_means_of_the_per_example_ones(conv):
    """mean_grad is the mean of jax.grad's per-example gradients; grad_dots of
    the training examples with one gradient per checkpoint is Σ_i η_i g_n ·
    v_i by jax.grad, with v_i a split's mean gradient the mean of tracin's
    rows; grad_dots with kfac_solve's H̃⁻¹ v the mean of the influences on the
    split (the Kronecker products formed and solved by NumPy), float64."""
    cost = "log_likelihood"
    rng = np.random.default_rng(3)
    if conv:
        nets = [fbp.init_convnet(jax.random.key(s), (1, 7, 7), [(3, 3, 1), (2, 2, 2)], [4, 3],
                                 output_activation="softmax", dtype=jnp.float64) for s in (1, 2)]
        X, Y = rng.random((9, 49)), np.eye(3)[rng.integers(0, 3, 9)]
    else:
        nets = [make(dict(sizes=[5, 4, 4, 3], hidden="sigmoid", out="softmax", cost=cost, batch=9,
                          init="normalized", seed=s), jnp.float64)[0] for s in (4, 5)]
        X, Y = rng.random((9, 5)), np.eye(3)[rng.integers(0, 3, 9)]
    X2, Y2 = rng.random((7, X.shape[1])), np.eye(3)[rng.integers(0, 3, 7)]

    def flat(tree, n):
        return np.concatenate([np.asarray(leaf).reshape(n, -1) for leaf in jax.tree.leaves(tree)], axis=1)

    means = []
    for net in nets:
        ref = flat(per_example_ref(net, X2, Y2, cost), 7).mean(0)
        for chunk in (None, 3):
            v = stats.mean_grad(net, X2, Y2, cost, chunk_size=chunk)
            assert jax.tree.structure(v) == jax.tree.structure(net)
            assert fbp.relative_error(flat(v, 1)[0], ref) <= 1e-12, chunk
        means.append(v)
    weights = [(nets[0], 0.7), (nets[1], 1.3)]
    ref = sum(w * flat(per_example_ref(net, X, Y, cost), 9) @ flat(v, 1)[0] for (net, w), v in zip(weights, means))
    for chunk in (None, 4):
        got = stats.grad_dots(weights, X, Y, cost, means, chunk_size=chunk)
        assert got.shape == (9,) and fbp.relative_error(got, ref) <= 1e-12, chunk
    tr = np.asarray(stats.tracin(weights, X, Y, cost, X2, Y2)).mean(1)
    assert fbp.relative_error(stats.grad_dots(weights, X, Y, cost, means), tr) <= 1e-12
    eps = 0.03
    factors = stats.kfac_factors(nets[0], X, Y, cost)
    solved = stats.kfac_solve(nets[0], means[0], factors, damping=eps)
    ref = influence_ref(factors, flat_grads(nets[0], X, Y, cost), flat_grads(nets[0], X2, Y2, cost), eps).mean(1)
    assert fbp.relative_error(stats.grad_dots([(nets[0], 1.0)], X, Y, cost, [solved], chunk_size=4), ref) <= 1e-10
    for bad, needle in (([means[0]], "one gradient for each of its 2 checkpoints"),
                        ([means[0], means[0][:1]], "one gradient for each of its 2 checkpoints")):
        with pytest.raises(ValueError, match=needle):
            stats.grad_dots(weights, X, Y, cost, bad)
    with pytest.raises(ValueError, match="one \\(A, G\\) pair per layer"):
        stats.kfac_solve(nets[0], means[0], factors[:1])
    with pytest.raises(ValueError, match="damping \\(ε\\) must be a number > 0"):
        stats.kfac_solve(nets[0], means[0], factors, damping=0.0)
    # a gradient of the same structure but other shapes (another network's): refused before the solves
    with pytest.raises(ValueError, match="kfac_solve's grad must have the params' structure and shapes"):
        stats.kfac_solve(nets[0], jax.tree.map(lambda g: jnp.zeros(jnp.shape(g) + (1,)), means[0]), factors)


def test_float32_inputs_of_a_float64_network_give_its_float64_figures():
    """Inputs as fbp.data gives them (float32) to a float64 network are
    widened first: the products of two inputs (K-FAC's Σ ā āᵀ, grad_gram's
    a_n · a_m) then come out as from float64 inputs, to the last digit, not
    float32-rounded (the first layer's A was a float32 array before)."""
    params = fbp.init_mlp(jax.random.key(0), [6, 5, 3], output_activation="softmax", dtype=jnp.float64)
    rng = np.random.default_rng(0)
    X32 = (rng.random((300, 6)) * 3).astype(np.float32)
    Y = np.eye(3)[rng.integers(0, 3, 300)].astype(np.float32)
    X64, Y64 = X32.astype(np.float64), Y.astype(np.float64)
    cost = "log_likelihood"
    for name, f in (("kfac_factors", lambda X, Y: stats.kfac_factors(params, X, Y, cost, chunk_size=128)),
                    ("grad_gram", lambda X, Y: stats.grad_gram(params, X, Y, cost, X[:7], Y[:7])),
                    ("self_influence", lambda X, Y: stats.self_influence([(params, 0.5)], X, Y, cost)),
                    ("batch_backward", lambda X, Y: fbp.batch_backward(params, X, Y, cost))):
        got, want = jax.tree.leaves(f(X32, Y)), jax.tree.leaves(f(X64, Y64))
        assert all(np.asarray(g).dtype == np.float64 for g in got), name
        for g, w in zip(got, want):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=name)


def test_clipping_limits():
    params, X, Y = make(dict(sizes=[5, 6, 3], hidden="tanh", out="softmax", cost="log_likelihood",
                             init="normalized", batch=9, reduction="sum", seed=1), jnp.float64)
    cost = "log_likelihood"
    plain = fbp.batch_backward(params, X, Y, cost, "mean")
    huge = stats.clipped_grad(params, X, Y, cost, 1e12, "mean")
    for a, b in zip(jax.tree.leaves(huge), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    tiny = 1e-6
    per = stats.per_example_grads(params, X, Y, cost)
    norms = stats.per_example_grad_norms(params, X, Y, cost)
    c = jnp.minimum(1.0, tiny / norms)
    contrib = jax.vmap(lambda g: ravel_pytree(g)[0])(jax.tree.map(lambda g: g * c.reshape((-1,) + (1,) * (g.ndim - 1)), per))
    assert np.all(np.linalg.norm(contrib, axis=1) <= tiny * (1 + 1e-12))
    total = ravel_pytree(stats.clipped_grad(params, X, Y, cost, tiny, "sum"))[0]
    assert np.linalg.norm(total) <= 9 * tiny * (1 + 1e-12)
    np.testing.assert_allclose(total, contrib.sum(0), rtol=1e-10)


def test_clip_norm_noise_and_batch_size_are_checked_when_known():
    params = fbp.init_mlp(jax.random.key(0), [3, 2], output_activation="softmax")
    X, Y = jax.random.uniform(jax.random.key(1), (4, 3)), jax.nn.one_hot(jnp.arange(4) % 2, 2)
    for bad in (0.0, -1.0, float("nan"), jnp.float32(-1)):
        with pytest.raises(ValueError, match="clip norm must be > 0"):
            stats.clipped_grad(params, X, Y, "log_likelihood", bad)
        with pytest.raises(ValueError, match="clip norm must be > 0"):
            stats.dp_value_and_grad("log_likelihood", bad)
        with pytest.raises(ValueError, match="clip norm must be > 0"):
            stats.dp_noise(1.0, bad, 10)
    for noise, batch, needle in ((float("nan"), 10, "noise multiplier"), (1.0, 0, "batch size"),
                                 (1.0, 2.5, "batch size")):
        with pytest.raises(ValueError, match=needle):
            stats.dp_noise(noise, 1.0, batch)
    # a clip norm traced under jit is not known until it runs: no check, the same clipping
    traced = jax.jit(lambda c: stats.clipped_grad(params, X, Y, "log_likelihood", c))(0.5)
    for a, b in zip(jax.tree.leaves(traced), jax.tree.leaves(stats.clipped_grad(params, X, Y, "log_likelihood", 0.5))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_dp_noise_is_seeded_and_scaled():
    g = [fbp.Dense(jnp.zeros((400, 50)), jnp.zeros(400), "sigmoid")]
    t1, t2, t3 = stats.dp_noise(2.0, 1.5, 10, seed=3), stats.dp_noise(2.0, 1.5, 10, seed=3), stats.dp_noise(2.0, 1.5, 10, seed=4)
    u1, s1 = t1.update(g, t1.init(g))
    u2, _ = t2.update(g, t2.init(g))
    u3, _ = t3.update(g, t3.init(g))
    np.testing.assert_array_equal(u1[0].w, u2[0].w)
    assert not np.array_equal(u1[0].w, u3[0].w)
    assert abs(float(jnp.std(u1[0].w)) / (2.0 * 1.5 / 10) - 1) < 0.02
    u1b, _ = t1.update(g, s1)
    assert not np.array_equal(u1[0].w, u1b[0].w)  # fresh noise every step


def _dp_fit(digits, epochs, seed=0, noise=1.0):
    from fbp import train as ftrain

    params = fbp.init_mlp(jax.random.key(0), [64, 100, 10], output_activation="softmax")
    opt = optax.chain(stats.dp_noise(noise, 1.0, 32, seed=seed), optax.sgd(0.5))
    return ftrain.fit(params, digits.train, optimizer=opt, cost="log_likelihood", epochs=epochs, batch_size=32,
                      key=jax.random.key(1), grad=stats.dp_value_and_grad("log_likelihood", 1.0),
                      monitor_training=False)


def test_dp_sgd_learns_digits_and_is_reproducible():
    from fbp import data as fdata
    from fbp import train as ftrain

    digits = fdata.digits()
    r = _dp_fit(digits, 25)
    acc = float(ftrain.evaluate(r.params, digits.test.X, digits.test.Y, "log_likelihood")["accuracy"])
    assert acc >= 0.85, acc
    a, b, c = _dp_fit(digits, 2), _dp_fit(digits, 2), _dp_fit(digits, 2, seed=1)
    np.testing.assert_array_equal(a.params[0].w, b.params[0].w)
    assert not np.array_equal(a.params[0].w, c.params[0].w)


def test_cli_dp_flags():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "fbp", "train", "--dp-clip", "1.0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--dp-noise" in proc.stderr.strip().splitlines()[-1]

"""Convolutional layers (NNDL ch. 6): the hand-written δ recursion through a
convolution and its max-pooling against jax.grad (float64, 1e-10) over
hypothesis-drawn nets, δ^l = ∂C/∂z^l, the forward against the book's sum
written out in loops, ties in the pooling, the per-example quantities of
fbp.stats, dropout, saving and loading, training, and bad layers refused
by name."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_backprop import COSTS, HIDDEN, INITS, OUTPUTS, SETTINGS
from test_stats import ggn_diag_ref, per_example_ref

import fbp
from fbp import checkpoint as ckpt
from fbp import data as fdata
from fbp import evaluation
from fbp import stats
from fbp import train as ftrain

from training_helpers import fbp_here


@st.composite
def conv_problems(draw, max_layers=2):
    """A small image net: 1–2 Conv layers (maps, k, pool that divides the
    maps), 0–2 Dense hidden layers, an output, a batch and a cost."""
    cost = draw(st.sampled_from(COSTS))
    out = draw(st.sampled_from(["sigmoid", "softmax"] if fbp.COSTS[cost].needs_probabilities else OUTPUTS))
    shape = (draw(st.integers(1, 2)), draw(st.integers(3, 9)), draw(st.integers(3, 9)))
    conv, (_, h, w) = [], shape
    for _ in range(draw(st.integers(1, max_layers))):
        if min(h, w) < 1:
            break
        k = draw(st.integers(1, min(h, w, 4)))
        pools = [p for p in (1, 2, 3) if (h - k + 1) % p == 0 and (w - k + 1) % p == 0]
        pool = draw(st.sampled_from(pools))
        conv.append((draw(st.integers(1, 4)), k, pool))
        h, w = (h - k + 1) // pool, (w - k + 1) // pool
    sizes = draw(st.lists(st.integers(1, 12), min_size=0, max_size=2))
    sizes.append(draw(st.integers(2 if out == "softmax" else 1, 6)))
    return dict(shape=shape, conv=conv, sizes=sizes, hidden=draw(st.sampled_from(HIDDEN)), out=out, cost=cost,
                init=draw(st.sampled_from([i for i in INITS if i != "large"])), batch=draw(st.integers(1, 8)),
                reduction=draw(st.sampled_from(["mean", "sum"])), seed=draw(st.integers(0, 2**31 - 1)))


def make(p, dtype=jnp.float64):
    params = fbp.init_convnet(jax.random.key(p["seed"]), p["shape"], p["conv"], p["sizes"], activation=p["hidden"],
                              output_activation=p["out"], init=p["init"], dtype=dtype)
    rng = np.random.default_rng(p["seed"])
    X = rng.uniform(size=(p["batch"], int(np.prod(p["shape"]))))
    n_out = p["sizes"][-1]
    if p["out"] == "sigmoid" or p["cost"] in ("quadratic", "mse"):
        Y = rng.integers(0, 2, (p["batch"], n_out))
    else:
        Y = np.eye(n_out)[rng.integers(0, n_out, p["batch"])]
    return params, jnp.asarray(X, dtype), jnp.asarray(Y, dtype)


@settings(max_examples=14, **SETTINGS)
@given(conv_problems())
def test_the_hand_written_conv_gradient_equals_jax_grad_float64(trees_close, p):
    params, X, Y = make(p)
    assert any(isinstance(layer, fbp.Conv) for layer in params)
    value, hand = fbp.value_and_batch_backward(params, X, Y, p["cost"], p["reduction"])
    trees_close(hand, fbp.autodiff_grad(params, X, Y, p["cost"], p["reduction"]), 1e-10, str(p))
    assert fbp.relative_error(value, fbp.loss(params, X, Y, p["cost"], p["reduction"])) <= 1e-12


@pytest.mark.parametrize("batch", [10, 70])
def test_both_forms_of_a_batchs_kernel_gradient_equal_jax_grad(trees_close, batch):
    """The kernels' gradient over a batch is, over one channel (the first
    layer here), the sum of each example's product of its δ's with its
    shifted inputs, and over several (the second layer) one product over the
    examples and positions together: both against jax.grad at batches larger
    than hypothesis draws, and against the sum of the examples' own
    gradients (each from its example alone, a batch of one)."""
    p = dict(shape=(1, 9, 7), conv=[(3, 2, 2), (2, 2, 1)], sizes=[5], hidden="sigmoid", out="softmax",
             cost="log_likelihood", init="normalized", batch=batch, reduction="sum", seed=5)
    params, X, Y = make(p)
    hand = fbp.batch_backward(params, X, Y, "log_likelihood", "sum")
    trees_close(hand, fbp.autodiff_grad(params, X, Y, "log_likelihood", "sum"), 1e-10, f"batch {batch}")
    summed = jax.tree.map(lambda g: jnp.sum(g, axis=0), stats.per_example_grads(params, X, Y, "log_likelihood"))
    trees_close(hand, summed, 1e-12, f"batch {batch}: the sum of the examples' own")


def test_deltas_are_dC_dz_through_the_convolution_and_the_pooling(trees_close):
    """δ^l = ∂C/∂z^l: jax.grad of the cost with respect to a zero added to
    each layer's z, against the hand-written recursion's δ's."""
    p = dict(shape=(2, 10, 10), conv=[(3, 3, 2), (4, 2, 1)], sizes=[7, 5], hidden="tanh", out="softmax",
             cost="log_likelihood", init="normalized", batch=1, reduction="sum", seed=4)
    params, X, Y = make(p)
    x, y = X[0], Y[0]
    cost = fbp.get_cost("log_likelihood")

    def cost_of(shifts):
        a = x
        for layer, s in zip(params, shifts):
            z = layer.forward(a) + s
            a = layer.act.fn(z)
        return cost.fn(a, y)

    ref = jax.grad(cost_of)([jnp.zeros(layer.n_out, jnp.float64) for layer in params])
    hand = fbp.deltas(params, x, y, "log_likelihood")
    assert [d.shape for d in hand] == [(3 * 4 * 4,), (4 * 3 * 3,), (7,), (5,)]
    trees_close(hand, ref, 1e-10, "δ")
    # and BP3, BP4 for this one example (fbp.backward, no batch)
    trees_close(fbp.backward(params, x, y, "log_likelihood"),
                fbp.autodiff_grad(params, X[:1], Y[:1], "log_likelihood", "sum"), 1e-10, "one example")


def test_the_forward_is_the_books_sum_then_the_pooling():
    """z_{j,x,y} = b_j + Σ_i Σ_{l,m} w_{j,i,l,m} a_{i,x+l,y+m}, then the
    largest of each pool×pool block, written out in loops."""
    rng = np.random.default_rng(0)
    C, H, W, maps, k, pool = 2, 7, 9, 3, 2, 2
    w, b, a = rng.normal(size=(maps, C, k, k)), rng.normal(size=maps), rng.normal(size=(C, H, W))
    layer = fbp.Conv(jnp.asarray(w), jnp.asarray(b), (C, H, W), pool)
    conv = np.zeros((maps, H - k + 1, W - k + 1))
    for j in range(maps):
        for x in range(H - k + 1):
            for y in range(W - k + 1):
                conv[j, x, y] = sum(w[j, i, l, m] * a[i, x + l, y + m]
                                    for i in range(C) for l in range(k) for m in range(k))
    pooled = np.zeros((maps, 3, 4))
    for j in range(maps):
        for x in range(3):
            for y in range(4):
                pooled[j, x, y] = conv[j, 2 * x:2 * x + 2, 2 * y:2 * y + 2].max() + b[j]
    assert layer.out_shape == (3, 3, 4) and layer.n_in == C * H * W and layer.n_out == 36
    np.testing.assert_allclose(layer.forward(jnp.asarray(a.reshape(-1))), pooled.reshape(-1), rtol=1e-13)


def test_a_blocks_error_goes_to_its_first_largest_unit_as_jax_grad_sends_it(trees_close):
    """Each block's δ goes to its largest unit; on blank images every unit
    of a block ties, and the δ goes to the first of them, row by row, as
    jax.grad of XLA's max-pooling sends it."""
    p = dict(shape=(1, 6, 6), conv=[(2, 3, 2)], sizes=[4], hidden="sigmoid", out="softmax", cost="log_likelihood",
             init="normalized", batch=3, reduction="mean", seed=1)
    params, X, Y = make(p)
    X = X.at[0].set(0.0).at[1].set(1.0)  # two blank images: the convolution is the same at every position
    trees_close(fbp.batch_backward(params, X, Y, "log_likelihood"),
                fbp.autodiff_grad(params, X, Y, "log_likelihood"), 1e-10, "ties")
    layer = params[0]
    delta = jnp.arange(1.0, layer.n_out + 1, dtype=jnp.float64)  # a different δ for each block
    routed = np.asarray(layer._unpool(delta, X[0]))  # (2, 4, 4): two maps of 2×2 blocks
    expect = np.zeros(layer.conv_shape)
    expect[:, ::2, ::2] = np.asarray(delta).reshape(layer.out_shape)  # the first unit of each block
    np.testing.assert_array_equal(routed, expect)
    c = np.asarray(layer._conv(X[2]))  # an image of noise: no ties, the δ goes to the largest
    routed = np.asarray(layer._unpool(delta, X[2]))
    blocks = c.reshape(2, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(2, 2, 2, 4)
    largest = blocks.argmax(-1)
    for j in range(2):
        for x in range(2):
            for y in range(2):
                r, s = divmod(int(largest[j, x, y]), 2)
                assert routed[j, 2 * x + r, 2 * y + s] == delta[j * 4 + x * 2 + y]
    assert np.count_nonzero(routed) == layer.n_out


@settings(max_examples=4, **SETTINGS)
@given(conv_problems())
def test_per_example_quantities_of_a_conv_net_equal_the_vmap_grad_route(trees_close, p):
    params, X, Y = make(p)
    cost, B = p["cost"], X.shape[0]
    ref = jax.tree.map(np.asarray, per_example_ref(params, X, Y, cost))
    trees_close(stats.per_example_grads(params, X, Y, cost), ref, 1e-10, "per_example_grads")
    flat = np.concatenate([leaf.reshape(B, -1) for leaf in jax.tree.leaves(ref)], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    assert fbp.relative_error(stats.per_example_grad_norms(params, X, Y, cost), norms) <= 1e-10
    clip = float(np.median(norms)) + 1e-3
    c = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    trees_close(stats.clipped_grad(params, X, Y, cost, clip, "sum"),
                jax.tree.map(lambda g: np.tensordot(c, g, axes=1), ref), 1e-10, "clipped")
    trees_close(stats.grad_second_moment(params, X, Y, cost), jax.tree.map(lambda g: np.sum(g * g, 0), ref),
                1e-10, "second moment")
    var = stats.grad_variance(params, X, Y, cost)
    for v, r, m in zip(jax.tree.leaves(var), jax.tree.leaves(jax.tree.map(lambda g: np.var(g, 0), ref)),
                       jax.tree.leaves(jax.tree.map(lambda g: np.mean(g * g, 0), ref))):
        assert float(np.max(np.abs(np.asarray(v) - r))) <= 1e-10 * max(float(np.max(m)), 1e-300)
    if (cost, p["out"]) not in (("cross_entropy", "softmax"), ("log_likelihood", "sigmoid")):
        trees_close(stats.diag_ggn(params, X, Y, cost, p["reduction"]),
                    ggn_diag_ref(params, X, Y, cost, p["reduction"]), 1e-10, "diag_ggn")
    ev = ftrain.evaluate(params, X, Y, cost, per_example=True)
    assert fbp.relative_error(ev["grad_norms"], norms) <= 1e-10
    gram = flat @ flat.T  # g_n · g_m, here against the first two examples
    assert fbp.relative_error(stats.grad_gram(params, X, Y, cost, X[:2], Y[:2]), gram[:, :2]) <= 1e-10
    # (against two examples the kernels of their gradients meet the patches; against more, each gradient formed)
    assert fbp.relative_error(stats.grad_gram(params, X, Y, cost, X[:1], Y[:1]), gram[:, :1]) <= 1e-10
    assert fbp.relative_error(stats.grad_gram(params, X, Y, cost), gram) <= 1e-10
    # the self-influence of one checkpoint weighted 2, over all the layers and the first (a Conv layer) alone
    first = np.concatenate([leaf.reshape(B, -1) for leaf in jax.tree.leaves(ref[0])], axis=1)
    for layers, sq in ((None, norms ** 2), (0, np.sum(first ** 2, axis=1))):
        got = stats.self_influence([(params, 2.0)], X, Y, cost, layers=layers, chunk_size=2)
        assert fbp.relative_error(got, 2 * sq) <= 1e-10


def _shapes(in_shape, conv, sizes):
    """The layers of ``init_convnet(key, in_shape, conv, sizes)`` with shapes
    for their weights, no numbers drawn: what ``chunk_for`` reads."""
    def shape(*dims):
        return jax.ShapeDtypeStruct(dims, jnp.float32)

    layers, image = [], tuple(in_shape)
    for maps, k, pool in conv:
        layers.append(fbp.Conv(w=shape(maps, image[0], k, k), b=shape(maps), in_shape=image, pool=pool))
        image = layers[-1].out_shape
    n = int(np.prod(image))
    for m in sizes:
        layers.append(fbp.Dense(w=shape(m, n), b=shape(m)))
        n = m
    return layers


def test_evaluate_takes_a_conv_net_in_smaller_chunks_sized_by_what_an_example_holds():
    """evaluate's chunk_size="auto" (chunk_for): a convolution holds its
    patches and maps per example, so the book's first conv net goes through
    some hundreds of examples at a time where an MLP goes 10,000 (at 10,000
    its per-example norms on Fashion-MNIST took 2.6 GB), and the chunks give
    what the whole batch at once gives."""
    mlp = _shapes((784,), [], [100, 10])
    book = _shapes((1, 28, 28), [(20, 5, 2)], [100, 10])
    assert ftrain.chunk_for(mlp) == 10_000
    floats = sum(layer.example_floats for layer in book)
    assert floats > 40 * sum(layer.example_floats for layer in mlp)
    chunk = ftrain.chunk_for(book)
    assert 100 < chunk < 1_000 and chunk * floats <= evaluation.CHUNK_FLOATS < (chunk + 1) * floats
    assert ftrain.chunk_for(_shapes((1, 200, 200), [(64, 5, 2)], [10])) == 100  # the least
    p = dict(shape=(1, 60, 60), conv=[(8, 5, 2)], sizes=[5], hidden="sigmoid", out="softmax", cost="log_likelihood",
             init="normalized", reduction="mean", seed=1)
    chunk = ftrain.chunk_for(_shapes(p["shape"], p["conv"], p["sizes"]))
    assert chunk < 1_000
    params, X, Y = make(dict(p, batch=2 * chunk + chunk // 2))  # three chunks, the last one short
    auto = ftrain.evaluate(params, X, Y, "log_likelihood", predictions=True, per_example=True)
    whole = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=None, predictions=True, per_example=True)
    np.testing.assert_array_equal(auto["predicted"], whole["predicted"])
    for name in ("cost", "costs", "grad_norms"):
        assert fbp.relative_error(auto[name], whole[name]) <= 1e-12, name

def test_dropout_thins_the_maps_and_the_gradient_still_equals_jax_grad(trees_close):
    p = dict(shape=(1, 8, 8), conv=[(3, 3, 2)], sizes=[6, 4], hidden="relu", out="softmax", cost="log_likelihood",
             init="he", batch=5, reduction="mean", seed=2)
    params, X, Y = make(p)
    masks = fbp.dropout_masks(jax.random.key(0), params, 5, 0.5)
    assert [m.shape for m in masks] == [(5, 27), (5, 6)]
    hand = fbp.batch_backward(params, X, Y, "log_likelihood", masks=masks)
    trees_close(hand, fbp.autodiff_grad(params, X, Y, "log_likelihood", masks=masks), 1e-10, "thinned")
    plain = fbp.batch_backward(params, X, Y, "log_likelihood")
    assert not np.allclose(hand[0].w, plain[0].w)  # the masks did something


def test_bad_conv_layers_are_refused_by_name():
    key = jax.random.key(0)
    w, b = jnp.zeros((2, 1, 3, 3)), jnp.zeros(2)
    head = fbp.Dense(jnp.zeros((3, 18)), jnp.zeros(3), "softmax")
    cases = [
        ([fbp.Conv(w, b, (1, 8, 8), 2), head], "split into 2×2 blocks"),  # 6×6 maps pool to 3×3 = 18: fine
        ([fbp.Conv(jnp.zeros((2, 1, 9, 9)), b, (1, 8, 8), 1), head], "larger than its 8×8 input"),
        ([fbp.Conv(jnp.zeros((2, 3, 3, 3)), b, (1, 8, 8), 2), head], "takes 3 channels"),
        ([fbp.Conv(jnp.zeros((2, 1, 3, 2)), b, (1, 8, 8), 2), head], "square kernels"),
        ([fbp.Conv(w, jnp.zeros(3), (1, 8, 8), 2), head], "one bias per map"),
        ([fbp.Conv(w, b, (1, 7, 7), 2), head], "do not split into 2×2 blocks"),
        ([fbp.Conv(w, b, (1, 8, 8), 2)], "end the network with a Dense layer"),
        ([fbp.Conv(w, b, (1, 8, 8), 0), head], "pool must be a positive int"),
        ([fbp.Conv(w, b, (1, 8, 8), 1), head], "expects 18 inputs"),  # 72 outputs feed 18 inputs
    ]
    for params, message in cases[1:]:
        with pytest.raises(ValueError, match=message):
            fbp.forward(params, jnp.zeros(64))
    fbp.forward(cases[0][0], jnp.zeros(64))  # the first is well made
    with pytest.raises(ValueError, match=r"\(maps, k, pool\)"):
        fbp.init_convnet(key, (8, 8), [(20, 5)], [10])
    with pytest.raises(ValueError, match="in_shape must be"):
        fbp.init_convnet(key, (8,), [(2, 3, 2)], [10])
    with pytest.raises(ValueError, match="use fbp.init_mlp"):
        fbp.init_convnet(key, (8, 8), [], [10])


def test_a_conv_net_saves_and_loads_by_itself_and_an_unknown_layer_kind_is_an_error(tmp_path, trees_close):
    p = dict(shape=(1, 8, 8), conv=[(3, 3, 2), (2, 2, 1)], sizes=[10], hidden="sigmoid", out="softmax",
             cost="log_likelihood", init="normalized", batch=4, reduction="mean", seed=0)
    params, X, _ = make(p)
    path = fbp.save_params(tmp_path / "net.npz", params, {"data": "digits"})
    loaded = fbp.load_params(path)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    assert [type(layer) for layer in loaded] == [fbp.Conv, fbp.Conv, fbp.Dense]
    trees_close(loaded, params, 0.0, "loaded")
    np.testing.assert_array_equal(fbp.forward(loaded, X), fbp.forward(params, X))

    import json

    with np.load(path) as f:
        arrays = dict(f)
    header = json.loads(arrays["header"].tobytes())
    header["layers"][0]["kind"] = "capsule"
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "odd.npz", **arrays)
    with pytest.raises(ckpt.CheckpointError, match="kind 'capsule'"):
        fbp.load_params(tmp_path / "odd.npz")
    header["layers"][0].update(kind="conv", pool=3)  # 6×6 maps do not pool by 3 into the next layer's 3×3 input
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "odd.npz", **arrays)
    with pytest.raises(ckpt.CheckpointError, match="do not make a network"):
        fbp.load_params(tmp_path / "odd.npz")


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_a_conv_nets_training_step_equals_jax_grads(trees_close, opt):
    p = dict(shape=(1, 8, 8), conv=[(4, 3, 2)], sizes=[8, 4], hidden="tanh", out="softmax", cost="log_likelihood",
             init="normalized", batch=6, reduction="mean", seed=3)
    params, X, Y = make(p)
    optimizer = ftrain.make_optimizer(opt, 0.1, l2=0.5, n_train=60)
    state = optimizer.init(params)
    p1, _, l1 = jax.jit(ftrain.make_train_step(optimizer, "log_likelihood"))(params, state, X, Y)
    p2, _, l2 = jax.jit(ftrain.make_train_step(optimizer, "log_likelihood", grad="autodiff"))(params, state, X, Y)
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    trees_close(p1, p2, 1e-10, "params after a step")
    e1 = ftrain.make_epoch(ftrain.make_train_step(optimizer, "log_likelihood"), 2)(params, state, jax.random.key(9),
                                                                                   X, Y)
    e2 = ftrain.make_epoch(ftrain.make_train_step(optimizer, "log_likelihood", grad="autodiff"), 2)(
        params, state, jax.random.key(9), X, Y)
    trees_close(e1[0], e2[0], 1e-10, "params after an epoch")


def test_fit_trains_a_conv_net_on_digits_and_resumes_bitwise(digits, tmp_path):
    params = fbp.init_convnet(jax.random.key(0), (8, 8), [(8, 3, 2)], [30, 10], output_activation="softmax",
                              dtype=jnp.float32)
    kw = dict(optimizer=ftrain.make_optimizer("sgd", 0.5), cost="log_likelihood", batch_size=10,
              key=jax.random.key(1), evaluation=digits.validation)
    whole = ftrain.fit(params, digits.train, epochs=6, **kw)
    accuracies = [h["evaluation_accuracy"] for h in whole.history]
    assert accuracies[-1] >= 0.85 and accuracies[-1] > accuracies[0] + 0.1, accuracies
    assert isinstance(whole.params[0], fbp.Conv) and whole.params[0].w.dtype == jnp.float32
    ftrain.fit(params, digits.train, epochs=3, checkpoint_dir=str(tmp_path), **kw)
    resumed = ftrain.fit(params, digits.train, epochs=6, checkpoint_dir=str(tmp_path), resume=True, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params)))
    dropped = ftrain.fit(params, digits.train, epochs=2, **kw, dropout=0.3)  # the maps' units are hidden units
    assert fbp.relative_error(dropped.params[0].w, whole.params[0].w) > 1e-4


def test_fbp_train_and_check_take_conv(capsys, tmp_path):
    net, run, out = tmp_path / "conv.npz", str(tmp_path / "run"), tmp_path / "m.jsonl"
    flags = ["train", "--quiet", "--checkpoint-dir", run, "--metrics-out", str(out)]
    r = fbp_here(capsys, *flags, "--conv", "8:3:2", "--epochs", "3")
    assert r.returncode == 0, r.stderr
    assert "sizes=64,100,10 conv=8:3:2 sigmoid/softmax" in r.stdout
    assert json.loads(out.read_text().splitlines()[-1])["settings"]["--conv"] == "8:3:2"
    r = fbp_here(capsys, *flags, "--epochs", "4", "--resume")  # without --conv: another network
    assert r.returncode == 2 and "--conv: saved '8:3:2', now None" in r.stderr.strip().splitlines()[-1]
    r = fbp_here(capsys, *flags, "--conv", "8:3:2", "--epochs", "4", "--resume", "--save-params", str(net))
    assert r.returncode == 0, r.stderr
    accuracy = float(r.stdout.split("test accuracy ")[1].split()[0])
    assert accuracy >= 0.5, r.stdout  # it learned (chance: 0.1); how well is test_fit_trains_a_conv_net…'s question
    loaded, meta = fbp.load_params(net, with_meta=True)
    assert isinstance(loaded[0], fbp.Conv) and loaded[0].w.shape == (8, 1, 3, 3)
    r = fbp_here(capsys, "evaluate", str(net))
    assert r.returncode == 0, r.stderr
    assert "conv.npz (64,100,10 conv=8:3:2, trained to epoch" in r.stdout.splitlines()[0], r.stdout
    assert f"accuracy {accuracy:.4f}" in r.stdout, r.stdout
    # --explain on a conv net (its Conv layer forms each example's gradient, in evaluate's chunks)
    r = fbp_here(capsys, "evaluate", str(net), "--explain", "0")
    assert r.returncode == 0, r.stderr
    ds = fdata.digits()
    dots = np.asarray(stats.grad_gram(loaded, ds.train.X, ds.train.Y, "log_likelihood", ds.test.X[:1], ds.test.Y[:1]))
    first = next(line for line in r.stdout.splitlines() if line.startswith("  helps most"))
    assert int(first.split()[3]) == int(np.argmax(dots[:, 0])), r.stdout

    r = fbp_here(capsys, "check", "--conv", "3:5:2", "--sizes", "144,6,4", "--cost", "log_likelihood",
                 "--output-activation", "softmax", "--fd-samples", "4")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "conv=3:5:2" in r.stdout and "[0].w      (3, 1, 5, 5)" in r.stdout
    r = fbp_here(capsys, "check", "--conv", "3:3:1", "--sizes", "10,5,3")
    assert r.returncode == 2 and "--conv needs square images, but an example here is 10 numbers" in r.stderr

    for flags, message in [
        (["--conv", "8:9:2"], "--conv 8:9:2 on 8×8 images: params\\[0\\] has 9×9 kernels"),
        (["--conv", "8:3:4"], "do not split into 4×4 blocks"),
        (["--conv", "8x3"], "argument --conv: expected convolutional layers as MAPS:K\\[:POOL\\]"),
        (["--conv", "8:0:2"], "got '8:0:2' \\(MAPS, K and POOL are positive integers\\)"),
        (["--conv", "8:3:2,8:3:2:1"], "got '8:3:2,8:3:2:1' \\(two or three numbers a layer, not 4\\)"),
    ]:
        r = fbp_here(capsys, "train", "--epochs", "1", "--quiet", *flags)
        assert r.returncode == 2, (flags, r.stdout)
        assert re.search(message, r.stderr.strip().splitlines()[-1]), (flags, r.stderr)

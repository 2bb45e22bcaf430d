"""Training: the step, the epoch, fit, determinism, non-finite stops, checkpoints."""

import errno
import functools
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fbp
from fbp import checkpoint as ckpt
from fbp import data as fdata
from fbp import train as ftrain


@pytest.fixture(scope="module")
def digits():
    return fdata.digits()


def small_problem(dtype=jnp.float64, n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.uniform(size=(n, 6)), dtype)
    Y = jnp.asarray(np.eye(3)[(X[:, 0] + X[:, 1] > 1.0).astype(int) + (X[:, 2] > 0.7)], dtype)
    params = fbp.init_mlp(jax.random.key(seed), [6, 8, 3], output_activation="softmax", dtype=dtype)
    return params, X, Y


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_train_step_hand_equals_autodiff_step(trees_close, opt):
    params, X, Y = small_problem()
    optimizer = ftrain.make_optimizer(opt, 0.3, l2=5.0, n_train=64)
    state = optimizer.init(params)
    hand = jax.jit(ftrain.make_train_step(optimizer, "log_likelihood", grad="hand"))
    auto = jax.jit(ftrain.make_train_step(optimizer, "log_likelihood", grad="autodiff"))
    p1, s1, p2, s2 = params, state, params, state
    for _ in range(3):
        p1, s1, l1 = hand(p1, s1, X, Y)
        p2, s2, l2 = auto(p2, s2, X, Y)
        np.testing.assert_allclose(l1, l2, rtol=1e-12)
    trees_close(p1, p2, 1e-10)
    trees_close(s1, s2, 1e-10)
    assert fbp.relative_error(p1[0].w, params[0].w) > 1e-4  # it did move


def test_l2_is_the_books_weight_decay(trees_close):
    """network2: w → (1 − ηλ/n) w − η ∇C on weights; biases b → b − η ∇C."""
    params, X, Y = small_problem()
    eta, lam, n = 0.5, 3.0, 64
    optimizer = ftrain.make_optimizer("sgd", eta, l2=lam, n_train=n)
    new, _, _ = ftrain.make_train_step(optimizer, "quadratic")(params, optimizer.init(params), X, Y)
    g = fbp.batch_backward(params, X, Y, "quadratic")
    expect = [fbp.Dense((1 - eta * lam / n) * p.w - eta * gw.w, p.b - eta * gw.b, p.activation)
              for p, gw in zip(params, g)]
    trees_close(new, expect, 1e-13)


def test_momentum_is_the_books_velocity(trees_close):
    """ch. 3: v → μv − η∇C, w → w + v (biases too), over three steps from v = 0."""
    params, X, Y = small_problem()
    eta, mu = 0.5, 0.3
    opt = ftrain.make_optimizer("momentum", eta, momentum=mu)
    step = ftrain.make_train_step(opt, "quadratic")
    new, state = params, opt.init(params)
    expect, v = params, jax.tree.map(jnp.zeros_like, params)
    for k in range(3):
        rows = slice(16 * k, 16 * (k + 1))
        new, state, _ = step(new, state, X[rows], Y[rows])
        g = fbp.batch_backward(expect, X[rows], Y[rows], "quadratic")
        v = jax.tree.map(lambda vi, gi: mu * vi - eta * gi, v, g)
        expect = jax.tree.map(lambda p, vi: p + vi, expect, v)
    trees_close(new, expect, 1e-12)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"momentum \(μ\) must be in \[0, 1\)"):
            ftrain.make_optimizer("momentum", eta, momentum=bad)


def test_books_plain_sgd_eta_3(trees_close):
    params, X, Y = small_problem()
    opt = ftrain.make_optimizer("sgd", 3.0)
    new, _, _ = ftrain.make_train_step(opt, "quadratic")(params, opt.init(params), X, Y)
    g = fbp.batch_backward(params, X, Y, "quadratic")
    trees_close(new, jax.tree.map(lambda p, d: p - 3.0 * d, params, g), 1e-13)


@pytest.mark.parametrize("in_place", [True, False])
def test_epoch_is_the_scan_of_steps(trees_close, monkeypatch, in_place):
    """One jitted epoch equals the same mini-batches stepped one by one in Python,
    whether the epoch copies each mini-batch into a buffer or gathers it."""
    monkeypatch.setattr(ftrain, "_IN_PLACE_BATCH_BYTES", 1 << 30 if in_place else 0)
    params, X, Y = small_problem()
    opt = optax.sgd(0.5)
    step = ftrain.make_train_step(opt, "log_likelihood")
    epoch = ftrain.make_epoch(step, batch_size=10)
    key = jax.random.key(3)
    p_e, s_e, losses = epoch(params, opt.init(params), key, X, Y)
    assert losses.shape == (6,)
    order = np.asarray(ftrain.shuffle(key, 64))[:60].reshape(6, 10)
    p, s = params, opt.init(params)
    for n, idx in enumerate(order):
        p, s, loss = step(p, s, X[idx], Y[idx])
        np.testing.assert_allclose(loss, losses[n], rtol=1e-12)
    trees_close(p_e, p, 1e-12)


def byte_images(n=60, n_in=12, n_out=3, seed=0, scale=255):
    """Random byte images scaled as fbp.data scales them (float32(k) / 255),
    or with ``scale=256`` as the book's mnist.pkl.gz holds them (k / 256),
    one-hot targets; with the codes fit keeps for them (uint8 k, int8 k − 128)."""
    rng = np.random.default_rng(seed)
    B = rng.integers(0, 256, (n, n_in), dtype=np.uint8)
    B.flat[: min(256, B.size)] = rng.permutation(256)[: B.size]  # every byte value, where there is room
    X = B.astype(np.float32) / np.float32(scale)
    Y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, n)]
    return (B if scale == 255 else (B.astype(np.int16) - 128).astype(np.int8)), X, Y


@pytest.mark.parametrize("scale", [255, 256])
def test_byte_codes_only_where_the_floats_are_exactly_bytes(scale):
    B, X, _ = byte_images(scale=scale)
    codes = ftrain.byte_codes(X)
    assert codes.dtype == B.dtype  # uint8 for k/255, int8 for k/256
    np.testing.assert_array_equal(codes, B)
    assert ftrain.byte_codes(np.zeros((0, 12), np.float32)) is None
    assert ftrain.byte_codes(np.zeros((3, 12), np.float32)).dtype == np.uint8  # 0 is both: the first scale
    assert ftrain.byte_codes(fdata.digits().train.X) is None  # k/16, with 16/16 = 1: neither scale's byte
    assert ftrain.byte_codes(X.astype(np.float64)) is None  # the epoch would have to decode to float64
    bad_values = [(0, np.nextafter(X[0, 0], np.float32(1))), (1, np.float32(2.0)), (2, np.float32(-1 / scale)),
                  (3, np.float32(np.nan)), (4, X[4, 4] * np.float32(1 + 2 ** -20)), (5, np.float32(-0.0)),
                  (6, np.float32(1 / (511 - scale)))]  # the other scale's byte 1, in data of this scale
    if scale == 256:
        bad_values.append((7, np.float32(1.0)))  # byte 255 of k/255, beyond the bytes of k/256
    for k, bad in bad_values:
        Xk = X.copy()
        Xk[k, k] = bad
        assert ftrain.byte_codes(Xk) is None, (k, bad)


@pytest.mark.parametrize("scale", [255, 256])
def test_every_byte_decodes_to_numpys_float32_k_over_255_or_256(scale):
    """The decode the epochs use gives bitwise float32(k) / 255 for all 256
    bytes (uint8 codes), and k / 256 (int8 codes k − 128): eagerly, jitted,
    and fused into the operations around it."""
    k = np.arange(256)
    codes = k.astype(np.uint8) if scale == 255 else (k - 128).astype(np.int8)
    want = (k.astype(np.float32) / np.float32(scale)).view(np.uint32)
    decoded = {
        "eager": ftrain.decode_inputs(jnp.asarray(codes)),
        "jit": jax.jit(ftrain.decode_inputs)(codes),
        "reshaped, reversed": jax.jit(lambda c: ftrain.decode_inputs(c.reshape(16, 16)[::-1])[::-1].reshape(-1))(codes),
        # at full float32 precision: a GPU's default rounds a product's inputs to TensorFloat-32
        "into a product": jax.jit(lambda c: jnp.matmul(ftrain.decode_inputs(c.reshape(16, 16)), jnp.eye(16, dtype=jnp.float32),
                                                       precision=jax.lax.Precision.HIGHEST))(codes).reshape(-1),
    }
    for where, got in decoded.items():
        got = np.asarray(got)
        assert got.dtype == np.float32, where
        np.testing.assert_array_equal(got.view(np.uint32), want, err_msg=where)
    X = jnp.asarray(np.float32([[0.5, 1.0]]))
    assert ftrain.decode_inputs(X) is X  # floats pass through


@pytest.mark.parametrize("in_place,scale", [(True, 255), (False, 255), (True, 256), (False, 256)])
def test_an_epoch_on_bytes_is_bitwise_the_epoch_on_their_floats(monkeypatch, in_place, scale):
    """Byte inputs are decoded a mini-batch at a time to the very floats the data set gives."""
    monkeypatch.setattr(ftrain, "_IN_PLACE_BATCH_BYTES", 1 << 30 if in_place else 0)
    B, X, Y = byte_images(scale=scale)
    params = fbp.init_mlp(jax.random.key(2), [12, 8, 3], output_activation="softmax")
    opt = optax.sgd(0.5)
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood"), batch_size=10)
    key = jax.random.key(5)
    p_f, _, losses_f = epoch(params, opt.init(params), key, jnp.asarray(X), jnp.asarray(Y))
    p_b, _, losses_b = epoch(params, opt.init(params), key, jnp.asarray(B), jnp.asarray(Y))
    np.testing.assert_array_equal(losses_b, losses_f)
    for a, b in zip(jax.tree.leaves(p_b), jax.tree.leaves(p_f)):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p_f), jax.tree.leaves(params)))


@pytest.mark.parametrize("scale", [255, 256])
def test_evaluate_and_predict_on_bytes_are_bitwise_those_on_their_floats(scale):
    B, X, Y = byte_images(n=50, scale=scale)
    params = fbp.init_mlp(jax.random.key(4), [12, 8, 3], output_activation="softmax")
    on_floats = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=16, predictions=True)
    on_bytes = ftrain.evaluate(params, B, Y, "log_likelihood", chunk_size=16, predictions=True)
    for k in ("cost", "accuracy", "predicted"):
        np.testing.assert_array_equal(on_bytes[k], on_floats[k])
    np.testing.assert_array_equal(ftrain.predict(params, B, chunk_size=16), on_floats["predicted"])
    with pytest.raises(ValueError, match=r"X has shape \(50, 11\) but the first layer takes 12 inputs"):
        ftrain.evaluate(params, B[:, :11], Y, "log_likelihood")
    # fit and the gradients take floats: bytes are scaled explicitly, as fbp.data does
    hint = r" / 255 for the bytes of images" if scale == 255 else ""
    with pytest.raises(TypeError, match=rf"^train X has dtype {B.dtype.name}, .*e\.g\. with \.astype\(jnp\.float32\)"
                                        rf"{hint}\.$"):
        ftrain.fit(params, (B, Y), optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1, batch_size=10,
                   key=jax.random.key(0))
    with pytest.raises(TypeError, match=rf"X has dtype {B.dtype.name}"):
        fbp.batch_backward(params, B, Y, "log_likelihood")


@pytest.mark.parametrize("batch_size,in_place", [(10, True), (32, False)])
def test_byte_mini_batches_are_copied_in_place_where_their_floats_would_be(batch_size, in_place):
    """The in-place copy beats XLA's split gather up to about 20 rows of 784
    floats, and for bytes too (measured: 94 against 100 µs per step at 16
    rows, 186 against 150 at 32), so bytes count as their decoded size."""
    params = fbp.init_mlp(jax.random.key(0), [784, 8, 10], output_activation="softmax")
    opt = optax.sgd(0.5)
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood"), batch_size)
    B = jnp.zeros((4 * batch_size, 784), jnp.uint8)
    Y = jnp.zeros((4 * batch_size, 10), jnp.float32)
    hlo = epoch.lower(params, opt.init(params), jax.random.key(0), B, Y).as_text()
    assert (f"{batch_size + 1}x784xui8" in hlo) == in_place


def test_fit_again_with_the_same_optimizer_reuses_its_compiled_epoch(digits):
    """Training on with the same optimizer object (more epochs, from the
    result's params and state) compiled the epoch again each call; it is now
    kept, and what it computes is bitwise what a fresh one computes."""
    opt = optax.sgd(0.5)
    params = fbp.init_mlp(jax.random.key(0), [64, 12, 10], output_activation="softmax")
    kw = dict(cost="log_likelihood", epochs=1, batch_size=10, evaluation=digits.validation, lr_halving=2)
    first = ftrain.fit(params, digits.train, optimizer=opt, key=jax.random.key(1), **kw)
    before = ftrain._compiled_cache.cache_info()
    again = ftrain.fit(first.params, digits.train, optimizer=opt, key=jax.random.key(2), opt_state=first.opt_state, **kw)
    info = ftrain._compiled_cache.cache_info()
    assert (info.hits - before.hits, info.misses - before.misses) == (2, 0)  # the schedule's chain and the epoch
    epoch = ftrain._compiled_once(ftrain._epoch_for, ftrain._compiled_once(ftrain._with_lr_schedule, opt),
                                  "log_likelihood", "mean", "hand", 10, None)
    assert epoch._cache_size() == 1  # one compiled program for both calls
    fresh = ftrain.fit(first.params, digits.train, optimizer=optax.sgd(0.5), key=jax.random.key(2),
                       opt_state=first.opt_state, **kw)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(a, b)
    assert again.history == [dict(h, seconds=a["seconds"]) for h, a in zip(fresh.history, again.history)]


@pytest.mark.parametrize("monitor_training,scale", [(True, 255), (False, 255), (True, 256)])
def test_fit_trains_on_the_bytes_of_byte_images_and_on_floats_otherwise(monkeypatch, digits, monitor_training, scale):
    seen, evaluated = [], []
    make_epoch, evaluate = ftrain.make_epoch, ftrain.evaluate
    monkeypatch.setattr(ftrain, "evaluate", lambda p, X, *a, **kw: (evaluated.append(X.dtype), evaluate(p, X, *a, **kw))[1])

    def spy(step, batch_size, **kw):
        epoch = make_epoch(step, batch_size, **kw)
        return lambda params, opt_state, key, X, Y: (seen.append(X.dtype), epoch(params, opt_state, key, X, Y))[1]

    monkeypatch.setattr(ftrain, "make_epoch", spy)
    B, X, Y = byte_images(n=40, scale=scale)
    params = fbp.init_mlp(jax.random.key(2), [12, 8, 3], output_activation="softmax")
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=2, batch_size=10, key=jax.random.key(1),
              monitor_training=monitor_training)
    result = ftrain.fit(params, (X[:30], Y[:30]), evaluation=(X[30:], Y[30:]), **kw)
    assert seen == [B.dtype, B.dtype]
    assert evaluated == [B.dtype] * (4 if monitor_training else 2)  # the training and evaluation bytes
    assert ("training_accuracy" in result.history[-1]) == monitor_training
    epoch = make_epoch(ftrain.make_train_step(kw["optimizer"], "log_likelihood"), 10)
    p, s = params, kw["optimizer"].init(params)
    for e in (1, 2):
        p, s, _ = epoch(p, s, jax.random.fold_in(kw["key"], e), jnp.asarray(X[:30]), jnp.asarray(Y[:30]))
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(p)):
        np.testing.assert_array_equal(a, b)
    m = evaluate(p, X[30:], Y[30:], "log_likelihood")
    assert result.history[-1]["evaluation_cost"] == float(m["cost"])
    assert result.history[-1]["evaluation_accuracy"] == float(m["accuracy"])
    seen.clear()
    d_params = fbp.init_mlp(jax.random.key(2), [64, 8, 10], output_activation="softmax")
    ftrain.fit(d_params, digits.train, **dict(kw, epochs=1))
    assert seen == [np.float32]  # digits are k/16, not bytes


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 16, 17, 1000, 4097])
def test_shuffle_is_a_permutation(n):
    key = jax.random.key(n)
    order = np.asarray(ftrain.shuffle(key, n))
    assert order.dtype == np.int32 and order.shape == (n,)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    np.testing.assert_array_equal(order, np.asarray(jax.jit(ftrain.shuffle, static_argnums=1)(key, n)))


def test_shuffle_depends_on_the_key_and_is_not_the_identity():
    a, b = (np.asarray(ftrain.shuffle(jax.random.key(s), 1000)) for s in (0, 1))
    assert not np.array_equal(a, b)
    assert np.mean(a == np.arange(1000)) < 0.01  # about 1/n fixed points expected
    # neighbours do not stay neighbours: |π(i+1) − π(i)| is spread like that of a random permutation
    assert np.median(np.abs(np.diff(a))) > 200


def test_shuffle_is_uniform_on_small_n():
    """Every permutation of 4 items appears equally often over many keys (χ², 23
    degrees of freedom), and each item lands in each position of 10 equally often."""
    keys = jax.random.split(jax.random.key(7), 24_000)
    perms = np.asarray(jax.vmap(lambda k: ftrain.shuffle(k, 4))(keys))
    _, counts = np.unique(perms, axis=0, return_counts=True)
    assert len(counts) == 24
    chi2 = ((counts - 1000.0) ** 2 / 1000.0).sum()
    assert chi2 < 49.7  # the 0.999 quantile of χ²(23)
    keys = jax.random.split(jax.random.key(8), 20_000)
    perms = np.asarray(jax.vmap(lambda k: ftrain.shuffle(k, 10))(keys))
    table = np.stack([np.bincount(perms[:, i], minlength=10) for i in range(10)])
    chi2 = ((table - 2000.0) ** 2 / 2000.0).sum()
    assert chi2 < 128.0  # above the 0.999 quantile of χ²(81), 124.8


def test_shuffle_rejects_bad_arguments():
    with pytest.raises(ValueError, match="0 <= n"):
        ftrain.shuffle(jax.random.key(0), -1)
    with pytest.raises(ValueError, match="rounds >= 4"):
        ftrain.shuffle(jax.random.key(0), 10, rounds=2)


def test_evaluate_in_chunks_equals_all_at_once():
    params, X, Y = small_problem(jnp.float64, n=1037)
    whole = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=None)
    for chunk in (1, 100, 1036, 1037):  # with and without a remainder, and one chunk
        part = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=chunk)
        assert float(part["accuracy"]) == float(whole["accuracy"])
        np.testing.assert_allclose(float(part["cost"]), float(whole["cost"]), rtol=1e-12)
    assert 0.0 < float(whole["accuracy"]) < 1.0  # a test that could tell them apart
    labels = np.argmax(np.asarray(fbp.forward(params, X)), axis=1)
    for chunk in (None, 100, 1037):
        np.testing.assert_array_equal(ftrain.predict(params, X, chunk_size=chunk), labels)
        m = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=chunk, predictions=True)
        np.testing.assert_array_equal(m["predicted"], labels)  # the same pass as the cost
        assert round(float(m["accuracy"]) * len(X)) == np.sum(labels == np.argmax(np.asarray(Y), axis=1))
    with pytest.raises(ValueError, match="chunk_size"):
        ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=0)


def _bias_grad_norms(params, X, Y, cost="log_likelihood"):
    """‖∂C/∂b^l‖ of the mean cost for each layer, by jax.grad (the reference)."""
    return [float(np.linalg.norm(np.asarray(g.b))) for g in jax.grad(fbp.loss)(params, X, Y, cost)]


def _noise_scale_by_autodiff(params, X, Y, cost="log_likelihood"):
    """tr Σ / ‖G‖² from the per-example gradients of vmap(jax.grad)."""
    g = jax.vmap(lambda x, y: jax.grad(fbp.example_loss)(params, x, y, fbp.get_cost(cost)))(X, Y)
    flat = np.concatenate([np.asarray(leaf).reshape(len(X), -1) for leaf in jax.tree.leaves(g)], axis=1)
    G = flat.mean(0)
    return float(np.mean(np.sum((flat - G) ** 2, 1)) / np.sum(G * G))


def test_evaluate_gives_each_layers_delta_norm_from_the_same_pass():
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.uniform(size=(1037, 6)))
    Y = jnp.asarray(np.eye(3)[rng.integers(0, 3, 1037)])
    params = fbp.init_mlp(jax.random.key(2), [6, 8, 5, 3], output_activation="softmax", dtype=jnp.float64)
    want, noise = _bias_grad_norms(params, X, Y), _noise_scale_by_autodiff(params, X, Y)
    assert want[0] < want[1] < want[2]  # sigmoid layers: each layer back learns slower, so order is checked too
    plain = ftrain.evaluate(params, X, Y, "log_likelihood")
    for chunk in (None, 1, 100, 1037):  # with and without a remainder, and one chunk
        m = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=chunk, deltas=True)
        np.testing.assert_allclose(np.asarray(m["delta_norms"]), want, rtol=1e-10)
        both = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=chunk, deltas=True, noise_scale=True)
        np.testing.assert_allclose(float(both["noise_scale"]), noise, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(both["delta_norms"]), want, rtol=1e-10)
        assert float(m["accuracy"]) == float(plain["accuracy"])  # the cost and accuracy of the same pass
        np.testing.assert_allclose(float(m["cost"]), float(plain["cost"]), rtol=1e-12)
    alone = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=100, noise_scale=True)
    assert "delta_norms" not in alone and "delta_norms" not in plain
    np.testing.assert_allclose(float(alone["noise_scale"]), noise, rtol=1e-10)
    # On the bytes of byte images: the δ's of their floats, bitwise.
    B = rng.integers(0, 256, (300, 6), dtype=np.uint8)
    F = jnp.asarray(B.astype(np.float32) / 255)
    Y32 = jnp.asarray(np.asarray(Y[:300]), jnp.float32)
    p32 = fbp.init_mlp(jax.random.key(2), [6, 8, 5, 3], output_activation="softmax")
    kw = dict(chunk_size=64, deltas=True, noise_scale=True)
    on_bytes = ftrain.evaluate(p32, jnp.asarray(B), Y32, "log_likelihood", **kw)
    on_floats = ftrain.evaluate(p32, F, Y32, "log_likelihood", **kw)
    np.testing.assert_array_equal(np.asarray(on_bytes["delta_norms"]), np.asarray(on_floats["delta_norms"]))
    assert float(on_bytes["noise_scale"]) == float(on_floats["noise_scale"])


@pytest.mark.parametrize("monitor_training", [True, False])
def test_fit_records_each_layers_delta_norm_every_epoch(monitor_training):
    params, X, Y = small_problem(jnp.float64, n=200)
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=3, batch_size=10, key=jax.random.key(3))
    r = ftrain.fit(params, (X, Y), monitor_deltas=True, monitor_noise_scale=True, monitor_training=monitor_training,
                   **kw)
    assert [len(h["delta_norms"]) for h in r.history] == [2, 2, 2]
    # The last record is of the params fit returns: ‖∂C/∂b^l‖ over the training set, as jax.grad has it,
    # and the noise scale of the per-example gradients there.
    np.testing.assert_allclose(r.history[-1]["delta_norms"], _bias_grad_norms(r.params, X, Y), rtol=1e-10)
    np.testing.assert_allclose(r.history[-1]["noise_scale"], _noise_scale_by_autodiff(r.params, X, Y), rtol=1e-10)
    assert len({h["noise_scale"] for h in r.history}) == 3
    assert len({tuple(h["delta_norms"]) for h in r.history}) == 3  # measured each epoch, not once
    assert ("training_accuracy" in r.history[-1]) == monitor_training
    json.dumps(r.history)  # plain floats: the history goes into checkpoints and --metrics-out
    plain = ftrain.fit(params, (X, Y), **kw)
    assert "delta_norms" not in plain.history[-1] and "noise_scale" not in plain.history[-1]
    np.testing.assert_array_equal(plain.params[0].w, r.params[0].w)  # watching does not change training


def test_one_epoch_of_fit_lowers_the_cost():
    params, X, Y = small_problem(jnp.float32, n=256)
    before = float(fbp.loss(params, X, Y, "log_likelihood"))
    r = ftrain.fit(params, (X, Y), optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1,
                   batch_size=8, key=jax.random.key(0), evaluation=(X, Y))
    assert r.history[0]["training_cost"] < before
    assert r.history[0]["evaluation_cost"] == pytest.approx(r.history[0]["training_cost"])
    assert set(r.history[0]) >= {"epoch", "train_step_cost", "training_accuracy", "evaluation_accuracy"}


def test_fit_refuses_bad_arguments_by_name_before_training(digits):
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1, batch_size=10, key=jax.random.key(1))
    seen = []
    cases = [
        (dict(train=(digits.train.X, digits.train.Y[:, :5])), ValueError,
         r"^train Y has shape \(1257, 5\) but the output layer has 10 units"),  # the whole array, not a batch
        (dict(train=(digits.train.X, digits.train.Y.argmax(1))), TypeError, r"^train Y has dtype int"),
        (dict(train=((digits.train.X * 16).astype(np.int32), digits.train.Y)), TypeError,
         r"^train X has dtype int32, .*convert it first, e\.g\. with \.astype\(jnp\.float32\)\.$"),
        (dict(evaluation=(digits.validation.X[:, :8], digits.validation.Y)), ValueError,
         r"^evaluation X has shape \(180, 8\) but the first layer takes 64 inputs"),
        (dict(evaluation=(digits.validation.X, digits.validation.Y[:9])), ValueError,
         r"^evaluation Y has 9 rows but evaluation X has 180"),
        (dict(optimizer="sgd"), TypeError, r"^optimizer must be an optax.GradientTransformation.*got 'sgd'"),
        (dict(key=1), TypeError, r"^key must be one PRNG key, such as jax.random.key\(0\); got int 1"),
        (dict(key=jax.random.split(jax.random.key(0))), TypeError, r"got an array of shape \(2,\)"),
    ]
    for change, error, needle in cases:
        args = {**kw, "train": digits.train, "on_epoch": seen.append, **change}
        with pytest.raises(error, match=needle):
            ftrain.fit(params, args.pop("train"), **args)
    assert seen == []  # refused before the first epoch
    raw = ftrain.fit(params, digits.train, **{**kw, "key": jax.random.PRNGKey(1)})  # a raw uint32[2] key is one key
    assert raw.epochs_run == 1


def test_fit_learns_digits(digits):
    params = fbp.init_mlp(jax.random.key(0), [64, 30, 10], output_activation="softmax")
    r = ftrain.fit(params, digits.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=10,
                   batch_size=10, key=jax.random.key(1), evaluation=digits.validation)
    acc = float(ftrain.evaluate(r.params, digits.test.X, digits.test.Y, "log_likelihood")["accuracy"])
    assert acc >= 0.93


def test_same_seed_same_params_bitwise(digits):
    def run():
        params = fbp.init_mlp(jax.random.key(7), [64, 20, 10], output_activation="softmax")
        return ftrain.fit(params, digits.train, optimizer=optax.adam(1e-2), cost="log_likelihood",
                          epochs=2, batch_size=16, key=jax.random.key(8)).params
    a, b = run(), run()
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    c = ftrain.fit(fbp.init_mlp(jax.random.key(7), [64, 20, 10], output_activation="softmax"), digits.train,
                   optimizer=optax.adam(1e-2), cost="log_likelihood", epochs=2, batch_size=16,
                   key=jax.random.key(9)).params
    assert not np.array_equal(a[0].w, c[0].w)  # another shuffle key, other params


def test_early_stopping(digits, tmp_path):
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")

    def run(**kw):
        return ftrain.fit(params, digits.train, optimizer=optax.sgd(1e-6), cost="log_likelihood", epochs=50,
                          batch_size=50, key=jax.random.key(0), evaluation=digits.validation, patience=2,
                          checkpoint_dir=str(tmp_path), **kw)

    r = run()
    assert r.stopped_early and r.epochs_run < 50
    accs = [h["evaluation_accuracy"] for h in r.history]
    assert max(accs[-2:]) <= max(accs[:-2])
    saved = ckpt.list_checkpoints(str(tmp_path))
    again = run(resume=True)  # a run that stopped stays stopped: no more epochs, no new checkpoint
    assert again.stopped_early and again.epochs_run == r.epochs_run
    assert ckpt.list_checkpoints(str(tmp_path)) == saved
    no_rows = (digits.validation.X[:0], digits.validation.Y[:0])
    for kw in (dict(evaluation=None), dict(evaluation=no_rows), dict(monitor_evaluation=False)):
        with pytest.raises(ValueError, match="patience acts on evaluation accuracy"):  # would never stop
            ftrain.fit(params, digits.train, optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=1,
                       batch_size=50, key=jax.random.key(0), patience=2, **{"evaluation": digits.validation, **kw})


def test_lr_halving_is_the_books_learning_schedule(digits, tmp_path, trees_close):
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")

    def run(opt, **kw):
        return ftrain.fit(params, digits.train, optimizer=opt, cost="log_likelihood", epochs=50, batch_size=50,
                          key=jax.random.key(0), **{"evaluation": digits.validation, **kw})

    # η = 0: the accuracy never improves after epoch 1, so every epoch halves the step, down to 1/128.
    r = run(optax.sgd(0.0), lr_halving=1)
    assert [h["lr_factor"] for h in r.history] == [1, 1, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64]
    assert r.stopped_early and r.stop_reason == "lr_floor" and ftrain.lr_factor(r.opt_state) == 1 / 128
    r = run(optax.sgd(0.0), lr_halving=3, lr_floor=1 / 4)  # every 3rd epoch without improvement
    assert [h["lr_factor"] for h in r.history] == [1, 1, 1, 1, 1 / 2, 1 / 2, 1 / 2]
    # The factor scales the optimizer's step: half the factor is half of η.
    p64, X, Y = small_problem(jnp.float64)
    halved = ftrain._with_lr_schedule(optax.sgd(0.5))
    a = ftrain.make_train_step(halved, "log_likelihood")(p64, ftrain._halve_lr(halved.init(p64)), X, Y)[0]
    b = ftrain.make_train_step(optax.sgd(0.25), "log_likelihood")(p64, optax.sgd(0.25).init(p64), X, Y)[0]
    trees_close(a, b, rtol=1e-12)
    # Stopped and resumed mid-schedule: bitwise the run that was never stopped.
    whole = run(optax.sgd(1e-4), lr_halving=2)
    d = str(tmp_path / "run")
    run(optax.sgd(1e-4), lr_halving=2, checkpoint_dir=d)
    for path in ckpt.list_checkpoints(d):
        if ckpt.read_header(path)["epoch"] > 4:
            os.remove(path)  # as if killed after epoch 4
    resumed = run(optax.sgd(1e-4), lr_halving=2, checkpoint_dir=d, resume=True)
    assert [h["lr_factor"] for h in resumed.history] == [h["lr_factor"] for h in whole.history]
    assert resumed.stop_reason == whole.stop_reason and resumed.epochs_run == whole.epochs_run
    for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="lr_halving acts on evaluation accuracy"):
        run(optax.sgd(0.1), lr_halving=2, evaluation=None)
    with pytest.raises(ValueError, match="opt_state does not fit the optimizer chained with lr_halving"):
        run(optax.sgd(0.1), lr_halving=2, opt_state=optax.sgd(0.1).init(params))


def test_best_params_are_the_best_epochs_and_survive_pruning_and_resume(digits, tmp_path):
    # Three epochs of descent, then gradient ascent (a negative step), so that the
    # best epoch comes early and the params move on after it whatever the rounding
    # of the products (jax 0.4.38 and 0.10.2 take different paths at η = 2).
    steps = len(digits.train.X) // 10

    def lr(count):
        return jnp.where(count < 3 * steps, 2.0, -0.05)

    def run(epochs, **kw):
        params = fbp.init_mlp(jax.random.key(3), [64, 10, 10], output_activation="softmax")
        return ftrain.fit(params, digits.train, optimizer=optax.sgd(lr), cost="log_likelihood", epochs=epochs,
                          batch_size=10, key=jax.random.key(4), evaluation=digits.validation, **kw)

    d = str(tmp_path)
    full = run(12, checkpoint_dir=d)
    accs = [h["evaluation_accuracy"] for h in full.history]
    assert full.best_epoch == 1 + int(np.argmax(accs)) and full.best_epoch <= 4  # else nothing is tested
    for a, b in zip(jax.tree.leaves(full.best_params), jax.tree.leaves(run(full.best_epoch).params)):
        np.testing.assert_array_equal(a, b)  # the same seed retrained to the best epoch
    assert os.path.exists(ckpt.path_of(d, full.best_epoch))  # kept beside the newest three
    assert len(ckpt.list_checkpoints(d)) == 3 + (full.best_epoch < 10)
    again = run(12, checkpoint_dir=d, resume=True)  # nothing left to train: best params from disk
    assert again.best_epoch == full.best_epoch
    for a, b in zip(jax.tree.leaves(again.best_params), jax.tree.leaves(full.best_params)):
        np.testing.assert_array_equal(a, b)


def test_fit_refuses_non_finite_data_naming_the_first_bad_row():
    # Before, a NaN pixel ran into the non-finite-cost stop at some step, with
    # advice to lower the learning rate.
    params, X, Y = small_problem(jnp.float32, n=40)
    run = functools.partial(ftrain.fit, params, optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=1,
                            batch_size=4, key=jax.random.key(0))
    for what, bad in [("train X", "X"), ("train Y", "Y"), ("evaluation X", "Xe")]:
        Xb, Yb, Xe = np.array(X), np.array(Y), np.array(X[:10])
        {"X": Xb, "Y": Yb, "Xe": Xe}[bad][7, 1] = np.inf if bad == "Y" else np.nan
        with pytest.raises(ValueError, match=f"{what} holds NaN or infinite values \\(the first in row 7\\)"):
            run((Xb, Yb), evaluation=(Xe, Y[:10]))
    assert run((X, Y), evaluation=(X[:10], Y[:10])).error is None


def test_non_finite_cost_stops_with_epoch_and_step(tmp_path):
    params, X, Y = small_problem(jnp.float32, n=40)
    # a linear network with quadratic cost and a far too large step diverges: each
    # step multiplies the error, to inf and then nan, within an epoch or two
    params = fbp.init_mlp(jax.random.key(0), [6, 8, 3], activation="identity", init="large")
    r = ftrain.fit(params, (X, Y), optimizer=optax.sgd(30.0), cost="quadratic", epochs=5, batch_size=4,
                   key=jax.random.key(0), checkpoint_dir=str(tmp_path))
    assert r.error is not None
    assert f"epoch {r.error.epoch}, step {r.error.step}" in str(r.error)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(r.params))
    assert len(r.history) == r.error.epoch - 1
    saved = ckpt.list_checkpoints(str(tmp_path))
    if r.error.epoch > 1:
        assert saved[-1].endswith(f"ckpt-{r.error.epoch - 1:06d}.npz")
    else:
        assert saved == []


def test_pruning_keeps_the_newest_and_the_protected(tmp_path):
    tree = dict(w=jnp.ones(3))
    for e in range(1, 7):
        ckpt.save(str(tmp_path), e, tree, keep=3, protect=(2,))
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == [
        "ckpt-000002.npz", "ckpt-000004.npz", "ckpt-000005.npz", "ckpt-000006.npz"]
    ckpt.save(str(tmp_path), 7, tree, keep=3, protect=(6,))  # the best moved on: 2 goes
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == [
        "ckpt-000005.npz", "ckpt-000006.npz", "ckpt-000007.npz"]


def test_checkpoint_roundtrip_and_atomic_leftovers(tmp_path):
    params, X, Y = small_problem(jnp.float32)
    opt = optax.adam(1e-3)
    tree = dict(params=params, opt_state=opt.init(params), key=jax.random.key(5))
    ckpt.save(str(tmp_path), 1, tree, dict(history=[{"epoch": 1}]))
    (tmp_path / ".tmp-ckpt-000002-99999.npz").write_bytes(b"half a file")  # a save killed midway
    (tmp_path / "ckpt-000003.npz").write_bytes(b"garbage")  # unreadable: skipped
    whole = open(ckpt.list_checkpoints(str(tmp_path))[0], "rb").read()
    (tmp_path / "ckpt-000004.npz").write_bytes(whole[: len(whole) * 2 // 3])  # cut short (a partial copy)
    damaged = bytearray(whole)  # zip directory intact, the last data byte flipped: the member's CRC catches it
    damaged[whole.index(b"PK\x01\x02") - 1] ^= 0xFF
    (tmp_path / "ckpt-000005.npz").write_bytes(bytes(damaged))
    with pytest.warns(ckpt.CheckpointWarning) as skipped:
        restored, header = ckpt.latest(str(tmp_path), tree)
    assert [str(w.message).split(": ")[1] for w in skipped] == [
        str(tmp_path / f"ckpt-00000{e}.npz") for e in (5, 4, 3)]
    assert "not an .npz (zip) archive; cut short" in str(skipped[1].message)
    assert "CRC" in str(skipped[0].message)
    assert header["epoch"] == 1 and header["meta"]["history"] == [{"epoch": 1}]
    assert ckpt.newest_epoch(str(tmp_path)) == 1  # what Ctrl-C reports: the one resume will use
    assert ckpt.newest_epoch(str(tmp_path / "missing")) is None
    for a, b in zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"]))
    other = dict(params=fbp.init_mlp(jax.random.key(0), [6, 5, 3]), opt_state=None, key=tree["key"])
    with pytest.raises(ckpt.CheckpointError, match="different network or optimizer"), \
            pytest.warns(ckpt.CheckpointWarning):  # the three unreadable ones, passed over again
        ckpt.latest(str(tmp_path), other)


def test_a_full_disk_mid_run_keeps_the_earlier_checkpoints_and_says_so(tmp_path, monkeypatch, capsys):
    params, X, Y = small_problem(jnp.float32)
    d, real_savez, calls = str(tmp_path / "run"), np.savez, []

    def savez_until_full(f, **arrays):  # the third save finds the disk full halfway
        calls.append(1)
        if len(calls) == 3:
            f.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        real_savez(f, **arrays)

    monkeypatch.setattr(ckpt.np, "savez", savez_until_full)

    def run(**kw):
        return ftrain.fit(params, (X, Y), optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=5,
                          batch_size=8, key=jax.random.key(0), checkpoint_dir=d, **kw)

    with pytest.raises(ckpt.CheckpointWriteError, match="epoch 3 .*No space left.*epoch 2 is intact"):
        run()
    assert sorted(os.listdir(d)) == [ckpt.LOCK_NAME, "ckpt-000001.npz", "ckpt-000002.npz"]  # no partial file left
    assert run(resume=True).epochs_run == 5
    # The CLI says the same in one line, before anything else is lost.
    from fbp.cli import main

    calls.clear()
    rc = main(["train", "--epochs", "4", "--quiet", "--checkpoint-dir", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "Traceback" not in "".join(err)
    assert err[-1].startswith("fbp train: error: could not write the checkpoint of epoch 3")
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path / "cli"))] == [
        "ckpt-000001.npz", "ckpt-000002.npz"]


def test_load_params_reads_the_network_of_a_training_checkpoint(tmp_path, digits):
    # With momentum the optimizer state holds leaves of its own, ahead of the params among the checkpoint's.
    params = fbp.init_mlp(jax.random.key(0), [64, 12, 10], activation="tanh", output_activation="softmax")
    run_dir = str(tmp_path / "run")
    result = ftrain.fit(params, digits.train, optimizer=ftrain.make_optimizer("momentum", 0.05), cost="log_likelihood",
                        epochs=3, batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir, config=dict(note=1))
    back, meta = fbp.load_params(ckpt.path_of(run_dir, 3), with_meta=True)
    assert [layer.activation for layer in back] == ["tanh", "softmax"]
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
    assert meta["epoch"] == 3 and meta["config"] == dict(note=1) and len(meta["history"]) == 3
    earlier = fbp.load_params(ckpt.path_of(run_dir, 2))  # an earlier epoch's network, not the last one's
    assert not np.array_equal(earlier[0].w, back[0].w)
    # The directory stands for its newest checkpoint that reads, as it does for resume=True.
    newest, meta = fbp.load_params(run_dir, with_meta=True)
    assert meta["checkpoint"] == ckpt.path_of(run_dir, 3) and meta["epoch"] == 3
    np.testing.assert_array_equal(newest[0].w, back[0].w)
    with open(ckpt.path_of(run_dir, 3), "r+b") as fh:
        fh.truncate(100)  # cut short
    with pytest.warns(ckpt.CheckpointWarning, match=r"skipped a checkpoint: .*ckpt-000003\.npz"):
        fallback, meta = fbp.load_params(run_dir, with_meta=True)
    assert meta["epoch"] == 2 and meta["checkpoint"] == ckpt.path_of(run_dir, 2)
    np.testing.assert_array_equal(fallback[0].w, earlier[0].w)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ckpt.CheckpointError, match="empty: a directory with no checkpoints in it"):
        fbp.load_params(str(tmp_path / "empty"))


def test_cli_evaluate_takes_a_training_checkpoint_as_it_takes_a_saved_network(tmp_path):
    run_dir, net = str(tmp_path / "run"), str(tmp_path / "net.npz")
    metrics = tmp_path / "m.jsonl"
    proc = _cli("train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--optimizer", "adam",
                "--checkpoint-dir", run_dir, "--save-params", net, "--monitor-deltas", "--metrics-out", str(metrics))
    assert proc.returncode == 0, proc.stderr
    from_ckpt, from_net = (_cli("evaluate", path) for path in (ckpt.path_of(run_dir, 2), net))
    assert from_ckpt.returncode == from_net.returncode == 0, from_ckpt.stderr + from_net.stderr
    first, *rest = from_ckpt.stdout.splitlines()
    assert first.startswith(f"fbp evaluate: {ckpt.path_of(run_dir, 2)} (64,20,10, trained to epoch 2) on digits test")
    assert rest == from_net.stdout.splitlines()[1:]  # the same network, cost, accuracy and confusions
    from_dir = _cli("evaluate", run_dir)  # the directory: its newest checkpoint, named
    assert from_dir.returncode == 0, from_dir.stderr
    assert from_dir.stdout.splitlines()[0] == first and from_dir.stdout.splitlines()[1:] == rest
    proc = _cli("evaluate", ckpt.path_of(run_dir, 1), "--split", "validation")  # its --validation: digits' 180
    assert proc.returncode == 0 and "trained to epoch 1) on digits validation (180 examples)" in proc.stdout
    # Each layer's ‖∂C/∂b^l‖, on the training split: what --monitor-deltas recorded for that epoch.
    proc = _cli("evaluate", ckpt.path_of(run_dir, 2), "--split", "train")
    shown = re.search(r"^‖δ‖ by layer .*: (\S+) (\S+)$", proc.stdout, re.M)
    recorded = json.loads(metrics.read_text().splitlines()[1])["delta_norms"]
    np.testing.assert_allclose([float(shown.group(1)), float(shown.group(2))], recorded, rtol=5e-3)


def test_an_unwritable_checkpoint_dir_or_metrics_file_is_refused_before_training(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="a-file cannot be written .*a file, not a directory"):
        ftrain.check_checkpoint_dir(str(a_file), resume=False)
    for flag, path in (("--checkpoint-dir", a_file), ("--metrics-out", tmp_path)):
        proc = _cli("train", "--quiet", flag, str(path))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert str(path) in last and "cannot be written" in last and "epoch" not in proc.stdout


def test_save_params_and_load_params_round_trip_without_a_template(tmp_path):
    twice = fbp.Activation("twice", lambda z: 2 * z, lambda z: 2 * jnp.ones_like(z))
    net = fbp.init_mlp(jax.random.key(3), [5, 4, 3, 2], activation="tanh", output_activation="softmax",
                       dtype=jnp.float64)
    net[0] = fbp.Dense(net[0].w, net[0].b, twice)
    path = str(tmp_path / "sub" / "net.npz")
    assert fbp.save_params(path, net, dict(note="for the test")) == path
    assert not [n for n in os.listdir(tmp_path / "sub") if n != "net.npz"]  # no temporary file left
    with pytest.raises(ckpt.CheckpointError, match="custom activation 'twice'.*activations="):
        fbp.load_params(path)
    back, meta = fbp.load_params(path, activations={"twice": twice}, with_meta=True)
    assert meta == dict(note="for the test")
    assert [layer.activation for layer in back] == [twice, "tanh", "softmax"]
    for a, b in zip(jax.tree.leaves(net), jax.tree.leaves(back)):
        assert a.dtype == b.dtype == jnp.float64
        np.testing.assert_array_equal(a, b)
    x = np.linspace(0, 1, 5)
    np.testing.assert_array_equal(fbp.forward(net, x), fbp.forward(back, x))
    # float64 params where JAX's 64-bit mode is off come back as float32, with a warning saying how to keep them
    jax.config.update("jax_enable_x64", False)  # (jax.enable_x64 as a context is newer than our oldest jax)
    try:
        with pytest.warns(UserWarning, match=r"holds float64 params, loaded as float32 because .*jax_enable_x64"):
            narrowed = fbp.load_params(path, activations={"twice": twice})
    finally:
        jax.config.update("jax_enable_x64", True)
    assert narrowed[0].w.dtype == jnp.float32
    # A built-in name shadowed by another function is saved as custom, not confused with the built-in.
    fake = fbp.Activation("sigmoid", jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2)
    fbp.save_params(path, [fbp.Dense(net[0].w, net[0].b, fake)])
    with pytest.raises(ckpt.CheckpointError, match="custom activation 'sigmoid'"):
        fbp.load_params(path)
    # Files that are not a saved network: a training checkpoint, garbage; and inputs that are not a network.
    ckpt.save(str(tmp_path / "ck"), 1, dict(params=net[1:]))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    whole = open(path, "rb").read()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])  # zipfile's BadZipFile escaped here before
    with pytest.raises(ckpt.CheckpointError, match="none: no such file"):
        fbp.load_params(str(tmp_path / "none"))
    for bad in (ckpt.list_checkpoints(str(tmp_path / "ck"))[0], str(tmp_path / "junk.npz"), str(tmp_path / "cut.npz"),
                str(tmp_path)):
        with pytest.raises(ckpt.CheckpointError, match="not a network written by fbp.save_params"):
            fbp.load_params(bad)
    with pytest.raises(TypeError, match="list of fbp.Dense"):
        fbp.save_params(path, dict(w=1))
    with pytest.raises(TypeError, match="JSON-able"):
        fbp.save_params(path, net[1:], dict(x=object()))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    params, X, Y = small_problem(jnp.float32)
    d = str(tmp_path)

    def run(key=0, lr=0.1, config=None, params=params, epochs=2):
        return ftrain.fit(params, (X, Y), optimizer=optax.sgd(lr), cost="log_likelihood", epochs=epochs,
                          batch_size=8, key=jax.random.key(key), checkpoint_dir=d, resume=True,
                          config=config if config is not None else dict(lr=lr))

    first = run()
    assert first.epochs_run == 2
    saved = ckpt.list_checkpoints(d)
    # fit's own words (its arguments), not the command line's flags
    with pytest.raises(ValueError, match=r"already holds another run's checkpoints .*; resume that run "
                                         r"\(resume=True\), or give an empty or new checkpoint_dir\.$"):
        ftrain.fit(params, (X, Y), optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=1, batch_size=8,
                   key=jax.random.key(0), checkpoint_dir=d)  # a fresh run, not resume
    assert ckpt.list_checkpoints(d) == saved
    with pytest.raises(ValueError, match=r"^resume=True needs a checkpoint directory \(checkpoint_dir\)\.$"):
        ftrain.fit(params, (X, Y), optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=1, batch_size=8,
                   key=jax.random.key(0), resume=True)
    params64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    for kw, needle in ((dict(lr=0.5), r"lr: saved 0\.1, now 0\.5"), (dict(key=1), "another PRNG key"),
                       (dict(params=params64), "is float32, expected float64")):
        with pytest.raises(ckpt.CheckpointMismatch, match=needle) as e:
            run(epochs=3, **kw)
        assert "--" not in str(e.value) and "fresh checkpoint directory" in str(e.value)
    more = run(epochs=3)  # same run, more epochs: resumes
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    with pytest.raises(TypeError, match="JSON-able"):
        run(config=dict(lr=object()))


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fbp", *args], capture_output=True, text=True, **kw)


def _bitwise_env() -> dict:
    """This environment with XLA's deterministic GPU ops, for runs compared
    bitwise across processes. On a GPU, XLA's autotuner picks each product's
    algorithm by timing, in each process anew, so a run resumed in a new
    process did not always end bitwise where an uninterrupted one did (an
    H200, jax 0.11.2; README). A CPU ignores the flag."""
    flags = os.environ.get("XLA_FLAGS", "")
    return dict(os.environ, XLA_FLAGS=f"{flags} --xla_gpu_deterministic_ops=true".strip())


def _params_of(directory):
    with np.load(ckpt.list_checkpoints(directory)[-1]) as z:
        return [z[k] for k in sorted(z.files) if k.startswith("leaf_")]


def test_kill_9_and_resume_gives_bitwise_the_same_params(tmp_path):
    flags = ["train", "--sizes", "64,40,10", "--epochs", "12", "--batch-size", "5", "--quiet",
             "--optimizer", "momentum", "--lr", "0.1"]
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = _cli(*flags, "--checkpoint-dir", ref_dir, env=_bitwise_env())
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([sys.executable, "-m", "fbp", *flags, "--checkpoint-dir", run_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_bitwise_env())
    deadline = time.time() + 120
    while time.time() < deadline and len(ckpt.list_checkpoints(run_dir)) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # mid-run, likely mid-save or mid-epoch
    proc.wait()
    done = ckpt.list_checkpoints(run_dir)
    assert done, "the run was killed before its first checkpoint"
    killed_at = ckpt.read_header(done[-1])["epoch"]
    assert killed_at < 12, "the run finished before it was killed; nothing was tested"
    resumed = _cli(*flags, "--checkpoint-dir", run_dir, "--resume", env=_bitwise_env())
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.read_header(ckpt.list_checkpoints(run_dir)[-1])["epoch"] == 12
    for a, b in zip(_params_of(ref_dir), _params_of(run_dir)):
        np.testing.assert_array_equal(a, b)


_HOLD_DIR = """
import sys, time
from fbp import checkpoint as ckpt
with ckpt.lock_dir(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(directory):
    """A process that holds ``directory`` with lock_dir until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_DIR, directory], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_checkpoint_dir_is_held_by_one_run_and_freed_by_its_death_even_kill_9(tmp_path, digits):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    holder = _hold(run_dir)
    try:
        with pytest.raises(ckpt.CheckpointDirInUse, match=rf"checkpoint directory {re.escape(run_dir)} is in use "
                                                         rf"by another run \(process {holder.pid}\)"):
            with ckpt.lock_dir(run_dir):
                pass
        params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
        with pytest.raises(ckpt.CheckpointDirInUse):  # fit holds the directory it writes
            ftrain.fit(params, digits.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1,
                       batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir, resume=True)
        assert ckpt.list_checkpoints(run_dir) == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: no stale lock to clear by hand.
    with ckpt.lock_dir(run_dir):
        with ckpt.lock_dir(run_dir):  # re-entrant in one process (the CLI holds it, then fit)
            pass
        with open(os.path.join(run_dir, ckpt.LOCK_NAME)) as f:
            assert f.read() == str(os.getpid())
    result = ftrain.fit(params, digits.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1,
                        batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir)
    assert len(result.history) == 1 and len(ckpt.list_checkpoints(run_dir)) == 1


def test_a_file_system_without_flock_runs_unlocked_with_one_warning(tmp_path, monkeypatch, digits):
    class NoFlock:  # some network and FUSE file systems answer flock with ENOLCK
        LOCK_EX, LOCK_NB = 2, 4

        @staticmethod
        def flock(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(ckpt, "fcntl", NoFlock)
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    with pytest.warns(ckpt.CheckpointWarning) as caught:
        with ckpt.lock_dir(run_dir):  # as the CLI holds it, then fit inside
            result = ftrain.fit(params, digits.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1,
                                batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir)
    assert [str(w.message) for w in caught] == [
        f"cannot lock checkpoint directory {run_dir} (No locks available): another run there would not be refused"]
    assert len(result.history) == 1 and len(ckpt.list_checkpoints(run_dir)) == 1
    assert ckpt._held == {}  # let go of at the end, as a held directory is


def test_cli_refuses_a_checkpoint_dir_in_use_before_touching_its_metrics(tmp_path):
    # Before the lock, a --resume typed while the first run went on wrote the
    # same epochs and deleted the other's half-written file ("could not write
    # the checkpoint ... No such file or directory"), and truncated a shared
    # --metrics-out.
    run_dir, metrics = str(tmp_path / "run"), tmp_path / "m.jsonl"
    os.makedirs(run_dir)
    metrics.write_text('{"epoch": 1}\n')
    holder = _hold(run_dir)
    try:
        for extra in ([], ["--resume"]):
            proc = _cli("train", "--epochs", "1", "--quiet", "--checkpoint-dir", run_dir, "--metrics-out",
                        str(metrics), *extra)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            assert proc.stderr.strip().splitlines()[-1] == (
                f"fbp train: error: --checkpoint-dir: checkpoint directory {run_dir} is in use by another run "
                f"(process {holder.pid}); wait for it to end, or give another directory")
            assert metrics.read_text() == '{"epoch": 1}\n' and ckpt.list_checkpoints(run_dir) == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_resume_passes_over_a_damaged_newest_checkpoint_says_so_and_ends_bitwise(tmp_path):
    # The newest checkpoint cut short after the run (a partial copy, a damaged
    # disk): --resume says which file it passed over, goes on from the one
    # before, and ends where the undamaged run ended. Before, zipfile's
    # BadZipFile escaped as a traceback.
    flags = ["train", "--sizes", "64,20,10", "--epochs", "3", "--batch-size", "10", "--quiet",
             "--optimizer", "adam", "--checkpoint-dir", str(tmp_path)]
    first = _cli(*flags, env=_bitwise_env())
    assert first.returncode == 0, first.stderr
    want = _params_of(str(tmp_path))
    newest = ckpt.list_checkpoints(str(tmp_path))[-1]
    whole = open(newest, "rb").read()
    with open(newest, "wb") as fh:
        fh.write(whole[: len(whole) // 2])
    resumed = _cli(*flags, "--resume", env=_bitwise_env())
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    ours = [line for line in resumed.stderr.splitlines() if line.startswith("fbp train:")]  # not JAX's own
    assert ours == [
        f"fbp train: warning: skipped an unreadable checkpoint: {newest}: not a readable fbp checkpoint: not an "
        f".npz (zip) archive; cut short (a partial copy, a damaged disk), or another kind of file"]
    assert f"resuming from the checkpoint of epoch 2 in {tmp_path}" in resumed.stdout
    for a, b in zip(want, _params_of(str(tmp_path)), strict=True):
        np.testing.assert_array_equal(a, b)


# `fbp train` whose save of epoch 3 stops at a chosen point and waits to be
# killed: inside the library's own write, half of the file written
# ("mid-write"), or the file complete and renamed into place but the directory
# not yet synced, the older checkpoints not pruned, the metrics line not
# written ("renamed").
_STALLED_SAVE = """
import io, os, sys, time
import numpy as np
from fbp import checkpoint, cli
marker, stage = sys.argv[1:3]
savez, fsync_dir = np.savez, checkpoint._fsync_dir
def stall():
    open(marker, "w").close()
    time.sleep(300)
def half_savez(f, **arrays):
    if stage != "mid-write" or "ckpt-000003" not in getattr(f, "name", ""):
        return savez(f, **arrays)
    buf = io.BytesIO()
    savez(buf, **arrays)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    os.fsync(f.fileno())
    stall()
def fsync_then_stall(directory):
    if stage == "renamed" and os.path.exists(os.path.join(directory, "ckpt-000003.npz")):
        stall()
    fsync_dir(directory)
np.savez, checkpoint._fsync_dir = half_savez, fsync_then_stall
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("stage", ["mid-write", "renamed"])
def test_kill_9_during_a_save_keeps_a_loadable_checkpoint_and_resume_is_bitwise(tmp_path, stage):
    flags = ["train", "--sizes", "64,20,10", "--epochs", "5", "--batch-size", "10", "--quiet",
             "--optimizer", "adam", "--lr", "0.01"]
    ref_dir, run_dir, marker = str(tmp_path / "ref"), str(tmp_path / "run"), str(tmp_path / "stalled")
    metrics = str(tmp_path / "m.jsonl")
    ref = _cli(*flags, "--checkpoint-dir", ref_dir, env=_bitwise_env())
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([sys.executable, "-c", _STALLED_SAVE, marker, stage, *flags, "--checkpoint-dir", run_dir,
                             "--metrics-out", metrics], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_bitwise_env())
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(marker) and proc.poll() is None:
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert os.path.exists(marker), f"the run never reached the save of epoch 3:\n{err}"
    left = sorted(os.listdir(run_dir))
    if stage == "mid-write":  # the half-written file is a temporary one; epoch 3 never appeared
        assert any(n.startswith(".tmp-ckpt-000003-") for n in left), left
        assert not os.path.exists(ckpt.path_of(run_dir, 3)) and ckpt.newest_epoch(run_dir) == 2
    else:
        assert ckpt.newest_epoch(run_dir) == 3
    with np.load(ckpt.list_checkpoints(run_dir)[-1]) as z:  # a complete file: every array reads back
        assert all(z[k].size >= 0 for k in z.files) and any(k.startswith("leaf_") for k in z.files)
    resumed = _cli(*flags, "--checkpoint-dir", run_dir, "--metrics-out", metrics, "--resume", env=_bitwise_env())
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint of epoch {2 if stage == 'mid-write' else 3}" in resumed.stdout
    assert not [n for n in os.listdir(run_dir) if n.startswith(".tmp-ckpt-")]  # the dead run's leftover is gone
    assert ckpt.newest_epoch(run_dir) == 5
    for a, b in zip(_params_of(ref_dir), _params_of(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(line) for line in open(metrics)]
    assert [line["epoch"] for line in lines[:-1]] == [1, 2, 3, 4, 5] and lines[-1]["final"]


@pytest.mark.parametrize("sig,rc,what", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_say_what_is_kept_and_how_to_go_on(tmp_path, sig, rc, what):
    run_dir = str(tmp_path / "run")
    flags = ["train", "--epochs", "500", "--quiet", "--checkpoint-dir", run_dir]
    # Ctrl-C as a terminal delivers it: a test runner launched as a background
    # job (`cmd &` in a script) ignores SIGINT, and `python -m fbp` would
    # inherit that and train on to the end (POSIX's rule, not fbp's), so the
    # child puts Python's own handler back first. (Not preexec_fn: it runs
    # Python between fork and exec, which can deadlock with JAX's threads.)
    as_from_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                          "runpy.run_module('fbp', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen([sys.executable, "-c", as_from_a_terminal, *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.list_checkpoints(run_dir):
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate()
    assert proc.returncode == rc and "Traceback" not in err, err
    newest = ckpt.read_header(ckpt.list_checkpoints(run_dir)[-1])["epoch"]
    assert newest < 500, "the run finished before it was interrupted; nothing was tested"
    assert err.strip().splitlines()[-1] == (f"fbp train: {what}; the checkpoint of epoch {newest} is in "
                                            f"{run_dir}: add --resume to the same command to go on")


def test_cli_train_default_digits_and_metrics(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = _cli("train", "--epochs", "30", "--metrics-out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l["epoch"] for l in lines[:-1]] == list(range(1, 31))
    assert lines[-1]["final"] and lines[-1]["test_accuracy"] >= 0.95
    assert "test accuracy" in proc.stdout
    assert re.search(r"^fbp train: digits .* devices=1 \((cpu|gpu: .+|tpu: .+)\)$", proc.stdout, re.M), proc.stdout
    assert all("training_accuracy" in l for l in lines[:-1]) and "train cost" in proc.stdout
    proc = _cli("train", "--epochs", "2", "--metrics-out", str(out), "--quiet", "--no-monitor-training")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert not any(k.startswith("training_") for l in lines for k in l) and "evaluation_accuracy" in lines[0]
    assert "mean step cost" in proc.stdout and "train cost" not in proc.stdout


def test_cli_monitor_deltas_and_noise_scale_show_and_record_them(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = _cli("train", "--sizes", "64,20,20,10", "--epochs", "2", "--monitor-deltas", "--metrics-out", str(out),
                "--quiet", "--monitor-noise-scale")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()][:-1]
    shown = [[float(v) for v in re.search(r"‖δ‖ by layer ([\d.e+-]+(?: [\d.e+-]+)*)", l).group(1).split()]
             for l in proc.stdout.splitlines() if l.startswith("epoch")]
    assert len(shown) == len(lines) == 2
    for line, numbers in zip(lines, shown):
        assert len(line["delta_norms"]) == 3 and all(v > 0 for v in line["delta_norms"])
        np.testing.assert_allclose(numbers, line["delta_norms"], rtol=5e-3)  # printed to 3 digits
    noise = [float(m) for m in re.findall(r"noise scale (\S+)", proc.stdout)]
    np.testing.assert_allclose(noise, [line["noise_scale"] for line in lines], rtol=5e-3)
    plain = _cli("train", "--epochs", "1", "--quiet").stdout
    assert "‖δ‖" not in plain and "noise scale" not in plain


def test_cli_resume_with_other_flags_is_a_one_line_error_and_metrics_follow_the_checkpoint(tmp_path):
    run, out = str(tmp_path / "run"), tmp_path / "m.jsonl"
    flags = ["train", "--epochs", "2", "--quiet", "--checkpoint-dir", run, "--metrics-out", str(out)]
    assert _cli(*flags).returncode == 0
    saved = ckpt.list_checkpoints(run)
    proc = _cli(*flags)  # a fresh run into a used directory would have pruned its own checkpoints
    assert proc.returncode == 2 and "--resume" in proc.stderr.strip().splitlines()[-1]
    assert ckpt.list_checkpoints(run) == saved
    proc = _cli(*flags, "--resume", "--lr", "0.1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--lr: saved 0.5, now 0.1" in proc.stderr.strip().splitlines()[-1]
    assert proc.stdout == ""  # no first line of settings that will not train
    # a run killed after its epoch-2 checkpoint but before its metrics line:
    out.write_text(out.read_text().splitlines()[0] + "\n")
    proc = _cli(*[f if f != "2" else "3" for f in flags], "--resume")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fbp train: digits ")  # the first line, once the checkpoint is accepted
    assert f"resuming from the checkpoint of epoch 2 in {run}\n" in proc.stdout
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l.get("epoch") for l in lines] == [1, 2, 3, None] and lines[-1]["final"]
    proc = _cli(*flags, "--resume")  # already past --epochs 2: says so, trains nothing
    assert proc.returncode == 0 and "it has reached --epochs 2: nothing to train" in proc.stdout
    assert "epoch   " not in proc.stdout and ckpt.newest_epoch(run) == 3
    other = str(tmp_path / "empty")
    # the metrics of an older run are replaced, not appended to, when no checkpoint is resumed
    proc = _cli("train", "--epochs", "1", "--quiet", "--checkpoint-dir", other, "--resume", "--metrics-out", str(out))
    assert proc.returncode == 0 and f"--resume: no checkpoint in {other} yet; starting at epoch 1" in proc.stdout
    assert "done: 1 epoch in " in proc.stdout
    assert ckpt.newest_epoch(other) == 1
    assert [json.loads(l).get("epoch") for l in out.read_text().splitlines()] == [1, None]


def test_cli_momentum_coefficient_is_used_and_kept_with_the_checkpoint(tmp_path):
    run = str(tmp_path / "run")
    flags = ["train", "--optimizer", "momentum", "--sizes", "64,10,10", "--quiet", "--checkpoint-dir", run]
    proc = _cli(*flags, "--momentum", "0.3", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert " momentum μ=0.3 lr=0.35 " in proc.stdout  # the default η = 0.5(1 − μ): SGD's long-run step
    proc = _cli(*flags, "--epochs", "2", "--resume")  # the default μ is 0.9, not what the run trained with
    assert proc.returncode == 2 and "--momentum: saved 0.3, now 0.9" in proc.stderr.strip().splitlines()[-1]
    proc = _cli(*flags, "--momentum", "0.3", "--epochs", "2", "--resume")
    assert proc.returncode == 0 and ckpt.newest_epoch(run) == 2, proc.stderr


def test_cli_adam_gets_adams_own_learning_rate_by_default(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = _cli("train", "--optimizer", "adam", "--quiet", "--metrics-out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert " adam lr=0.001 " in proc.stdout  # the SGD default 0.5 left Adam at chance (9%)
    assert json.loads(out.read_text().splitlines()[-1])["test_accuracy"] >= 0.9


def test_cli_restore_best_tests_the_best_epochs_params(tmp_path):
    out = tmp_path / "m.jsonl"
    net = tmp_path / "net.npz"
    proc = _cli("train", "--epochs", "6", "--lr", "3", "--quiet", "--restore-best", "--metrics-out", str(out),
                "--save-params", str(net))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    best = 1 + int(np.argmax([l["evaluation_accuracy"] for l in lines[:-1]]))
    assert lines[-1]["best_epoch"] == lines[-1]["tested_epoch"] == best
    assert f"params of epoch {best}, the best" in proc.stdout
    # --save-params wrote the network that was tested: it scores the reported test accuracy.
    params, meta = fbp.load_params(str(net), with_meta=True)
    assert meta["tested_epoch"] == best and meta["sizes"] == [64, 100, 10]
    test = fdata.load("digits", None, None).test
    assert float(ftrain.evaluate(params, test.X, test.Y, "log_likelihood")["accuracy"]) == lines[-1]["test_accuracy"]
    # fbp evaluate reads it back and tests it on the data it was trained on, by default its test split.
    proc = _cli("evaluate", str(net))
    assert proc.returncode == 0, proc.stderr
    assert f"accuracy {lines[-1]['test_accuracy']:.4f}" in proc.stdout and "digits test (360 examples)" in proc.stdout
    n_by_class = [int(n) for n in re.findall(r"\d: [01]\.\d{3} \((\d+)\)", proc.stdout)]
    assert len(n_by_class) == 10 and sum(n_by_class) == 360
    # a float64 network is tested in float64, not narrowed to float32 on loading
    net64 = str(tmp_path / "net64.npz")
    fbp.save_params(net64, fbp.init_mlp(jax.random.key(0), [64, 5, 10], dtype=jnp.float64), dict(data_flag="digits"))
    proc = _cli("evaluate", net64)
    assert proc.returncode == 0 and "64-bit mode is off" not in proc.stderr, proc.stderr
    # a network of other data, evaluated on digits: its --validation 10000 is that data's, not digits'
    other = str(tmp_path / "fashion.npz")
    fbp.save_params(other, fbp.init_mlp(jax.random.key(0), [784, 5, 10]),
                    dict(data="fashion-mnist", data_flag="fashion-mnist", data_dir=None, validation=10_000))
    for argv, needle in (([str(tmp_path / "none.npz")], "none.npz: no such file"),
                         ([str(tmp_path)], "a directory with no checkpoints in it, not a network"),
                         ([str(net), "--data", "fashion-mnist", "--data-dir", str(tmp_path)], "--data"),
                         ([str(out)], "not a network"),
                         ([other, "--data", "digits"], "(784,5,10) does not fit digits (64 inputs, 10 classes)"),
                         ([str(net), "--data", "idx"],  # the message names its flag once
                          "fbp evaluate: error: --data idx needs --data-dir, the directory holding the four"),
                         ([str(net), "--data-dir", str(tmp_path)],  # the flag's words, not load()'s data_dir
                          "for the IDX files there use --data idx (or fashion-mnist)")):
        proc = _cli("evaluate", *argv)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr.strip().splitlines()[-1]
    proc = _cli("train", "--epochs", "0", "--quiet", "--restore-best")  # nothing trained: the initial params
    assert proc.returncode == 0, proc.stderr
    assert "--restore-best: no epoch was trained and evaluated; testing the params of epoch 0" in proc.stderr
    assert "None" not in proc.stderr and "params of epoch 0" in proc.stdout


def test_cli_lr_halving_halves_eta_and_stops_at_one_128th(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = _cli("train", "--epochs", "40", "--quiet", "--lr-halving", "1", "--metrics-out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in out.read_text().splitlines()[:-1]]
    factors = [r["lr_factor"] for r in records]
    assert factors[0] == 1 and all(b in (a, a / 2) for a, b in zip(factors, factors[1:]))
    accs = [r["evaluation_accuracy"] for r in records]
    for e in range(1, len(records)):  # halved after exactly the epochs that did not beat the best so far
        assert (factors[e] < factors[e - 1]) == (accs[e - 1] <= max(accs[:e - 1], default=-1))
    stopped = "stop: η halved down to 1/128 of 0.5" in proc.stdout
    assert stopped == (len(records) < 40) and (not stopped or factors[-1] == 1 / 64)


def test_cli_failed_writes_are_one_line_errors_that_say_what_is_kept(tmp_path, capsys, monkeypatch):
    from fbp.cli import main

    # a pipe (or a device: /dev/null) is refused, not replaced by the atomic rename
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    assert main(["train", "--epochs", "1", "--quiet", "--save-params", fifo]) == 2
    assert f"--save-params {fifo} cannot be written (a device or a pipe" in capsys.readouterr().err
    with pytest.raises(OSError, match="a device or a pipe, not a regular file"):
        fbp.save_params(fifo, fbp.init_mlp(jax.random.key(0), [2, 2]))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    # a full disk under --metrics-out (every write to /dev/full fails) stops the run after epoch 1's checkpoint
    run = str(tmp_path / "run")
    assert main(["train", "--epochs", "3", "--quiet", "--metrics-out", "/dev/full", "--checkpoint-dir", run]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fbp train: error: could not write to --metrics-out /dev/full (No space left on device); "
        f"the checkpoint of epoch 1 is in {run}: add --resume to the same command to go on")
    # a failed save of the network at the end: the summary is printed and the checkpoint named
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_params", disk_full)
    net = str(tmp_path / "net.npz")
    assert main(["train", "--epochs", "2", "--quiet", "--checkpoint-dir", run, "--resume", "--save-params", net]) == 1
    out, err = capsys.readouterr()
    assert "done: 2 epochs" in out and "network in" not in out and not os.path.exists(net)
    assert err.strip().splitlines()[-1] == (
        f"fbp train: error: could not write --save-params {net} (No space left on device); "
        f"the checkpoint of epoch 2 is in {run}: add --resume to the same command to go on")


@pytest.mark.parametrize("argv,needle", [
    (["--lr-halving", "0"], "--lr-halving"),
    (["--sizes", "63,30,10"], "--sizes"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "abc"], "--lr"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--epochs", "-3"], "--epochs"),
    # Past 32 bits jax.random.key wraps around without x64 (2**32 was seed 0) and then a traceback.
    (["--seed", "4294967296"], "argument --seed: expected an integer from 0 to 4294967295 (2**32 − 1), got"),
    (["--seed", "99999999999999999999"], "argument --seed: expected an integer from 0 to 4294967295"),
    (["--data", "idx"], "--data-dir"),
    (["--data-dir", "/some/mnist"], "--data-dir: digits are bundled with scikit-learn and read no directory, "
                                    "but --data-dir was given (/some/mnist); for the IDX files there use "
                                    "--data idx (or fashion-mnist)"),
    (["--data", "fashion-mnist", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir"),
    (["--resume"], "--checkpoint-dir"),
    (["--batch-size", "5000"], "--batch-size"),
    (["--restore-best", "--validation", "0"], "--validation"),
    (["--validation", "2000"], "--validation: validation size must be in [0, 1437) for 1437 training examples"),
    (["--patience", "3", "--validation", "0"], "--patience stops training by validation accuracy"),
    (["--lr-halving", "5", "--validation", "0"], "--lr-halving"),
    (["--save-params", "/"], "--save-params"),
    # a flag wrong whatever the data is refused before the data is read (here it could not be)
    (["--data", "fashion-mnist", "--data-dir", "/nonexistent/dir", "--save-params", "/"], "--save-params / cannot"),
    (["--save-params", "out/run", "--metrics-out", "out/../out/run"], "both name out/run"),
    (["--num-processes", "2"], "--coordinator, --num-processes and --process-id go together"),
    (["--coordinator", "host0", "--num-processes", "2", "--process-id", "0"], "expected HOST:PORT"),
    (["--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "2"], "--process-id 2 is not below"),
    (["--coordinator", "host0:65536", "--num-processes", "2", "--process-id", "1"], "the port must be 1 to 65535"),
    (["--join-timeout", "30"], "--join-timeout bounds the wait of a multi-host run; it does nothing without "
                               "--coordinator"),
    (["--join-timeout", "0"], "argument --join-timeout: expected a positive number, got '0'"),
    (["--cost", "cross_entropy", "--output-activation", "relu"], "--cost cross_entropy with --output-activation relu"),
    (["--activation", "softmax"], "argument --activation: invalid choice: 'softmax'"),
    (["--momentum", "0.5"], "--momentum is the coefficient of --optimizer momentum; it does nothing with "
                            "--optimizer sgd"),
    (["--optimizer", "momentum", "--momentum", "1"], "argument --momentum: expected a number in [0, 1), got '1'"),
])
def test_bad_train_flags_are_one_line_errors(argv, needle):
    proc = _cli("train", *argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr.strip().splitlines()[-1]

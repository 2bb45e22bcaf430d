"""Training: the step against jax.grad's, the epoch and its byte inputs, the
shuffle, evaluate, fit (cost lowered, early stopping, the learning schedule,
determinism, non-finite data and costs)."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fbp
from fbp import _reuse
from fbp import checkpoint as ckpt
from fbp import data as fdata
from fbp import epoch as fepoch
from fbp import train as ftrain

from training_helpers import small_problem


def test_names_moved_out_of_train_and_network_are_where_they_were():
    """fbp.train has given make_optimizer, make_epoch, evaluate and the
    rest, and fbp.network Dense and Conv; they are defined in
    fbp.optimizers, fbp.epoch, fbp.evaluation and fbp.layers now, and
    scripts that import them from the old places get the same objects."""
    from fbp import epoch, evaluation, layers, network, optimizers

    moved = {optimizers: ["OPTIMIZERS", "DEFAULT_MOMENTUM", "make_optimizer", "add_l1", "weight_mask", "l2_cost",
                          "l1_cost", "penalty_terms", "lr_factor"],
             epoch: ["make_train_step", "make_epoch", "shuffle", "byte_codes", "compact_inputs", "decode_inputs",
                     "step_keys", "dropout_key", "check_optimizer"],
             evaluation: ["evaluate", "predict"]}
    for module, names in moved.items():
        for name in names:
            assert getattr(ftrain, name) is getattr(module, name), f"fbp.train.{name}"
    for name in ("Dense", "Conv", "LAYERS"):
        assert getattr(network, name) is getattr(layers, name), f"fbp.network.{name}"
    assert (fbp.Dense, fbp.Conv) == (layers.Dense, layers.Conv)


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
    # the decay is the gradient of l2_cost, (λ/2n) Σ_w w²: the step descends C₀ + l2_cost
    g_l2 = jax.grad(ftrain.l2_cost)(params, lam, n)
    trees_close(new, jax.tree.map(lambda p, a, b: p - eta * (a + b), params, g, g_l2), 1e-13)
    by_hand = 0.5 * lam / n * sum(np.sum(np.asarray(p.w) ** 2) for p in params)
    assert abs(float(ftrain.l2_cost(params, lam, n)) - by_hand) <= 1e-13 * by_hand


def test_l1_is_the_books_l1_step_and_goes_with_l2(trees_close):
    """ch. 3: w → w − (ηλ/n) sgn(w) − η ∇C on weights, sgn(0) = 0; biases b → b − η ∇C."""
    params, X, Y = small_problem()
    params[0] = fbp.Dense(params[0].w.at[0, :3].set(0.0), params[0].b, params[0].activation)  # sgn(0) = 0
    eta, lam, lam2, n = 0.5, 3.0, 2.0, 64
    g = fbp.batch_backward(params, X, Y, "quadratic")
    for l2 in (0.0, lam2):
        optimizer = ftrain.make_optimizer("sgd", eta, l1=lam, l2=l2, n_train=n)
        new, _, _ = ftrain.make_train_step(optimizer, "quadratic")(params, optimizer.init(params), X, Y)
        expect = [fbp.Dense(p.w - eta * lam / n * np.sign(p.w) - eta * l2 / n * p.w - eta * gw.w, p.b - eta * gw.b,
                            p.activation) for p, gw in zip(params, g)]
        trees_close(new, expect, 1e-13)
    # a weight at 0 moves by its gradient alone: sgn(0) = 0, and the decay of 0 is 0
    np.testing.assert_array_equal(np.asarray(new[0].w[0, :3]), np.asarray(-eta * g[0].w[0, :3]))
    # the step is the gradient of l1_cost, (λ/n) Σ_w |w| (where no weight is 0)
    nonzero = [fbp.Dense(p.w + 1e-3 * (p.w == 0), p.b, p.activation) for p in params]
    trees_close(jax.grad(ftrain.l1_cost)(nonzero, lam, n),
                [fbp.Dense(lam / n * np.sign(p.w), np.zeros_like(p.b), p.activation) for p in nonzero], 1e-15)
    by_hand = lam / n * sum(np.sum(np.abs(np.asarray(p.w))) for p in params)
    assert abs(float(ftrain.l1_cost(params, lam, n)) - by_hand) <= 1e-13 * by_hand
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"l1 \(λ\) must be a number ≥ 0"):
            ftrain.make_optimizer("sgd", eta, l1=bad, n_train=n)
    with pytest.raises(ValueError, match="l1 > 0 needs n_train"):
        ftrain.make_optimizer("sgd", eta, l1=lam)


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


def test_make_train_step_refuses_a_bad_cost_reduction_or_optimizer_when_made_not_at_its_first_step():
    """These were found at the step's first call, inside jit's trace; a
    function grad needs no cost or reduction of fbp's, so it is not asked."""
    sgd = optax.sgd(0.1)
    for args, kw, error, needle in (((sgd, "hinge"), {}, ValueError, r"^unknown cost 'hinge'"),
                                    ((sgd, "quadratic"), dict(reduction="avg"), ValueError, r"^reduction must be"),
                                    (("sgd", "quadratic"), {}, TypeError, r"^optimizer must be an optax")):
        with pytest.raises(error, match=needle):
            ftrain.make_train_step(*args, **kw)
    params, X, Y = small_problem()
    own = ftrain.make_train_step(sgd, None, grad=lambda p, X, Y: (fbp.loss(p, X, Y, "quadratic"),
                                                                   fbp.batch_backward(p, X, Y, "quadratic")))
    assert np.isfinite(own(params, sgd.init(params), X, Y)[2])


@pytest.mark.parametrize("in_place", [True, False])
def test_epoch_is_the_scan_of_steps(trees_close, monkeypatch, in_place):
    """One jitted epoch equals the same mini-batches stepped one by one in Python,
    whether the epoch copies each mini-batch into a buffer or gathers it."""
    monkeypatch.setattr(fepoch, "_IN_PLACE_BATCH_BYTES", 1 << 30 if in_place else 0)
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


@pytest.mark.parametrize("n, updates", [(64, 4), (64, 20), (125 * 10, 20)])
def test_an_epoch_that_reports_its_steps_is_bitwise_the_same_epoch(n, updates):
    """make_epoch(progress=f) calls f(steps_done, steps) as its steps go by,
    in order, ending with all of them, about ``updates`` times; the params
    and losses are bitwise those of the epoch that makes no reports."""
    params, X, Y = small_problem(n=n)
    opt = optax.sgd(0.5)
    step = ftrain.make_train_step(opt, "log_likelihood")
    key, steps = jax.random.key(3), n // 10
    plain = ftrain.make_epoch(step, 10)(params, opt.init(params), key, X, Y)
    calls = []
    reporting = ftrain.make_epoch(step, 10, progress=lambda done, total: calls.append((int(done), int(total))),
                                  updates=updates)(params, opt.init(params), key, X, Y)
    jax.effects_barrier()
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(reporting)):
        np.testing.assert_array_equal(a, b)
    run = -(-steps // updates)  # 125 steps, 20 updates: 17 runs of 7 and the last 6; 6 steps, 4 updates: 3 of 2
    assert calls == [(min(k, steps), steps) for k in range(run, steps + run, run)]
    assert len(calls) <= updates


def test_an_epoch_ends_at_the_report_that_returns_true():
    """progress returning True ends the epoch there: no later report, the
    losses of the steps after it NaN, and the params those of the steps
    run, the first mini-batches of the same shuffle stepped one by one."""
    params, X, Y = small_problem(n=200)
    opt = optax.sgd(0.5)
    step = ftrain.make_train_step(opt, "log_likelihood")
    key, calls = jax.random.key(3), []
    stopped, state, losses = jax.block_until_ready(ftrain.make_epoch(
        step, 10, progress=lambda done, n: calls.append(done) or done >= 6, updates=10)(params, opt.init(params),
                                                                                     key, X, Y))
    assert calls == [2, 4, 6]
    np.testing.assert_array_equal(np.isfinite(losses), np.arange(20) < 6)
    order = np.asarray(fepoch.shuffle(key, 200)).reshape(20, 10)
    p, s = params, opt.init(params)
    for idx in order[:6]:
        p, s, _ = jax.jit(step)(p, s, X[idx], Y[idx])
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(stopped), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("n", [64, 7])
def test_drop_last_false_steps_on_the_rest_of_the_shuffle_as_the_books_sgd_does(trees_close, n, dropout):
    """drop_last=False: the book's SGD, every example seen each epoch. The
    epoch is the full mini-batches of the shuffle and then its last n mod 10
    examples as one more, shorter one (the mean over its own 4), stepped one
    by one in Python; the steps before it are bitwise drop_last=True's
    (their dropout masks too). A training set smaller than one mini-batch
    (7 examples) is one step; drop_last=True refuses it, naming the way out."""
    params, X, Y = small_problem(n=n)
    opt = optax.sgd(0.5)
    step = ftrain.make_train_step(opt, "log_likelihood", dropout=dropout)
    key = jax.random.key(3)
    p_e, s_e, losses = ftrain.make_epoch(step, 10, drop_last=False)(params, opt.init(params), key, X, Y)
    full = n // 10
    assert losses.shape == (full + 1,)
    perm = np.asarray(ftrain.shuffle(key, n))
    batches = [perm[k:k + 10] for k in range(0, n, 10)]  # the book's [training_data[k:k+m] for k in range(0, n, m)]
    assert [len(b) for b in batches] == [10] * full + [n % 10]
    keys = list(fepoch.step_keys(step, key, full)) if dropout else [None] * full
    keys.append(fepoch.tail_key(step, key, full))
    p, s = params, opt.init(params)
    for i, (idx, k) in enumerate(zip(batches, keys, strict=True)):
        p, s, loss = jax.jit(step)(p, s, X[idx], Y[idx], *([k] if dropout else []))
        np.testing.assert_allclose(loss, losses[i], rtol=1e-12)
    trees_close(p_e, p, 1e-12)
    if n < 10:
        with pytest.raises(ValueError, match="larger than the training set .*drop_last=False"):
            ftrain.make_epoch(step, 10)(params, opt.init(params), key, X, Y)
        return
    _, _, dropped = ftrain.make_epoch(step, 10)(params, opt.init(params), key, X, Y)
    np.testing.assert_array_equal(dropped, losses[:full])
    if dropout:  # the short step drew masks of its own: another loss than without dropout
        plain = ftrain.make_train_step(opt, "log_likelihood")
        _, _, no_masks = ftrain.make_epoch(plain, 10, drop_last=False)(params, opt.init(params), key, X, Y)
        assert abs(float(no_masks[-1]) - float(losses[-1])) > 1e-6


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), batch_size=st.integers(1, 16), drop_last=st.booleans(), reporting=st.booleans(),
       in_place=st.booleans())
def test_an_epoch_steps_on_each_example_once_and_drop_last_leaves_out_n_mod_batch_size(n, batch_size, drop_last,
                                                                                      reporting, in_place):
    """Counted by the step itself: the params are one counter per example,
    and each step's "gradient" is minus the one-hot rows of its mini-batch,
    so that SGD with η = 1 adds 1 for each example stepped on. After one
    epoch every example has been stepped on once, except, with drop_last,
    exactly n mod batch_size of them (none where that leaves no step,
    refused); the steps are ceil(n / batch_size) or n // batch_size. The
    full mini-batches copied into a buffer or gathered alike."""
    X = jnp.eye(n)  # example i is row i

    def counts(p, X, Y):
        return jnp.float64(0), -jnp.sum(X, axis=0)

    step = ftrain.make_train_step(optax.sgd(1.0), "quadratic", grad=counts)
    reports = []
    epoch = ftrain.make_epoch(step, batch_size, drop_last=drop_last, updates=3,
                              progress=(lambda done, total: reports.append((int(done), int(total)))) if reporting
                              else None)
    if drop_last and n < batch_size:
        with pytest.raises(ValueError, match="larger than the training set"):
            epoch(jnp.zeros(n), (), jax.random.key(n), X, X)
        return
    threshold = fepoch._IN_PLACE_BATCH_BYTES
    fepoch._IN_PLACE_BATCH_BYTES = 1 << 30 if in_place else 0  # read as the epoch is traced
    try:
        seen, _, losses = epoch(jnp.zeros(n), optax.sgd(1.0).init(jnp.zeros(n)), jax.random.key(n), X, X)
    finally:
        fepoch._IN_PLACE_BATCH_BYTES = threshold
    jax.effects_barrier()
    seen = np.asarray(seen)
    assert set(np.unique(seen)) <= {0.0, 1.0}
    assert int(np.sum(seen == 0)) == (n % batch_size if drop_last else 0)
    steps = n // batch_size if drop_last else -(-n // batch_size)
    assert losses.shape == (steps,)
    if reporting:
        assert reports[-1] == (steps, steps) and [d for d, _ in reports] == sorted({d for d, _ in reports})


def test_the_short_last_step_is_reported_and_skipped_after_a_report_says_stop():
    """With progress, drop_last=False's short step counts among the steps
    (reported by itself, last), and a True before it skips it too."""
    params, X, Y = small_problem(n=64)
    opt = optax.sgd(0.5)
    step = ftrain.make_train_step(opt, "log_likelihood")
    key = jax.random.key(3)
    plain = ftrain.make_epoch(step, 10, drop_last=False)(params, opt.init(params), key, X, Y)
    calls = []
    reported = ftrain.make_epoch(step, 10, drop_last=False, updates=3,
                                 progress=lambda done, n: calls.append((int(done), int(n))))(
        params, opt.init(params), key, X, Y)
    jax.effects_barrier()
    assert calls == [(2, 7), (4, 7), (6, 7), (7, 7)]
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(reported), strict=True):
        np.testing.assert_array_equal(a, b)
    stopped = ftrain.make_epoch(step, 10, drop_last=False, updates=3, progress=lambda done, n: done >= 6)(
        params, opt.init(params), key, X, Y)
    dropped = ftrain.make_epoch(step, 10)(params, opt.init(params), key, X, Y)  # the 6 full steps alone
    np.testing.assert_array_equal(np.isfinite(stopped[2]), [True] * 6 + [False])
    for a, b in zip(jax.tree.leaves(stopped[:2]), jax.tree.leaves(dropped[:2]), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="drop_last must be True .* or False"):
        ftrain.make_epoch(step, 10, drop_last="no")


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


def device_codes_agree(X, codes):
    """byte_codes answers by NumPy for arrays in host memory (every array on
    a CPU) and by a jitted program elsewhere (a GPU); the second, run here on
    the CPU, must give the same codes, or None alike."""
    X = jnp.asarray(X)
    if X.dtype == jnp.float32 and X.size:
        other = fepoch._codes_on_device(X)
        assert (other is None) == (codes is None)
        if codes is not None:
            assert other.dtype == codes.dtype
            np.testing.assert_array_equal(other, codes)
    return codes


@pytest.mark.parametrize("scale", [255, 256])
def test_byte_codes_only_where_the_floats_are_exactly_bytes(scale, monkeypatch):
    B, X, _ = byte_images(scale=scale)
    codes = device_codes_agree(X, ftrain.byte_codes(X))
    assert codes.dtype == B.dtype  # uint8 for k/255, int8 for k/256
    np.testing.assert_array_equal(codes, B)
    monkeypatch.setattr(fepoch, "_HOST_BLOCK_ROWS", 7)  # a bad value in a later block than the first
    Bbig, Xbig, _ = byte_images(n=60, scale=scale)
    np.testing.assert_array_equal(device_codes_agree(Xbig, ftrain.byte_codes(Xbig)), Bbig)
    Xbig[45, 3] = np.float32(0.3)  # neither scale's byte
    assert device_codes_agree(Xbig, ftrain.byte_codes(Xbig)) is None
    Bz, Xz = Bbig.copy(), Xbig.copy()  # zeros (both scales' byte 0) in the first blocks, this scale's after
    Bz[:30], Xz[:30] = (0 if scale == 255 else -128), 0
    Xz[45, 3], Bz[45, 3] = 0, Bz[0, 0]
    np.testing.assert_array_equal(device_codes_agree(Xz, ftrain.byte_codes(Xz)), Bz)
    assert ftrain.byte_codes(np.zeros((0, 12), np.float32)) is None
    assert ftrain.byte_codes(np.zeros((3, 12), np.float32)).dtype == np.uint8  # 0 is both: the first scale
    assert ftrain.byte_codes(fdata.digits().train.X) is None  # k/16, with 16/16 = 1: neither scale's byte
    assert fepoch._codes_on_device(jnp.asarray(fdata.digits().train.X)) is None  # the jitted check alike
    assert ftrain.byte_codes(X.astype(np.float64)) is None  # the epoch would have to decode to float64
    bad_values = [(0, np.nextafter(X[0, 0], np.float32(1))), (1, np.float32(2.0)), (2, np.float32(-1 / scale)),
                  (3, np.float32(np.nan)), (4, X[4, 4] * np.float32(1 + 2 ** -20)), (5, np.float32(-0.0)),
                  (6, np.float32(1 / (511 - scale)))]  # the other scale's byte 1, in data of this scale
    if scale == 256:
        bad_values.append((7, np.float32(1.0)))  # byte 255 of k/255, beyond the bytes of k/256
    for k, bad in bad_values:
        Xk = X.copy()
        Xk[k, k] = bad
        assert device_codes_agree(Xk, ftrain.byte_codes(Xk)) is None, (k, bad)


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
    monkeypatch.setattr(fepoch, "_IN_PLACE_BATCH_BYTES", 1 << 30 if in_place else 0)
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


@pytest.fixture
def own_compiled_epochs():
    """fit's kept epochs, cleared before the test and after it: before, or an
    epoch that an earlier test compiled for an optimizer built alike runs
    instead of the one the test builds; after, or the test's (a spy's) runs
    in a later test."""
    _reuse.compiled_cache.cache_clear()
    yield
    _reuse.compiled_cache.cache_clear()


def test_fit_again_with_the_same_optimizer_reuses_its_compiled_epoch(digits, own_compiled_epochs):
    """Training on with the same optimizer object (more epochs, from the
    result's params and state) compiled the epoch again each call; it is now
    kept, and what it computes is bitwise what a fresh one computes."""
    opt = optax.sgd(0.5)
    params = fbp.init_mlp(jax.random.key(0), [64, 12, 10], output_activation="softmax")
    kw = dict(cost="log_likelihood", epochs=1, batch_size=10, evaluation=digits.validation, lr_halving=2)
    first = ftrain.fit(params, digits.train, optimizer=opt, key=jax.random.key(1), **kw)
    before = _reuse.compiled_cache.cache_info()
    again = ftrain.fit(first.params, digits.train, optimizer=opt, key=jax.random.key(2), opt_state=first.opt_state, **kw)
    info = _reuse.compiled_cache.cache_info()
    assert (info.hits - before.hits, info.misses - before.misses) == (2, 0)  # the schedule's chain and the epoch
    epoch = _reuse.compiled_once(ftrain._epoch_for, _reuse.compiled_once(ftrain.with_lr_schedule, opt),
                                 "log_likelihood", "mean", "hand", 0.0, 10, True, None)
    assert epoch._cache_size() == 1  # one compiled program for both calls
    _reuse.compiled_cache.cache_clear()  # so that the optax.sgd(0.5) below, built alike, compiles its own
    fresh = ftrain.fit(first.params, digits.train, optimizer=optax.sgd(0.5), key=jax.random.key(2),
                       opt_state=first.opt_state, **kw)
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(a, b)
    assert again.history == [dict(h, seconds=a["seconds"]) for h, a in zip(fresh.history, again.history)]


def _alike(a, b) -> bool:
    """Whether fit's cache of compiled epochs takes a and b for the same."""
    a, b = _reuse.Alike.of(a), _reuse.Alike.of(b)
    return a == b and hash(a) == hash(b)


def test_make_optimizer_of_the_same_settings_is_built_alike_and_fit_reuses_its_epoch(digits, own_compiled_epochs):
    """A loop over seeds, each with a fresh make_optimizer of the same
    settings, compiled the epoch again every time: equal settings now give
    transformations built alike, and settings that differ, in value or
    in type (0.5 and np.float64(0.5) promote float32 updates differently),
    or that cannot be hashed, give another."""
    mo = ftrain.make_optimizer
    assert _alike(mo("sgd", 0.5), mo("sgd", 0.5)) and _alike(mo("sgd", 0.5), mo("sgd", 0.5, n_train=7, momentum=0.5))
    assert _alike(mo("momentum", 0.5), mo("momentum", 0.5, momentum=ftrain.DEFAULT_MOMENTUM))
    assert _alike(mo("sgd", 0.5, l2=1.0, n_train=10), mo("sgd", 0.5, l2=1.0, n_train=10))
    assert _alike(mo("sgd", 0.5, l1=1.0, n_train=10), mo("sgd", 0.5, l1=1.0, n_train=10))
    others = [mo("sgd", 0.5), mo("sgd", 0.25), mo("momentum", 0.5), mo("momentum", 0.5, momentum=0.8), mo("adam", 0.5),
              mo("sgd", 0.5, l2=1.0, n_train=10), mo("sgd", 0.5, l2=1.0, n_train=20), mo("sgd", 0.5, l1=1.0, n_train=10),
              mo("sgd", np.float64(0.5)), mo("sgd", jnp.float32(0.5))]
    assert not any(_alike(a, b) for i, a in enumerate(others) for b in others[i + 1:])
    assert not _alike(mo("sgd", jnp.float32(0.5)), mo("sgd", jnp.float32(0.5)))

    params = fbp.init_mlp(jax.random.key(0), [64, 9, 10], output_activation="softmax")
    kw = dict(cost="log_likelihood", epochs=1, batch_size=10, evaluation=digits.validation)
    built = []  # the epochs each seed's fit built (cache misses); none for the second
    for seed in (1, 2):
        before = _reuse.compiled_cache.cache_info().misses
        second = ftrain.fit(params, digits.train, optimizer=mo("sgd", 0.37), key=jax.random.key(seed), **kw)
        built.append(_reuse.compiled_cache.cache_info().misses - before)
    assert built[0] > 0 and built[1] == 0
    _reuse.compiled_cache.cache_clear()
    fresh = ftrain.fit(params, digits.train, optimizer=optax.sgd(0.37), key=jax.random.key(2), **kw)
    for a, b in zip(jax.tree.leaves(second.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(a, b)  # the shared epoch computes what a fresh one does


RATE = 0.5  # read by _sgd_at_rate's update, which a sweep rebinds


def _sgd_at_rate() -> optax.GradientTransformation:
    """A hand-built plain SGD step whose rate is a module-level name."""
    return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                        lambda u, state, params=None: (jax.tree.map(lambda g: -RATE * g, u), state))


def test_an_optax_transformation_built_alike_reuses_the_epoch_and_one_of_the_users_does_not(digits,
                                                                                            own_compiled_epochs):
    """optax.adam(1e-3) built afresh for each seed of a loop compiled the
    epoch again every time; transformations built alike (optax's or fbp's
    functions, the same code, closures holding equal values of the same
    types) now share it. A transformation of the user's own functions does
    not: what they read from their module may have changed (a sweep that
    rebinds the rate), so each is compiled for itself."""
    def adam_clipped(lr=1e-2):
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.exponential_decay(lr, 100, 0.5)))
    assert _alike(adam_clipped(), adam_clipped()) and _alike(ftrain.add_l1(0.1), ftrain.add_l1(0.1))
    assert not _alike(adam_clipped(), adam_clipped(2e-2))
    assert not _alike(optax.sgd(0.0), optax.sgd(-0.0))  # their updates of a -0.0 param differ in sign
    assert not _alike(_sgd_at_rate(), _sgd_at_rate())
    unhashable = optax.sgd(jnp.float32(0.5))  # compared by identity, as before: built anew each time
    assert _reuse.Alike.of(unhashable) is unhashable

    params = fbp.init_mlp(jax.random.key(0), [64, 9, 10], output_activation="softmax")
    kw = dict(cost="log_likelihood", epochs=1, batch_size=10, evaluation=digits.validation)

    def fit(optimizer, seed=2):
        before = _reuse.compiled_cache.cache_info().misses
        result = ftrain.fit(params, digits.train, optimizer=optimizer, key=jax.random.key(seed), **kw)
        return result, _reuse.compiled_cache.cache_info().misses - before

    assert fit(adam_clipped(), 1)[1] > 0
    shared, built = fit(adam_clipped())
    assert built == 0
    _reuse.compiled_cache.cache_clear()
    fresh, built = fit(adam_clipped())
    assert built > 0
    for a, b in zip(jax.tree.leaves(shared.params), jax.tree.leaves(fresh.params)):
        np.testing.assert_array_equal(a, b)  # the shared epoch computes what a fresh one does

    global RATE
    by_rate = {}
    for RATE in (0.5, 0.25):
        by_rate[RATE], built = fit(_sgd_at_rate())
        assert built > 0
    RATE = 0.5
    for rate, result in by_rate.items():
        plain = fit(optax.sgd(rate))[0]
        for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(plain.params)):
            np.testing.assert_array_equal(a, b)  # each rate trained at its own rate


@pytest.mark.parametrize("monitor_training,scale", [(True, 255), (False, 255), (True, 256)])
def test_fit_trains_on_the_bytes_of_byte_images_and_on_floats_otherwise(monkeypatch, digits, monitor_training, scale,
                                                                        own_compiled_epochs):
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
    assert result.history[-1]["evaluation_accuracy"] == int(m["correct"]) / 10
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


def test_vote_is_the_majority_of_the_networks_classes_ties_to_the_largest_summed_output():
    """vote: each network's argmax is a vote and the most votes win; two
    networks tie wherever they disagree, and there the larger summed output
    decides (computed here in NumPy from each network's forward pass). The
    soft vote is the largest summed output; vote_of gives both from
    evaluate's outputs. One network's vote is its predict; bytes vote as
    their floats; a wrong argument is named."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.integers(0, 256, (300, 6)).astype(np.float32) / np.float32(255))
    nets = [fbp.init_mlp(jax.random.key(k), [6, 8, 4], output_activation="softmax", dtype=jnp.float32)
            for k in range(3)]
    outs = [np.asarray(jax.vmap(fbp.forward, (None, 0))(p, X)) for p in nets]
    for m in (2, 3):
        votes = sum(np.eye(4, dtype=int)[o.argmax(1)] for o in outs[:m])
        summed = sum(outs[:m])
        expected = np.argmax(np.where(votes == votes.max(1, keepdims=True), summed, -np.inf), axis=1)
        got = np.asarray(ftrain.vote(nets[:m], X))
        np.testing.assert_array_equal(got, expected)
        assert m == 3 or np.any(outs[0].argmax(1) != outs[1].argmax(1))  # ties there to break
        np.testing.assert_array_equal(ftrain.vote(nets[:m], fepoch.byte_codes(X)), got)
        soft = np.asarray(ftrain.vote(nets[:m], X, voting="soft"))
        np.testing.assert_array_equal(soft, summed.argmax(1))  # the soft vote: the largest summed output
        # from outputs already computed, as evaluate's same pass gives them
        Y = jnp.eye(4)[np.arange(300) % 4]
        evaluated = [ftrain.evaluate(p, X, Y, "log_likelihood", outputs=True, per_example=True) for p in nets[:m]]
        for e, o in zip(evaluated, outs):
            np.testing.assert_allclose(e["outputs"], o, rtol=1e-6)
            assert e["costs"].shape == e["grad_norms"].shape == (300,)  # outputs=True leaves the others in place
        for voting, expect in (("hard", got), ("soft", soft)):
            np.testing.assert_array_equal(ftrain.vote_of([e["outputs"] for e in evaluated], voting), expect)
    np.testing.assert_array_equal(ftrain.vote(nets[:1], X), ftrain.predict(nets[0], X))
    # two networks hesitate for class 0, one is sure of class 1: the vote is 0, the soft vote 1
    hesitant, sure = np.array([[0.4, 0.35, 0.25]]), np.array([[0.0, 1.0, 0.0]])
    assert [int(ftrain.vote_of([hesitant, hesitant, sure], v)[0]) for v in ("hard", "soft")] == [0, 1]
    with pytest.raises(ValueError, match=r"voting must be one of \('hard', 'soft'\), got 'mean'"):
        ftrain.vote(nets, X, voting="mean")
    with pytest.raises(ValueError, match=r"the same n for all; got shapes \[\(300, 4\), \(299, 4\)\]"):
        ftrain.vote_of([outs[0], outs[1][:299]])
    with pytest.raises(TypeError, match=r"this looks like one network: vote\(\[params\], X\)"):
        ftrain.vote(nets[0], X)
    with pytest.raises(ValueError, match="empty"):
        ftrain.vote([], X)
    with pytest.raises(ValueError, match=r"outputs differ in number \(\[4, 3\]\)"):
        ftrain.vote([nets[0], fbp.init_mlp(jax.random.key(0), [6, 3])], X)


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
        assert int(m["correct"]) == np.sum(labels == np.argmax(np.asarray(Y), axis=1))  # the exact count, any chunks
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


def test_evaluate_gives_each_examples_cost_and_gradient_norm_from_the_same_pass():
    rng = np.random.default_rng(3)
    X = jnp.asarray(rng.uniform(size=(437, 6)))
    Y = jnp.asarray(np.eye(3)[rng.integers(0, 3, 437)])
    params = fbp.init_mlp(jax.random.key(5), [6, 8, 5, 3], output_activation="softmax", dtype=jnp.float64)
    # The reference: each example's gradient by jax.grad, flattened; its norm and its cost.
    cost = fbp.get_cost("log_likelihood")
    g = jax.vmap(lambda x, y: jax.grad(fbp.example_loss)(params, x, y, cost))(X, Y)
    want = np.linalg.norm(np.concatenate([np.asarray(leaf).reshape(len(X), -1) for leaf in jax.tree.leaves(g)], 1),
                          axis=1)
    want_by_layer = np.stack([np.linalg.norm(np.concatenate([np.asarray(layer.w).reshape(len(X), -1),
                                                             np.asarray(layer.b)], 1), axis=1) for layer in g], 1)
    costs = np.asarray(jax.vmap(lambda x, y: fbp.example_loss(params, x, y, cost))(X, Y))
    assert want.std() > 0.1 * want.mean()  # they differ enough from example to example for the order to mean something
    plain = ftrain.evaluate(params, X, Y, "log_likelihood")
    assert "grad_norms" not in plain and "costs" not in plain and "grad_norms_by_layer" not in plain
    for chunk in (None, 1, 100, 437):
        for deltas in (False, True):
            m = ftrain.evaluate(params, X, Y, "log_likelihood", chunk_size=chunk, per_example=True, deltas=deltas)
            np.testing.assert_allclose(np.asarray(m["grad_norms"]), want, rtol=1e-10)
            np.testing.assert_allclose(np.asarray(m["grad_norms_by_layer"]), want_by_layer, rtol=1e-10)  # (n, L)
            np.testing.assert_allclose(np.asarray(m["costs"]), costs, rtol=1e-12)
            np.testing.assert_allclose(float(m["cost"]), np.mean(np.asarray(m["costs"])), rtol=1e-14)
            assert float(m["accuracy"]) == float(plain["accuracy"])
            if deltas:
                np.testing.assert_allclose(np.asarray(m["delta_norms"]), _bias_grad_norms(params, X, Y), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(m["grad_norms"]), np.asarray(fbp.stats.per_example_grad_norms(
        params, X, Y, "log_likelihood")), rtol=1e-12)  # fbp.stats's, whose identity it shares
    np.testing.assert_allclose(np.asarray(m["grad_norms_by_layer"]), np.asarray(fbp.stats.per_example_grad_norms(
        params, X, Y, "log_likelihood", per_layer=True)), rtol=1e-12)
    # On the bytes of byte images: bitwise those of their floats.
    B = rng.integers(0, 256, (300, 6), dtype=np.uint8)
    p32 = fbp.init_mlp(jax.random.key(5), [6, 8, 5, 3], output_activation="softmax")
    Y32 = jnp.asarray(np.asarray(Y[:300]), jnp.float32)
    on_bytes = ftrain.evaluate(p32, jnp.asarray(B), Y32, "log_likelihood", chunk_size=64, per_example=True)
    on_floats = ftrain.evaluate(p32, jnp.asarray(B.astype(np.float32) / 255), Y32, "log_likelihood", chunk_size=64,
                                per_example=True)
    for k in ("costs", "grad_norms"):
        np.testing.assert_array_equal(np.asarray(on_bytes[k]), np.asarray(on_floats[k]))
    # each layer's part to rounding: XLA fuses the decoding into the first layer's ‖a⁰‖² there (1 ulp, 3% of them)
    np.testing.assert_allclose(np.asarray(on_bytes["grad_norms_by_layer"]), np.asarray(on_floats["grad_norms_by_layer"]),
                               rtol=1e-6)


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
        (dict(train=digits.train.X), TypeError,  # its first two rows were taken for X and Y
         r"^train must be a pair \(X, Y\) of inputs and targets .*got an array of shape \(1257, 64\)\.$"),
        (dict(evaluation={"X": digits.validation.X}), TypeError, r"^evaluation must be a pair .*got dict\.$"),
        (dict(on_epoch=3), TypeError, r"^on_epoch must be a function of each epoch's record \(a dict\), got int$"),
        (dict(on_resume=3), TypeError, r"^on_resume must be a function of the restored history"),
    ]
    for change, error, needle in cases:
        args = {**kw, "train": digits.train, "on_epoch": seen.append, **change}
        with pytest.raises(error, match=needle):
            ftrain.fit(params, args.pop("train"), **args)
    assert seen == []  # refused before the first epoch
    raw = ftrain.fit(params, digits.train, **{**kw, "key": jax.random.PRNGKey(1)})  # a raw uint32[2] key is one key
    assert raw.epochs_run == 1


def test_fit_records_what_its_monitor_computes_from_each_epochs_params(tmp_path, digits):
    params = fbp.init_mlp(jax.random.key(0), [64, 20, 10], output_activation="softmax")
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", batch_size=10, key=jax.random.key(1),
              evaluation=digits.validation)

    def weights(p):  # a jax scalar and a numpy array: both become plain JSON values
        return {"w_norm": jnp.sqrt(sum(jnp.sum(layer.w ** 2) for layer in p)),
                "b_first": np.asarray(p[-1].b[:2])}

    seen = []
    r = ftrain.fit(params, digits.train, epochs=3, monitor=weights, on_epoch=seen.append,
                   checkpoint_dir=str(tmp_path / "run"), **kw)
    assert seen == r.history and all(type(h["w_norm"]) is float and len(h["b_first"]) == 2 for h in r.history)
    # Epoch e's params are those of fit for e epochs (each epoch's shuffle is keyed by its number).
    for e in (1, 2, 3):
        p_e = ftrain.fit(params, digits.train, epochs=e, **kw).params
        assert r.history[e - 1]["w_norm"] == float(jnp.sqrt(sum(jnp.sum(layer.w ** 2) for layer in p_e)))
        assert r.history[e - 1]["b_first"] == np.asarray(p_e[-1].b[:2]).tolist()
    assert r.history[0]["w_norm"] != r.history[2]["w_norm"]
    # The names it may not take are every name fit's own records can hold.
    full = ftrain.fit(params, digits.train, epochs=1, monitor_deltas=True, monitor_noise_scale=True, lr_halving=3,
                      **kw).history[0]
    assert set(full) == set(ftrain.RECORD_NAMES)
    # The checkpoints keep it: a resumed run's history has it for the epochs it did not train.
    resumed = ftrain.fit(params, digits.train, epochs=4, monitor=weights, checkpoint_dir=str(tmp_path / "run"),
                         resume=True, **kw)
    assert resumed.history[:3] == r.history and "w_norm" in resumed.history[3]
    for bad, error, needle in (
            (lambda p: 1.0, TypeError, "must return a dict of names and numbers, got float"),
            (lambda p: {"epoch": 1}, ValueError, r"returned 'epoch', a name of fit's own records .*give it another"),
            (lambda p: {"noise_scale": 1.0}, ValueError, "'noise_scale', a name of fit's own"),  # though not asked for
            (lambda p: {"layer": p[0]}, TypeError, r"returned 'layer' = a Dense, which the record .*cannot hold"),
            (lambda p: {3: 1.0}, TypeError, "names must be strings"),
            ("w_norm", TypeError, "monitor must be a function of the params")):
        with pytest.raises(error, match=needle):
            ftrain.fit(params, digits.train, epochs=1, monitor=bad, **kw)


def test_fit_reports_the_steps_of_long_epochs_to_on_progress(digits, monkeypatch, tmp_path):
    """on_progress(epoch, steps_done, steps) is called within each epoch
    that follows one of PROGRESS_SECONDS or more, for each epoch at 0 s and
    for none of digits' 2 ms epochs at the default 1 s; the params are
    bitwise those of a fit without it. What it raises, fit raises as it was,
    once that epoch is recorded and checkpointed."""
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=3, batch_size=10, key=jax.random.key(1),
              evaluation=digits.validation)
    plain = ftrain.fit(params, digits.train, **kw)
    calls = []
    quiet = ftrain.fit(params, digits.train, **kw, on_progress=lambda *a: calls.append(a))
    assert calls == [] and ftrain.PROGRESS_SECONDS == 1.0
    monkeypatch.setattr(ftrain, "PROGRESS_SECONDS", 0.0)
    reported = ftrain.fit(params, digits.train, **kw, on_progress=lambda *a: calls.append(a))
    steps = len(digits.train.X) // 10
    for e in (1, 2, 3):
        done = [d for epoch, d, total in calls if epoch == e and total == steps]
        assert len(done) >= 18 and done == sorted(done) and done[-1] == steps
    assert plain.history[-1]["evaluation_accuracy"] == reported.history[-1]["evaluation_accuracy"]
    # a first epoch guessed long reports; the 2 ms it takes turns the reports off for the next
    monkeypatch.setattr(ftrain, "PROGRESS_SECONDS", 1.0)
    monkeypatch.setattr(ftrain, "FIRST_EPOCH_MACS", 0 if jax.default_backend() == "cpu" else float("inf"))
    calls.clear()
    guessed = ftrain.fit(params, digits.train, **kw, on_progress=lambda *a: calls.append(a))
    assert {epoch for epoch, _, _ in calls} == ({1} if jax.default_backend() == "cpu" else set())
    for result in (quiet, reported, guessed):
        for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(result.params)):
            np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(ftrain, "PROGRESS_SECONDS", 0.0)

    class Full(Exception):
        pass

    def fails(epoch, done, steps):
        if epoch == 2:
            raise Full("the terminal went away")

    seen = []
    with pytest.raises(Full, match="the terminal went away"):
        ftrain.fit(params, digits.train, **kw, on_progress=fails, on_epoch=seen.append, checkpoint_dir=str(tmp_path))
    assert [r["epoch"] for r in seen] == [1, 2]  # stopped once the epoch whose report raised was recorded
    assert os.path.basename(ckpt.list_checkpoints(str(tmp_path))[-1]) == "ckpt-000002.npz"  # and kept
    with pytest.raises(TypeError, match="on_progress must be a function"):
        ftrain.fit(params, digits.train, **kw, on_progress="bar")


def test_fits_in_two_threads_at_once_each_get_their_own_step_reports(digits, monkeypatch):
    """Two fits with on_progress, on data of two sizes, in two threads at
    once: each on_progress gets exactly its own fit's reports, every epoch's
    in order (with one slot for all reports, as before, 2 runs of this
    test in 5 failed: some of one fit's reports went to the other)."""
    import threading

    monkeypatch.setattr(ftrain, "PROGRESS_SECONDS", 0.0)
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    data = {"all": digits.train, "500": (digits.train.X[:500], digits.train.Y[:500])}
    seen, failed = {name: [] for name in data}, []

    def train(name):
        try:
            ftrain.fit(params, data[name], optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=30,
                       batch_size=10, key=jax.random.key(1), on_progress=lambda *a: seen[name].append(a))
        except Exception as e:  # noqa: BLE001 - reported below
            failed.append(e)

    threads = [threading.Thread(target=train, args=(name,)) for name in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed
    for name, (X, _) in data.items():
        steps = len(X) // 10
        run = -(-steps // 20)
        assert seen[name] == [(e, min(k, steps), steps) for e in range(1, 31) for k in range(run, steps + run, run)]


def test_keyboard_interrupt_from_on_progress_stops_the_epoch_where_it_is(digits, monkeypatch, tmp_path, caplog):
    """on_progress raising KeyboardInterrupt ends the running epoch at that
    report (no later report comes) and fit raises it with nothing of that
    epoch kept: the newest checkpoint is the epoch before, and resuming from
    it ends bitwise where a run never stopped does. Nothing is logged (the
    epoch skips its remaining steps; no callback fails)."""
    monkeypatch.setattr(ftrain, "PROGRESS_SECONDS", 0.0)
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=3, batch_size=10, key=jax.random.key(1))
    plain = ftrain.fit(params, digits.train, **kw)
    calls, seen = [], []

    def stop_in_epoch_2(epoch, done, steps):
        calls.append((epoch, done))
        if epoch == 2 and len([c for c in calls if c[0] == 2]) == 3:
            raise KeyboardInterrupt

    run_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt) as stopped:
        ftrain.fit(params, digits.train, **kw, on_progress=stop_in_epoch_2, on_epoch=seen.append,
                   checkpoint_dir=run_dir)
    assert stopped.value.fit_result.epochs_run == 1  # what was trained before it, as fit_result
    assert not [r for r in caplog.records if r.name.startswith("jax")], caplog.text
    assert [r["epoch"] for r in seen] == [1] and ckpt.newest_epoch(run_dir) == 1
    assert [e for e, _ in calls].count(2) == 3 and 3 not in [e for e, _ in calls]  # no report after the one that raised
    resumed = ftrain.fit(params, digits.train, **kw, checkpoint_dir=run_dir, resume=True)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_keyboard_interrupt_out_of_fit_carries_the_epochs_trained_before_it(digits):
    """Ctrl-C lands in Python code between epochs (here in on_epoch, after
    epoch 2 is recorded): the KeyboardInterrupt goes on up, carrying
    fit_result, bitwise the params and history of 2 epochs, with the best
    epoch among them."""
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", batch_size=10, key=jax.random.key(1),
              evaluation=digits.validation)
    two = ftrain.fit(params, digits.train, epochs=2, **kw)

    def ctrl_c(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:
        ftrain.fit(params, digits.train, epochs=5, on_epoch=ctrl_c, **kw)
    kept = stopped.value.fit_result
    assert (kept.epochs_run, kept.stopped_early, kept.stop_reason, kept.error) == (2, True, "interrupted", None)
    assert kept.history == [dict(r, seconds=k["seconds"]) for r, k in zip(two.history, kept.history)]
    assert kept.best_epoch == two.best_epoch
    for a, b in zip(jax.tree.leaves((two.params, two.opt_state, two.best_params)),
                    jax.tree.leaves((kept.params, kept.opt_state, kept.best_params)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_stops_after_the_epoch_where_stop_gives_a_reason(digits, tmp_path):
    """stop() is asked after each epoch is recorded and checkpointed: a
    string stops the run there as early stopping does, and becomes the
    result's stop_reason."""
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    kw = dict(optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=5, batch_size=10, key=jax.random.key(1))
    seen = []
    r = ftrain.fit(params, digits.train, **kw, on_epoch=seen.append, checkpoint_dir=str(tmp_path),
                   stop=lambda: "interrupted" if len(seen) == 2 else None)
    assert (r.epochs_run, r.stopped_early, r.stop_reason) == (2, True, "interrupted")
    assert ckpt.newest_epoch(str(tmp_path)) == 2
    with pytest.raises(TypeError, match="stop must be a function of no arguments"):
        ftrain.fit(params, digits.train, **kw, stop="now")
    with pytest.raises(TypeError, match="stop must return None or a reason to stop .*got bool"):
        ftrain.fit(params, digits.train, **kw, stop=lambda: True)


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
    halved = ftrain.with_lr_schedule(optax.sgd(0.5))
    a = ftrain.make_train_step(halved, "log_likelihood")(p64, ftrain.halve_lr(halved.init(p64)), X, Y)[0]
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


def test_fit_trains_a_tuple_of_layers_as_it_trains_a_list(tmp_path):
    """A tuple of layers is a pytree like a list: fit (momentum, whose state
    mirrors the params; L2; the learning schedule; a checkpoint and a
    resume) trains it to bitwise the same params and gives a tuple back."""
    params, X, Y = small_problem()
    opt = ftrain.make_optimizer("momentum", 0.1, momentum=0.9, l2=0.5, n_train=len(X))

    def run(p, epochs, **kw):
        return ftrain.fit(p, (X[:48], Y[:48]), optimizer=opt, cost="log_likelihood", epochs=epochs, batch_size=8,
                          key=jax.random.key(1), evaluation=(X[48:], Y[48:]), lr_halving=1, monitor_deltas=True,
                          **kw)

    as_list = run(list(params), 4)
    d = str(tmp_path / "run")
    run(tuple(params), 2, checkpoint_dir=d)
    as_tuple = run(tuple(params), 4, checkpoint_dir=d, resume=True)
    assert type(as_list.params) is list and type(as_tuple.params) is tuple
    fresh = ftrain.with_lr_schedule(opt).init(tuple(params))  # fit's own chain for lr_halving
    assert jax.tree.structure(as_tuple.opt_state) == jax.tree.structure(fresh)
    for a, b in zip(jax.tree.leaves((as_tuple.params, as_tuple.opt_state)),
                    jax.tree.leaves((as_list.params, as_list.opt_state))):
        np.testing.assert_array_equal(a, b)
    assert [h["training_cost"] for h in as_tuple.history] == [h["training_cost"] for h in as_list.history]


def test_fit_with_drop_last_false_trains_every_example_and_resumes_bitwise(tmp_path):
    """fit(drop_last=False) runs make_epoch's book-style epochs (53 examples
    in mini-batches of 8: six and one of 5) and resumes from a checkpoint to
    bitwise the params of a run never stopped; it trains other params than
    drop_last=True, and a mini-batch larger than the training set is one
    step of them all."""
    params, X, Y = small_problem(n=53)
    opt = optax.sgd(0.5)
    kw = dict(optimizer=opt, cost="log_likelihood", batch_size=8, key=jax.random.key(1), drop_last=False)
    whole = ftrain.fit(params, (X, Y), epochs=3, **kw)
    epoch = ftrain.make_epoch(ftrain.make_train_step(opt, "log_likelihood"), 8, drop_last=False)
    p, s = params, opt.init(params)
    for e in range(1, 4):
        p, s, losses = epoch(p, s, jax.random.fold_in(jax.random.key(1), e), X, Y)
        assert losses.shape == (7,)
        assert whole.history[e - 1]["train_step_cost"] == float(np.mean(np.asarray(losses)))
    d = str(tmp_path / "run")
    ftrain.fit(params, (X, Y), epochs=1, checkpoint_dir=d, **kw)
    resumed = ftrain.fit(params, (X, Y), epochs=3, checkpoint_dir=d, resume=True, **kw)
    for a, b, c in zip(jax.tree.leaves(whole.params), jax.tree.leaves(p), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    dropped = ftrain.fit(params, (X, Y), epochs=3, **dict(kw, drop_last=True))
    assert not np.array_equal(dropped.params[0].w, whole.params[0].w)
    one = ftrain.fit(params, (X, Y), epochs=1, **dict(kw, batch_size=100))
    assert one.history[0]["train_step_cost"] == pytest.approx(float(fbp.loss(params, X, Y, "log_likelihood")))
    with pytest.raises(ValueError, match="batch size 100 is larger than the training set"):
        ftrain.fit(params, (X, Y), epochs=1, **dict(kw, batch_size=100, drop_last=True))


def test_fit_refuses_non_finite_data_naming_the_first_bad_row():
    # Before, a NaN pixel ran into the non-finite-cost stop at some step, with
    # advice to lower the learning rate.
    params, X, Y = small_problem(jnp.float32, n=40)
    run = functools.partial(ftrain.fit, params, optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=1,
                            batch_size=4, key=jax.random.key(0))
    for what, bad in [("train X", "X"), ("train Y", "Y"), ("evaluation X", "Xe")]:
        Xb, Yb, Xe = np.array(X), np.array(Y), np.array(X[:10])
        {"X": Xb, "Y": Yb, "Xe": Xe}[bad][7, 1] = np.inf if bad == "Y" else np.nan
        {"X": Xb, "Y": Yb, "Xe": Xe}[bad][9, 0] = -np.inf  # a later one is not the one named
        with pytest.raises(ValueError, match=f"{what} holds NaN or infinite values \\(the first in row 7\\)"):
            run((Xb, Yb), evaluation=(Xe, Y[:10]))
    assert run((X, Y), evaluation=(X[:10], Y[:10])).error is None


def test_the_host_and_device_checks_for_non_finite_rows_agree():
    # fit checks arrays in host memory with NumPy and others (a GPU's) with
    # a jitted check; on the CPU both can run, and must name the same row
    rng = np.random.default_rng(0)
    for shape, bad in [((9, 4), []), ((9, 4), [0]), ((9, 4), [8]), ((9, 2, 3), [3, 5]), ((1, 5), [0]),
                       ((30,), [12])]:
        for value in (np.nan, np.inf, -np.inf):
            A = rng.normal(size=shape).astype(np.float32)
            for row in bad:
                A[(row,) + tuple(rng.integers(0, n) for n in shape[1:])] = value
            expect = bad[0] if bad else -1
            assert ftrain._first_non_finite(A) == expect
            assert ftrain._first_non_finite(jnp.asarray(A)) == expect
            assert int(ftrain._first_non_finite_row(jnp.asarray(A))) == expect


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

"""Dropout (NNDL ch. 3): the hand-written gradient of a thinned network
against jax.grad of the same thinned cost (float64, 1e-10), what a dropped
unit gets (δ = 0, no weight gradient out of it), the training step and
epoch, fit (learns, resumes bitwise, tests the whole network), and bad
masks and rates refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import fbp
from fbp import train as ftrain

from training_helpers import small_problem

HIDDEN = sorted(n for n, a in fbp.ACTIVATIONS.items() if a.elementwise)


def _problem(sizes, hidden, out, batch=7, seed=0):
    params = fbp.init_mlp(jax.random.key(seed), sizes, activation=hidden, output_activation=out, dtype=jnp.float64)
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.uniform(size=(batch, sizes[0])))
    Y = jnp.asarray(np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)])
    return params, X, Y


OUTPUTS = [("softmax", "log_likelihood", "mean"), ("sigmoid", "cross_entropy", "sum"), ("identity", "quadratic", "mean")]


# every hidden activation, and each output and cost with two of them
@pytest.mark.parametrize("hidden,out,cost,reduction", [(h, *OUTPUTS[i % 3]) for i, h in enumerate(HIDDEN)])
def test_the_thinned_networks_gradient_equals_jax_grad_of_its_cost(trees_close, hidden, out, cost, reduction):
    params, X, Y = _problem([6, 9, 8, 5, 4], hidden, out)
    for rate in (0.5, 0.8):
        masks = fbp.dropout_masks(jax.random.key(3), params, len(X), rate)
        assert any(float(jnp.min(m)) == 0 for m in masks)  # some units are dropped
        value, hand = fbp.value_and_batch_backward(params, X, Y, cost, reduction, masks)
        auto = jax.grad(fbp.loss)(params, X, Y, cost, reduction, masks)
        trees_close(hand, auto, 1e-10)
        trees_close(fbp.batch_backward(params, X, Y, cost, reduction, masks=masks), hand, 1e-14)
        np.testing.assert_allclose(value, fbp.loss(params, X, Y, cost, reduction, masks), rtol=1e-13)
        # ... and it is not the whole network's gradient
        assert fbp.relative_error(hand[0].w, fbp.batch_backward(params, X, Y, cost, reduction)[0].w) > 1e-3


def test_masks_of_ones_are_no_dropout_bitwise_and_one_layer_has_none():
    params, X, Y = _problem([5, 7, 3], "sigmoid", "softmax")
    ones = [jnp.ones((len(X), 7), jnp.float64)]
    assert fbp.dropout_masks(jax.random.key(0), params, len(X), 0.0)[0].tolist() == ones[0].tolist()
    a = jax.tree.leaves(fbp.batch_backward(params, X, Y, "log_likelihood", masks=ones))
    b = jax.tree.leaves(fbp.batch_backward(params, X, Y, "log_likelihood"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    one_layer = params[1:]
    assert fbp.dropout_masks(jax.random.key(0), one_layer, 4, 0.5) == []


def test_a_dropped_unit_sends_back_no_error_and_its_weights_learn_nothing_from_the_example():
    params, X, Y = _problem([6, 12, 10, 3], "tanh", "softmax", batch=5)
    masks = fbp.dropout_masks(jax.random.key(1), params, len(X), 0.5)
    ds, inputs = fbp.batch_deltas(params, X, Y, "log_likelihood", masks=masks)
    for l, m in enumerate(masks):
        dropped = np.asarray(m) == 0
        assert dropped.any() and (~dropped).any()
        assert np.all(np.asarray(ds[l])[dropped] == 0)  # δ^l_j = 0 for a dropped unit j
        assert np.all(np.asarray(ds[l])[~dropped] != 0)
        assert np.all(np.asarray(inputs[l + 1])[dropped] == 0)  # the next layer took 0 from it
        np.testing.assert_allclose(np.asarray(m)[~dropped], 2.0)  # the kept ones scaled by 1/(1 − 0.5)
    for n in range(len(X)):  # one example: BP4's columns out of a dropped unit, BP3/BP4's rows into it, are 0
        g = fbp.batch_backward(params, X[n:n + 1], Y[n:n + 1], "log_likelihood",
                               masks=[m[n:n + 1] for m in masks])
        for l, m in enumerate(masks):
            dropped = np.asarray(m[n]) == 0
            assert np.all(np.asarray(g[l + 1].w)[:, dropped] == 0)
            assert np.all(np.asarray(g[l].w)[dropped, :] == 0) and np.all(np.asarray(g[l].b)[dropped] == 0)


def test_masks_keep_units_at_the_rate_asked():
    params = fbp.init_mlp(jax.random.key(0), [3, 200, 100, 2])
    for rate in (0.2, 0.5, 0.9):
        masks = fbp.dropout_masks(jax.random.key(2), params, 100, rate)
        kept = np.mean(np.concatenate([np.asarray(m).ravel() for m in masks]) > 0)
        assert abs(kept - (1 - rate)) < 0.01  # 30,000 draws: the standard error is under 0.003
        assert masks[0].dtype == jnp.float32
        np.testing.assert_allclose(np.unique(np.asarray(masks[0])), [0.0, 1 / (1 - rate)], rtol=1e-6)


def test_bad_masks_and_rates_are_refused_by_name():
    params, X, Y = _problem([5, 7, 6, 3], "sigmoid", "softmax")
    masks = fbp.dropout_masks(jax.random.key(0), params, len(X), 0.5)
    with pytest.raises(ValueError, match=r"one array per hidden layer \(2\), got 1 arrays.*fbp.dropout_masks"):
        fbp.batch_backward(params, X, Y, "log_likelihood", masks=masks[:1])
    with pytest.raises(ValueError, match=r"masks\[1\] must be a floating \(7, 6\) array.*float64\[3, 6\]"):
        fbp.loss(params, X, Y, "log_likelihood", masks=[masks[0], masks[1][:3]])
    with pytest.raises(ValueError, match=r"masks\[0\] must be a floating.*int32"):
        fbp.batch_deltas(params, X, Y, "log_likelihood", masks=[masks[0].astype(jnp.int32), masks[1]])
    for rate in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="rate is the probability of dropping a hidden unit"):
            fbp.dropout_masks(jax.random.key(0), params, 3, rate)
        with pytest.raises(ValueError, match="dropout is the probability"):
            ftrain.make_train_step(optax.sgd(0.1), "log_likelihood", dropout=rate)
    # a gradient function of one's own is handed the masks; one that takes none is refused at once
    def own(p, X, Y):
        return fbp.value_and_batch_backward(p, X, Y, "log_likelihood")

    with pytest.raises(ValueError, match=r"grad is called as grad\(params, X, Y, masks\).*'own' takes no masks"):
        ftrain.make_train_step(optax.sgd(0.1), "log_likelihood", dropout=0.5, grad=own)
    ftrain.make_train_step(optax.sgd(0.1), "log_likelihood", grad=own)  # without dropout it is fine


def test_compare_grads_and_fbp_check_check_the_thinned_networks_gradient(capsys):
    params, X, Y = _problem([6, 9, 8, 4], "sigmoid", "softmax")
    masks = fbp.dropout_masks(jax.random.key(2), params, len(X), 0.5)
    report = fbp.compare_grads(params, X, Y, "log_likelihood", fd_samples=24, masks=masks)
    assert report.max_rel <= 1e-10 and report.fd_max_rel <= 1e-6
    # the finite differences are those of the thinned cost: against the whole network's gradient they disagree
    idx, fd = fbp.finite_differences(params, X, Y, "log_likelihood", n=24, masks=masks)
    whole = np.asarray(ravel_pytree(fbp.batch_backward(params, X, Y, "log_likelihood"))[0])
    assert np.max(np.abs(whole[idx] - fd)) > 1e-3 * np.max(np.abs(whole))
    from fbp.cli import main

    assert main(["check", "--dropout", "0.5", "--sizes", "12,10,8,3", "--activation", "relu"]) == 0
    out = capsys.readouterr().out
    assert " dropout=0.5" in out.splitlines()[0] and "\nOK: worst relative difference" in out


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_a_dropout_step_and_epoch_equal_jax_grads(trees_close, opt):
    params, X, Y = small_problem()
    optimizer = ftrain.make_optimizer(opt, 0.3, l2=5.0, n_train=64)
    hand = ftrain.make_train_step(optimizer, "log_likelihood", dropout=0.5)
    auto = ftrain.make_train_step(optimizer, "log_likelihood", dropout=0.5, grad="autodiff")
    assert hand.takes_key and auto.takes_key
    state = optimizer.init(params)
    p1, s1, l1 = jax.jit(hand)(params, state, X, Y, jax.random.key(4))
    p2, s2, l2 = jax.jit(auto)(params, state, X, Y, jax.random.key(4))
    np.testing.assert_allclose(l1, l2, rtol=1e-12)
    trees_close(p1, p2, 1e-10)
    # the step is the optax step along the thinned network's gradient
    masks = fbp.dropout_masks(jax.random.key(4), params, len(X), 0.5)
    updates, _ = optimizer.update(fbp.batch_backward(params, X, Y, "log_likelihood", masks=masks), state, params)
    trees_close(p1, optax.apply_updates(params, updates), 1e-12)
    # whole epochs, each step with its own masks
    e1 = ftrain.make_epoch(hand, 8)(params, state, jax.random.key(9), X, Y)
    e2 = ftrain.make_epoch(auto, 8)(params, state, jax.random.key(9), X, Y)
    trees_close(e1[0], e2[0], 1e-10)
    np.testing.assert_allclose(e1[2], e2[2], rtol=1e-10)
    plain = ftrain.make_epoch(ftrain.make_train_step(optimizer, "log_likelihood"), 8)(params, state,
                                                                                       jax.random.key(9), X, Y)
    assert fbp.relative_error(e1[0][0].w, plain[0][0].w) > 1e-4


def test_an_epoch_draws_new_masks_each_step_and_the_same_ones_again_from_the_same_key():
    params, X, Y = small_problem()
    optimizer = optax.sgd(0.0)  # the params stay put, and every mini-batch is the same: only the masks differ
    epoch = ftrain.make_epoch(ftrain.make_train_step(optimizer, "log_likelihood", dropout=0.5), 4)
    state = optimizer.init(params)
    X8, Y8 = jnp.tile(X[:1], (32, 1)), jnp.tile(Y[:1], (32, 1))  # 8 steps of 4 copies of one example
    _, _, losses = epoch(params, state, jax.random.key(0), X8, Y8)
    assert len(set(np.asarray(losses).tolist())) == 8  # other masks each step
    _, _, again = epoch(params, state, jax.random.key(0), X8, Y8)
    assert np.array_equal(losses, again)
    _, _, other = epoch(params, state, jax.random.key(1), X8, Y8)
    assert not np.array_equal(losses, other)


def test_fit_with_dropout_learns_tests_the_whole_network_and_resumes_bitwise(digits, tmp_path):
    params = fbp.init_mlp(jax.random.key(0), [64, 60, 10], output_activation="softmax")
    kw = dict(optimizer=ftrain.make_optimizer("sgd", 0.5), cost="log_likelihood", batch_size=10,
              key=jax.random.key(1), evaluation=digits.validation, dropout=0.5)
    whole = ftrain.fit(params, digits.train, epochs=6, **kw)
    assert whole.history[-1]["evaluation_accuracy"] >= 0.9
    # what fit monitors is the whole network, as evaluate gives it
    ev = ftrain.evaluate(whole.params, *digits.validation, "log_likelihood")
    assert whole.history[-1]["evaluation_accuracy"] == int(ev["correct"]) / len(digits.validation[0])
    ftrain.fit(params, digits.train, epochs=3, checkpoint_dir=str(tmp_path), **kw)
    resumed = ftrain.fit(params, digits.train, epochs=6, checkpoint_dir=str(tmp_path), resume=True, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params)))
    plain = ftrain.fit(params, digits.train, epochs=6, **{**kw, "dropout": 0.0})
    assert fbp.relative_error(plain.params[0].w, whole.params[0].w) > 1e-3
    with pytest.raises(ValueError, match="dropout is the probability"):
        ftrain.fit(params, digits.train, epochs=1, **{**kw, "dropout": 1.0})
    with pytest.raises(ValueError, match=r"drops hidden units, and this network has none \(one layer\)"):
        ftrain.fit(params[1:], (digits.train.X[:, :60], digits.train.Y), epochs=1, **kw)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dp_sgd_clips_each_examples_thinned_gradient(trees_close, reduction):
    params, X, Y = _problem([6, 9, 8, 4], "tanh", "softmax", batch=9)
    masks = fbp.dropout_masks(jax.random.key(5), params, len(X), 0.5)

    def one(x, y, *m):  # example n's gradient: jax.grad of its own thinned cost
        return jax.grad(fbp.loss)(params, x[None], y[None], "log_likelihood", "sum", [mm[None] for mm in m])

    per_example = jax.vmap(one)(X, Y, *masks)  # leaves (B, ...)
    flat = np.concatenate([np.asarray(leaf).reshape(len(X), -1) for leaf in jax.tree.leaves(per_example)], axis=1)
    norms = np.linalg.norm(flat, axis=1)
    clip = float(np.median(norms))
    c = np.minimum(1.0, clip / norms) / (len(X) if reduction == "mean" else 1)
    expect = jax.tree.map(lambda g: np.tensordot(c, np.asarray(g), axes=1), per_example)
    trees_close(fbp.stats.clipped_grad(params, X, Y, "log_likelihood", clip, reduction, masks=masks), expect, 1e-10)
    if reduction == "mean":  # DP-SGD's gradient, and its loss from the same thinned pass
        loss, grads = fbp.stats.dp_value_and_grad("log_likelihood", clip)(params, X, Y, masks)
        trees_close(grads, expect, 1e-10)
        np.testing.assert_allclose(loss, fbp.loss(params, X, Y, "log_likelihood", masks=masks), rtol=1e-13)
        step = ftrain.make_train_step(optax.sgd(0.1), "log_likelihood", dropout=0.5,
                                      grad=fbp.stats.dp_value_and_grad("log_likelihood", clip))
        assert step.takes_key  # DP-SGD's gradient takes the masks: the two go together

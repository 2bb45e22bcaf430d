"""Bad input: a ValueError/TypeError at trace time whose message names the
offending thing and the fix; never a silent broadcast or a NaN."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbp


@pytest.fixture(scope="module")
def net():
    params = fbp.init_mlp(jax.random.key(0), [4, 3, 2], output_activation="softmax", dtype=jnp.float32)
    X = jnp.ones((5, 4), jnp.float32)
    Y = jax.nn.one_hot(jnp.arange(5) % 2, 2, dtype=jnp.float32)
    return params, X, Y


GRAD_FNS = [fbp.batch_backward, fbp.loss, fbp.autodiff_grad, jax.jit(fbp.batch_backward, static_argnums=3)]


@pytest.mark.parametrize("fn", GRAD_FNS, ids=["batch_backward", "loss", "autodiff_grad", "jit"])
def test_inputs_of_wrong_width(net, fn):
    params, X, Y = net
    with pytest.raises(ValueError, match=r"X has shape \(5, 3\).*4 inputs"):
        fn(params, X[:, :3], Y, "log_likelihood")


@pytest.mark.parametrize("fn", GRAD_FNS, ids=["batch_backward", "loss", "autodiff_grad", "jit"])
def test_labels_of_wrong_width(net, fn):
    params, X, Y = net
    with pytest.raises(ValueError, match=r"Y has shape \(5, 3\).*2 units.*one_hot"):
        fn(params, X, jnp.ones((5, 3), jnp.float32), "log_likelihood")


@pytest.mark.parametrize("fn", GRAD_FNS[:3], ids=["batch_backward", "loss", "autodiff_grad"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_an_empty_batch_is_named_not_a_division_by_zero(net, fn, reduction):
    # The mean over no examples is 0/0: batch_backward raised ZeroDivisionError and loss returned NaN.
    params, X, Y = net
    with pytest.raises(ValueError, match=r"^X holds no examples \(shape \(0, 4\)\); a batch needs at least one"):
        fn(params, X[:0], Y[:0], "log_likelihood", reduction=reduction)


def test_an_empty_batch_is_refused_by_every_batch_function(net):
    from fbp import stats, train

    params, X, Y = net
    for fn in (fbp.value_and_batch_backward, fbp.batch_deltas, stats.grad_second_moment, train.evaluate):
        with pytest.raises(ValueError, match="X holds no examples"):
            fn(params, X[:0], Y[:0], "log_likelihood")


def test_integer_labels_say_one_hot(net):
    params, X, _ = net
    with pytest.raises(TypeError, match=r"Y has dtype int.*one_hot\(labels, 2\)"):
        fbp.batch_backward(params, X, jnp.arange(5) % 2, "log_likelihood")


def test_integer_inputs(net):
    params, _, Y = net
    with pytest.raises(TypeError, match=r"X has dtype int.*floating"):
        fbp.batch_backward(params, jnp.ones((5, 4), jnp.int32), Y, "log_likelihood")
    with pytest.raises(TypeError, match=r"x has dtype int"):
        fbp.forward(params, np.ones(4, np.int64))


def test_batch_sizes_that_do_not_pair(net):
    params, X, Y = net
    with pytest.raises(ValueError, match=r"Y has 4 rows but X has 5"):
        fbp.batch_backward(params, X, Y[:4], "log_likelihood")


def test_single_example_shapes(net):
    params, X, Y = net
    with pytest.raises(ValueError, match=r"x has shape \(5, 4\).*\(4,\)"):
        fbp.backward(params, X, Y[0], "log_likelihood")
    with pytest.raises(ValueError, match=r"y has shape \(3,\)"):
        fbp.deltas(params, X[0], jnp.ones(3, jnp.float32), "log_likelihood")
    with pytest.raises(ValueError, match=r"x has shape \(2, 2, 4\)"):
        fbp.forward(params, jnp.ones((2, 2, 4), jnp.float32))


def test_empty_params(net):
    _, X, Y = net
    with pytest.raises(ValueError, match="params is empty"):
        fbp.batch_backward([], X, Y, "quadratic")
    with pytest.raises(ValueError, match="params is empty"):
        fbp.forward([], X)


def test_inconsistent_params(net):
    params, X, Y = net
    bad = [params[0], fbp.Dense(jnp.ones((2, 7), jnp.float32), jnp.ones(2, jnp.float32), "softmax")]
    with pytest.raises(ValueError, match=r"params\[1\] expects 7 inputs.*params\[0\] gives 3 outputs"):
        fbp.batch_backward(bad, X, Y, "quadratic")
    bad_b = [fbp.Dense(params[0].w, jnp.ones(4, jnp.float32), "sigmoid"), params[1]]
    with pytest.raises(ValueError, match=r"params\[0\]\.b has shape \(4,\).*\(3,\)"):
        fbp.forward(bad_b, X)
    with pytest.raises(TypeError, match=r"params\[1\] is a tuple"):
        fbp.forward([params[0], (params[1].w, params[1].b)], X)
    with pytest.raises(TypeError, match="single Dense"):
        fbp.forward(params[0], X)


def test_unknown_names():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"unknown activation 'sigmod'.*Did you mean 'sigmoid'"):
        fbp.init_mlp(key, [2, 2], activation="sigmod")
    with pytest.raises(ValueError, match=r"unknown init 'xavier'.*glorot"):
        fbp.init_mlp(key, [2, 2], init="xavier")
    params = fbp.init_mlp(key, [2, 2])
    with pytest.raises(ValueError, match=r"unknown cost 'crossentropy'.*Did you mean 'cross_entropy'"):
        fbp.batch_backward(params, jnp.ones((1, 2)), jnp.ones((1, 2)), "crossentropy")
    with pytest.raises(ValueError, match=r"unknown activation 'swish'"):
        fbp.forward([fbp.Dense(params[0].w, params[0].b, "swish")], jnp.ones(2))
    with pytest.raises(ValueError, match=r"reduction must be 'mean' or 'sum', got 'avg'"):
        fbp.batch_backward(params, jnp.ones((1, 2)), jnp.ones((1, 2)), "quadratic", "avg")


def test_bad_sizes_and_dtype():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"at least an input and an output.*\[784\]"):
        fbp.init_mlp(key, [784])
    with pytest.raises(ValueError, match=r"positive int, got 0"):
        fbp.init_mlp(key, [3, 0, 2])
    with pytest.raises(TypeError, match=r"floating dtype.*int32"):
        fbp.init_mlp(key, [3, 2], dtype=jnp.int32)
    # A seed where the key goes: JAX's own "invalid PRNG key data … Got 0" named neither the argument nor the fix.
    with pytest.raises(TypeError, match=r"^key must be one PRNG key, such as jax.random.key\(0\); got int 0\.$"):
        fbp.init_mlp(0, [3, 2])
    with pytest.raises(TypeError, match=r"key must be one PRNG key.*shape \(2,\)"):  # split, not one
        fbp.init_mlp(jax.random.split(key), [3, 2])
    assert fbp.init_mlp(jax.random.PRNGKey(0), [3, 2])[0].w.shape == (2, 3)  # a raw uint32[2] key still works


def test_softmax_only_on_the_output_layer():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"params\[0\] uses 'softmax'.*only supported on the output layer"):
        fbp.init_mlp(key, [4, 3, 2], activation="softmax", output_activation="sigmoid")
    with pytest.raises(ValueError, match=r"softmax over a single unit"):
        fbp.init_mlp(key, [4, 1], activation="softmax")


def test_log_costs_need_probability_outputs():
    params = fbp.init_mlp(jax.random.key(0), [3, 2], activation="relu")
    with pytest.raises(ValueError, match=r"cost 'cross_entropy'.*activation is 'relu'.*output_activation='sigmoid'"):
        fbp.batch_backward(params, jnp.ones((1, 3)), jnp.ones((1, 2)), "cross_entropy")


def test_wrong_types_for_cost_and_activation(net):
    params, X, Y = net
    with pytest.raises(TypeError, match=r"cost must be a name.*got 3"):
        fbp.batch_backward(params, X, Y, 3)
    with pytest.raises(TypeError, match=r"activation must be a name"):
        fbp.init_mlp(jax.random.key(0), [2, 2], activation=len)


def test_an_activation_without_a_derivative_is_named_where_the_backward_pass_needs_one(net):
    """A custom fbp.Activation with neither prime nor vjp runs forward, but
    the backward pass says which activation lacks σ' and how to give it,
    not "'NoneType' object is not callable" from inside BP2."""
    params, X, Y = net
    mine = fbp.Activation("mine", jnp.tanh)
    thin = [fbp.Dense(params[0].w, params[0].b, mine), params[1]]
    assert fbp.forward(thin, X[0]).shape == (2,)
    for fn in (fbp.batch_backward, jax.jit(fbp.batch_backward, static_argnums=3)):
        with pytest.raises(TypeError, match=r"activation 'mine' has neither prime .* nor vjp .*prime=lambda z"):
            fn(thin, X, Y, "log_likelihood")


def test_objects_are_accepted_as_well_as_names(net):
    params, X, Y = net
    a = fbp.batch_backward(params, X, Y, fbp.COSTS["log_likelihood"])
    b = fbp.batch_backward(params, X, Y, "log_likelihood")
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)
    p2 = fbp.init_mlp(jax.random.key(0), [4, 3, 2], activation=fbp.ACTIVATIONS["tanh"])
    assert p2[0].activation == "tanh"


def test_compare_grads_refuses_a_negative_sample_count(net):
    params, X, Y = net
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="fd_samples must be an integer ≥ 0"):
            fbp.compare_grads(params, X, Y, "log_likelihood", fd_samples=bad)
    report = fbp.compare_grads(params, X, Y, "log_likelihood", fd_samples=0)
    assert len(report.leaves) == 4 and not any(r.fd_count for r in report.leaves)


def test_finite_differences_refuses_a_step_or_entries_it_cannot_use(net):
    params, X, Y = net  # 23 entries in ravel_pytree(params)
    fd = functools.partial(fbp.finite_differences, params, X, Y, "log_likelihood")
    for eps in (0.0, -1e-3, float("nan"), float("inf")):  # 0 gave NaN quotients, silently
        with pytest.raises(ValueError, match="eps must be a positive finite relative step"):
            fd(eps=eps)
    for n in (0, -3, 2.5):  # 0 still checked one entry per leaf
        with pytest.raises(ValueError, match="n must be a positive int"):
            fd(n=n)
    # JAX clamps an index past the end: the last entry's quotient came back labelled 1000000.
    for bad in ([0, 1_000_000], [23], [-1]):
        with pytest.raises(ValueError, match=r"indices must lie in \[0, 23\): ravel_pytree\(params\) has 23 entries; "
                                             rf"got {bad[-1]}\."):
            fd(indices=bad)
    for bad in ([[1]], [0.5]):
        with pytest.raises(TypeError, match="indices must be a 1-D sequence of ints"):
            fd(indices=bad)
    idx, q = fd(indices=[0, 22])
    assert idx.tolist() == [0, 22] and q.shape == (2,) and np.all(np.isfinite(q))
    idx, q = fd(indices=[])
    assert idx.shape == q.shape == (0,)


def test_per_example_grads_chunk_size_must_be_a_positive_int(net):
    from fbp import stats

    params, X, Y = net
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive int or None"):
            stats.per_example_grads(params, X, Y, "log_likelihood", chunk_size=bad)


def test_counts_must_be_ints_where_training_takes_them(net):
    """A float count (epochs=1.5, a batch size computed as n / 10) was a bare
    TypeError from deep inside range() or a reshape; each is now refused up
    front, naming the argument."""
    import optax

    from fbp import parallel, train

    params, X, Y = net
    fit = functools.partial(train.fit, params, (X, Y), optimizer=optax.sgd(0.1), cost="log_likelihood",
                            key=jax.random.key(0), evaluation=(X, Y))
    for kwargs, name in ((dict(epochs=1.5, batch_size=2), "epochs"), (dict(epochs=-1, batch_size=2), "epochs"),
                         (dict(epochs=1, batch_size=2.0), "batch_size"), (dict(epochs=1, batch_size=True), "batch_size"),
                         (dict(epochs=1, batch_size=2, patience=1.5), "patience"),
                         (dict(epochs=1, batch_size=2, lr_halving=0), "lr_halving"),
                         (dict(epochs=1, batch_size=2, keep_every=0, checkpoint_dir="ck"), "keep_every")):
        with pytest.raises(ValueError, match=rf"^{name} must be (a positive int|an int ≥ 0)"):
            fit(**kwargs)
    with pytest.raises(ValueError, match="keep_every=2 keeps checkpoints, and there are none without a checkpoint_dir"):
        fit(epochs=1, batch_size=2, keep_every=2)
    step = train.make_train_step(optax.sgd(0.1), "log_likelihood")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 2.5"):
        train.make_epoch(step, 2.5)
    with pytest.raises(ValueError, match="unroll must be a positive int, got 0"):
        train.make_epoch(step, 2, unroll=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 2.0"):
        parallel.make_sharded_epoch(step, 2.0, parallel.make_mesh(1))
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match=f"chunk_size must be a positive int, 'auto' or None, got {bad}"):
            train.evaluate(params, X, Y, "log_likelihood", chunk_size=bad)
    # np.int64 counts, as NumPy arithmetic gives them, are ints
    assert len(fit(epochs=np.int64(2), batch_size=np.int64(2)).history) == 2

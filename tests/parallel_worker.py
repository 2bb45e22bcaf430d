"""Run by tests/test_parallel.py in a subprocess with 8 forced host devices
(XLA_FLAGS must be set before jax is imported). Prints one JSON object."""

import json
import re
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import fbp  # noqa: E402
from fbp import data as fdata  # noqa: E402
from fbp import parallel, stats  # noqa: E402
from fbp import train as ftrain  # noqa: E402


def grads():
    rng = np.random.default_rng(0)
    params = fbp.init_mlp(jax.random.key(0), [13, 17, 9, 5], activation="tanh", output_activation="softmax",
                          dtype=jnp.float64)
    X = jnp.asarray(rng.uniform(size=(64, 13)))
    Y = jnp.asarray(np.eye(5)[rng.integers(0, 5, 64)])
    ref = fbp.batch_backward(params, X, Y, "log_likelihood", "mean")
    ref_clip = stats.clipped_grad(params, X, Y, "log_likelihood", 0.5, "sum")
    out = {}
    for n in (1, 2, 4, 8):
        mesh = parallel.make_mesh(n)
        g = parallel.sharded_grad(mesh, fbp.batch_backward, "log_likelihood", "mean")(params, X, Y)
        clip = jax.jit(lambda p, x, y: stats.clipped_grad(p, x, y, "log_likelihood", 0.5, "sum"),
                       in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh), parallel.batch_sharded(mesh)))
        c = clip(params, parallel.shard(mesh, X), parallel.shard(mesh, Y))
        norms = stats.per_example_grad_norms(params, parallel.shard(mesh, X), parallel.shard(mesh, Y), "log_likelihood")
        out[n] = dict(
            grad=max(fbp.relative_error(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref))),
            clipped=max(fbp.relative_error(a, b) for a, b in zip(jax.tree.leaves(c), jax.tree.leaves(ref_clip))),
            norms=fbp.relative_error(norms, stats.per_example_grad_norms(params, X, Y, "log_likelihood")),
            devices=len(g[0].w.sharding.device_set),
        )
    return out


def train():
    jax.config.update("jax_enable_x64", False)
    ds = fdata.digits()
    out = {}
    for n in (1, 8):
        for kind, dropout in (("", 0.0), (" dropout", 0.5), (" conv", 0.0)):
            # with dropout, the masks of the whole mini-batch, drawn as on one device
            if kind == " conv":  # a network with a convolutional layer (fbp.Conv)
                params = fbp.init_convnet(jax.random.key(0), (8, 8), [(6, 3, 2)], [30, 10], output_activation="softmax")
            else:
                params = fbp.init_mlp(jax.random.key(0), [64, 30, 10], output_activation="softmax")
            r = ftrain.fit(params, ds.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=4,
                           batch_size=16, key=jax.random.key(1), evaluation=ds.validation,
                           mesh=parallel.make_mesh(n), dropout=dropout)
            out[f"{n}{kind}"] = dict(
                params=[np.asarray(leaf).tolist() for leaf in jax.tree.leaves(r.params)],
                accuracy=r.history[-1]["evaluation_accuracy"])
    return out


def byte_inputs(scale=255):
    """Byte inputs on 8 devices: the sharded epoch and fit give bitwise what
    the float inputs give (k/255, uint8 codes; or k/256, int8 codes k − 128)."""
    jax.config.update("jax_enable_x64", False)
    rng = np.random.default_rng(0)
    k = rng.integers(0, 256, (96, 12))
    B = k.astype(np.uint8) if scale == 255 else (k - 128).astype(np.int8)
    X = k.astype(np.float32) / np.float32(scale)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 96)]
    mesh = parallel.make_mesh(8)
    params = fbp.init_mlp(jax.random.key(0), [12, 8, 3], output_activation="softmax")
    opt = optax.sgd(0.5)
    epoch = parallel.make_sharded_epoch(ftrain.make_train_step(opt, "log_likelihood"), 16, mesh)

    def run(inputs, epochs):
        p, s = parallel.replicate(mesh, params), parallel.replicate(mesh, opt.init(params))
        for e in range(1, epochs + 1):
            p, s, _ = epoch(p, s, jax.random.fold_in(jax.random.key(1), e), inputs, Y)
        return [np.asarray(leaf) for leaf in jax.tree.leaves(p)]

    floats, from_bytes = run(X, 2), run(B, 2)
    seen, make = [], parallel.make_sharded_epoch

    def spy(*args, **kw):  # the dtype fit hands the sharded epoch
        inner = make(*args, **kw)
        return lambda p, s, key, X, Y: (seen.append(str(X.dtype)), inner(p, s, key, X, Y))[1]

    parallel.make_sharded_epoch = spy
    r = ftrain.fit(params, (X, Y), optimizer=opt, cost="log_likelihood", epochs=2, batch_size=16,
                   key=jax.random.key(1), mesh=mesh)
    parallel.make_sharded_epoch = make
    fitted = [np.asarray(leaf) for leaf in jax.tree.leaves(r.params)]
    return dict(fit_read=seen, epoch_same=all(np.array_equal(a, b) for a, b in zip(floats, from_bytes)),
                fit_same=all(np.array_equal(a, b) for a, b in zip(floats, fitted)),
                trained=not all(np.array_equal(a, np.asarray(b)) for a, b in zip(floats, jax.tree.leaves(params))))


def byte_inputs_256():
    return byte_inputs(scale=256)


def hlo():
    jax.config.update("jax_enable_x64", False)
    mesh = parallel.make_mesh(8)
    params = fbp.init_mlp(jax.random.key(0), [64, 30, 10], output_activation="softmax")
    opt = optax.sgd(0.5)
    epoch = parallel.make_sharded_epoch(ftrain.make_train_step(opt, "log_likelihood"), 32, mesh)
    data = parallel.batch_sharded(mesh, 1)
    Xb = jax.device_put(jnp.zeros((4, 32, 64)), data)
    Yb = jax.device_put(jnp.zeros((4, 32, 10)), data)
    text = epoch.scan.lower(parallel.replicate(mesh, params), parallel.replicate(mesh, opt.init(params)),
                            Xb, Yb).compile().as_text()
    collectives = sorted(set(re.findall(r"\b(all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)\b", text)))
    # any op whose result holds the whole mini-batch of inputs (32 × 64) on one device?
    whole_batch = bool(re.search(r"f32\[(4,)?32,64\]", text))
    per_device = bool(re.search(r"f32\[4,64\]", text))
    return dict(collectives=collectives, whole_batch=whole_batch, per_device=per_device)


def errors():
    out = {}
    try:
        parallel.make_mesh(9)
    except ValueError as e:
        out["too_many"] = str(e)
    try:
        parallel.make_sharded_epoch(lambda *a: a, 12, parallel.make_mesh(8))
    except ValueError as e:
        out["indivisible"] = str(e)
    return out


def progress():
    """The sharded epoch's step reports on 8 devices: in order, bitwise the
    same params as without them; True from a report ends the epoch there on
    every device; an error raised by one is raised by the epoch; and fit's
    on_progress with a mesh, where a KeyboardInterrupt ends the epoch and
    fit keeps the epochs before it."""
    jax.config.update("jax_enable_x64", False)
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(320, 12)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 320)]
    mesh = parallel.make_mesh(8)
    params = fbp.init_mlp(jax.random.key(0), [12, 8, 3], output_activation="softmax")
    opt = optax.sgd(0.5)
    step = ftrain.make_train_step(opt, "log_likelihood")
    args = (parallel.replicate(mesh, params), parallel.replicate(mesh, opt.init(params)), jax.random.key(1), X, Y)
    leaves = lambda tree: [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]  # noqa: E731
    plain = leaves(parallel.make_sharded_epoch(step, 16, mesh)(*args))
    calls = []
    reported = leaves(parallel.make_sharded_epoch(step, 16, mesh, updates=6,
                                                  progress=lambda done, n: calls.append((done, n)))(*args))
    stopped_at = []
    _, _, losses = parallel.make_sharded_epoch(step, 16, mesh, updates=6,
                                               progress=lambda done, n: stopped_at.append(done) or done >= 8)(*args)

    class Gone(Exception):
        pass

    def fails(done, n):
        raise Gone("the terminal went away")

    try:
        parallel.make_sharded_epoch(step, 16, mesh, progress=fails)(*args)
        raised = None
    except Gone as e:
        raised = str(e)

    kw = dict(optimizer=opt, cost="log_likelihood", batch_size=16, key=jax.random.key(1), mesh=mesh)
    one = ftrain.fit(params, (X, Y), epochs=1, **kw)
    ftrain.PROGRESS_SECONDS = 0.0
    fit_calls = []

    def ctrl_c_in_epoch_2(epoch, done, n):
        fit_calls.append((epoch, done, n))
        if epoch == 2 and done >= 8:
            raise KeyboardInterrupt

    try:
        ftrain.fit(params, (X, Y), epochs=3, on_progress=ctrl_c_in_epoch_2, **kw)
        kept = None
    except KeyboardInterrupt as e:
        kept = e.fit_result
    return dict(same=all(np.array_equal(a, b) for a, b in zip(plain, reported)), calls=calls,
                stopped_at=stopped_at, finite=np.isfinite(np.asarray(losses)).tolist(), raised=raised,
                fit_calls=fit_calls, kept_epochs=None if kept is None else kept.epochs_run,
                kept_same=kept is not None and all(np.array_equal(a, b) for a, b in zip(leaves(one.params),
                                                                                        leaves(kept.params))))


def keep_last():
    """fit(drop_last=False) on 8 devices and on the default one, float64:
    the short last mini-batch (5 examples, which do not divide over 8) and a
    training set smaller than one mini-batch (10 examples)."""
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(53, 6))
    Y = np.eye(3)[rng.integers(0, 3, 53)]
    params = fbp.init_mlp(jax.random.key(0), [6, 8, 3], output_activation="softmax", dtype=jnp.float64)
    out = {}
    for what, n, dropout in (("rest", 53, 0.0), ("rest dropout", 53, 0.5), ("small", 10, 0.0)):
        runs = [ftrain.fit(params, (X[:n], Y[:n]), optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=2,
                           batch_size=16, key=jax.random.key(1), dropout=dropout, drop_last=False, mesh=mesh)
                for mesh in (None, parallel.make_mesh(8))]
        out[what] = dict(
            diff=max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                     for a, b in zip(jax.tree.leaves(runs[0].params), jax.tree.leaves(runs[1].params))),
            moved=float(np.max(np.abs(np.asarray(runs[1].params[0].w) - np.asarray(params[0].w)))),
            costs=[[h["train_step_cost"] for h in r.history] for r in runs])
    return out


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]]()))

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
        params = fbp.init_mlp(jax.random.key(0), [64, 30, 10], output_activation="softmax")
        r = ftrain.fit(params, ds.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=4, batch_size=16,
                       key=jax.random.key(1), evaluation=ds.validation, mesh=parallel.make_mesh(n))
        out[n] = dict(params=[np.asarray(leaf).tolist() for leaf in jax.tree.leaves(r.params)],
                      accuracy=r.history[-1]["evaluation_accuracy"])
    return out


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


if __name__ == "__main__":
    print(json.dumps(globals()[sys.argv[1]]()))

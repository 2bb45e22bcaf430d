"""What the training tests share: a small problem, and the command line run
in a subprocess."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import fbp
from fbp import checkpoint as ckpt


def small_problem(dtype=jnp.float64, n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.uniform(size=(n, 6)), dtype)
    Y = jnp.asarray(np.eye(3)[(X[:, 0] + X[:, 1] > 1.0).astype(int) + (X[:, 2] > 0.7)], dtype)
    params = fbp.init_mlp(jax.random.key(seed), [6, 8, 3], output_activation="softmax", dtype=dtype)
    return params, X, Y


def fbp_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fbp", *args], capture_output=True, text=True, **kw)


def bitwise_env() -> dict:
    """This environment with XLA's deterministic GPU ops, for runs compared
    bitwise across processes. On a GPU, XLA's autotuner picks each product's
    algorithm by timing, in each process anew, so a run resumed in a new
    process did not always end bitwise where an uninterrupted one did (an
    H200, jax 0.11.2; README). A CPU ignores the flag."""
    flags = os.environ.get("XLA_FLAGS", "")
    return dict(os.environ, XLA_FLAGS=f"{flags} --xla_gpu_deterministic_ops=true".strip())


def params_of(directory):
    with np.load(ckpt.list_checkpoints(directory)[-1]) as z:
        return [z[k] for k in sorted(z.files) if k.startswith("leaf_")]

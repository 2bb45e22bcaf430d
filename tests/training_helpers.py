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


def compiling_fast(env=None) -> dict:
    """``env`` (this process's environment by default) with XLA's flags that
    compile fast rather than well added to its XLA_FLAGS, as this suite's
    own processes compile (conftest's FBP_TESTS_XLA_FLAGS): for a script a
    test starts for what it computes (an experiment's qualitative result,
    one device against eight), not for how a user's compiled program runs.
    The flags change how XLA's CPU backend builds the program (its fusions,
    LLVM's passes), not the program: its results differ by rounding."""
    env = dict(os.environ if env is None else env)
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), os.environ["FBP_TESTS_XLA_FLAGS"]]))
    return env


def fbp_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "fbp", *args], capture_output=True, text=True, **kw)


def fbp_here(capsys, *args):
    """``fbp ARGS`` run in the test's own process, its output from ``capsys``,
    as ``fbp_cli`` gives it (returncode, stdout, stderr): no start-up, and the
    programs compiled once for all the calls of a test. (64-bit mode is on
    here, for the whole suite; a command that must start with it off needs
    ``fbp_cli``.)"""
    import types

    from fbp.cli import main

    capsys.readouterr()
    try:
        returncode = main(list(args))
    except SystemExit as e:  # argparse refusing a flag exits, as the command does
        returncode = e.code
    out, err = capsys.readouterr()
    return types.SimpleNamespace(returncode=returncode, stdout=out, stderr=err)


def params_of(directory):
    with np.load(ckpt.list_checkpoints(directory)[-1]) as z:
        return [z[k] for k in sorted(z.files) if k.startswith("leaf_")]

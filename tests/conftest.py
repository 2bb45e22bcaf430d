"""x64 on for the whole suite (float32 tests ask for float32 explicitly), and
rank promotion raised, which catches silent broadcasting in outer products.

One persistent compilation cache serves the whole run: this process, xdist's
workers (started after this file is read, so they inherit the environment)
and the `fbp train` subprocesses the tests start. Many of those compile the
same programs (the default epoch on digits, its evaluation); from the second
time on XLA's executable is read back instead of compiled again (two cores,
two pairs of runs taking turns: 7:05 and 7:09 with it, 8:34 and 9:00
without). Programs that took 0.1 s or more to compile are kept: against
0.2 s, that adds (among others) each `fbp train`'s evaluations and its
initial draw, and two more pairs of runs took 6:56 and 6:48 against 7:18
and 7:30 (734 and 731 s of CPU time against 791 and 812). A cached
executable is the one XLA built for the same HLO, options and flags, so
what the tests check does not change; a test that needs XLA itself to run
(one reads what it dumps) drops JAX_COMPILATION_CACHE_DIR from its
subprocess's environment. The directory goes when the run ends. A
JAX_COMPILATION_CACHE_DIR set before pytest starts is used as it is and
kept."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the run's first process (set before jax is imported)
    _cache = tempfile.mkdtemp(prefix="fbp-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.1"  # not the one-off small programs
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# jax writes an entry in place, so a process killed mid-write (the tests
# SIGKILL some) leaves it cut short, and whoever reads it next warns on
# stderr and compiles anew; the processes started from here do not warn,
# so that a test reading their stderr line by line sees only fbp's lines.
# This holds for a cache set before pytest starts too (an empty
# JAX_COMPILATION_CACHE_DIR turns the cache off and needs nothing).
_QUIET = "ignore:Error reading persistent compilation cache entry"
_warnings = os.environ.get("PYTHONWARNINGS", "")
if os.environ["JAX_COMPILATION_CACHE_DIR"] and _QUIET not in _warnings.split(","):
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [_warnings, _QUIET]))

# The pytest processes themselves compile fast rather than well: most of
# their time is compiling (each hypothesis-drawn network is new shapes, so
# new programs), little is running what was compiled. XLA's CPU backend
# then skips LLVM's optimizations and its newer fusion emitters, and hands
# LLVM each program whole rather than cut into up to 32 parts to compile in
# parallel (each part sets up its own target machine and intrinsics, and the
# two cores are taken by the two workers anyway). jaxlib 0.4.36, the floor,
# does not know the fusion emitters' flag, and XLA aborts on a flag it does
# not know, so the first process asks a child whether it starts with each
# set in turn, and the workers inherit the answer. Two gradient tests took
# 66 s with XLA's defaults, 36–41 s without the optimizations and 20 s
# without both, the same checks passing (float64, 1e-10); two others, 29.6,
# 29.1 and 25.6 s of CPU with each program cut into parts, 24.9, 23.9 and
# 22.6 s with it whole (runs taking turns). The flags are read once, when
# the backend starts below, and then taken out of the environment again, so
# that the `fbp train` processes the tests start compile as a user's would.
if "FBP_TESTS_XLA_FLAGS" not in os.environ:
    for _fast in ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
                  " --xla_cpu_parallel_codegen_split_count=1",
                  "--xla_backend_optimization_level=0 --xla_cpu_parallel_codegen_split_count=1"):
        _flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), _fast]))
        _probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], capture_output=True,
                                env=dict(os.environ, XLA_FLAGS=_flags))
        if _probe.returncode == 0:
            break
    else:
        _fast = "--xla_backend_optimization_level=0"
    os.environ["FBP_TESTS_XLA_FLAGS"] = _fast
_xla_flags = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = " ".join(filter(None, [_xla_flags, os.environ["FBP_TESTS_XLA_FLAGS"]]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.devices()  # the backend starts, and reads XLA_FLAGS
if _xla_flags is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _xla_flags

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def assert_trees_close(tree, ref, rtol: float, what: str = "") -> float:
    """Same tree structure, then every leaf within rtol (normwise per leaf:
    max|x − r| ≤ rtol · max|r|). Returns the worst relative difference."""
    import fbp

    assert jax.tree.structure(tree) == jax.tree.structure(ref), (
        f"{what}: tree structures differ:\n{jax.tree.structure(tree)}\n{jax.tree.structure(ref)}"
    )
    worst = 0.0
    for path, (x, r) in zip(
        [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(ref)[0]],
        zip(jax.tree.leaves(tree), jax.tree.leaves(ref)),
    ):
        assert np.shape(x) == np.shape(r), f"{what}{path}: shape {np.shape(x)} vs {np.shape(r)}"
        assert np.all(np.isfinite(np.asarray(r))), f"{what}{path}: the reference is not finite"
        rel = fbp.relative_error(x, r)
        assert rel <= rtol, f"{what}{path}: relative difference {rel:.3e} > {rtol:.1e}"
        worst = max(worst, rel)
    return worst


@pytest.fixture(scope="session")
def trees_close():
    return assert_trees_close


@pytest.fixture(scope="module")
def digits():
    """The bundled digits (fbp.data.digits()), read once per test module."""
    from fbp import data

    return data.digits()

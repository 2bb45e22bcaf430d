"""Data-parallel training on 8 forced host devices (in a subprocess, since the
device count is fixed when jax starts)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)


def run(what):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "parallel_worker.py"), what],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_gradient_equals_single_device():
    out = run("grads")
    assert sorted(out) == ["1", "2", "4", "8"]
    for n, r in out.items():
        assert r["devices"] == int(n)
        assert r["grad"] <= 1e-12, (n, r)
        assert r["clipped"] <= 1e-12, (n, r)
        assert r["norms"] <= 1e-12, (n, r)


def test_eight_devices_train_like_one():
    out = run("train")
    one, eight = out["1"], out["8"]
    for a, b in zip(one["params"], eight["params"]):
        a, b = np.asarray(a), np.asarray(b)
        assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, np.max(np.abs(a)))
    assert one["accuracy"] == pytest.approx(eight["accuracy"], abs=1e-6)


def test_byte_inputs_train_bitwise_like_their_floats_on_eight_devices():
    assert run("byte_inputs") == dict(fit_read=["uint8", "uint8"], epoch_same=True, fit_same=True, trained=True)


def test_compiled_step_all_reduces_and_never_gathers_the_batch():
    out = run("hlo")
    assert out["collectives"] == ["all-reduce"], out
    assert out["per_device"] and not out["whole_batch"], out


def test_clear_errors():
    out = run("errors")
    assert "asked for 9 devices but only 8 exist" in out["too_many"]
    assert "batch size 12 is not divisible by the 8 devices" in out["indivisible"]


@pytest.mark.parametrize("argv,rc,needle", [
    (["--devices", "8", "--batch-size", "16", "--epochs", "2", "--quiet"], 0, "devices=8"),
    (["--devices", "9"], 2, "--devices: asked for 9 devices but only 8 exist"),
    (["--devices", "8", "--batch-size", "10"], 2, "--batch-size: batch size 10 is not divisible by the 8 devices"),
    # no --devices: the defaults must run anywhere, so batch 10 on 8 devices uses 5
    (["--epochs", "1", "--quiet"], 0, "using 5 (pass --devices"),
])
def test_cli_devices(argv, rc, needle):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-m", "fbp", "train", *argv], capture_output=True, text=True, env=env)
    assert proc.returncode == rc, proc.stderr
    assert needle in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr

"""Data-parallel training on 8 forced host devices (in a subprocess, since the
device count is fixed when jax starts)."""

import errno
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from training_helpers import compiling_fast

HERE = os.path.dirname(__file__)


def _cpu_env(devices=None):
    """This environment on the CPU (on a GPU machine too: these tests are of
    the logic, on host devices), with ``devices`` forced host devices, or
    one CPU device for each process of a run; compiling fast, as this
    suite's own processes do (what these tests check is which process says
    and keeps what, and that runs agree bitwise with runs compiled alike)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return compiling_fast(env)


def run(what):
    env = _cpu_env(8)  # one device against eight in the worker's process, both compiled alike
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


@pytest.fixture(scope="module")
def trained_on_one_and_eight():
    return run("train")


@pytest.mark.parametrize("kind", ["", " dropout", " conv"])
def test_eight_devices_train_like_one(trained_on_one_and_eight, kind):
    one, eight = trained_on_one_and_eight["1" + kind], trained_on_one_and_eight["8" + kind]
    for a, b in zip(one["params"], eight["params"]):
        a, b = np.asarray(a), np.asarray(b)
        assert np.max(np.abs(a - b)) <= 1e-5 * max(1.0, np.max(np.abs(a)))
    assert one["accuracy"] == pytest.approx(eight["accuracy"], abs=1e-6)
    if kind == " dropout":  # it did drop units: other params than without
        plain = np.asarray(trained_on_one_and_eight["1"]["params"][0])
        assert np.max(np.abs(np.asarray(one["params"][0]) - plain)) > 1e-3


@pytest.mark.parametrize("what,codes", [("byte_inputs", "uint8"), ("byte_inputs_256", "int8")])
def test_byte_inputs_train_bitwise_like_their_floats_on_eight_devices(what, codes):
    assert run(what) == dict(fit_read=[codes, codes], epoch_same=True, fit_same=True, trained=True)


def test_eight_devices_step_on_the_short_last_mini_batch_like_one():
    """drop_last=False on a mesh: the short last mini-batch, whole on every
    device, steps as on one device (float64, 1e-12), also where it is the
    only one and its 5 or 10 examples do not divide over the 8 devices."""
    out = run("keep_last")
    assert sorted(out) == ["rest", "rest dropout", "small"]
    for what, r in out.items():
        assert r["diff"] <= 1e-12 and r["moved"] > 1e-3, (what, r)
        np.testing.assert_allclose(r["costs"][0], r["costs"][1], rtol=1e-12)


def test_the_sharded_epoch_reports_its_steps_and_ends_where_a_report_says():
    """20 steps in reports of 4 (updates=6 asks for at most 6): each in
    order, the params bitwise those of the epoch without reports; True at
    step 8 skips the last 12 steps on every device (their losses NaN); an
    error from a report is raised by the epoch, not left to hang the other
    devices; fit with a mesh reports to on_progress, and a KeyboardInterrupt
    from it ends epoch 2 there, keeping bitwise the one epoch before it."""
    out = run("progress")
    assert out["same"] and out["calls"] == [[k, 20] for k in (4, 8, 12, 16, 20)]
    assert out["stopped_at"] == [4, 8] and out["finite"] == [True] * 8 + [False] * 12
    assert out["raised"] == "the terminal went away"
    steps = [(e, d) for e, d, n in out["fit_calls"]]
    assert steps == [(1, k) for k in range(1, 21)] + [(2, k) for k in range(1, 9)]  # 20 reports an epoch
    assert out["kept_epochs"] == 1 and out["kept_same"]


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
    proc = subprocess.run([sys.executable, "-m", "fbp", "train", *argv], capture_output=True, text=True, env=_cpu_env(8))
    assert proc.returncode == rc, proc.stderr
    assert needle in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_two(argv, cwd=None) -> list:
    """Two processes of one run on this machine (one CPU device each, gloo
    between them): ``argv(port, process_id)`` is each one's command line."""
    port = _free_port()
    return [subprocess.Popen([sys.executable, *argv(port, i)], cwd=cwd, env=_cpu_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]


def _run_two(argv, cwd=None):
    """``_start_two``'s processes run to their end: [(rc, stdout, stderr)] of
    processes 0 and 1."""
    procs = _start_two(argv, cwd)
    try:
        return [(p.returncode, *out) for p, out in ((p, p.communicate(timeout=300)) for p in procs)]
    finally:
        for p in procs:
            p.kill()


def _fbp_train_as(flags):
    """``argv(port, process_id)`` of fbp train as one of two processes, the same flags for both."""
    return lambda port, i: ["-m", "fbp", "train", "--quiet", *flags, "--coordinator", f"localhost:{port}",
                            "--num-processes", "2", "--process-id", str(i)]


def _two_processes(flags, cwd):
    """fbp train as a run of two processes, the same flags for both; returns
    [(rc, its stdout and stderr)]."""
    return [(rc, out + err) for rc, out, err in _run_two(_fbp_train_as(flags), cwd)]


def test_two_processes_share_one_checkpoint_dir_resume_and_train_like_one(tmp_path):
    """Multi-host, on one machine: process 0 alone locks, writes and reads the
    checkpoints (the others take the state from it), and the files; 2 + 1
    resumed epochs give bitwise the params of 3 uninterrupted epochs on two
    devices in one process; an error on process 0 before training stops both."""
    common = ["--epochs", "2", "--batch-size", "20", "--checkpoint-dir", "run", "--metrics-out", "m.jsonl",
              "--save-params", "net.npz"]
    for rc, out in _two_processes(common, tmp_path):
        assert rc == 0, out
        assert "devices=2" in out and "Traceback" not in out
    assert sorted(os.listdir(tmp_path / "run")) == [".lock", "ckpt-000001.npz", "ckpt-000002.npz"]
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 3  # written once, by process 0

    common[1] = "3"
    both = _two_processes(common + ["--resume"], tmp_path)
    for rc, out in both:
        assert rc == 0, out
        assert "resuming from the checkpoint of epoch 2 in run" in out
    assert "network in net.npz" in both[0][1] and "network in" not in both[1][1]
    assert "; checkpoints in run" in both[0][1] and "; process 0 of the run keeps the checkpoints" in both[1][1]
    assert "metrics in m.jsonl" in both[0][1] and "metrics in" not in both[1][1]
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in lines] == [1, 2, 3, None] and lines[-1]["final"]

    env = _cpu_env(2)
    one = subprocess.run([sys.executable, "-m", "fbp", "train", "--quiet", "--epochs", "3", "--batch-size", "20",
                          "--devices", "2", "--save-params", "one.npz"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two, one = np.load(tmp_path / "net.npz"), np.load(tmp_path / "one.npz")
    weights = [k for k in one.files if k != "header"]
    assert weights and all(np.array_equal(two[k], one[k]) for k in weights)

    (rc0, out0), (rc1, out1) = _two_processes(common, tmp_path)  # no --resume: the directory is taken
    assert rc0 == rc1 == 2
    assert "already holds another run's checkpoints" in out0
    assert "process 0 of the run stopped with an error (see its output); stopping too" in out1
    assert "Traceback" not in out0 + out1


def test_a_checkpoint_that_process_0_cannot_write_stops_every_process_alike(tmp_path):
    outs = _run_two(lambda port, i: [os.path.join(HERE, "multihost_worker.py"), str(port), str(i),
                                     str(tmp_path / "run")])
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs]
    assert [r["process"] for r in results] == [0, 1]
    assert all(r["error"] == "CheckpointWriteError" and r["errno"] == errno.ENOSPC for r in results)
    assert results[0]["message"] == results[1]["message"]
    assert "could not write the checkpoint of epoch 2" in results[1]["message"]
    assert "the checkpoint of epoch 1 is intact" in results[1]["message"]
    assert sorted(os.listdir(tmp_path / "run")) == [".lock", "ckpt-000001.npz"]


def test_fit_called_otherwise_on_some_process_raises_the_same_error_on_every_process(tmp_path):
    outs = _run_two(lambda port, i: [os.path.join(HERE, "multihost_worker.py"), str(port), str(i),
                                     str(tmp_path / "run"), "differ"])
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs]
    assert [r["process"] for r in results] == [0, 1]
    for r in results:
        assert r["error"] == "ValueError"
        assert r["message"] == ("fit was called otherwise on the processes of the run: params on process 1, epochs "
                                "on process 1, key on process 1 differ from process 0's; every process must call "
                                "fit with the same arguments and data.")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_step_reports_in_a_two_process_run_reach_process_0_and_what_it_raises_every_process_raises():
    """Every epoch reports its steps, as process 1's threshold (0 s) asks,
    though process 0's never would: the reports come to process 0's
    on_progress, each of its epochs in order, though the processes' counts
    of reporting runs differ; process 1 gets none, and both end with the
    same cost. An error from process 0's on_progress in epoch 2 is raised
    by fit on both processes once epoch 2 is recorded (none is left
    waiting for the other); a KeyboardInterrupt ends epoch 2 at that report
    on both, which raise it with the one epoch before kept."""
    outs = _run_two(lambda port, i: [os.path.join(HERE, "multihost_worker.py"), str(port), str(i), "-", "progress"])
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs)
    calls = first["reports"]["calls"]
    steps = calls[0][2]
    run = -(-steps // 20)  # 62 steps: reports after 4, 8, ..., 60 and 62
    assert calls == [[e, min(k, steps), steps] for e in (1, 2, 3) for k in range(run, steps + run, run)]
    assert second["reports"]["calls"] == [] and first["reports"]["cost"] == second["reports"]["cost"]
    for what in ("error", "interrupt"):
        assert first[what]["calls"] == calls[:-(-steps // run) + 1]  # to epoch 2's first report, none after it
    assert first["error"]["error"] == second["error"]["error"] == "ValueError"
    assert first["error"]["message"] == second["error"]["message"] == "the bar broke"
    assert first["interrupt"]["error"] == second["interrupt"]["error"] == "KeyboardInterrupt"
    assert first["interrupt"]["kept"] == second["interrupt"]["kept"] == 1


def test_a_callback_that_raises_on_one_process_stops_every_process_alike(tmp_path):
    """fit's callbacks run on each process: one that raises on one process
    only (on_epoch at epoch 2, monitor at epoch 1, stop giving an int,
    on_resume) ends fit on both, there: that process raises its own error,
    the other a RaisedElsewhere naming the process and the error, where
    it used to wait in the next collective; a reason to stop given on one
    process stops both after the same epoch."""
    outs = _run_two(lambda port, i: [os.path.join(HERE, "multihost_worker.py"), str(port), str(i),
                                     str(tmp_path / "run"), "callbacks"])
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for _, out, _ in outs)
    assert second["on_epoch"] == dict(error="OSError", message="[Errno 28] No space left on device", seen=[1, 2])
    assert first["on_epoch"] == dict(error="RaisedElsewhere", process=1, seen=[1, 2], message=(
        "process 1 of the run stopped: its on_epoch raised OSError: [Errno 28] No space left on device"))
    assert first["monitor"] == dict(error="ValueError", message="the monitor's numbers are off", seen=[1])
    assert second["monitor"] == dict(error="RaisedElsewhere", process=0, seen=[1], message=(
        "process 0 of the run stopped: its monitor raised ValueError: the monitor's numbers are off"))
    assert second["stop"]["error"] == "TypeError"
    assert first["stop"]["message"] == ("process 1 of the run stopped: its stop raised TypeError: "
                                        + second["stop"]["message"])
    assert first["reason"] == second["reason"] == dict(epochs=2, stop_reason="enough", seen=[1, 2])
    assert second["on_resume"]["error"] == "IndexError"
    assert first["on_resume"]["message"] == "process 1 of the run stopped: its on_resume raised IndexError: " \
                                            "list index out of range"


def test_a_full_metrics_disk_on_process_0_stops_every_process_with_one_line(tmp_path):
    """fbp train as two processes, process 0's --metrics-out on a full disk
    (/dev/full): both end with status 1 after epoch 1, each saying why in one
    line, where both used to wait until killed."""
    (rc0, out0), (rc1, out1) = _two_processes(["--epochs", "3", "--batch-size", "20", "--metrics-out", "/dev/full",
                                                "--checkpoint-dir", "run"], tmp_path)
    assert rc0 == rc1 == 1, out0 + out1
    assert ("fbp train: error: could not write to --metrics-out /dev/full (No space left on device); the checkpoint "
            "of epoch 1 is in run: add --resume to the same command on every process to go on") in out0
    assert ("fbp train: error: process 0 of the run stopped: its on_epoch raised MetricsWriteError: could not write "
            "to --metrics-out /dev/full (No space left on device); process 0 of the run keeps its checkpoints") in out1
    assert "Traceback" not in out0 + out1


def _until_checkpoints(procs, run_dir, n: int) -> None:
    """Wait (2 minutes at most) until process 0 of ``procs`` has written
    ``n`` checkpoints into ``run_dir``, both processes still running."""
    import time

    from fbp import checkpoint as ckpt

    deadline = time.time() + 120
    while time.time() < deadline and len(ckpt.list_checkpoints(run_dir)) < n:
        assert procs[0].poll() is None and procs[1].poll() is None, procs[0].communicate()
        time.sleep(0.02)


def test_a_process_killed_mid_run_stops_the_others_at_once_and_the_run_resumes(tmp_path):
    """kill -9 of process 1 mid-run: process 0's next collective fails (in a
    step or in sending a checkpoint's result), and it says so and what is kept
    in one line and leaves at once (jax's own exit would wait out its 100 s
    heartbeat timeout, then abort with a stack trace); the two resume from
    process 0's newest checkpoint."""
    import time

    from fbp import checkpoint as ckpt

    flags = ["--epochs", "1000", "--batch-size", "20", "--checkpoint-dir", "run"]
    procs = _start_two(_fbp_train_as(flags), tmp_path)
    try:
        _until_checkpoints(procs, tmp_path / "run", 2)
        procs[1].kill()
        killed = time.monotonic()
        out, err = procs[0].communicate(timeout=90)
        took = time.monotonic() - killed
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode == 1, err[-3000:]
    assert took < 30, f"process 0 took {took:.0f} s to stop"
    epoch = ckpt.newest_epoch(str(tmp_path / "run"))
    assert epoch is not None and epoch < 1000
    line = err.strip().splitlines()[-1]
    assert line.startswith("fbp train: error: the run stopped: ")
    assert line.endswith(f"(another process of the run has ended, or cannot be reached); the checkpoint of epoch "
                         f"{epoch} is in run: add --resume to the same command on every process to go on")
    assert "Traceback" not in err and "Check failure" not in err

    flags[1] = str(epoch + 1)
    for rc, out in _two_processes(flags + ["--resume"], tmp_path):
        assert rc == 0, out
        assert f"resuming from the checkpoint of epoch {epoch} in run" in out
    assert ckpt.newest_epoch(str(tmp_path / "run")) == epoch + 1


def test_sigterm_to_one_process_stops_every_process_after_the_same_epoch_which_is_kept(tmp_path):
    """A scheduler's SIGTERM to process 1 alone: the processes agree after
    each epoch (fit's stop, one all-gather), so both finish the epoch that
    process 1 names, process 0 checkpoints it, and both test it and exit
    with 143."""
    from fbp import checkpoint as ckpt

    flags = ["--epochs", "1000", "--batch-size", "20", "--checkpoint-dir", "run"]
    procs = _start_two(_fbp_train_as(flags), tmp_path)
    try:
        _until_checkpoints(procs, tmp_path / "run", 1)
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    (out0, err0), (out1, err1) = outs
    assert [p.returncode for p in procs] == [143, 143], err0[-2000:] + err1[-2000:]
    note = re.search(r"fbp train: SIGTERM: stopping when epoch (\d+) ends, which is kept", err1)
    assert note, err1
    epoch = int(note.group(1))
    assert ckpt.newest_epoch(str(tmp_path / "run")) == epoch < 1000
    for out in (out0, out1):
        assert re.search(rf"^done: {epoch} epochs? in .* \(params of epoch {epoch}", out, re.M), out
    assert err0.strip().splitlines()[-1] == (f"fbp train: terminated after epoch {epoch}; the checkpoint of epoch "
                                             f"{epoch} is in run: add --resume to the same command on every "
                                             f"process to go on")
    assert err1.strip().splitlines()[-1] == (f"fbp train: terminated after epoch {epoch}; process 0 of the run "
                                             f"keeps its checkpoints")
    assert "Traceback" not in err0 + err1


def _fbp_train_alone(flags, process_id):
    """One process of a two-process run, started alone: [rc, stderr, seconds]."""
    import time

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fbp", "train", "--quiet", "--epochs", "1", *flags,
                           "--num-processes", "2", "--process-id", str(process_id)],
                          capture_output=True, text=True, env=_cpu_env(), timeout=120)
    return proc.returncode, proc.stderr, time.monotonic() - start


def test_a_taken_port_or_an_unknown_host_is_a_one_line_error_before_joining():
    """jax.distributed.initialize dies of a segmentation fault when process 0's
    port is taken, and waits out its timeout for a host that does not
    resolve; both are refused before it is called."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, err, _ = _fbp_train_alone(["--coordinator", f"localhost:{port}"], 0)
    assert rc == 2, err[-3000:]
    assert err.strip().splitlines() == [f"fbp train: error: --coordinator localhost:{port}: port {port} is in use "
                                        f"on this machine, where process 0 serves the run; give every process a "
                                        f"free port, or end what holds it"]

    rc, err, _ = _fbp_train_alone(["--coordinator", "no-such-host.invalid:1234"], 1)
    assert rc == 2, err[-3000:]
    assert err.startswith("fbp train: error: --coordinator no-such-host.invalid:1234: the host name "
                          "'no-such-host.invalid' does not resolve (") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("process_id,why", [
    (1, "nothing answered there in 2 s (--join-timeout): start process 0 (--process-id 0) on that host with this "
        "--coordinator, or correct the address"),
    (0, "not all 2 processes of the run joined in 2 s (--join-timeout): start each of --process-id 0 to 1 with "
        "this --coordinator and --num-processes 2"),
])
def test_a_run_that_never_gathers_ends_at_the_join_timeout_with_one_line(process_id, why):
    """Process 1 with no process 0 to answer, and process 0 with no process 1
    to join it: each waits --join-timeout, says what it waited for, and
    exits with status 1 (jax's own wait is twice its timeout, then an abort
    with a C++ stack trace)."""
    port = _free_port()
    rc, err, took = _fbp_train_alone(["--coordinator", f"localhost:{port}", "--join-timeout", "2"], process_id)
    assert rc == 1, err[-3000:]
    assert err.strip().splitlines() == [
        f"fbp train: process {process_id} of 2 waiting for the run to gather at localhost:{port} (up to 2 s, "
        f"--join-timeout)",
        f"fbp train: error: --coordinator localhost:{port}: {why}"]
    assert took < 60


def test_a_process_given_another_num_processes_stops_the_run_with_one_line():
    """jax joins a process to process 0's run whatever --num-processes it was
    given; fbp refuses it, and process 0 stops with it before training."""
    def argv(port, i):
        n = "3" if i == 1 else "2"
        return ["-m", "fbp", "train", "--quiet", "--epochs", "1", "--coordinator", f"localhost:{port}",
                "--num-processes", n, "--process-id", str(i), "--join-timeout", "60"]

    (rc0, out0, err0), (rc1, _, err1) = _run_two(argv)
    assert rc1 == 2, err1[-3000:]
    assert err1.strip().splitlines()[-1].startswith("fbp train: error: --num-processes 3, but the run that process "
                                                    "0 serves at localhost:")
    assert err1.strip().endswith("has 2 processes: give every process the same --num-processes")
    assert rc0 == 2, err0[-3000:]
    assert err0.strip().splitlines()[-1] == ("fbp train: error: process 1 of the run stopped with an error (see its "
                                             "output); stopping too")
    assert "epoch   1" not in out0 + err0


def test_processes_started_with_other_settings_or_data_are_refused_before_training(tmp_path):
    """Another --seed would train other params on each process without a
    word, other data likewise; each process names what differs, and none
    trains."""
    from fbp import data as fdata

    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (60, 4, 4)),
              "train-labels-idx1-ubyte": np.arange(60) % 3,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (12, 4, 4)),
              "t10k-labels-idx1-ubyte": np.arange(12) % 3}
    for d in "ab":
        (tmp_path / d).mkdir()
        for name, arr in arrays.items():
            if d == "b" and name.startswith("t10k-images"):
                arr = arr.copy()
                arr[5, 1, 2] ^= 1  # one bit of one test image
            fdata.write_idx(str(tmp_path / d / name), arr)

    def argv(port, i):
        return ["-m", "fbp", "train", "--quiet", "--data", "idx", "--data-dir", str(tmp_path / "ab"[i]),
                "--validation", "10", "--epochs", "1", "--seed", str(i), "--coordinator", f"localhost:{port}",
                "--num-processes", "2", "--process-id", str(i)]

    for rc, out, err in _run_two(argv):
        assert rc == 2, err[-3000:]
        assert err.strip().splitlines()[-1] == (
            "fbp train: error: the processes of the run were not started alike: --seed on process 1, the data on "
            "process 1 differ from process 0's; give every process the same command (only --process-id differs) "
            "and the same data")
        assert "epoch   1" not in out + err

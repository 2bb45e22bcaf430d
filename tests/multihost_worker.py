"""One process of a two-process run of ``fit`` on this machine (started by
tests/test_parallel.py as ``multihost_worker.py PORT PROCESS_ID DIR [CASE]``).
CASE ``disk-full`` (the default): process 0's disk fills at epoch 2, and
every process must raise the same CheckpointWriteError, none wait for the
others. CASE ``differ``: process 1 calls fit with other params, key and
epochs, and every process must raise the same ValueError before training.
CASE ``progress``: three fits whose every epoch reports its steps to
on_progress (process 1's threshold is 0 s, process 0's never met), with
process 1's count of reporting runs ahead of process 0's: one plain, and
two whose on_progress raises ValueError or KeyboardInterrupt at epoch 2's
first report. CASE ``callbacks``: fits whose on_epoch, monitor, stop or
on_resume raises (or, for stop, gives a reason) on one process only, and
which must end alike on both: that process raises its own error, the
other a RaisedElsewhere naming it.
Prints one JSON object."""

import errno
import json
import sys

import jax

port, pid, run_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
case = sys.argv[4] if len(sys.argv) > 4 else "disk-full"
if jax.config.values.get("jax_cpu_collectives_implementation", "gloo") in (None, "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # jax 0.4.36: none by default
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
import optax  # noqa: E402

import fbp  # noqa: E402
from fbp import checkpoint as ckpt  # noqa: E402
from fbp import data as fdata  # noqa: E402
from fbp import parallel  # noqa: E402
from fbp import train as ftrain  # noqa: E402

save = ckpt.save


def full_at_epoch_2(directory, epoch, *args, **kw):
    if epoch == 2:
        raise OSError(errno.ENOSPC, "No space left on device")
    return save(directory, epoch, *args, **kw)


ckpt.save = full_at_epoch_2 if pid == 0 else None  # the others must not write at all
ds = fdata.digits()
other = case == "differ" and pid == 1
params = fbp.init_mlp(jax.random.key(5 if other else 0), [64, 16, 10], output_activation="softmax")
out = {"process": jax.process_index()}
if case == "progress":
    ftrain.PROGRESS_SECONDS = 1e9 if pid == 0 else 0.0
    for _ in range(3 * pid):
        next(ftrain._runs)
    for what in ("reports", "error", "interrupt"):
        calls = []

        def on_progress(epoch, done, steps):
            calls.append((epoch, done, steps))
            if epoch == 2 and what != "reports":
                raise KeyboardInterrupt if what == "interrupt" else ValueError("the bar broke")

        try:
            r = ftrain.fit(params, (ds.train.X, ds.train.Y), optimizer=optax.sgd(0.5), cost="log_likelihood",
                           epochs=3, batch_size=20, key=jax.random.key(1), mesh=parallel.make_mesh(2),
                           on_progress=on_progress)
            out[what] = dict(cost=r.history[-1]["train_step_cost"])
        except ValueError as e:
            out[what] = dict(error=type(e).__name__, message=str(e))
        except KeyboardInterrupt as e:
            out[what] = dict(error="KeyboardInterrupt", kept=e.fit_result.epochs_run)
        out[what].update(calls=calls)
    print(json.dumps(out), flush=True)
    sys.exit(0)
if case == "callbacks":
    from fbp import multihost

    def on_epoch(record):  # process 1's disk fills at epoch 2
        seen.append(record["epoch"])
        if record["epoch"] == 2 and pid == 1:
            raise OSError(28, "No space left on device")

    def monitor(params):  # off on process 0 at epoch 1
        seen.append(len(seen) + 1)
        if pid == 0:
            raise ValueError("the monitor's numbers are off")
        return {"own": 1.0}

    fits = {"on_epoch": dict(on_epoch=on_epoch), "monitor": dict(monitor=monitor),
            "stop": dict(stop=lambda: 5 if pid == 1 else None),
            "reason": dict(stop=lambda: "enough" if pid == 1 and len(seen) >= 2 else None,
                           on_epoch=lambda record: seen.append(record["epoch"])),
            "on_resume": dict(checkpoint_dir=run_dir, resume=True, on_resume=lambda history: [None][pid])}
    sgd = optax.sgd(0.5)

    def fit(**callbacks):
        return ftrain.fit(params, (ds.train.X, ds.train.Y), optimizer=sgd, cost="log_likelihood",
                          **{"epochs": 3, **callbacks}, batch_size=20, key=jax.random.key(1),
                          mesh=parallel.make_mesh(2))
    fit(epochs=1, checkpoint_dir=run_dir)  # for on_resume's fit to resume
    for what, callbacks in fits.items():
        seen = []
        try:
            r = fit(**callbacks)
            out[what] = dict(epochs=r.epochs_run, stop_reason=r.stop_reason)
        except multihost.RaisedElsewhere as e:
            out[what] = dict(error="RaisedElsewhere", process=e.process, message=str(e))
        except Exception as e:  # noqa: BLE001 - the test compares what each process raised
            out[what] = dict(error=type(e).__name__, message=str(e))
        out[what].update(seen=seen)
    print(json.dumps(out), flush=True)
    sys.exit(0)
try:
    ftrain.fit(params, (ds.train.X, ds.train.Y), optimizer=optax.sgd(0.5), cost="log_likelihood",
               epochs=4 if other else 3, batch_size=20, key=jax.random.key(2 if other else 1),
               evaluation=(ds.validation.X, ds.validation.Y), checkpoint_dir=run_dir, mesh=parallel.make_mesh(2))
    out.update(error=None)
except ckpt.CheckpointWriteError as e:
    out.update(error=type(e).__name__, errno=e.errno, message=e.strerror)
except ValueError as e:
    out.update(error=type(e).__name__, message=str(e))
print(json.dumps(out), flush=True)

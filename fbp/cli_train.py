"""``fbp train``: the flags checked, the data loaded, the network trained by
``fbp.train.fit``, tested and reported (``fbp.cli`` parses the flags and
calls ``cmd_train``). What it shows and writes as it goes is
``fbp.cli_report``; how Ctrl-C and SIGTERM stop it, ``fbp.cli_signals``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from fbp.cli import StdoutWriteError, _cost_pairing, _data_dir_problem, _validation_size_problem, make_network
from fbp.cli_args import conv_text, versions
from fbp.cli_report import MetricsWriteError, Report, device_kind, open_metrics
from fbp.cli_signals import SIGNAL_STATUS, Stopping, Terminated, in_a_thread
from fbp.data import Dataset

if TYPE_CHECKING:  # for the annotations; the code imports jax inside the functions that use it
    import jax
    from jax.sharding import Mesh


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"  # what --deterministic adds to XLA_FLAGS


def _deterministic_xla() -> None:
    """--deterministic: add XLA's flag for deterministic GPU operations to
    XLA_FLAGS, which XLA reads when jax starts its backend in this process.

    On a GPU, XLA's autotuner picks each matrix product's algorithm by
    timing it, in each process anew, so a run resumed in a new process may
    end off (by up to 3.7e-6) from an uninterrupted one: on an H200 (jax
    0.11.2), one of two such tests failed under XLA's defaults and both
    passed with this flag. A CPU is deterministic already and ignores it.
    Refused when jax's backend has started in this process already (fbp's
    ``main`` called from a script that has computed something), since XLA
    would then ignore the flag without a word."""
    import os

    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    if DETERMINISTIC_XLA_FLAG in flags.split():
        return
    if getattr(xla_bridge, "backends_are_initialized", lambda: False)():
        raise _refuse(f"--deterministic: jax has started its backend in this process already, so XLA would ignore "
                      f"the flag; set XLA_FLAGS={DETERMINISTIC_XLA_FLAG} before Python starts instead")
    os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_XLA_FLAG}".strip()


def _multi_host_problem(coordinator, num_processes, process_id) -> Optional[str]:
    """What is wrong with the multi-host flags, or None."""
    if None in (coordinator, num_processes, process_id):
        return ("--coordinator, --num-processes and --process-id go together: give all three for a multi-host "
                "run, or none")
    host, colon, port = coordinator.rpartition(":")
    if not (colon and host and port.isdigit()):
        return f"--coordinator: expected HOST:PORT of process 0, like host0:1234; got {coordinator!r}"
    if not 0 < int(port) < 65536:
        return f"--coordinator {coordinator}: the port must be 1 to 65535"
    if process_id >= num_processes:
        return (f"--process-id {process_id} is not below --num-processes {num_processes}: the processes are "
                f"numbered 0 to {num_processes - 1}")
    return None


def _first_line(e: BaseException) -> str:
    """An error's message, first line only (its type's name when it has none)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _xla_status(e: BaseException) -> Optional[str]:
    """The first line of an error raised by the XLA runtime ("UNKNOWN: Gloo
    all-reduce failed: ..."): a JaxRuntimeError, or a ValueError carrying the
    runtime's status code first, as some jax calls raise it; else None."""
    import re

    import jax

    first = _first_line(e)
    if isinstance(e, jax.errors.JaxRuntimeError) or (type(e) is ValueError and re.match(r"[A-Z_]+: ", first)):
        return first
    return None


# What every process of a multi-host run must be given alike: all the flags
# but --process-id, --join-timeout, --quiet and the files only process 0
# writes (--checkpoint-dir counts only as given or not: the others never read
# it), and the data itself (each host may keep it in its own --data-dir):
# each compared by a CRC-32 (fbp.multihost.fingerprint; 0.1 s for the 220 MB of
# Fashion-MNIST's floats).
# Processes that differ would train different things without a word (another
# --seed or --init: other params on each), or leave the others waiting in a
# collective (another --epochs or --patience).
SHARED_SETTINGS = ("--data", "--validation", "--sizes", "--conv", "--activation", "--output-activation", "--cost",
                   "--init", "--optimizer", "--momentum", "--lr", "--lr-halving", "--l2", "--l1", "--dropout",
                   "--expand", "--batch-size", "--keep-last-batch", "--epochs", "--seed", "--patience",
                   "--restore-best", "--monitor-training", "--monitor-deltas", "--monitor-noise-scale",
                   "--checkpoint-dir", "--resume", "--dp-clip", "--dp-noise", "--devices", "--dtype", "--deterministic",
                   "data")


def _others_failed(failed: bool, settings: Optional[dict] = None):
    """Multi-host: every process says whether it failed before training, and
    all learn which did (one all-gather, called once by each process):
    returns ``(failed, differ)``, the processes that failed, and with
    ``settings`` (every name of SHARED_SETTINGS, given by a process that did
    not fail; the same all-gather carries a CRC-32 of each) each setting some
    process was given otherwise than process 0, mapped to those processes."""
    import numpy as np

    from fbp import multihost

    codes = [0] * len(SHARED_SETTINGS)
    if settings is not None:
        codes = [multihost.fingerprint(settings[name]) for name in SHARED_SETTINGS]
    mine = np.array([int(failed), *codes], np.uint32).view(np.int32)
    try:
        rows = np.asarray(multihost.allgather(mine)).reshape(-1, len(mine))
    except multihost.SharedDeviceError as e:  # the run's first collective: no process can tell the others anything
        raise _Exit(f"fbp train: error: {e}", 1) from None
    failed_ids = [int(i) for i in np.flatnonzero(rows[:, 0])]
    return failed_ids, ({} if failed_ids or settings is None else multihost.differing(rows[:, 1:], SHARED_SETTINGS))


def _differ_message(differ: dict) -> str:
    """The one-line error for processes given other settings than process 0."""
    from fbp import multihost

    named = {("the data" if name == "data" else name): ids for name, ids in differ.items()}
    return (f"the processes of the run were not started alike: {multihost.differ_text(named)} from process 0's; give "
            f"every process the same command (only --process-id differs) and the same data")


class _Exit(Exception):
    """fbp train ends before its summary: ``line`` goes to stderr, and the
    exit status is ``status``."""

    def __init__(self, line: str, status: int):
        super().__init__(line)
        self.line, self.status = line, status


def _refuse(msg: str, status: int = 2) -> _Exit:
    """The one-line error of fbp train (status 2: a flag or setting refused)."""
    return _Exit(f"fbp train: error: {msg}", status)


def cmd_train(args) -> int:
    """fbp train: the flags checked, the data loaded, the network trained by
    ``fbp.train.fit``, tested, and reported.

    An existing --checkpoint-dir is held from the start: a second run there
    is refused before it opens --metrics-out, which a --resume would
    otherwise truncate under the first run. A directory made by this run is
    held by fit from its first read. In a multi-host run process 0 alone
    holds it, once the processes have joined; a process that refuses its
    flags after joining tells the others, which stop at the same point
    rather than wait in a collective."""
    import jax

    joined = agreed = False  # a multi-host run's processes: joined; agreed to train
    report = None
    made = _missing(args)  # what this run's files would be the first to make
    with contextlib.ExitStack() as held:
        try:
            if args.deterministic:  # before anything starts jax's backend
                _deterministic_xla()
            if args.coordinator is None:
                _lock_checkpoint_dir(args, held)
            joined = _join_if_asked(args)
            if joined and jax.process_count() != args.num_processes:  # jax goes on with process 0's count
                raise _refuse(f"--num-processes {args.num_processes}, but the run that process 0 serves at "
                              f"{args.coordinator} has {jax.process_count()} processes: give every process the "
                              f"same --num-processes")
            writer = jax.process_index() == 0
            if joined and writer:
                _lock_checkpoint_dir(args, held)
            if not writer:  # process 0 writes the run's files, the others train beside it
                args.metrics_out = args.save_params = None
            run = _setup(args, writer)
            try:
                metrics = open_metrics(args, run.resuming)
            except OSError as e:
                raise _refuse(f"--metrics-out {args.metrics_out} cannot be written ({e.strerror or e}); give a "
                              f"writable path") from None
            report = Report(args, run, metrics)
            if writer and args.resume and not run.resuming:
                from fbp import checkpoint as fckpt

                what = "readable checkpoint" if fckpt.list_checkpoints(args.checkpoint_dir) else "checkpoint"
                print(f"--resume: no {what} in {args.checkpoint_dir} yet; starting at epoch 1", flush=True)
            if joined:
                agreed = True  # the all-gather below is the last one before training: no more to tell
                _agree(args, run)
            # Ctrl-C and SIGTERM, to the run's end; the step reports come to process 0 of a run
            signals = Stopping(report, within_epochs=not joined or jax.process_index() == 0)
            stopping = signals if held.enter_context(signals.handling_signals()) else None
            result, seconds = _fit(args, run, report, writer, joined, stopping)
        except _Exit as e:
            if report is not None:
                report.close()
            _tidy(made)
            print(e.line, file=sys.stderr)
            if joined and not agreed:
                try:
                    _others_failed(failed=True)
                except _Exit as e2:
                    print(e2.line, file=sys.stderr)
            return e.status
        return _finish(args, run, report, result, seconds, writer, joined)


def _missing(args) -> list:
    """For --checkpoint-dir and --metrics-out, what this run would be the first to make
    (``checkpoint.missing_paths``); none in a multi-host run, where another process may make them meanwhile."""
    from fbp import checkpoint as fckpt

    if args.coordinator is not None:
        return []
    return [fckpt.missing_paths(path) for path in (args.checkpoint_dir, args.metrics_out) if path]


def _tidy(made: list) -> None:
    """What a refused or stopped run made of ``_missing``'s paths and left empty, removed: the run's directory
    with nothing in it, an empty --metrics-out and the directories made for them. What holds anything stays."""
    from fbp import checkpoint as fckpt

    for paths in made:
        fckpt.remove_if_empty(paths)


def _lock_checkpoint_dir(args, held: contextlib.ExitStack) -> None:
    """Hold an existing --checkpoint-dir in ``held``; refused while another run holds it."""
    import os

    from fbp import checkpoint as fckpt

    if args.checkpoint_dir and os.path.isdir(args.checkpoint_dir):
        try:
            held.enter_context(fckpt.lock_dir(args.checkpoint_dir))
        except fckpt.CheckpointDirInUse as e:
            raise _refuse(f"--checkpoint-dir: {e}") from None
        except OSError:  # a directory that cannot be written: _setup says so, naming the flag
            pass


def _join_if_asked(args) -> bool:
    """Join the multi-host run the flags name; False when they name none."""
    from fbp import multihost

    multi_host = (args.coordinator, args.num_processes, args.process_id)
    if args.join_timeout is not None and args.coordinator is None:
        raise _refuse("--join-timeout bounds the wait of a multi-host run; it does nothing without --coordinator "
                      "(drop it, or add --coordinator, --num-processes and --process-id)")
    if all(v is None for v in multi_host):
        return False
    problem = _multi_host_problem(*multi_host) or multihost.address_problem(args.coordinator, args.process_id)
    if problem:
        raise _refuse(problem)
    try:
        multihost.join(args.coordinator, args.num_processes, args.process_id,
                       args.join_timeout or multihost.JOIN_TIMEOUT)
    except (RuntimeError, ValueError) as e:  # the coordinator cannot be reached, say
        raise _refuse(f"--coordinator {args.coordinator}: could not join the run ({_first_line(e)})", 1) from None
    return True


@dataclasses.dataclass
class _Run:
    """What fbp train made of its flags: everything ``fit`` is given."""

    ds: Dataset
    sizes: list
    momentum: Optional[float]  # μ of --optimizer momentum; None for the others
    n_devices: int
    mesh: Optional[Mesh]  # None on one device
    dtype: Any  # jnp.float32 or jnp.float64
    params: list
    optimizer: Any  # an optax.GradientTransformation
    grad: Union[str, Callable]  # "hand", or DP-SGD's clipped gradient
    key: jax.Array  # the PRNG key fit shuffles with
    config: dict  # what a checkpoint's tree does not show; --resume refuses other values
    resuming: bool  # --resume, and there is a checkpoint to go on from

    @property
    def eval_split(self) -> str:
        return "validation" if len(self.ds.validation) else "test"

    def arrays(self, split):
        import jax.numpy as jnp

        return jnp.asarray(split.X, self.dtype), jnp.asarray(split.Y, self.dtype)


def _setup(args, writer: bool) -> _Run:
    """The flags checked (those wrong whatever the data first, before it is
    loaded), the data loaded, the network and its optimizer made."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from fbp import checkpoint as fckpt

    momentum = _check_flags(args, writer)
    ds, sizes = _load(args)
    n_devices, mesh = _devices(args)
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params, optimizer, grad = _network(args, k_init, sizes, dtype, momentum, n_train=len(ds.train))
    config = {
        "--data": args.data, "--validation": len(ds.validation), "--sizes": sizes,
        "--activation": args.activation, "--output-activation": args.output_activation, "--cost": args.cost,
        "--optimizer": args.optimizer, "--momentum": momentum, "--lr": args.lr, "--lr-halving": args.lr_halving,
        "--l2": args.l2, "--batch-size": args.batch_size, "--seed": args.seed, "--dtype": args.dtype,
        "--dp-clip": args.dp_clip, "--dp-noise": args.dp_noise,
    }  # --epochs may grow; --init and the devices do not change what is being trained
    for flag, value in (("--l1", args.l1), ("--dropout", args.dropout), ("--expand", args.expand),
                        ("--conv", args.conv and conv_text(args.conv)), ("--keep-last-batch", args.keep_last_batch)):
        if value:  # only then, so that the checkpoints of runs from before these flags resume
            config[flag] = value
    resuming = writer and args.resume and fckpt.newest_epoch(args.checkpoint_dir) is not None
    return _Run(ds, sizes, momentum, n_devices, mesh, dtype, params, optimizer, grad, k_train, config, resuming)


def _check_flags(args, writer: bool) -> Optional[float]:
    """Refuse the flags that are wrong whatever the data; fill in --lr's
    default. Returns μ for --optimizer momentum, else None."""
    import os

    from fbp import checkpoint as fckpt
    from fbp import train as ftrain

    problem = _data_dir_problem(args.data, args.data_dir)
    if problem:
        raise _refuse(problem)
    try:
        if writer or not args.checkpoint_dir:  # the others never touch the directory
            ftrain.check_checkpoint_dir(args.checkpoint_dir, args.resume, flags=True)
    except ValueError as e:
        raise _refuse(str(e) if args.checkpoint_dir else "--resume needs --checkpoint-dir") from None
    if args.keep_every is not None and not args.checkpoint_dir:
        raise _refuse(f"--keep-every {args.keep_every} keeps checkpoints: give --checkpoint-dir too")
    if args.momentum is not None and args.optimizer != "momentum":
        raise _refuse(f"--momentum is the coefficient of --optimizer momentum; it does nothing with --optimizer "
                      f"{args.optimizer} (drop it, or add --optimizer momentum)")
    momentum = None
    if args.optimizer == "momentum":
        momentum = ftrain.DEFAULT_MOMENTUM if args.momentum is None else args.momentum
    if args.lr is None:
        # Adam's step is its own scale: SGD's 0.5 left it at chance. Momentum's
        # long-run step is η/(1 − μ), so η = 0.5(1 − μ) keeps SGD's 0.5 (the
        # plain 0.5 diverged on Fashion-MNIST at μ = 0.9: 59%).
        args.lr = 0.001 if args.optimizer == "adam" else round(0.5 * (1 - (momentum or 0.0)), 12)
    if (args.dp_clip is None) != (args.dp_noise is None):
        raise _refuse("--dp-clip and --dp-noise go together: give both for DP-SGD, or neither")
    if args.dp_clip is not None and args.keep_last_batch:
        raise _refuse("--keep-last-batch with DP-SGD: the noise is set for mini-batches of --batch-size, and a "
                      "shorter last one would get less noise per example than --dp-noise promises; drop one of them")
    if args.save_params and args.metrics_out and os.path.abspath(args.save_params) == os.path.abspath(args.metrics_out):
        raise _refuse(f"--save-params and --metrics-out both name {args.save_params}: the network would replace "
                      f"the metrics; give two files")
    if args.save_params:
        try:  # refused now rather than after training
            fckpt.check_params_path(args.save_params)
        except OSError as e:
            raise _refuse(f"--save-params {args.save_params} cannot be written ({e.strerror or e}); "
                          f"give a writable .npz (or network2 .json) path") from None
    if args.save_params and _network2_file(args.save_params):
        other, gives = [], []
        for flag, value, ok, fix in (("--activation", args.activation, ("sigmoid",), "sigmoid"),
                                     ("--output-activation", args.output_activation, ("sigmoid",), "sigmoid"),
                                     ("--cost", args.cost, tuple(fckpt.NETWORK2_COSTS.values()), "cross_entropy")):
            if value not in ok:
                other.append(f"{flag} {value}")
                gives.append(f"{flag} {fix}")
        if args.conv:
            other.append(f"--conv {conv_text(args.conv)}")
        if other:
            fix = " and ".join(([f"give {' '.join(gives)}"] if gives else []) + (["drop --conv"] if args.conv else []))
            raise _refuse(f"--save-params {args.save_params}: a .json file is the book's network2.py format, "
                          f"whose layers are all sigmoid (the output too), fully connected, and whose cost is "
                          f"quadratic or cross_entropy, and this run has {', '.join(other)}; {fix}, or name an "
                          f".npz file")
    return momentum


def _network2_file(path: str) -> bool:
    """Whether --save-params names a .json file: the book's network2.py format (``fbp.save_network2``)."""
    return os.path.splitext(path)[1].lower() == ".json"


def _load(args):
    """The data set, and --sizes (its default, or the flag's checked against it)."""
    from fbp import data as fdata

    try:
        ds = fdata.load(args.data, args.data_dir, args.validation)
    except (fdata.DataError, ValueError) as e:
        if isinstance(e, fdata.ValidationSizeError):
            raise _refuse(_validation_size_problem(e, given=args.validation is not None)) from None
        raise _refuse(f"{'--data-dir' if args.data_dir else '--data'}: {e}") from None
    if args.expand:  # the training split alone: the validation images were taken from it already
        try:
            ds = ds._replace(train=fdata.expand(ds.train))
        except fdata.DataError as e:
            raise _refuse(f"--expand: {e}") from None
    sizes = args.sizes or [ds.n_in, 100, ds.n_classes]
    if args.dropout and len(sizes) == 2 and not args.conv:
        raise _refuse(f"--dropout drops hidden units, but --sizes {','.join(map(str, sizes))} has no hidden layer; "
                      f"add one (--sizes {sizes[0]},100,{sizes[1]}) or leave out --dropout")
    if sizes[0] != ds.n_in or sizes[-1] != ds.n_classes:
        raise _refuse(f"--sizes {','.join(map(str, sizes))} does not fit {ds.name}: it has {ds.n_in} inputs and "
                      f"{ds.n_classes} classes, so --sizes must start with {ds.n_in} and end with {ds.n_classes}")
    if len(ds.validation) == 0:  # the test set would then steer training
        for flag, does in (("--restore-best", "picks the epoch"), ("--patience", "stops training"),
                           ("--lr-halving", "halves η")):
            if getattr(args, flag[2:].replace("-", "_")) not in (None, False):
                raise _refuse(f"{flag} {does} by validation accuracy; with --validation 0 it would do so on the "
                              f"test set: give --validation N > 0")
    if args.batch_size > len(ds.train) and not args.keep_last_batch:
        raise _refuse(f"--batch-size {args.batch_size} is larger than the training set ({len(ds.train)} examples); "
                      f"use at most {len(ds.train)}, or add --keep-last-batch to train on them as one mini-batch")
    return ds, sizes


def _devices(args):
    """(how many devices train, their mesh or None for one device)."""
    import jax

    n_devices = args.devices if args.devices is not None else jax.device_count()
    if args.devices is None and jax.process_count() == 1 and args.batch_size % n_devices:
        # The default is every local device, but the main job has to run as
        # it is on any machine: with a batch the devices do not divide (the
        # default 10 on 4 GPUs), use the most devices that do divide it.
        n_devices = max(d for d in range(1, n_devices + 1) if args.batch_size % d == 0)
        print(f"fbp train: batch size {args.batch_size} is not divisible by the {jax.device_count()} devices; "
              f"using {n_devices} (pass --devices and a divisible --batch-size to use them all)", file=sys.stderr)
    if n_devices == 1 and args.devices is None:
        return 1, None
    from fbp import parallel

    try:
        mesh = parallel.make_mesh(n_devices)
        parallel.check_batch(mesh, args.batch_size)
    except ValueError as e:
        raise _refuse(f"{'--batch-size' if 'divisible' in str(e) else '--devices'}: {e}") from None
    return n_devices, (mesh if n_devices > 1 else None)


def _network(args, key, sizes, dtype, momentum, n_train: int):
    """(params, optimizer, gradient) as the flags name them."""
    from fbp import train as ftrain

    try:
        params = make_network(args, key, sizes, dtype)
        mismatch = _cost_pairing(params, args.cost)
        if mismatch:
            raise _refuse(mismatch)
        optimizer = ftrain.make_optimizer(args.optimizer, args.lr, l2=args.l2, l1=args.l1, n_train=n_train,
                                          momentum=ftrain.DEFAULT_MOMENTUM if momentum is None else momentum)
        grad = "hand"
        if args.dp_clip is not None:
            import optax

            from fbp import stats

            grad = stats.dp_value_and_grad(args.cost, args.dp_clip)
            optimizer = optax.chain(stats.dp_noise(args.dp_noise, args.dp_clip, args.batch_size, args.seed), optimizer)
    except (ValueError, TypeError) as e:
        raise _refuse(str(e)) from None
    return params, optimizer, grad


def _kept(args, writer: bool, joined: bool) -> str:
    """What a stopped run leaves to go on from."""
    from fbp import checkpoint as fckpt

    if not writer and args.checkpoint_dir:
        return "process 0 of the run keeps its checkpoints"
    epoch = fckpt.newest_epoch(args.checkpoint_dir) if args.checkpoint_dir else None
    if epoch is not None:
        return (f"the checkpoint of epoch {epoch} is in {args.checkpoint_dir}: "
                f"add --resume to the same command{' on every process' if joined else ''} to go on")
    return "nothing was saved" + ("" if args.checkpoint_dir else " (give --checkpoint-dir to be able to resume)")


def _settings(args, run: _Run) -> dict:
    """The flags that decide what a run computes, as it ran with them (the
    defaults filled in): what the processes of a multi-host run must agree
    on, and what the final --metrics-out record keeps."""
    return {**run.config, "--l1": args.l1, "--dropout": args.dropout, "--expand": args.expand,
            "--keep-last-batch": args.keep_last_batch,
            "--conv": args.conv and conv_text(args.conv), "--init": args.init,
            "--epochs": args.epochs, "--patience": args.patience, "--restore-best": args.restore_best,
            "--monitor-training": args.monitor_training, "--monitor-deltas": args.monitor_deltas,
            "--monitor-noise-scale": args.monitor_noise_scale, "--devices": run.n_devices,
            "--deterministic": args.deterministic}


def _agree(args, run: _Run) -> None:
    """Multi-host: refuse to train unless every process is ready, with the
    same settings and data as process 0 (one all-gather)."""
    ds = run.ds
    shared = {**_settings(args, run), "--checkpoint-dir": args.checkpoint_dir is not None, "--resume": args.resume,
              "data": (ds.train, ds.validation, ds.test)}
    failed, differ = _others_failed(failed=False, settings=shared)
    if differ:
        raise _refuse(_differ_message(differ))
    if failed:
        raise _refuse(f"process {', '.join(map(str, failed))} of the run stopped with an error (see its output); "
                      f"stopping too")


def _fit(args, run: _Run, report: Report, writer: bool, joined: bool, stopping: Optional[Stopping]):
    """``fbp.train.fit`` as the flags ask; (its result, seconds). What stops
    it is said in one line: Ctrl-C and SIGTERM, errors in its checks and
    writes, and in a multi-host run an error of any process."""
    import os

    from fbp import checkpoint as fckpt
    from fbp import multihost
    from fbp import train as ftrain

    def fit(on_progress, stop=None):
        return ftrain.fit(
            run.params, run.arrays(run.ds.train), optimizer=run.optimizer, cost=args.cost, epochs=args.epochs,
            batch_size=args.batch_size, key=run.key, drop_last=not args.keep_last_batch,
            evaluation=run.arrays(run.ds.validation if len(run.ds.validation) else run.ds.test),
            patience=args.patience, lr_halving=args.lr_halving, monitor_training=args.monitor_training,
            monitor_deltas=args.monitor_deltas, monitor_noise_scale=args.monitor_noise_scale,
            checkpoint_dir=args.checkpoint_dir, resume=args.resume, keep_every=args.keep_every,
            on_epoch=report.epoch, grad=run.grad,
            dropout=args.dropout,
            mesh=run.mesh, config=run.config, on_resume=report.resumed,
            notes={"--data-dir": args.data_dir and os.path.abspath(args.data_dir),  # for fbp evaluate RUN_DIR
                   "classes": run.ds.classes and list(run.ds.classes)},  # and fbp predict RUN_DIR
            on_progress=on_progress, stop=stop, monitor=terms if args.l2 or args.l1 else None)

    def terms(params) -> dict:  # the L2 and L1 terms of the cost that the steps descend, beside the data cost
        return ftrain.penalty_terms(params, len(run.ds.train), l2=args.l2, l1=args.l1)

    bar_steps = report.steps if report.moves_within_epochs else None
    t0 = time.perf_counter()
    try:
        if stopping is not None:
            # Step reports on or off a terminal, for a second signal to end the epoch at (each
            # costs 0.1-0.8 ms, and only epochs of a second or more make them).
            try:
                result = in_a_thread(lambda: fit(stopping.steps, stopping.stop))
            finally:
                stopping.training = False
        else:  # not the main thread: signals stay as they are
            result = fit(bar_steps)
    except fckpt.CheckpointMismatch as e:  # found before any training
        raise _refuse(f"--resume: {' '.join(str(e).split())}") from None
    except fckpt.CheckpointDirInUse as e:  # a directory this run made, taken by another since
        raise _refuse(f"--checkpoint-dir: {e}") from None
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: say what is kept, without a traceback
        terminated = isinstance(e, Terminated)
        raise _Exit(f"\nfbp train: {'terminated' if terminated else 'interrupted'}; {_kept(args, writer, joined)}",
                    143 if terminated else 130) from None
    except (MetricsWriteError, StdoutWriteError, multihost.RaisedElsewhere) as e:
        # A full disk, say (here, or on the process of the run that names it): the checkpoints so far are intact.
        raise _refuse(f"{e}; {_kept(args, writer, joined)}", 1) from None
    except fckpt.CheckpointWriteError as e:  # mid-run: the earlier checkpoints are intact
        raise _refuse(e.strerror or str(e), 1) from None
    except Exception as e:
        if not joined:
            raise
        # Multi-host, mid-run. Most often a collective failed because another
        # process ended (killed, say): an error of the XLA runtime, raised as
        # a JaxRuntimeError or, from some calls, a ValueError. Say so and what
        # is kept, then leave at once, whatever the error: jax.distributed's
        # exit handler waits at a barrier for every process, and with one
        # gone it waits out the heartbeat timeout (100 s), then aborts with a
        # stack trace.
        report.close()
        status = _xla_status(e)
        if status is None:  # not the runtime's: a bug, say, whose traceback is wanted
            import traceback

            traceback.print_exc()
        why = f"{status} (another process of the run has ended, or cannot be reached)" if status else type(e).__name__
        print(f"fbp train: error: the run stopped: {why}; {_kept(args, writer, joined)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return result, time.perf_counter() - t0


def _finish(args, run: _Run, report: Report, result, seconds: float, writer: bool, joined: bool) -> int:
    """Test the trained params (or --restore-best's), write the final
    metrics record and --save-params, and print the summary."""
    from fbp import checkpoint as fckpt
    from fbp import train as ftrain

    ds, eval_split = run.ds, run.eval_split
    report.show_header()  # not shown yet only where nothing was resumed nor trained
    if report.bar is not None:
        report.bar.close()
    tested, tested_epoch = result.params, len(result.history)
    if args.restore_best and result.best_params is not None:
        tested, tested_epoch = result.best_params, result.best_epoch
    elif args.restore_best:
        why = ("no epoch was trained and evaluated" if result.best_epoch is None
               else f"the best epoch's ({result.best_epoch}) checkpoint is no longer in {args.checkpoint_dir}")
        print(f"fbp train: --restore-best: {why}; testing the params of epoch {tested_epoch}", file=sys.stderr)
    test = ftrain.evaluate(tested, *run.arrays(ds.test), args.cost)
    final = dict(
        final=True, data=ds.name, epochs_run=len(result.history), stopped_early=result.stopped_early,
        best_epoch=result.best_epoch, tested_epoch=tested_epoch,
        test_cost=float(test["cost"]), test_accuracy=int(test["correct"]) / len(ds.test),
        stop_reason=result.stop_reason, seconds=seconds, error=str(result.error) if result.error else None,
        # What produced these numbers, for a reader of the file alone.
        settings={**_settings(args, run), "--data-dir": args.data_dir}, device=device_kind(), versions=versions(),
    )
    errors = []  # reported after the summary; neither write keeps the other from being tried
    metrics_written = False
    try:
        report.write([final])
        metrics_written = report.metrics is not None  # this process writes them (process 0 of several)
    except MetricsWriteError as e:
        errors.append(f"{e}; {_kept(args, writer, joined)}")
    report.close()
    network_saved = False
    if args.save_params:
        try:
            meta = dict(
                data=ds.name, data_flag=args.data, data_dir=args.data_dir and os.path.abspath(args.data_dir),
                validation=len(ds.validation), sizes=run.sizes, cost=args.cost, dtype=args.dtype,
                tested_epoch=tested_epoch, test_accuracy=final["test_accuracy"], test_cost=final["test_cost"],
                classes=ds.classes and list(ds.classes))
            if _network2_file(args.save_params):  # the book's file, which network2.load reads
                fckpt.save_network2(args.save_params, tested, args.cost, meta)
            else:
                fckpt.save_params(args.save_params, tested, meta)
            network_saved = True
        except OSError as e:
            errors.append(f"could not write --save-params {args.save_params} ({e.strerror or e}); "
                          f"{_kept(args, writer, joined)}")
    if result.stop_reason == "patience":
        print(f"early stop: no better {eval_split} accuracy in {_epochs(args.patience)} (best at epoch "
              f"{result.best_epoch})")
    elif result.stop_reason == "lr_floor":
        print(f"stop: η halved down to 1/128 of {args.lr} (best {eval_split} accuracy at epoch {result.best_epoch})")
    best_note = ", the best" if tested_epoch == result.best_epoch and len(ds.validation) else ""  # on validation
    print(
        f"done: {_epochs(len(result.history))} in {seconds:.1f} s; test accuracy {final['test_accuracy']:.4f} "
        f"(params of epoch {tested_epoch}{best_note}), "
        f"test cost {final['test_cost']:.4f}"
        + ((f"; checkpoints in {args.checkpoint_dir}" if writer else "; process 0 of the run keeps the checkpoints")
           if args.checkpoint_dir else "")
        + (f"; network in {args.save_params}" if network_saved else "")
        + (f"; metrics in {args.metrics_out} (fbp plot draws them)" if metrics_written else "")
    )
    if result.error is not None:
        errors.insert(0, str(result.error))
    for message in errors:
        print(f"fbp train: error: {message}", file=sys.stderr)
    if errors:
        return 1
    if result.stop_reason in SIGNAL_STATUS:  # stopped by Ctrl-C or SIGTERM once an epoch ended
        kept = _kept(args, writer, joined) if args.checkpoint_dir else "without --checkpoint-dir it cannot be resumed"
        print(f"fbp train: {result.stop_reason} after epoch {len(result.history)}; {kept}", file=sys.stderr)
        return SIGNAL_STATUS[result.stop_reason]
    return 0

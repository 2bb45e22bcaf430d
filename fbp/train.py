"""Training: the ``fit`` loop (the book's ``SGD`` with its ``monitor_*``
flags: monitoring, early stopping, the learning schedule, checkpoints). The
epoch it runs is ``fbp.epoch``'s (one jitted ``lax.scan``), its monitoring
``fbp.evaluation``'s, its update rules ``fbp.optimizers``' (the book's
optimizers through optax); the three modules' public names are re-exported
here, so ``train.make_epoch``, ``train.evaluate``, ``train.make_optimizer``
and the rest are one import away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import time
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fbp import checkpoint as ckpt
from fbp import multihost
from fbp._reuse import compiled_once
from fbp.backprop import check_batch
from fbp.epoch import (  # noqa: F401  (re-exported: train.make_epoch, …)
    BYTE_VALUES, _is_codes, byte_codes, check_drop_last, check_optimizer, compact_inputs, decode_inputs, dropout_key,
    epoch_steps, in_host_memory, make_epoch, make_train_step, shuffle, step_keys,
)
from fbp.evaluation import chunk_for, evaluate, predict, vote, vote_of  # noqa: F401  (re-exported)
from fbp.network import check_int, check_key, check_rate
from fbp.optimizers import (  # noqa: F401  (re-exported: train.make_optimizer, …)
    DEFAULT_MOMENTUM, OPTIMIZERS, add_l1, halve_lr, l1_cost, l2_cost, lr_factor, make_optimizer, penalty_terms,
    weight_mask, with_lr_schedule,
)

Array = jax.Array


# --- the fit loop -----------------------------------------------------------
class NonFiniteLoss(RuntimeError):
    """Training produced a non-finite cost; the last good state is kept."""

    def __init__(self, epoch: int, step: int, last_good_epoch: int):
        self.epoch, self.step, self.last_good_epoch = epoch, step, last_good_epoch
        super().__init__(
            f"non-finite cost at epoch {epoch}, step {step}; training stopped. The last good "
            f"state is from epoch {last_good_epoch}" + (" (the initial parameters)" if last_good_epoch == 0 else "")
            + ". Lower the learning rate, or use a cost with a closed form (softmax + log_likelihood)."
        )


def check_checkpoint_dir(checkpoint_dir: Optional[str], resume: bool, *, flags: bool = False) -> None:
    """ValueError unless ``checkpoint_dir`` suits ``resume``: resuming needs a
    directory, and a fresh run needs one without checkpoints in it (its epochs
    would interleave with the old run's, and pruning to the newest few would
    delete the fresh ones first). The directory is created if missing and
    must be writable: better refused now than at the end of the first epoch.
    The messages name ``fit``'s arguments, or with ``flags`` fbp train's."""
    resume_name, dir_name = ("--resume", "--checkpoint-dir") if flags else ("resume=True", "checkpoint_dir")
    if resume and not checkpoint_dir:
        raise ValueError(f"{resume_name} needs a checkpoint directory ({dir_name}).")
    existing = ckpt.list_checkpoints(checkpoint_dir) if checkpoint_dir and not resume else []
    if existing:
        newest = os.path.basename(existing[-1])
        raise ValueError(
            f"checkpoint directory {checkpoint_dir} already holds another run's checkpoints (newest: "
            f"{newest}); resume that run ({resume_name}), or give an empty or new {dir_name}."
        )
    if checkpoint_dir:
        try:
            ckpt.check_writable(checkpoint_dir)
        except OSError as e:
            raise ValueError(
                f"checkpoint directory {checkpoint_dir} cannot be written ({e.strerror or e}); "
                f"give a writable {dir_name}."
            ) from None


def _best_params_on_disk(checkpoint_dir: str, epoch: Optional[int], template: dict):
    """The params saved at ``epoch`` (pruning keeps the best epoch's checkpoint);
    None if there is no such epoch or its file is gone."""
    if epoch is None:
        return None
    path = ckpt.path_of(checkpoint_dir, epoch)
    try:
        return ckpt.restore(path, template)[0]["params"]
    except ckpt.CheckpointError:
        return None


def _another_run(where: str, differ: list):
    return ckpt.CheckpointMismatch(
        f"{where} was written by a different run (" + "; ".join(differ)
        + "). Resume with the same settings, or start in a fresh checkpoint directory."
    )


@jax.jit
def _first_non_finite_row(A):
    finite = jnp.isfinite(A).reshape(len(A), -1).all(axis=1)
    return jnp.where(finite.all(), -1, jnp.argmin(finite))


def _first_non_finite(A) -> int:
    """The first row of A holding a NaN or an infinity, or −1. An array in
    host memory (NumPy's, or jax's on the CPU, which NumPy reads in place) is
    checked by NumPy: Fashion-MNIST's 50,000 training images in 16 ms, where
    the jitted check takes 0.1 s and its compiling 0.2 s more, each time
    ``fit`` meets a new shape. Elsewhere (a GPU) the check runs where the
    array is."""
    if len(A) == 0:
        return -1
    if not in_host_memory(A):
        return int(_first_non_finite_row(A))
    finite = np.isfinite(np.asarray(A)).reshape(len(A), -1).all(axis=1)
    return -1 if finite.all() else int(np.argmin(finite))


def _check_finite(arrays: Sequence, names: Sequence[str]) -> None:
    """ValueError naming the first row that holds a NaN or an infinity, in the
    first of ``arrays`` that has one: without this, such data surfaces as a
    non-finite cost at some step, with advice about the learning rate that
    does not apply."""
    for A, what in zip(arrays, names):
        row = _first_non_finite(A)
        if row >= 0:
            raise ValueError(f"{what} holds NaN or infinite values (the first in row {row}); every step that drew "
                             f"such a row would make the params NaN. Fix or drop those rows first.")


def _same_config(config: Optional[dict], settings: dict) -> Callable[[str, dict], None]:
    """A header check refusing checkpoints whose saved run settings differ:
    the caller's ``config``, and fit's own ``settings`` (those of its
    arguments that shape each step: the batch size, the training set's size,
    ...), which it saves beside them. Resuming one would train on with other
    settings, not finish its run."""
    now = json.loads(json.dumps(config or {}))  # as it reads back from a header

    def check(path: str, header: dict) -> None:
        # config's differences first, alone: they are the caller's own words (fbp train's flags), and
        # fit's arguments follow from them there
        for key, current, prefix in (("config", now, ""), ("fit", settings, "fit's ")):
            if key not in header["meta"]:
                continue  # written before runs recorded these settings
            saved = header["meta"][key] or {}
            differ = [f"{prefix}{name}: saved {saved.get(name)!r}, now {current.get(name)!r}"
                      for name in sorted(set(saved) | set(current)) if saved.get(name) != current.get(name)]
            if differ:
                raise _another_run(path, differ)

    return check


@dataclasses.dataclass
class FitResult:
    params: list
    opt_state: object
    history: list  # one dict per epoch
    epochs_run: int
    stopped_early: bool = False
    error: Optional[NonFiniteLoss] = None
    best_epoch: Optional[int] = None
    best_params: Optional[list] = None  # the params of best_epoch (None without evaluation data)
    stop_reason: Optional[str] = None  # "patience", "lr_floor" or what fit's stop returned, when stopped_early


def _epoch_for(optimizer, cost, reduction, grad, dropout, batch_size, drop_last=True, mesh=None,
               report_steps=False):
    """fit's epoch: ``make_epoch``'s, or on a mesh the sharded one; with
    ``report_steps``, reporting its steps to fit's ``on_progress``."""
    step = make_train_step(optimizer, cost, reduction=reduction, grad=grad, dropout=dropout)
    progress = _report_steps if report_steps else None
    if mesh is None:
        return make_epoch(step, batch_size, progress=progress, drop_last=drop_last)
    from fbp import parallel

    return parallel.make_sharded_epoch(step, batch_size, mesh, progress=progress, drop_last=drop_last)


# fit's on_progress: an epoch reports its steps as they go when the one
# before it ran this long or longer (not counting compiling). Each report
# costs 0.1-0.8 ms of the epoch on the CPU (benchmarks/progress.py), 20 of
# them under 2% of a second.
PROGRESS_SECONDS = 1.0
# The first epoch has none before it: on a CPU it reports where its
# multiply-adds (3 per weight and example: forward, BP2, BP4) come to this or
# more, a second at the 40 G/s of 2-core machines here ([784, 1000, 1000, 10]
# on 50,000 examples: 2.7e11, 6.5 s; [784, 100, 10]: 1.2e10, 0.3 s).
FIRST_EPOCH_MACS = 4e10


@dataclasses.dataclass
class _Reporting:
    """An epoch of fit reporting its steps: its number, where the reports
    go, and what ``on_progress`` raised there (an Exception, kept for fit
    to raise once the epoch is recorded; a KeyboardInterrupt, which ends
    the epoch)."""

    epoch: int
    on_progress: Callable[[int, int, int], None]
    error: Optional[Exception] = None
    interrupt: Optional[BaseException] = None


# The epochs of fit reporting their steps now, by the number each runs with
# (an argument of its computation, handed back with each report, so that
# fits in two threads at once each get their own).
_reporting: dict = {}
_runs = itertools.count(1)


def _report_steps(done, steps, run) -> bool:
    """The host function that fit's reporting epochs call (``make_epoch``'s
    ``progress``): on to the ``on_progress`` of the epoch running as
    ``run``. An exception it raises is kept for fit to raise once the epoch
    is recorded, rather than inside XLA's callback (where it would fail the
    epoch, wrapped in a runtime error). A KeyboardInterrupt is the one way
    to stop the epoch where it is: it is kept, and True ends the epoch
    there (the remaining steps are skipped, on every device of a mesh
    alike, in every process of a run: ``_raised_alike`` tells the others,
    whose reports all come to process 0)."""
    to = _reporting.get(int(run))
    if to is None or to.error is not None or to.interrupt is not None:
        return to is not None and to.interrupt is not None
    try:
        to.on_progress(to.epoch, int(done), int(steps))
    except Exception as e:  # noqa: BLE001 - raised again by fit, as it was
        to.error = e
    except KeyboardInterrupt as e:
        to.interrupt = e
        return True
    return False


def _run_arg(run: int = 0) -> np.int32:
    """What a reporting epoch takes after its other arguments: the number of
    its run, an int32 of the computation (any one will do to compile it)."""
    return np.int32(run)


def _run_epoch(fn, args, epoch: int, on_progress) -> tuple:
    """``fn(*args)`` with its step reports (if it makes any) sent to
    ``on_progress`` as ``epoch``'s, all of them before it returns: (params,
    opt_state, the losses on the host, what ``on_progress`` raised or None).
    Where ``on_progress`` raised KeyboardInterrupt, the epoch ends at that
    report and its KeyboardInterrupt is raised here: nothing of the epoch
    is kept. A reporting epoch takes its run's number after ``args``."""
    # An int32 of the computation. In a run of several processes each gives
    # its own count; the reports are made by the process holding the mesh's
    # first device, with its own number (tested with the counts apart).
    run = next(_runs) % 2**31
    to = _Reporting(epoch, on_progress)
    if on_progress is not None:
        _reporting[run], args = to, (*args, _run_arg(run))
    try:
        params, opt_state, losses = fn(*args)
        losses = np.asarray(losses)
        if on_progress is not None:
            jax.effects_barrier()  # the reports still queued run now, not during the next epoch
    finally:
        _reporting.pop(run, None)
    error, interrupt = to.error, to.interrupt
    if on_progress is not None:
        error, interrupt = _raised_alike(error, interrupt)
    if interrupt is not None:  # the epoch ended at the report that raised it
        raise interrupt
    return params, opt_state, losses, error


def _raised_alike(error: Optional[Exception], interrupt: Optional[BaseException]) -> tuple:
    """What on_progress raised during a reporting epoch, (an error, a
    KeyboardInterrupt), alike on every process of a run, where the reports
    all come to process 0 (one broadcast from it): process 0's own, and on
    the others a copy of its error (``multihost.process_0_does``) or a
    KeyboardInterrupt, so that each raises it as process 0 does: the
    error once the epoch is recorded, the KeyboardInterrupt at once (their
    epoch ended at the same step, and their NaN losses of the steps
    skipped are no failure). In a run of one process, as they are."""
    if jax.process_count() == 1:
        return error, interrupt

    def on_process_0() -> bool:
        if error is not None:
            raise error
        return interrupt is not None

    try:
        interrupted = multihost.process_0_does(on_process_0)
    except Exception as e:  # noqa: BLE001 - raised by fit, on every process
        return e, None
    return None, ((interrupt or KeyboardInterrupt()) if interrupted else None)


# --- fit's pieces ------------------------------------------------------------
@dataclasses.dataclass
class _Progress:
    """Where a fit run stands after ``epoch`` epochs: what a checkpoint's
    meta keeps besides the arrays, so that a resumed run goes on exactly."""

    epoch: int = 0
    history: list = dataclasses.field(default_factory=list)  # one record per epoch
    best_acc: float = -1.0  # the best evaluation accuracy so far
    best_epoch: Optional[int] = None  # its epoch
    since_best: int = 0  # epochs since it (patience)
    since_change: int = 0  # epochs since it or the last halving of η (lr_halving)

    @classmethod
    def from_meta(cls, epoch: int, meta: dict) -> "_Progress":
        return cls(epoch, meta.get("history", []), meta.get("best_acc", -1.0), meta.get("best_epoch"),
                   meta.get("since_best", 0), meta.get("since_change", 0))

    def meta(self, **more) -> dict:
        return dict(history=self.history, best_acc=self.best_acc, best_epoch=self.best_epoch,
                    since_best=self.since_best, since_change=self.since_change, **more)

    def evaluated(self, epoch: int, accuracy: float) -> bool:
        """Count epoch ``epoch``'s evaluation accuracy; True when it is the best so far."""
        if accuracy > self.best_acc:
            self.best_acc, self.best_epoch, self.since_best, self.since_change = accuracy, epoch, 0, 0
            return True
        self.since_best += 1
        self.since_change += 1
        return False


def _check_fit_arguments(optimizer, key, epochs, batch_size, evaluation, monitor_evaluation, patience, lr_halving,
                         lr_floor):
    """fit's arguments that need no data, checked; (epochs, batch_size)."""
    epochs, batch_size = check_int("epochs", epochs, 0), check_int("batch_size", batch_size, 1)
    check_optimizer(optimizer)
    check_key(key)
    if not 0 < lr_floor < 1:
        raise ValueError(f"lr_floor must be between 0 and 1 (a fraction of the starting step), got {lr_floor}.")
    for name, value in (("patience", patience), ("lr_halving", lr_halving)):
        if value is None:
            continue
        check_int(name, value, 1, " (epochs) or None")
        if evaluation is None or len(evaluation[0]) == 0 or not monitor_evaluation:
            raise ValueError(  # it would never act, silently
                f"{name} acts on evaluation accuracy: give evaluation data and keep monitor_evaluation=True, "
                f"or leave {name}=None."
            )
    return epochs, batch_size


def _fit_data(params, train, evaluation, cost, batch_size: int, drop_last: bool, mesh):
    """fit's data, checked whole and by name (inside the epoch only a
    mini-batch's shape would show) and placed: ``(X, Y)`` the epochs draw
    mini-batches from (on the host for a mesh, whose epoch shuffles there),
    ``(Xm, Ym)`` on the device for monitoring, and the evaluation ``(Xe, Ye)``
    or None. Images of bytes scaled to [0, 1] are kept as their bytes."""
    X: Union[Array, np.ndarray]
    Y: Union[Array, np.ndarray]
    if mesh is None:
        X, Y = (jnp.asarray(a) for a in _pair("train", train))
    else:
        from fbp import parallel

        parallel.check_batch(mesh, batch_size)
        X, Y = (np.asarray(a) for a in _pair("train", train))
    Xm, Ym = (jnp.asarray(a) for a in (X, Y))  # on the device once, not every epoch
    check_batch(params, Xm, Ym, cost, names=("train X", "train Y"))
    _check_finite((Xm, Ym), names=("train X", "train Y"))
    epoch_steps(len(X), batch_size, drop_last)  # at least one step
    Xm = compact_inputs(Xm)  # train and monitor on the bytes (bitwise the same steps),
    if _is_codes(Xm):  # and drop the float copy from the device
        X = Xm if mesh is None else np.asarray(Xm)
    if evaluation is None:
        return (X, Y), (Xm, Ym), None
    Xe, Ye = (jnp.asarray(a) for a in _pair("evaluation", evaluation))
    if len(Xe) == 0:
        return (X, Y), (Xm, Ym), None
    check_batch(params, Xe, Ye, cost, names=("evaluation X", "evaluation Y"))
    _check_finite((Xe, Ye), names=("evaluation X", "evaluation Y"))
    return (X, Y), (Xm, Ym), (compact_inputs(Xe), Ye)


def _pair(name: str, data) -> tuple:
    """(X, Y) of fit's ``train`` or ``evaluation``: a pair, a ``fbp.data.Split``
    or any sequence whose first two items they are (not one array, whose
    first two rows they would be)."""
    if hasattr(data, "shape") or not isinstance(data, Sequence) or len(data) < 2:
        what = f"an array of shape {tuple(data.shape)}" if hasattr(data, "shape") else type(data).__name__
        raise TypeError(f"{name} must be a pair (X, Y) of inputs and targets (a fbp.data.Split is one), got {what}.")
    return tuple(data[:2])


def _first_opt_state(optimizer, params, opt_state, lr_halving):
    """``opt_state``, checked against ``optimizer``; ``optimizer.init(params)`` when None."""
    fresh = optimizer.init(params)
    if opt_state is None:
        return fresh
    if jax.tree.structure(opt_state) != jax.tree.structure(fresh):  # type: ignore[operator]  # PyTreeDef has ==
        raise ValueError(
            "opt_state does not fit the optimizer" + (" chained with lr_halving's step-size factor (pass the "
            "opt_state of a fit run with lr_halving, or None)" if lr_halving is not None else " (pass the "
            "optimizer's own init(params), or None)") + f":\n  got:      {jax.tree.structure(opt_state)}\n"
            f"  expected: {jax.tree.structure(fresh)}"
        )
    return opt_state


def _restore_newest(checkpoint_dir: str, params, opt_state, key, config, settings):
    """The newest checkpoint in ``checkpoint_dir`` written by this run (same
    ``key``, ``config`` and fit ``settings``): ``(params, opt_state, progress, best_params)``,
    best_params None when its best epoch's checkpoint is gone; None when
    there is no checkpoint. Process 0 reads it, and every process gets it."""
    template = dict(params=params, opt_state=opt_state, key=key)
    read = {}  # process 0's arrays

    def read_newest():
        restored = ckpt.latest(checkpoint_dir, template, check_header=_same_config(config, settings))
        if restored is None:
            return None
        tree, header = restored
        if not np.array_equal(jax.random.key_data(tree["key"]), jax.random.key_data(key)):
            where = f"the checkpoint of epoch {header['epoch']} in {checkpoint_dir}"
            raise _another_run(where, ["key: it shuffled with another PRNG key (another seed)"])
        read["tree"] = tree
        read["best"] = _best_params_on_disk(checkpoint_dir, header["meta"].get("best_epoch"), template)
        return dict(epoch=header["epoch"], meta=header["meta"], best=read["best"] is not None)

    found = multihost.process_0_does(read_newest)
    if found is None:
        return None
    tree = multihost.from_process_0(read.get("tree", template))
    best_params = multihost.from_process_0(read.get("best", tree["params"])) if found["best"] else None
    return tree["params"], tree["opt_state"], _Progress.from_meta(found["epoch"], found["meta"]), best_params


def _monitor(params, training, evaluation, cost, *, monitor_training, deltas, noise_scale) -> dict:
    """An epoch's record of the training set (cost and accuracy, δ norms,
    noise scale: those asked for, from one pass) and of ``evaluation`` (None: not monitored)."""
    record: dict = {}
    if monitor_training or deltas or noise_scale:
        m = evaluate(params, *training, cost, deltas=deltas, noise_scale=noise_scale)
        if monitor_training:
            record.update(training_cost=float(m["cost"]), training_accuracy=int(m["correct"]) / len(training[0]))
        if deltas:
            record["delta_norms"] = [float(v) for v in np.asarray(m["delta_norms"])]
        if noise_scale:
            record["noise_scale"] = float(m["noise_scale"])
    if evaluation is not None:
        m = evaluate(params, *evaluation, cost)
        record.update(evaluation_cost=float(m["cost"]), evaluation_accuracy=int(m["correct"]) / len(evaluation[0]))
    return record


# The names of fit's epoch records, whether or not an epoch's record holds
# them: a monitor's own may not take them (an "evaluation_accuracy" of its
# own would drive early stopping, say).
RECORD_NAMES = ("epoch", "train_step_cost", "seconds", "lr_factor", "training_cost", "training_accuracy",
                "delta_norms", "noise_scale", "evaluation_cost", "evaluation_accuracy")


def _own_monitor(monitor: Callable, params, record: dict) -> dict:
    """fit's ``monitor=``: what ``monitor(params)`` returns, as JSON-able
    Python values, checked against the names of fit's own records."""
    got = monitor(params)
    if not isinstance(got, dict):
        raise TypeError(f"fit's monitor must return a dict of names and numbers, got {type(got).__name__}")
    out = {}
    for name, value in got.items():
        if not isinstance(name, str):
            raise TypeError(f"fit's monitor returned the name {name!r}; names must be strings")
        if name in RECORD_NAMES or name in record:
            raise ValueError(f"fit's monitor returned {name!r}, a name of fit's own records (their names: "
                             f"{', '.join(RECORD_NAMES)}); give it another")
        if isinstance(value, (jax.Array, np.ndarray, np.generic)):
            value = np.asarray(value).tolist()
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise TypeError(f"fit's monitor returned {name!r} = a {type(value).__name__}, which the record (JSON, "
                            f"as checkpoints keep it) cannot hold; return numbers, arrays or lists of them") from None
        out[name] = value
    return out


def _save_epoch(checkpoint_dir: str, epoch: int, tree: dict, meta: dict, best_epoch: Optional[int],
                keep_every: Optional[int]) -> None:
    """Epoch ``epoch``'s checkpoint (process 0 writes it). Every epoch is
    saved (a failed save ends the run), so a failed write raises
    ``CheckpointWriteError`` saying that the previous epoch's is intact."""
    saved = epoch - 1

    def write():
        try:
            ckpt.save(checkpoint_dir, epoch, tree, meta, protect=() if best_epoch is None else (best_epoch,),
                      keep_every=keep_every)
        except OSError as err:
            intact = f"the checkpoint of epoch {saved} is intact" if saved else "no checkpoint was written yet"
            raise ckpt.CheckpointWriteError(
                err.errno, f"could not write the checkpoint of epoch {epoch} in {checkpoint_dir} "
                f"({err.strerror or err}); {intact}. Make room (or fix the directory), then resume."
            ) from err

    multihost.process_0_does(write)


def fit(
    params: list,
    train,
    *,
    optimizer: optax.GradientTransformation,
    cost,
    epochs: int,
    batch_size: int,
    key: Array,
    drop_last: bool = True,
    evaluation=None,
    reduction: str = "mean",
    grad: Union[str, Callable] = "hand",
    dropout: float = 0.0,
    monitor_training: bool = True,
    monitor_evaluation: bool = True,
    monitor_deltas: bool = False,
    monitor_noise_scale: bool = False,
    patience: Optional[int] = None,
    lr_halving: Optional[int] = None,
    lr_floor: float = 1 / 128,
    checkpoint_dir: Optional[str] = None,
    resume: bool = False,
    keep_every: Optional[int] = None,
    on_epoch: Optional[Callable[[dict], None]] = None,
    monitor: Optional[Callable[[list], dict]] = None,
    on_resume: Optional[Callable[[list], None]] = None,
    on_progress: Optional[Callable[[int, int, int], None]] = None,
    stop: Optional[Callable[[], Optional[str]]] = None,
    opt_state=None,
    mesh=None,
    config: Optional[dict] = None,
    notes: Optional[dict] = None,
) -> FitResult:
    """Train for ``epochs`` epochs; return params, optimizer state and history.

    Args:
      params: ``list[Dense]``.
      train: ``(X, Y)`` (a ``fbp.data.Split`` works). Float32 X whose every
        value is k/255 for a byte k (images as ``fbp.data`` scales them), or
        k/256 (the book's ``mnist.pkl.gz``), is kept on the device as its
        bytes (``compact_inputs``), and so is the evaluation X: the steps and
        the monitoring decode them to bitwise the same floats, from a quarter
        of the memory.
      optimizer: any ``optax.GradientTransformation``. fit keeps the epochs
        it compiled (the last 16) for the next call with the same optimizer,
        or with one built alike from optax's or fbp's own functions and equal
        settings (``optax.adam(1e-3)`` built afresh for each seed of a loop);
        one built afresh from functions of your own compiles anew.
      cost: a cost name or ``fbp.Cost``.
      epochs, batch_size: as in the book's ``SGD(training_data, epochs, mini_batch_size, eta)``.
      drop_last: leave the last n mod batch_size examples of each epoch's
        shuffle out of it (the default; a different few each epoch), or
        (False) step on them last as one shorter mini-batch, as the book's
        ``SGD`` does, so that every example is seen each epoch
        (``make_epoch``'s ``drop_last``). Not for DP-SGD's ``dp_noise``,
        whose noise is set for mini-batches of ``batch_size``.
      key: PRNG key; epoch e shuffles with ``fold_in(key, e)``, so a resumed run
        draws the same batches as one never interrupted.
      evaluation: optional ``(X, Y)`` monitored each epoch (the book's
        ``evaluation_data``).
      reduction, grad: as in ``make_train_step``.
      dropout: the probability of dropping each hidden unit of each example
        at each step (NNDL ch. 3; ``make_train_step``'s ``dropout``), drawn
        from the epoch's key, so a resumed run drops the same units. The
        kept ones are scaled by 1/(1 − dropout) while training, so the
        network monitored, tested and returned is the whole one, as it is:
        all that is monitored (costs, accuracies, δ norms, noise scale) is
        the whole network's; ``train_step_cost`` (the mean of the steps'
        costs) is the thinned ones'.
      monitor_training / monitor_evaluation: evaluate cost and accuracy on the
        training / evaluation data after each epoch (the book's ``monitor_*``).
      monitor_deltas: record each epoch's ``delta_norms``, the L numbers
        ‖∂C/∂b^l‖ = ‖(1/n) Σ_n δ^l_n‖ over the training set, first layer to
        last: how fast each layer learns (NNDL ch. 5; a deep sigmoid network's
        first layers learn slowest). The δ's come from the pass that
        monitors the training set (``evaluate(..., deltas=True)``), which is
        made for them even with ``monitor_training=False``.
      monitor_noise_scale: record each epoch's ``noise_scale``, the gradient
        noise scale tr Σ / ‖G‖² of the per-example gradients over the
        training set (``fbp.stats.gradient_noise_scale``; McCandlish et al.
        2018): about the mini-batch size whose gradient noise equals its
        signal. From the same pass, plus one product Δᵀ A per layer.
      patience: stop when evaluation accuracy has not improved for this many epochs.
        Either way the result's ``best_params`` are those of ``best_epoch``, the
        epoch of the best evaluation accuracy; with a ``checkpoint_dir`` its
        checkpoint is kept beside the newest ones, so a resumed run has them too.
      lr_halving: the book's learning schedule (ch. 3): halve the step size each
        time evaluation accuracy has not improved for this many epochs (since
        the last improvement or halving), and stop once it has come down to
        ``lr_floor`` (1/128) of the start. Each epoch's record gets
        ``lr_factor``, the factor it trained with. The factor lives in the
        optimizer state (``optimizer`` is chained with an
        ``optax.inject_hyperparams(optax.scale)``), so checkpoints carry it.
      checkpoint_dir: save (params, optimizer state, key, epoch, history) atomically every epoch.
        Unless resuming, it must not hold checkpoints already (ValueError).
        The run holds it (``fbp.checkpoint.lock_dir``): while another live run does,
        ``fbp.checkpoint.CheckpointDirInUse`` is raised before anything is read. A
        checkpoint that cannot be written (a full disk) raises
        ``fbp.checkpoint.CheckpointWriteError`` naming its epoch; the earlier
        ones are intact, so the run can be resumed. In a run of several
        processes (multi-host), process 0 alone holds, reads and writes it and
        sends what it read to the others, and an error there is raised in
        every process. The newest three checkpoints are kept, and the best
        epoch's.
      resume: continue from the newest complete checkpoint in ``checkpoint_dir``;
        a newer one that cannot be read (cut short, damaged) is passed over
        with a ``fbp.checkpoint.CheckpointWarning`` naming it.
        It must have been written with the same ``key`` and ``config``, a
        network and optimizer of the same structure, shapes and dtypes, and
        the same ``batch_size``, ``drop_last``, ``dropout``, ``reduction``,
        ``cost``, ``lr_halving`` and number of training examples (which fit
        saves with it), or resuming raises
        ``fbp.checkpoint.CheckpointMismatch`` naming what differs.
      keep_every: also keep the checkpoint of every epoch this divides
        (checkpoints spread over the run, as ``fbp.stats.tracin`` sums over).
      config: a JSON-able description of the run (learning rate, batch size,
        data: whatever the params' structure does not show), saved with each
        checkpoint and checked on resume. The epoch count is not part of it:
        a run can be resumed with more epochs.
      notes: a JSON-able dict saved with each checkpoint and not checked on
        resume: what a reader of the checkpoint may want that may change
        from one resume to the next (fbp train saves where the data was read
        from, which ``fbp evaluate RUN_DIR`` then reads again).
      on_epoch: called with each epoch's record (for printing, logging).
        In a run of several processes, this and the other callbacks
        (``monitor``, ``stop``, ``on_resume``) run on every process, and
        what one raises on some process fit raises on every process: there
        its own error, elsewhere a ``fbp.multihost.RaisedElsewhere`` naming
        that process and the error (``multihost.agreed``: one all-gather
        after each epoch for on_epoch and stop together, one for monitor),
        so that none is left waiting for the others.
      monitor: a function of the params, called after each epoch (after the
        built-in monitors), for a quantity of one's own: the names and values
        of the dict it returns join the epoch's record, and so the history,
        the checkpoints and ``on_epoch``'s argument. JAX and NumPy values
        become Python numbers and lists (the record is JSON, as checkpoints
        keep it). E.g. the weights' size, epoch by epoch:
        ``monitor=lambda p: {"w_norm": sum(jnp.sum(l.w ** 2) for l in p) ** 0.5}``.
      on_resume: called with the restored history when ``resume`` finds a checkpoint.
      on_progress: called as ``on_progress(epoch, steps_done, steps)`` about
        20 times while an epoch runs, from inside its jitted scan (an
        ``io_callback``), for a progress bar that moves within long
        epochs (``fbp train``'s). Only epochs that follow one of a second
        or more (not counting compiling) report, as each report costs the
        epoch 0.1-0.8 ms on the CPU, and on a CPU a first epoch of
        ``FIRST_EPOCH_MACS`` multiply-adds or more (3 × examples × weights,
        about a second); the params are bitwise the same either
        way. What it raises, fit raises once that epoch is recorded and
        checkpointed (after ``on_epoch``), except KeyboardInterrupt: that
        stops the epoch at once, at that report, and is raised with
        nothing of the epoch kept (the epochs before it are). With
        ``mesh``, the epoch ends on every device alike. In a run of several
        processes, the processes agree whether an epoch reports (it does
        where the last epoch took a second on any of them), the reports
        come to process 0 alone, and what on_progress raises there is
        raised on every process alike (elsewhere a copy of process 0's
        error, or a KeyboardInterrupt): an all-gather each epoch, and a
        broadcast each reporting one. Fits running at once in
        threads of one process each get their own reports: each epoch's
        computation carries the number that its reports are filed under.
      stop: called after each epoch, once it is recorded, checkpointed and
        passed to ``on_epoch``: None to go on, or a reason (a string) to
        stop there, as early stopping does; the result's ``stop_reason`` is
        then that string. ``fbp train`` stops this way on Ctrl-C and SIGTERM.
        In a run of several processes, every process's is asked, and all
        stop after the same epoch when any of them gives a reason (the
        first process's reason).
      opt_state: start from this optimizer state (a previous ``FitResult.opt_state``)
        instead of ``optimizer.init(params)``; its tree must fit the optimizer.
      mesh: a ``jax.sharding.Mesh`` from ``fbp.parallel.make_mesh`` for
        data-parallel training (params replicated, mini-batches split over the
        devices); None runs on the default device.

    A non-finite cost stops training: the result holds the last good params
    (the previous epoch's) and ``error`` says at which epoch and step.

    A KeyboardInterrupt (Ctrl-C) raised out of fit's epochs (from the first
    epoch's compiling on) carries ``fit_result``:
    the ``FitResult`` of the epochs recorded before it (and checkpointed,
    with a ``checkpoint_dir``), with ``stop_reason`` "interrupted". In a
    notebook, ``except KeyboardInterrupt as e: result = e.fit_result``
    keeps what was trained; Ctrl-C itself takes effect when the running
    epoch's jitted call returns, and that epoch is not kept.

    The same arguments give bitwise the same params on a CPU, in one process
    or resumed in another. On a GPU, XLA's autotuner may pick another
    algorithm for a product in each process, so a run resumed in a new
    process can end off by up to about 4e-6 (measured on an H200); set
    ``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` before jax starts (``fbp
    train --deterministic`` does) for bitwise resumes there too.

    In a run of several processes, each calls ``fit`` with the same arguments
    and data; the first thing it does is compare them (a CRC-32 of each, in
    one all-gather), and where some process's differ from process 0's (other
    params, key, data, epochs, ...), every process raises the same ValueError
    naming them.
    """
    multihost.same_on_every_process(dict(
        params=params, train=tuple(train[:2]) if isinstance(train, Sequence) else train,
        cost=getattr(cost, "name", cost),
        epochs=epochs, batch_size=batch_size, key=key, drop_last=drop_last,
        evaluation=tuple(evaluation[:2]) if isinstance(evaluation, Sequence) else evaluation, reduction=reduction,
        grad=grad if isinstance(grad, str) else "a function", dropout=dropout, monitor_training=monitor_training,
        monitor_evaluation=monitor_evaluation, monitor_deltas=monitor_deltas,
        monitor_noise_scale=monitor_noise_scale, patience=patience, lr_halving=lr_halving, lr_floor=lr_floor,
        checkpoint_dir=checkpoint_dir is not None, resume=resume, keep_every=keep_every, opt_state=opt_state,
        config=config, stop=stop is not None, on_progress=on_progress is not None))
    epochs, batch_size = _check_fit_arguments(optimizer, key, epochs, batch_size, evaluation, monitor_evaluation,
                                              patience, lr_halving, lr_floor)
    dropout = check_rate("dropout", dropout)
    check_drop_last(drop_last)
    if keep_every is not None:
        check_int("keep_every", keep_every, 1, " (epochs) or None")
        if not checkpoint_dir:
            raise ValueError(f"keep_every={keep_every} keeps checkpoints, and there are none without a "
                             f"checkpoint_dir: give one, or leave keep_every=None.")
    if dropout and isinstance(params, (list, tuple)) and len(params) == 1:
        raise ValueError(f"dropout={dropout} drops hidden units, and this network has none (one layer): it would "
                         f"train as without it. Give it a hidden layer, or leave dropout=0.")
    for name, value in (("config", config), ("notes", notes)):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be JSON-able (it is saved with each checkpoint): {e}") from None
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict (saved with each checkpoint) or None, got {type(value).__name__}")
    for name, f, what in (("monitor", monitor, "of the params that returns a dict of numbers"),
                          ("stop", stop, "of no arguments that returns None or a reason to stop"),
                          ("on_progress", on_progress, "(epoch, steps_done, steps)"),
                          ("on_epoch", on_epoch, "of each epoch's record (a dict)"),
                          ("on_resume", on_resume, "of the restored history (a list of records)")):
        if f is not None and not callable(f):
            raise TypeError(f"{name} must be a function {what}, got {type(f).__name__}")
    (X, Y), training, evaluated = _fit_data(params, train, evaluation, cost, batch_size, drop_last, mesh)
    if not monitor_evaluation:
        evaluated = None
    # What shapes each step beside the params and the optimizer's state (whose structure the checkpoint
    # shows): saved with each checkpoint, and a resume with others is refused as config's are.
    settings = dict(batch_size=batch_size, drop_last=drop_last, training_examples=len(X), dropout=dropout,
                    reduction=reduction, cost=getattr(cost, "name", cost), lr_halving=lr_halving)
    if lr_halving is not None:
        optimizer = compiled_once(with_lr_schedule, optimizer)
    opt_state = _first_opt_state(optimizer, params, opt_state, lr_halving)
    # The directory last, once the arguments and the data are found good: it is made here if missing, and
    # a call refused for its data would leave it behind empty.
    multihost.process_0_does(lambda: check_checkpoint_dir(checkpoint_dir, resume))
    progress, best_params = _Progress(), None

    def why_stop():
        if patience is not None and progress.since_best >= patience:
            return "patience"
        if lr_halving is not None and lr_factor(opt_state) <= lr_floor:
            return "lr_floor"
        return None

    # The callbacks, each process's own: in a run of several, what one raises every process raises
    # (multihost.agreed: an all-gather), where the others would wait for it in the next collective.
    def after_epoch(record):
        """on_epoch, then whether stop asks to: the processes of a run stop together when any of them asks."""
        if on_epoch is None and stop is None:
            return None
        calling = "on_epoch"

        def on_every_process():
            nonlocal calling
            if on_epoch is not None:
                on_epoch(record)
            calling = "stop"
            reason = None if stop is None else stop()
            if reason is not None and not isinstance(reason, str):
                raise TypeError(f"stop must return None or a reason to stop (a str), got {type(reason).__name__}")
            return reason
        return multihost.agreed(on_every_process, lambda: calling)

    def own_monitor(monitor: Callable, params, record) -> dict:
        got: dict = {}

        def on_every_process():
            got.update(_own_monitor(monitor, params, record))
        multihost.agreed(on_every_process, "monitor")
        return got

    # Held from the first read of the directory to the last write: another run
    # there meanwhile would write the same epochs' files and prune this one's.
    # With several processes, process 0 alone holds, reads and writes it.
    with contextlib.ExitStack() as held:
        if checkpoint_dir:
            multihost.process_0_does(lambda: held.enter_context(ckpt.lock_dir(checkpoint_dir)))
        restored = _restore_newest(checkpoint_dir, params, opt_state, key, config, settings) \
            if resume and checkpoint_dir else None
        if restored is not None:
            params, opt_state, progress, best_params = restored
            if on_resume is not None:
                def resumed():
                    on_resume(progress.history)
                multihost.agreed(resumed, "on_resume")

        epoch_fn = compiled_once(_epoch_for, optimizer, cost, reduction, grad, dropout, batch_size, drop_last, mesh)
        # With on_progress: the epochs by whether they report, each compiled before its first run; the
        # last one's run (a guess before the first).
        epochs_by_report, run_seconds = {}, 0.0
        if jax.default_backend() == "cpu" and 3 * len(X) * sum(layer.macs for layer in params) >= FIRST_EPOCH_MACS:
            run_seconds = PROGRESS_SECONDS
        if mesh is not None:
            from fbp import parallel

            params, opt_state = parallel.replicate(mesh, params), parallel.replicate(mesh, opt_state)
        # The tree's structure is the same every epoch, so its record for load_params is too.
        network = ckpt.network_meta(dict(params=params, opt_state=opt_state, key=key)) if checkpoint_dir else None
        error = None
        stop_reason = why_stop()  # a resumed run that had already stopped early stays stopped
        # What a Ctrl-C (KeyboardInterrupt) leaves: the epochs recorded and checkpointed so far.
        kept = (params, opt_state, len(progress.history), progress.best_epoch, best_params)
        try:
            for epoch in range(progress.epoch + 1, epochs + 1):
                if stop_reason is not None:
                    break
                t0 = time.perf_counter()
                args = (params, opt_state, jax.random.fold_in(key, epoch), X, Y)
                if on_progress is None:
                    new_params, new_opt_state, losses, report_error = _run_epoch(epoch_fn, args, epoch, None)
                else:  # compiled first, so that the time that decides whether the next epoch reports is the run's
                    # Several processes run the same program: each reports when any one would.
                    report = multihost.first_given("report" if run_seconds >= PROGRESS_SECONDS else None) is not None
                    if report not in epochs_by_report:  # jax 0.10's jit reuses it below; 0.4.36's compiles again
                        fn = compiled_once(_epoch_for, optimizer, cost, reduction, grad, dropout, batch_size,
                                           drop_last, mesh, True) if report else epoch_fn
                        fn.lower(*args, *((_run_arg(),) if report else ())).compile()
                        epochs_by_report[report] = fn
                    fn = epochs_by_report[report]
                    t_run = time.perf_counter()
                    new_params, new_opt_state, losses, report_error = _run_epoch(fn, args, epoch,
                                                                                 on_progress if report else None)
                    run_seconds = time.perf_counter() - t_run
                seconds = time.perf_counter() - t0
                bad = np.flatnonzero(~np.isfinite(losses))
                if bad.size:
                    error = NonFiniteLoss(epoch, int(bad[0]) + 1, epoch - 1)
                    break
                params, opt_state = new_params, new_opt_state
                record = dict(epoch=epoch, train_step_cost=float(np.mean(losses)), seconds=seconds)
                if lr_halving is not None:
                    record["lr_factor"] = lr_factor(opt_state)
                record.update(_monitor(params, training, evaluated, cost, monitor_training=monitor_training,
                                       deltas=monitor_deltas, noise_scale=monitor_noise_scale))
                if monitor is not None:
                    record.update(own_monitor(monitor, params, record))
                if "evaluation_accuracy" in record and progress.evaluated(epoch, record["evaluation_accuracy"]):
                    best_params = params
                if lr_halving is not None and progress.since_change >= lr_halving:
                    opt_state, progress.since_change = halve_lr(opt_state), 0  # the next epoch trains at half the step
                progress.epoch = epoch
                progress.history.append(record)
                if checkpoint_dir:
                    _save_epoch(checkpoint_dir, epoch, dict(params=params, opt_state=opt_state, key=key),
                                progress.meta(config=config, fit=settings, network=network,
                                              **({} if notes is None else dict(notes=notes))), progress.best_epoch,
                                keep_every)
                kept = (params, opt_state, len(progress.history), progress.best_epoch, best_params)
                asked = after_epoch(record)
                if report_error is not None:
                    raise report_error
                stop_reason = why_stop() or asked
        except KeyboardInterrupt as interrupt:
            params, opt_state, n, best_epoch, best_params = kept
            kept_result = FitResult(params, opt_state, progress.history[:n], n, True, None, best_epoch, best_params,
                                    "interrupted")
            interrupt.fit_result = kept_result  # type: ignore[attr-defined]
            raise
        history = progress.history
        return FitResult(params, opt_state, history, len(history), stop_reason is not None, error,
                         progress.best_epoch, best_params, stop_reason)

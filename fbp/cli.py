"""The command line: ``fbp check``, ``fbp trace``, ``fbp train``, ``fbp evaluate``, ``fbp predict``, ``fbp plot``
(also ``python -m fbp``).

``main`` parses the flags (``fbp.cli_args``) and runs the command they
name. ``fbp check`` and ``fbp plot`` are here, with what the commands share
(the network from its flags, the one-line errors, the checked standard
output, --json); ``fbp trace`` is ``fbp.cli_trace``, ``fbp train``
``fbp.cli_train``, ``fbp evaluate`` ``fbp.cli_evaluate`` and ``fbp
predict`` ``fbp.cli_predict``, each imported when it runs."""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Optional, Sequence

from fbp.cli_args import build_parser, conv_text


def network_text(params) -> str:
    """A network as fbp train's flags give it: "784,100,10", with
    " conv=20:5:2" after it where it starts with convolutional layers."""
    import fbp

    convs = [(layer.w.shape[0], layer.w.shape[2], layer.pool) for layer in params if isinstance(layer, fbp.Conv)]
    sizes = [params[0].n_in] + [layer.n_out for layer in params if not isinstance(layer, fbp.Conv)]
    return ",".join(map(str, sizes)) + (f" conv={conv_text(convs)}" if convs else "")


def make_network(args, key, sizes, dtype) -> list:
    """The network of ``--sizes`` (and ``--conv``, its layers after the input),
    ``--activation``, ``--output-activation`` and ``--init``; a ValueError
    (naming ``--conv`` where that is what is wrong) for one that cannot be made."""
    import fbp
    from fbp import plot

    if not args.conv:
        return fbp.init_mlp(key, sizes, activation=args.activation, output_activation=args.output_activation,
                            init=args.init, dtype=dtype)
    side = plot.image_side(sizes[0])
    if side is None:
        raise ValueError(f"--conv needs square images, but an example here is {sizes[0]} numbers; "
                         f"leave out --conv for this data")
    shape = (side, side)
    try:
        return fbp.init_convnet(key, shape, args.conv, sizes[1:], activation=args.activation,
                                output_activation=args.output_activation, init=args.init, dtype=dtype)
    except ValueError as e:
        raise ValueError(f"--conv {conv_text(args.conv)} on {shape[0]}×{shape[1]} images: {e}") from None


def _cost_pairing(params, cost) -> Optional[str]:
    """The library's check of --cost against --output-activation, with the two flags named."""
    import fbp

    try:
        fbp.backprop.check_cost(params, cost)
    except ValueError as e:
        return f"--cost {cost} with --output-activation {params[-1].act.name}: {e}"
    return None


def _validation_size_problem(e, given: bool) -> str:
    """The one-line error for a validation split that leaves no training
    data: when --validation was not given, the default is what failed, and
    the user needs to hear that rather than "got 10000"."""
    if given:
        return f"--validation: {e}"
    return (f"--validation: the default of {e.n_validation} validation examples (MNIST's 50,000/10,000 split) "
            f"leaves no training data from the {e.n_train} training examples here; give --validation N "
            f"below {e.n_train} (0 for none)")


def _data_dir_problem(data: str, data_dir: Optional[str]) -> Optional[str]:
    """The one-line error for a --data that needs --data-dir given without
    it, or for --data-dir given to digits, which read none; or None."""
    if data == "digits" and data_dir is not None:  # most likely a forgotten --data idx: do not train on digits
        return (f"--data-dir: digits are bundled with scikit-learn and read no directory, but --data-dir was given "
                f"({data_dir}); for the IDX files there use --data idx (or fashion-mnist)")
    if data == "idx" and not data_dir:
        return "--data idx needs --data-dir, the directory holding the four IDX files"
    if data == "mnist-pkl" and not data_dir:
        return ("--data mnist-pkl needs --data-dir, the book's mnist.pkl.gz (data/ of its repository) or the "
                "directory holding it")
    if data == "npz" and not data_dir:
        return "--data npz needs --data-dir, the .npz file of x_train, y_train, x_test and y_test"
    return None


def class_named(text: str, n_out: int, names, flag: Optional[str] = None) -> "int | str":
    """--explain-class's class (fbp evaluate's and fbp predict's; or that of ``flag``, the flag and value the
    problem names): a number below ``n_out`` or one of ``names`` (any case); or the one-line problem."""
    if text.strip().isdigit() and int(text) < n_out:
        return int(text)
    if names:
        found = [c for c, name in enumerate(names) if name.lower() == text.strip().lower()]
        if found:
            return found[0]
    known = ", ".join(f"{c} {name}" for c, name in enumerate(names)) if names else f"0 to {n_out - 1}"
    return f"{flag or f'--explain-class {text}'}: the network's classes are {known}"


def image_unwritten(flag: str, path: str, figure) -> Optional[str]:
    """``figure`` written into ``path`` (``plot.save``: atomically, its
    format by the suffix), or the one-line error naming ``flag`` where it
    could not be."""
    from fbp import plot

    try:
        plot.save(figure, path)
    except OSError as e:
        return f"{flag} {path} cannot be written ({e.strerror or e})"
    return None


def _image_path_problem(flag: str, path: str) -> Optional[str]:
    """The one-line error for an image file name that ``plot.save`` cannot
    write (a suffix that names no format, a directory, a place that cannot
    be written), or None; found before the work that draws it. Raises
    ``plot.MetricsError`` without matplotlib."""
    import os

    from fbp import checkpoint as fckpt
    from fbp import plot

    known = plot.formats()
    if os.path.splitext(path)[1].lstrip(".").lower() not in known:
        return (f"{flag} {path}: the suffix names no image format matplotlib writes; end it with .png, .pdf or .svg "
                f"(or one of {', '.join('.' + f for f in known)})")
    if os.path.isdir(path):
        return f"{flag} {path} is a directory; give the image's file name"
    try:  # the atomic write's own check: a device or pipe, a directory that cannot be written or made
        fckpt.check_params_path(path)
    except OSError as e:
        return f"{flag} {path} cannot be written ({e.strerror or e}); give a writable path"
    return None


def trained_with(meta: dict) -> dict:
    """A loaded network's meta (``load_params(..., with_meta=True)``) as the
    commands read it: what fbp train's --save-params writes (data_flag,
    data_dir, validation, cost, tested_epoch, …), also for a training
    checkpoint, whose fbp train flags say it (its ``checkpoint`` too)."""
    if "network" not in meta:
        return meta
    config, notes = meta.get("config"), meta.get("notes")
    config, notes = (config if isinstance(config, dict) else {}), (notes if isinstance(notes, dict) else {})
    return dict(data_flag=config.get("--data"), data_dir=notes.get("--data-dir"), validation=config.get("--validation"),
                cost=config.get("--cost"), tested_epoch=meta["epoch"], checkpoint=meta.get("checkpoint"),
                classes=notes.get("classes"))


def with_json(command: str, path: Optional[str], work, args) -> int:
    """``work(args, record)``, a command that prints its report and fills
    ``record``; with ``path`` (a --json FILE) the record is written there
    too, as one strict JSON object, atomically once the work has succeeded,
    or (``-``) printed on stdout in the report's place. The file name is
    checked first. Returns the exit status."""
    import io
    import os

    from fbp import checkpoint as fckpt
    from fbp.cli_report import metrics_line

    if path is not None and path != "-":
        try:
            fckpt.check_params_path(path)
        except OSError as e:
            return _error(command, f"--json {path} cannot be written ({e.strerror or e}); give a writable file, "
                                   f"or - for stdout")
    record: dict = {}
    if path != "-":
        status = work(args, record)
    else:
        with contextlib.redirect_stdout(io.StringIO()):  # the JSON alone on stdout, for a pipe
            status = work(args, record)
    if status != 0 or path is None:
        return status
    text = metrics_line(record)
    if path == "-":
        sys.stdout.write(text)
        return 0
    final = os.path.abspath(path)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    try:
        os.makedirs(os.path.dirname(final), exist_ok=True)  # the name's check made it only to try it
        fckpt.write_atomic(final, os.path.join(os.path.dirname(final), f".tmp-json-{os.getpid()}"), write)
    except OSError as e:
        return _error(command, f"--json {path} cannot be written ({e.strerror or e})")
    print(f"wrote {path}: the report as JSON")
    return 0


def saved_network(args, dtype, with_meta: bool = False):
    """fbp check's and fbp trace's --params: (the network, each leaf in
    ``dtype``, float32 → float64 being exact; the cost to use, --cost or the
    one it was trained with where its file says, else quadratic; with
    ``with_meta``, what it was trained with, ``trained_with``'s), or the
    one-line problem: a flag that would shape another network, a file that
    is not a network."""
    import jax
    import jax.numpy as jnp

    from fbp import checkpoint as fckpt

    shaping = [flag for flag, value in (("--sizes", args.sizes), ("--conv", getattr(args, "conv", None)),
                                        ("--weights", getattr(args, "weights", None)),
                                        ("--biases", getattr(args, "biases", None)),
                                        ("--activation", args.activation),
                                        ("--output-activation", args.output_activation), ("--init", args.init))
               if value is not None]
    if shaping:
        return f"--params {args.params} gives the network, its layers and activations; drop {', '.join(shaping)}"
    try:
        params, meta = fckpt.load_params(args.params, with_meta=True)
    except fckpt.CheckpointError as e:
        return str(e)
    meta = trained_with(meta)
    trained = meta.get("cost")
    loaded = (jax.tree.map(lambda a: jnp.asarray(a, dtype), params),
              args.cost or (trained if isinstance(trained, str) else None) or "quadratic")
    return loaded + (meta,) if with_meta else loaded


def _one_unit_softmax_problem(sizes, output: str) -> Optional[str]:
    """The flags' words for a softmax over one output unit (the library's
    message names params[i] and its keywords), or None."""
    if output == "softmax" and sizes[-1] == 1:
        return (f"--output-activation softmax over the one output unit of --sizes {','.join(map(str, sizes))} is "
                f"always 1 and learns nothing; use --output-activation sigmoid, or end --sizes with 2 or more")
    return None


def _error(command: str, msg: str) -> int:
    """A command's one-line error on stderr; its exit status, 2."""
    print(f"fbp {command}: error: {msg}", file=sys.stderr)
    return 2


def cmd_train(args) -> int:
    """fbp train (``fbp.cli_train``, imported when it runs)."""
    from fbp import cli_train

    return cli_train.cmd_train(args)


def cmd_evaluate(args) -> int:
    """fbp evaluate (``fbp.cli_evaluate``, imported when it runs)."""
    from fbp import cli_evaluate

    return cli_evaluate.cmd_evaluate(args)


def cmd_plot(args) -> int:
    import os

    from fbp import plot

    fail = functools.partial(_error, "plot")

    labels = [None] * len(args.metrics)
    if args.labels is not None:
        labels = args.labels.split(",")
        if len(labels) != len(args.metrics):
            names = f"{len(labels)} name{'' if len(labels) == 1 else 's'}"
            return fail(f"--labels: {names} for {len(args.metrics)} files; give one name per file")
    out = args.out if args.out is not None else os.path.splitext(os.path.normpath(args.metrics[0]))[0] + ".png"
    try:
        problem = _image_path_problem("--out", out)
        if problem:
            return fail(problem)
        runs = [plot.read_metrics(path, label) for path, label in zip(args.metrics, labels)]
        fig = plot.figure(runs)
    except plot.MetricsError as e:
        return fail(str(e))
    try:
        plot.save(fig, out)
    except OSError as e:
        return fail(f"--out {out} cannot be written ({e.strerror or e}); give a writable path")
    epochs = ", ".join(str(len(run.epochs)) for run in runs)
    one = len(runs) == 1 and len(runs[0].epochs) == 1
    print(f"wrote {out}: {len(runs)} run{'s' if len(runs) > 1 else ''} ({epochs} epoch{'' if one else 's'})")
    return 0


def cmd_check(args) -> int:
    """fbp check: the hand-written gradient against jax.grad and finite
    differences, of a network made from the flags or read from --params, on
    random inputs or a batch of --data; exit 1 above --tol."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import fbp

    fail = functools.partial(_error, "check")
    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    k_params, k_x, k_y, k_fd, k_drop = jax.random.split(jax.random.key(args.seed), 5)
    if args.data is None and args.data_dir is not None:
        return fail(f"--data-dir {args.data_dir} is where --data reads its files; give --data too")
    if args.params is not None:
        loaded = saved_network(args, dtype)
        if isinstance(loaded, str):
            return fail(loaded)
        params, cost = loaded
    else:
        args.activation, args.init = args.activation or "sigmoid", args.init or "normalized"
        sizes = args.sizes or [784, 30, 10]
        problem = _one_unit_softmax_problem(sizes, args.output_activation or args.activation)
        if problem:
            return fail(problem)
        try:
            params = make_network(args, k_params, sizes, dtype)
        except (ValueError, TypeError) as e:
            return fail(str(e))
        cost = args.cost or "quadratic"
    n_in, n_out = params[0].n_in, params[-1].n_out
    mismatch = _cost_pairing(params, cost)
    if mismatch:
        return fail(mismatch)
    if args.data is None:
        X = jax.random.uniform(k_x, (args.batch_size, n_in), dtype)
        Y = jax.nn.one_hot(jax.random.randint(k_y, (args.batch_size,), 0, n_out), n_out, dtype=dtype)
        batch = "random inputs in [0, 1) and random labels"
    else:
        from fbp import data as fdata

        problem = _data_dir_problem(args.data, args.data_dir)
        if problem:
            return fail(problem)
        try:
            ds = fdata.load(args.data, args.data_dir, 0)
        except (fdata.DataError, ValueError) as e:
            return fail(str(e) if str(e).startswith("--") else f"--data {args.data}: {e}")
        if (ds.n_in, ds.n_classes) != (n_in, n_out):
            fix = ("give the --data it was trained on" if args.params is not None else
                   f"give --sizes {ds.n_in},…,{ds.n_classes}")
            return fail(f"--data {args.data}: its examples are {ds.n_in} numbers in {ds.n_classes} classes, and "
                        f"the network takes {n_in} and gives {n_out}; {fix}")
        if args.batch_size > len(ds.train):
            return fail(f"--batch-size {args.batch_size}: {ds.name} has {len(ds.train)} training examples")
        rows = np.sort(np.random.default_rng(args.seed).choice(len(ds.train), args.batch_size, replace=False))
        X, Y = jnp.asarray(ds.train.X[rows], dtype), jnp.asarray(ds.train.Y[rows], dtype)
        batch = f"the training examples of {ds.name}, rows {', '.join(map(str, rows))}"
    try:
        masks = fbp.dropout_masks(k_drop, params, args.batch_size, args.dropout) if args.dropout else None
        report = fbp.compare_grads(params, X, Y, cost, args.reduction, fd_samples=args.fd_samples, key=k_fd,
                                   masks=masks)
    except (ValueError, TypeError) as e:
        return fail(str(e))
    tol = args.tol if args.tol is not None else (1e-10 if args.dtype == "float64" else 1e-4)
    if args.params is not None:
        network = f"network={args.params} ({network_text(params)})"
    else:
        network = f"sizes={','.join(map(str, sizes))}" + (f" conv={conv_text(args.conv)}" if args.conv else "")
    print(
        f"fbp check: {network} activation={params[0].act.name} output={params[-1].act.name} cost={cost} "
        + (f"init={args.init} " if args.params is None else "")
        + f"batch={args.batch_size} reduction={args.reduction} dtype={args.dtype}"
        + (f" dropout={args.dropout}" if args.dropout else "")
    )
    print(f"on {batch}")
    print("hand-written batch_backward vs jax.grad (rel = max|diff| / max|jax.grad| per leaf)")
    print("and vs central finite differences (fd rel = max|diff| / max|gradient| over all leaves)\n")
    print(report.table())
    ok = report.max_rel <= tol
    print(f"\n{'OK' if ok else 'FAIL'}: worst relative difference from jax.grad {report.max_rel:.2e} "
          f"(tolerance {tol:.0e})")
    return 0 if ok else 1


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """fbp's own warnings (a checkpoint passed over on --resume) as one line
    on stderr, like the errors; any other warning as Python shows it."""
    import warnings

    from fbp.checkpoint import CheckpointWarning

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, CheckpointWarning):
                print(f"fbp {command}: warning: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


class StdoutWriteError(OSError):
    """Standard output could not be written: a full disk under ``> file``, say."""

    def __str__(self) -> str:
        return f"could not write to standard output ({self.strerror})"


class _CheckedStdout:
    """``sys.stdout`` while a command runs: a failed write or flush (but a
    closed pipe, which ends the command as it ends any Unix tool) is a
    ``StdoutWriteError``, which the commands turn into one line on stderr.
    ``failed`` keeps the first, for writers that swallow what they raise
    (argparse's ``--help`` and ``--version``)."""

    def __init__(self, stream):
        self._stream = stream
        self.failed: Optional[StdoutWriteError] = None

    def _checked(self, method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            error = StdoutWriteError(e.errno, e.strerror)
            self.failed = self.failed or error
            raise error from None

    def write(self, text):
        return self._checked(self._stream.write, text)

    def flush(self):
        return self._checked(self._stream.flush)

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the stream's own
        return getattr(self._stream, name)


def _devnull_for_stdout() -> None:
    """Standard output onto /dev/null, so that the interpreter's last flush of
    what could not be written raises nothing more at exit."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # a stream of Python's own (a test's): no descriptor to close
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), fd)


def cmd_predict(args) -> int:
    """fbp predict (``fbp.cli_predict``, imported when it runs)."""
    from fbp import cli_predict

    return cli_predict.cmd_predict(args)


def cmd_trace(args) -> int:
    """fbp trace (``fbp.cli_trace``, imported when it runs)."""
    from fbp import cli_trace

    return cli_trace.cmd_trace(args)


COMMANDS = {"check": cmd_check, "trace": cmd_trace, "train": cmd_train, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "plot": cmd_plot}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    stdout = sys.stdout
    sys.stdout = checked = _CheckedStdout(stdout)
    command = "fbp"
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # --help or --version (status 0), or a usage error (2)
            checked.flush()  # what --help wrote, which argparse would let go unwritten without a word
            if checked.failed is not None:
                raise checked.failed from None
            raise
        command = f"fbp {args.command}"
        with _one_line_warnings(args.command):
            rc = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return rc
    except BrokenPipeError:  # `fbp evaluate net.npz | head -2`: the reader has gone, as with any Unix tool
        _devnull_for_stdout()
        return 141  # 128 + SIGPIPE
    except StdoutWriteError as e:  # `fbp check > file` on a full disk
        print(f"{command}: error: {e}", file=sys.stderr)
        _devnull_for_stdout()
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside training (fbp train says what is kept when it is inside)
        print(f"\n{command}: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    sys.exit(main())

"""The command line: ``fbp check``, ``fbp train``, ``fbp evaluate``, ``fbp plot`` (also ``python -m fbp``).

The flags of all four and the three short commands are here; ``fbp train``
itself is ``fbp.cli_train``."""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import sys
from typing import Optional, Sequence


def _sizes(text: str) -> list:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 784,30,10, got {text!r}")
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two positive widths like 784,30,10, got {text!r}")
    return sizes


def parse_conv(text: str) -> list:
    """``--conv 20:5:2,40:5:2``: (maps, k, pool) per convolutional layer; the pool defaults to 1 (none).
    An argparse ``type`` (benchmarks/conv_throughput.py takes its ``--conv`` with it too)."""
    what = f"convolutional layers as MAPS:K[:POOL] separated by commas, like 20:5:2, got {text!r}"
    layers = []
    for part in text.split(","):
        try:
            numbers = [int(s) for s in part.split(":")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}")
        if len(numbers) not in (2, 3):
            raise argparse.ArgumentTypeError(f"expected {what} (two or three numbers a layer, not {len(numbers)})")
        if min(numbers) < 1:
            raise argparse.ArgumentTypeError(f"expected {what} (MAPS, K and POOL are positive integers)")
        layers.append(tuple(numbers) if len(numbers) == 3 else (numbers[0], numbers[1], 1))
    return layers


def conv_text(layers) -> str:
    """``--conv``'s text for (maps, k, pool) layers."""
    return ",".join(":".join(map(str, layer)) for layer in layers)


def network_text(params) -> str:
    """A network as fbp train's flags give it: "784,100,10", with
    " conv=20:5:2" after it where it starts with convolutional layers."""
    import fbp

    convs = [(layer.w.shape[0], layer.w.shape[2], layer.pool) for layer in params if isinstance(layer, fbp.Conv)]
    sizes = [params[0].n_in] + [layer.n_out for layer in params if not isinstance(layer, fbp.Conv)]
    return ",".join(map(str, sizes)) + (f" conv={conv_text(convs)}" if convs else "")


def _number(text: str, kind, ok, what: str):
    """Parse ``text`` as ``kind`` (int or float) and check it, or say what was expected."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if not ok(value) or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def _nonneg_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 0, "a non-negative integer")


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: v > 0, "a positive number")


def _nonneg_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, "a number ≥ 0")


def _seed(text: str) -> int:
    # jax.random.key keeps 32 bits of the seed when x64 is off (2**32 would be
    # seed 0 again) and 64 with it on (--dtype float64), so only [0, 2**32)
    # names one key, the same in both.
    return _number(text, int, lambda v: 0 <= v < 2**32, "an integer from 0 to 4294967295 (2**32 − 1)")


def _tolerance(text: str) -> float:
    return _number(text, float, lambda v: True, "a finite number")


def _fraction(text: str) -> float:  # a momentum coefficient μ, a dropout rate
    return _number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _choices(names):
    return sorted(names)


def _hidden_choices(activations):
    """The elementwise activations: softmax couples a layer's units, so fbp takes it on the output layer only."""
    return sorted(name for name, act in activations.items() if act.prime is not None)


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


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows each flag's default in ``--help``, unless its help already says
    it or there is none to show (None, or False for a switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False or default is argparse.SUPPRESS
                or "default" in text):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()

    def _fill_text(self, text, width, indent):
        # Paragraphs are re-wrapped, except indented ones (examples), kept line for line.
        return "\n\n".join(
            "\n".join(indent + line for line in para.splitlines()) if para.startswith("  ")
            else super(_DefaultsFormatter, self)._fill_text(para, width, indent)
            for para in text.split("\n\n")
        )


def versions() -> dict:
    """fbp's version and those of what it computes with (``fbp --version``;
    the final --metrics-out record)."""
    import jax
    import optax

    import fbp

    return {"fbp": fbp.__version__, "jax": jax.__version__, "jaxlib": jax.lib.__version__, "optax": optax.__version__}


def build_parser() -> argparse.ArgumentParser:
    from fbp import multihost
    from fbp.activations import ACTIVATIONS
    from fbp.costs import COSTS
    from fbp.data import DATASETS
    from fbp.network import INITS

    parser = argparse.ArgumentParser(
        prog="fbp", description="Backpropagation written by hand, checked against jax.grad."
    )
    v = versions()
    parser.add_argument("--version", action="version",
                        version=f"fbp {v['fbp']} (jax {v['jax']}, jaxlib {v['jaxlib']}, optax {v['optax']})")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check",
        formatter_class=_DefaultsFormatter,
        help="compare the hand-written gradient with jax.grad and finite differences",
        description="Compare the hand-written gradient (batch_backward) with jax.grad and with "
        "central finite differences on random data, and print a per-leaf table.",
    )
    check.add_argument("--sizes", type=_sizes, default=[784, 30, 10], help="layer widths, input first")
    check.add_argument("--conv", type=parse_conv, default=None, metavar="MAPS:K[:POOL],…",
                       help="convolutional layers after the input (--sizes' first width, a square image), as "
                            "fbp train --conv makes them")
    check.add_argument("--activation", choices=_hidden_choices(ACTIVATIONS), default="sigmoid",
                       help="hidden activation (softmax is for --output-activation)")
    check.add_argument("--output-activation", choices=_choices(ACTIVATIONS), default=None,
                       help="output activation (default: --activation)")
    check.add_argument("--cost", choices=_choices(COSTS), default="quadratic", help="cost function C")
    check.add_argument("--init", choices=_choices(INITS), default="normalized", help="weight initialization")
    check.add_argument("--batch-size", type=_positive_int, default=16, help="random examples in the batch")
    check.add_argument("--reduction", choices=["mean", "sum"], default="mean", help="cost over the batch")
    check.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                       help="check the gradient of a network thinned by dropout masks (each hidden unit of each "
                            "example dropped with probability P), as fbp train --dropout trains")
    check.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="floating-point type")
    check.add_argument("--fd-samples", type=_nonneg_int, default=24,
                       help="finite-difference entries to check (0: none)")
    check.add_argument("--seed", type=_seed, default=0, help="PRNG seed of params and data")
    check.add_argument("--tol", type=_tolerance, default=None,
                       help="fail (exit 1) above this relative difference from jax.grad (default 1e-10 in float64, "
                            "1e-4 in float32)")
    check.set_defaults(func=cmd_check)

    train = sub.add_parser(
        "train",
        formatter_class=_DefaultsFormatter,
        help="train a network with the hand-written gradient",
        description="Train a network (fully connected, or convolutional layers first with --conv) with the "
        "hand-written backward and an optax optimizer. "
        "The defaults reach about 97% test accuracy on the bundled digits in seconds.",
        epilog="examples:\n\n"
        "  fbp train                                             # digits: about 97% in seconds\n"
        "  fbp train --data fashion-mnist --lr-halving 5 --epochs 80 --save-params net.npz\n"
        "  fbp train --data fashion-mnist --conv 20:5:2 --lr 0.1 # the book's first conv net\n"
        "  fbp evaluate net.npz                                  # its accuracy per class\n"
        "  fbp train --checkpoint-dir run --epochs 60            # a checkpoint every epoch\n"
        "  fbp train --checkpoint-dir run --epochs 60 --resume   # after a crash or Ctrl-C: goes on\n"
        "  fbp plot run                                          # its learning curves, in run.png\n\n"
        "Ctrl-C (or SIGTERM) stops the run when the running epoch ends, and keeps, tests and saves that\n"
        "epoch; a second Ctrl-C stops it at once, without that epoch.",
    )
    # The flags in groups, for --help: what is trained on, the network, the book's SGD, its remedies for
    # overfitting, what is shown and kept, checkpoints, DP-SGD, and the devices and processes.
    data = train.add_argument_group("data")
    network = train.add_argument_group("the network")
    sgd = train.add_argument_group("training (the book's SGD, and optax's other update rules)")
    reg = train.add_argument_group("regularization (NNDL ch. 3)")
    watching = train.add_argument_group("monitoring and output")
    checkpoints = train.add_argument_group("checkpoints")
    privacy = train.add_argument_group("differential privacy (DP-SGD)")
    devices = train.add_argument_group("devices and processes")
    data.add_argument("--data", choices=DATASETS, default="digits",
                      help="digits (bundled, default), fashion-mnist (Debian's dataset-fashion-mnist), idx "
                           "(--data-dir), mnist-pkl (the book's mnist.pkl.gz, --data-dir) or npz (one .npz of "
                           "x_train, y_train, x_test, y_test, as Keras's mnist.npz; --data-dir)")
    data.add_argument("--data-dir", default=None,
                      help="directory of the four MNIST-format IDX files; for mnist-pkl the book's mnist.pkl.gz or "
                           "the directory holding it; for npz the .npz file")
    data.add_argument("--validation", type=_nonneg_int, default=None,
                      help="validation examples taken from the training set (default: 180 on digits, 10000 on the "
                           "others, MNIST's 50,000/10,000 split)")
    network.add_argument("--sizes", type=_sizes, default=None,
                         help="layer widths, input first; input and output must match the data (default: "
                              "n_in,100,n_classes)")
    network.add_argument("--conv", type=parse_conv, default=None, metavar="MAPS:K[:POOL],…",
                         help="convolutional layers between the input (square images) and --sizes' first hidden "
                              "layer, the book's ch. 6: MAPS feature maps of K×K kernels, each followed by "
                              "POOL×POOL max-pooling (default 1: none); the book's first conv net is 20:5:2")
    network.add_argument("--activation", choices=_hidden_choices(ACTIVATIONS), default="sigmoid",
                         help="hidden activation σ (softmax is for --output-activation)")
    network.add_argument("--output-activation", choices=_choices(ACTIVATIONS), default="softmax",
                         help="output activation")
    network.add_argument("--cost", choices=_choices(COSTS), default="log_likelihood", help="cost function C")
    network.add_argument("--init", choices=_choices(INITS), default="normalized", help="weight initialization")
    sgd.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="sgd", help="optax update rule")
    sgd.add_argument("--lr", type=_positive_float, default=None,
                     help="learning rate η (default: 0.5; with --optimizer momentum 0.5(1 − μ), the same "
                          "long-run step; with --optimizer adam 0.001, Adam's own default)")
    sgd.add_argument("--momentum", type=_fraction, default=None, metavar="μ",
                     help="the book's momentum coefficient μ, for --optimizer momentum (default: 0.9)")
    reg.add_argument("--l2", type=_nonneg_float, default=0.0, metavar="λ",
                     help="the book's λ: L2 weight decay λ/n on the weights")
    reg.add_argument("--l1", type=_nonneg_float, default=0.0, metavar="λ",
                     help="the book's L1 regularization (ch. 3), λ: each step also moves every weight by "
                          "−ηλ/n · sgn(w)")
    reg.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                     help="the book's dropout (ch. 3): drop each hidden unit with probability P at each step "
                          "(0.5 in the book), scaling the kept ones by 1/(1 − P), so that the whole network is "
                          "tested as it is")
    reg.add_argument("--expand", action="store_true",
                     help="the book's artificially expanded training data (ch. 3): each training image and its "
                          "copies shifted by a pixel up, down, left and right, 5× the examples (the validation "
                          "and test images are not expanded)")
    sgd.add_argument("--batch-size", type=_positive_int, default=10, help="mini-batch size m")
    sgd.add_argument("--epochs", type=_nonneg_int, default=30, help="epochs to train (more may be given on --resume)")
    sgd.add_argument("--seed", type=_seed, default=0,
                     help="PRNG seed of the initial params, the shuffles and the DP noise")
    sgd.add_argument("--patience", type=_positive_int, default=None,
                     help="stop after this many epochs without a better evaluation accuracy")
    sgd.add_argument("--lr-halving", type=_positive_int, default=None, metavar="N",
                     help="the book's learning schedule: halve η after N epochs without a better evaluation "
                          "accuracy, and stop when it is down to 1/128 of --lr")
    watching.add_argument("--monitor-training", action=argparse.BooleanOptionalAction, default=True,
                          help="evaluate cost and accuracy on the whole training set after each epoch (the book's "
                               "monitor_training_*); --no-monitor-training saves that pass")
    watching.add_argument("--monitor-deltas", action="store_true",
                          help="after each epoch, show and record each layer's ‖∂C/∂b^l‖ = ‖mean of δ^l‖ over the "
                               "training set, first layer to last: how fast it learns (the book's speed of learning, "
                               "ch. 5); about one more pass over the training set")
    watching.add_argument("--monitor-noise-scale", action="store_true",
                          help="after each epoch, show and record the gradient noise scale tr Σ / ‖G‖² of the "
                               "per-example gradients over the training set (McCandlish et al. 2018): about the "
                               "--batch-size whose gradient noise equals its signal")
    sgd.add_argument("--restore-best", action="store_true",
                     help="test (and report) the params of the epoch with the best validation accuracy, "
                          "not the last epoch's")
    checkpoints.add_argument("--checkpoint-dir", default=None, help="save a checkpoint here every epoch (atomic)")
    checkpoints.add_argument("--resume", action="store_true",
                             help="continue from the newest checkpoint in --checkpoint-dir")
    watching.add_argument("--save-params", default=None,
                          help="write the tested network (the last epoch's, or the best with --restore-best) to this "
                               ".npz file; fbp.load_params reads it back")
    watching.add_argument("--metrics-out", default=None,
                          help="write one JSON object per epoch (and a final one) to this .jsonl file")
    privacy.add_argument("--dp-clip", type=_positive_float, default=None,
                         help="DP-SGD: clip each example's gradient to this L2 norm (needs --dp-noise)")
    privacy.add_argument("--dp-noise", type=_nonneg_float, default=None,
                         help="DP-SGD: Gaussian noise multiplier σ; noise std σ·C/batch on the mean gradient")
    devices.add_argument("--devices", type=_positive_int, default=None,
                         help="data-parallel over this many devices; the batch size must divide evenly (default: all "
                              "local devices, or the most that divide the batch size)")
    devices.add_argument("--coordinator", default=None,
                         help="multi-host: host:port of process 0; with --num-processes and --process-id calls "
                              "jax.distributed.initialize")
    devices.add_argument("--num-processes", type=_positive_int, default=None, help="multi-host: number of processes")
    devices.add_argument("--process-id", type=_nonneg_int, default=None, help="multi-host: this process's index")
    devices.add_argument("--join-timeout", type=_positive_float, default=None, metavar="SECONDS",
                         help="multi-host: how long each process waits for all of them to join before it gives up "
                              f"with an error (jax's initialization_timeout; default: {multihost.JOIN_TIMEOUT:g})")
    network.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="floating-point type")
    devices.add_argument("--deterministic", action="store_true",
                         help="make XLA's GPU operations deterministic (XLA_FLAGS=--xla_gpu_deterministic_ops=true), "
                              "so that on a GPU, as on a CPU, a resumed run ends bitwise where an uninterrupted one "
                              "does; a CPU is deterministic already")
    watching.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        formatter_class=_DefaultsFormatter,
        help="test a network saved by fbp train --save-params, or one of its checkpoints",
        description="Load a network written by `fbp train --save-params` (or fbp.save_params), or the network "
        "of a training checkpoint, and report its cost, accuracy, each layer's ‖∂C/∂b^l‖ and per-class accuracy "
        "on a split of a data set; by default the test split of the data it was trained on.",
        epilog="examples:\n\n"
        "  fbp evaluate net.npz                                  # its test split, class by class\n"
        "  fbp evaluate run/ --split validation                  # the newest checkpoint of run/\n"
        "  fbp evaluate net.npz --split train --worst 16 --worst-images worst.png\n"
        "                                                        # the costliest training images: wrong labels?",
    )
    evaluate.add_argument("params", help="the .npz file written by --save-params, a checkpoint file, or a "
                          "--checkpoint-dir (its newest checkpoint)")
    evaluate.add_argument("--data", choices=DATASETS, default=None,
                          help="data set (default: the one it was trained on)")
    evaluate.add_argument("--data-dir", default=None, help="directory of the four MNIST-format IDX files, "
                          "the book's mnist.pkl.gz, or the .npz file (default: the one it was trained on)")
    evaluate.add_argument("--split", choices=["test", "validation", "train"], default="test", help="which split")
    evaluate.add_argument("--validation", type=_nonneg_int, default=None,
                          help="validation examples taken from the training set, for --split validation "
                               "or train (default: as it was trained)")
    evaluate.add_argument("--cost", choices=_choices(COSTS), default=None,
                          help="cost function C (default: the one it was trained with)")
    evaluate.add_argument("--worst", type=_positive_int, default=None, metavar="N",
                          help="also list the N examples of the split with the largest cost C_x, each with the "
                               "norm of its own gradient ‖∇C_x‖ (from its δ's by BP3 and BP4, in the same pass); "
                               "mislabelled examples gather there")
    evaluate.add_argument("--worst-images", default=None, metavar="FILE",
                          help="draw --worst's examples as images into FILE (.png, .pdf, .svg), each titled with "
                               "its row, true → predicted class and cost; needs square images and matplotlib")
    evaluate.add_argument("--worst-by", choices=["cost", "gradient"], default=None,
                          help="rank --worst's examples by their cost C_x, or by ‖∇C_x‖: those that pull hardest "
                               "on the params (default: cost)")
    evaluate.set_defaults(func=cmd_evaluate)

    plot = sub.add_parser(
        "plot",
        formatter_class=_DefaultsFormatter,
        help="draw the learning curves of one or more fbp train --metrics-out files",
        description="Draw cost and accuracy on the training and evaluation data, epoch by epoch (the book's "
        "chapter-3 figures), from the .jsonl files fbp train --metrics-out writes; several runs share the axes. "
        "A run that recorded --monitor-deltas or --monitor-noise-scale gets a panel for each layer's ‖δ^l‖ or "
        "for the noise scale. Dotted lines mark the epochs at which --lr-halving halved η; a ring marks the "
        "best evaluation accuracy. Needs matplotlib.",
    )
    plot.add_argument("metrics", nargs="+", help=".jsonl files written by fbp train --metrics-out; a training "
                      "checkpoint or a --checkpoint-dir (its newest checkpoint) serves too, for the epochs it holds")
    plot.add_argument("-o", "--out", default=None, help="the image to write, its format from its suffix "
                      "(png, pdf, svg, …; default: the first file's or directory's name with .png)")
    plot.add_argument("--labels", default=None, help="comma-separated names for the legend, one per file "
                      "(default: the file names)")
    plot.set_defaults(func=cmd_plot)
    return parser


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


def _error(command: str, msg: str) -> int:
    """A command's one-line error on stderr; its exit status, 2."""
    print(f"fbp {command}: error: {msg}", file=sys.stderr)
    return 2


def cmd_train(args) -> int:
    """fbp train (``fbp.cli_train``, imported when it runs)."""
    from fbp import cli_train

    return cli_train.cmd_train(args)


def cmd_evaluate(args) -> int:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)  # a float64 network is tested in float64, as it was trained
    from fbp import checkpoint as fckpt
    from fbp import data as fdata
    from fbp import train as ftrain

    fail = functools.partial(_error, "evaluate")

    if args.worst is None and (args.worst_by is not None or args.worst_images is not None):
        flag = (f"--worst-by {args.worst_by} ranks" if args.worst_by is not None else
                f"--worst-images {args.worst_images} draws")
        return fail(f"{flag} the list of --worst N; give --worst N too")
    if args.worst_images is not None:
        from fbp import plot

        try:
            problem = _image_path_problem("--worst-images", args.worst_images)
        except plot.MetricsError as e:  # no matplotlib
            return fail(f"--worst-images: {e}")
        if problem:
            return fail(problem)
    try:
        params, meta = fckpt.load_params(args.params, with_meta=True)
    except fckpt.CheckpointError as e:
        return fail(str(e))
    if "network" in meta:  # a training checkpoint: what it was trained with is in fbp train's flags
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        meta = dict(data_flag=config.get("--data"), validation=config.get("--validation"),
                    cost=config.get("--cost"), tested_epoch=meta["epoch"], checkpoint=meta.get("checkpoint"))
    data = args.data or meta.get("data_flag") or "digits"
    # The directory and validation split the network was trained with hold
    # only for its own data; other data gets that data's defaults.
    same_data = data == meta.get("data_flag")
    data_dir = args.data_dir if args.data_dir is not None else (meta.get("data_dir") if same_data else None)
    validation = args.validation if args.validation is not None else (meta.get("validation") if same_data else None)
    if validation is None and args.split == "test":
        validation = 0  # the test set is the same whatever the split, and a small IDX set then needs no flag
    cost = args.cost or meta.get("cost") or "log_likelihood"
    problem = _data_dir_problem(data, data_dir)
    if problem:
        return fail(problem)
    try:
        ds = fdata.load(data, data_dir, validation)
    except (fdata.DataError, ValueError) as e:
        if isinstance(e, fdata.ValidationSizeError):
            return fail(_validation_size_problem(e, given=validation is not None))
        return fail(str(e) if str(e).startswith("--") else f"--data {data}: {e}")  # one that names its flag already
    split = getattr(ds, args.split)
    sizes = [params[0].n_in] + [p.n_out for p in params]
    if sizes[0] != ds.n_in or sizes[-1] != ds.n_classes:
        return fail(f"the network ({','.join(map(str, sizes))}) does not fit {ds.name} ({ds.n_in} inputs, "
                    f"{ds.n_classes} classes); give the --data it was trained on")
    if len(split) == 0:
        return fail(f"{ds.name} has no {args.split} examples (--validation 0?)")
    if args.worst_images is not None and plot.image_side(ds.n_in) is None:
        return fail(f"--worst-images: an example of {ds.name} is {ds.n_in} numbers, not a square image to draw; "
                    f"drop --worst-images (--worst lists the examples)")
    X = np.asarray(split.X, params[0].w.dtype)
    m = ftrain.evaluate(params, X, np.asarray(split.Y, X.dtype), cost, predictions=True, deltas=True,
                        per_example=args.worst is not None)
    predicted = np.asarray(m["predicted"])
    truth = np.argmax(split.Y, axis=1)
    trained = f", trained to epoch {meta['tested_epoch']}" if "tested_epoch" in meta else ""
    print(f"fbp evaluate: {meta.get('checkpoint') or args.params} ({network_text(params)}{trained}) on "
          f"{ds.name} {args.split} "
          f"({len(split)} examples)")
    print(f"cost {float(m['cost']):.4f}  accuracy {float(m['accuracy']):.4f}  ({cost})")
    print("‖δ‖ by layer (‖∂C/∂b^l‖ of the mean cost here, first to last): "
          + " ".join(f"{v:.3g}" for v in np.asarray(m["delta_norms"])))
    per_class = []
    for c in range(ds.n_classes):
        n_c = int(np.sum(truth == c))
        if n_c:
            per_class.append(f"{c}: {np.mean(predicted[truth == c] == c):.3f} ({n_c})")
    print("accuracy per class: " + "  ".join(per_class))
    names = fdata.CLASS_NAMES.get(ds.name)
    if names is not None and len(names) == ds.n_classes:
        print("classes: " + ", ".join(f"{c} {name}" for c, name in enumerate(names)))
    else:
        names = None
    wrong = np.flatnonzero(predicted != truth)
    if wrong.size:
        pairs, counts = np.unique(np.stack([truth[wrong], predicted[wrong]], 1), axis=0, return_counts=True)
        top = np.argsort(-counts, kind="stable")[:5]
        print("most confused (true → predicted): " + ", ".join(
            f"{pairs[i][0]} → {pairs[i][1]} ×{counts[i]}" for i in top))
    if args.worst is not None:
        by = args.worst_by or "cost"
        rows = _print_worst(args.worst, by, args.split, truth, predicted, np.asarray(m["costs"]),
                            np.asarray(m["grad_norms"]))
        if args.worst_images is not None:
            def named(c):
                return names[c] if names else str(c)

            titles = [f"row {r}, cost {m['costs'][r]:.2f}\n{named(truth[r])} → {named(predicted[r])}" for r in rows]
            try:
                what = "cost" if by == "cost" else "‖∇C_x‖"
                plot.save(plot.images(split.X[rows], titles, title=f"{ds.name} {args.split}: the largest {what} "
                                      f"of single examples (true → predicted class)"), args.worst_images)
            except OSError as e:
                return fail(f"--worst-images {args.worst_images} cannot be written ({e.strerror or e})")
            print(f"wrote {args.worst_images}: {len(rows)} images")
    return 0


def _print_worst(n: int, by: str, split: str, truth, predicted, costs, norms):
    """fbp evaluate --worst: the n examples of the split with the largest
    cost (or gradient norm, ``by``), largest first, one line each; returns
    their rows."""
    import numpy as np

    rows = np.argsort(-(costs if by == "cost" else norms), kind="stable")[:n]
    what = "costs C_x" if by == "cost" else "gradients ‖∇C_x‖"
    print(f"the {len(rows)} largest {what} of single examples (‖∇C_x‖ by BP3 and BP4 from each one's δ's), by row "
          f"of the {split} split:")
    width = len(str(len(norms) - 1))
    for r in rows:
        mark = "" if truth[r] == predicted[r] else "  (wrong)"
        print(f"  row {r:>{width}}  true {truth[r]} → predicted {predicted[r]}  cost {costs[r]:7.4f}  "
              f"‖∇C_x‖ {norms[r]:7.4f}{mark}")
    return rows


def cmd_plot(args) -> int:
    import os

    from fbp import plot

    fail = functools.partial(_error, "plot")

    labels = [None] * len(args.metrics)
    if args.labels is not None:
        labels = args.labels.split(",")
        if len(labels) != len(args.metrics):
            return fail(f"--labels: {len(labels)} names for {len(args.metrics)} files; give one name per file")
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
    print(f"wrote {out}: {len(runs)} run{'s' if len(runs) > 1 else ''} ({epochs} epochs)")
    return 0


def cmd_check(args) -> int:
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import fbp

    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    k_params, k_x, k_y, k_fd, k_drop = jax.random.split(jax.random.key(args.seed), 5)
    output = args.output_activation or args.activation
    if output == "softmax" and args.sizes[-1] == 1:  # the library's message names params[i] and its keywords
        print(f"fbp check: error: --output-activation softmax over the one output unit of --sizes "
              f"{','.join(map(str, args.sizes))} is always 1 and learns nothing; use --output-activation sigmoid, "
              f"or end --sizes with 2 or more", file=sys.stderr)
        return 2
    try:
        params = make_network(args, k_params, args.sizes, dtype)
        mismatch = _cost_pairing(params, args.cost)
        if mismatch:
            raise ValueError(mismatch)
        n_in, n_out = args.sizes[0], args.sizes[-1]
        X = jax.random.uniform(k_x, (args.batch_size, n_in), dtype)
        labels = jax.random.randint(k_y, (args.batch_size,), 0, n_out)
        Y = jax.nn.one_hot(labels, n_out, dtype=dtype)
        masks = fbp.dropout_masks(k_drop, params, args.batch_size, args.dropout) if args.dropout else None
        report = fbp.compare_grads(params, X, Y, args.cost, args.reduction, fd_samples=args.fd_samples, key=k_fd,
                                   masks=masks)
    except (ValueError, TypeError) as e:
        print(f"fbp check: error: {e}", file=sys.stderr)
        return 2
    tol = args.tol if args.tol is not None else (1e-10 if args.dtype == "float64" else 1e-4)
    out = params[-1].act.name
    print(
        f"fbp check: sizes={','.join(map(str, args.sizes))}"
        + (f" conv={conv_text(args.conv)}" if args.conv else "") + f" activation={args.activation} "
        f"output={out} cost={args.cost} init={args.init} batch={args.batch_size} "
        f"reduction={args.reduction} dtype={args.dtype}" + (f" dropout={args.dropout}" if args.dropout else "")
    )
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
            rc = args.func(args)
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

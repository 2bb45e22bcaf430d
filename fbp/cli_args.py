"""The command line's flags: the parser of ``fbp check``, ``fbp train``,
``fbp evaluate`` and ``fbp plot`` (``build_parser``), and the types that
check a flag's value, each refusing a bad one with a line that says what
was expected. ``fbp.cli.main`` runs the command the flags name."""

from __future__ import annotations

import argparse
import math
import re
import sys


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


def _number(text: str, kind, ok, what: str):
    """Parse ``text`` as ``kind`` (int or float) and check it, or say what was expected."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if not ok(value) or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


WORST = "worst"  # --explain worst: the rows that --worst N lists
ALL = "all"  # --explain all: the split's mean cost
WRONG = "wrong"  # --explain wrong: the mean cost of the split's examples the network gets wrong
CLASS = "class:"  # --explain class:C: the mean cost of the split's examples of class C (a number or a name)


def _int_rows(text: str, what: str = "") -> list:
    """``--row 17`` or ``3,17``: rows of a split, each given once (``what`` says what else the flag takes)."""
    what = what or f"rows of the test split separated by commas, like 17 or 3,17, got {text!r}"
    try:
        rows = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}")
    if min(rows) < 0:
        raise argparse.ArgumentTypeError(f"expected {what} (rows count from 0)")
    twice = [r for i, r in enumerate(rows) if r in rows[:i]]
    if twice:
        raise argparse.ArgumentTypeError(f"expected {what}: row {twice[0]} is given twice; give each row once")
    return rows


def _rows(text: str):
    """``--explain 3`` or ``--explain 3,17,42``: rows of a split, each given
    once, as a list; or ``--explain worst``, the rows --worst N lists, or
    ``--explain all``, the split's mean cost, ``--explain wrong``, that of
    its examples classified wrong, or ``--explain class:C``, that of its
    examples of class C (the string itself; fbp evaluate reads those rows
    once it has ranked or classified them, and the class once it knows the
    data's)."""
    if text in (WORST, ALL, WRONG) or (text.startswith(CLASS) and text[len(CLASS):].strip()):
        return text
    what = (f"rows of the split separated by commas, like 3 or 3,17,42, or {WORST} (--worst's rows), {ALL} (the "
            f"split's mean cost), {WRONG} (its wrong ones') or {CLASS}C (its class C's), got {text!r}")
    return _int_rows(text, what)


def rows_text(rows) -> str:
    """``--explain``'s text for its rows (or ``worst``, ``all``, ``wrong``, ``class:C``)."""
    return rows if isinstance(rows, str) else ",".join(map(str, rows))


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


# The names the flags take, spelled out so that building the parser (fbp --help, a flag refused) needs no jax:
# test_cli checks them against fbp.activations.ACTIVATIONS, fbp.costs.COSTS, fbp.network.INITS and
# fbp.multihost.JOIN_TIMEOUT.
ACTIVATIONS = ("identity", "leaky_relu", "relu", "sigmoid", "softmax", "softplus", "tanh")
HIDDEN_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a != "softmax")  # softmax couples a layer's units: output only
COSTS = ("cross_entropy", "log_likelihood", "mse", "quadratic")
INITS = ("glorot", "he", "large", "normalized")
JOIN_TIMEOUT = 300.0  # s


class _Version(argparse.Action):
    """--version: fbp's and jax's versions, looked up (jax imported) only when it is asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        v = versions()
        print(f"fbp {v['fbp']} (jax {v['jax']}, jaxlib {v['jaxlib']}, optax {v['optax']})")  # on stdout, as argparse's
        parser.exit()


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


def _names(typed: str, flags) -> bool:
    """Whether ``typed`` is one of ``flags``, whole or cut short as argparse takes it (--siz for --sizes)."""
    return typed in flags or (typed.startswith("--") and len(typed) > 2 and any(f.startswith(typed) for f in flags))


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (a flag's value of the wrong type or out of its
    choices, an unknown flag) in one line, as fbp's own are: the message,
    which names the flag, and where the flags are listed, without the usage
    block first (21 lines for fbp train). The subcommands' parsers are of
    this class too (``add_subparsers`` makes them of their parent's)."""

    commands: dict = {}  # the top-level parser's: each command's parser, which names the flags it does not know
    argv: list = []  # what the top-level parser was given, for the hint below

    def error(self, message):
        listed = "commands" if self.prog == "fbp" else "flags"
        hint = self._dash_hint(message)
        self.exit(2, f"{self.prog}: error: {message}{hint}; {self.prog} --help lists the {listed}\n")

    def _dash_hint(self, message):
        """argparse takes a value that starts with '-' (``--sizes -1,2``) for a
        flag and says the flag before it lacks its value; the fix is '='.
        Nothing is added where what follows is a flag of the command (a value
        left out) or argparse's ``--``."""
        said = re.fullmatch(r"argument (\S+): expected one argument", message)
        if said:
            flags = said.group(1).split("/")
            for flag, value in zip(self.argv, self.argv[1:]):
                if (_names(flag, flags) and value.startswith("-") and value != "--"
                        and not _names(value.split("=")[0], self._option_string_actions)):
                    return f" (a value that starts with '-' is written {flag}={value})"
        return ""

    def parse_args(self, args=None, namespace=None):
        _Parser.argv = list(sys.argv[1:] if args is None else args)
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:  # said by the command's parser (fbp train: ...), where argparse has the top level say it
            self.commands.get(getattr(parsed, "command", None), self).error(
                f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def versions() -> dict:
    """fbp's version and those of what it computes with (``fbp --version``;
    the final --metrics-out record)."""
    import jax
    import optax

    import fbp

    return {"fbp": fbp.__version__, "jax": jax.__version__, "jaxlib": jax.lib.__version__, "optax": optax.__version__}


EXPLAIN_BY = ("rank --explain's training examples by the product g_n · g_x, what a step on n does to x's cost "
              "(TracIn), or by its cosine g_n · g_x / (‖g_n‖ ‖g_x‖), which leaves out how large g_n is: examples of "
              "large gradients, mislabelled ones most of all, head the products' lists for many examples; or by "
              "influence g_nᵀ H̃⁻¹ g_x (Koh & Liang 2017), what weighing n up in the training cost does to x's cost "
              "at the trained minimum, H̃ the K-FAC Gauss-Newton matrix of the training set (KFC's for a "
              "convolutional layer), or by influence-cosine, the same over √(g_nᵀ H̃⁻¹ g_n) √(g_xᵀ H̃⁻¹ g_x) (as "
              "RelatIF ranks) (default: product)")
EXPLAIN_CHOICES = ("product", "cosine", "influence", "influence-cosine")
DAMPING = ("for --explain-by influence and influence-cosine: the damping ε of H̃, each K-FAC factor's diagonal "
           "raised by √ε times its mean eigenvalue (default: 0.001)")
FACTORS = ("for --explain-by influence and influence-cosine: keep the K-FAC factors of the training set in FILE "
           "(.npz), most of the time the influence takes for a conv net: read from FILE when it holds this "
           "network's, on this training set and cost, else computed and written there (atomically), for the next "
           "command; a file of other factors is replaced, any other file refused")


def build_parser() -> argparse.ArgumentParser:
    from fbp.data import DATASETS  # NumPy's, not jax's

    parser = _Parser(
        prog="fbp", description="Backpropagation written by hand, checked against jax.grad."
    )
    parser.add_argument("--version", action=_Version, help="show fbp's version and jax's, and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check",
        formatter_class=_DefaultsFormatter,
        help="compare the hand-written gradient with jax.grad and finite differences",
        description="Compare the hand-written gradient (batch_backward) with jax.grad and with "
        "central finite differences, and print a per-leaf table: of a network made from the flags, or of a "
        "saved one (--params), on random inputs or on examples of a data set (--data).",
        epilog="examples:\n\n"
        "  fbp check                                     # the book's 784,30,10 sigmoid net, random inputs\n"
        "  fbp check --sizes 64,30,10 --data digits      # on 16 of digits' training images\n"
        "  fbp check --params net.npz --data digits      # a trained network, on images it learned from",
    )
    check.add_argument("--params", default=None, metavar="FILE",
                       help="check this network instead of a new one: an .npz of fbp train --save-params, a "
                            "checkpoint or a --checkpoint-dir, or the book's network2.py JSON; its weights are "
                            "widened (exactly) to --dtype, and its cost is the one it was trained with unless "
                            "--cost is given")
    check.add_argument("--data", choices=DATASETS, default=None,
                       help="take the batch from this data set's training images (rows drawn by --seed) instead "
                            "of random inputs and labels")
    check.add_argument("--data-dir", default=None, help="for --data idx, mnist-pkl or npz, as fbp train takes it")
    check.add_argument("--sizes", type=_sizes, default=None, help="layer widths, input first (default: 784,30,10)")
    check.add_argument("--conv", type=parse_conv, default=None, metavar="MAPS:K[:POOL],…",
                       help="convolutional layers after the input (--sizes' first width, a square image), as "
                            "fbp train --conv makes them")
    check.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=None,
                       help="hidden activation (softmax is for --output-activation) (default: sigmoid)")
    check.add_argument("--output-activation", choices=ACTIVATIONS, default=None,
                       help="output activation (default: --activation)")
    check.add_argument("--cost", choices=COSTS, default=None,
                       help="cost function C (default: quadratic; with --params the one it was trained with)")
    check.add_argument("--init", choices=INITS, default=None,
                       help="weight initialization (default: normalized)")
    check.add_argument("--batch-size", type=_positive_int, default=16, help="examples in the batch")
    check.add_argument("--reduction", choices=["mean", "sum"], default="mean", help="cost over the batch")
    check.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                       help="check the gradient of a network thinned by dropout masks (each hidden unit of each "
                            "example dropped with probability P), as fbp train --dropout trains")
    check.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="floating-point type")
    check.add_argument("--fd-samples", type=_nonneg_int, default=24,
                       help="finite-difference entries to check (0: none)")
    check.add_argument("--seed", type=_seed, default=0, help="PRNG seed of the params and data (the rows of --data)")
    check.add_argument("--tol", type=_tolerance, default=None,
                       help="fail (exit 1) above this relative difference from jax.grad (default 1e-10 in float64, "
                            "1e-4 in float32)")

    trace = sub.add_parser(
        "trace",
        formatter_class=_DefaultsFormatter,
        help="print backpropagation's every number for one example of a small network, BP1 to BP4",
        description="Run backpropagation on one example of a small network and print every "
        "number in the book's notation (ch. 2): the forward pass z^l and a^l, the cost, then BP1 (δ^L), BP2 "
        "(each δ^l from δ^(l+1)), BP3 (∂C/∂b^l) and BP4 (∂C/∂w^l), each with the factors it is made of, and "
        "last how far from it jax.grad of the same cost is, and finite differences (each weight and bias "
        "nudged both ways, the book's ch. 2 way). A new network's weights, biases and input are "
        "rounded (--round) so that the arithmetic can be followed by hand. With --conv the network starts with "
        "convolutional layers (the book's ch. 6), each unit of their maps shown, and BP2-BP4 through the "
        "pooling and the convolution: the answer to ch. 6's problem of backpropagation in a convolutional "
        "network, in numbers. With --batch, a mini-batch as the library computes it, every example a row; with "
        "--data, a data set's image (of its test split, or --split train or validation) and its class; with "
        "--weights and --biases, a network typed in (kernels too); with --l2 or --l1, the book's ch. 3 terms of "
        "the cost. "
        "After BP4 comes each layer's ‖δ^l‖, the book's ch. 5 speed of learning.",
        epilog="examples:\n\n"
        "  fbp trace                                        # 2,3,2 sigmoid, quadratic cost, the book's BP1-BP4\n"
        "  fbp trace --output-activation softmax --cost log_likelihood --target 0\n"
        "                                                   # δ^L = a^L − y\n"
        "  fbp trace --sizes 3,4,4,2 --activation relu --input 1,0,0.5 --seed 7\n"
        "  fbp trace --params tiny.npz --input 0.2,0.9      # a saved network of 16 units a layer or fewer\n"
        "  fbp trace --lr 3                                 # … and the step of gradient descent, η = 3\n"
        "  fbp trace --conv 2:3:2 --sizes 36,2              # 2 maps of 3×3 kernels over a 6×6 image, pooled\n"
        "  fbp trace --batch 3                              # a mini-batch: Δᵀ A, and each example's ‖δ‖ ‖a‖\n"
        "  fbp trace --weights '0.15,0.2;0.25,0.3|0.4,0.45;0.5,0.55' --biases '0.35,0.35|0.6,0.6' --input "
        "0.05,0.1 --target 0.01,0.99 --lr 0.5\n"
        "                                                   # weights typed in: a worked example's (add --steps\n"
        "                                                   # 1000 for the same step a thousand times over)\n"
        "  fbp trace --conv 1:3:2 --weights '1,0,-1,2,0,-2,1,0,-1|0.5;-0.5' --biases '0.1|0,0' --sizes 16,2\n"
        "                                                   # a kernel typed in, over a 4×4 image\n"
        "  fbp trace --params tiny.npz --data digits --row 5\n"
        "                                                   # test digit 5 through a conv net of fbp train\n"
        "                                                   # --conv 4:5:2 --sizes 64,10 --save-params tiny.npz\n"
        "  fbp trace --params tiny.npz --split train --row 5\n"
        "                                                   # training digit 5, one backpropagation learns from,\n"
        "                                                   # of the data tiny.npz was trained on",
    )
    trace.add_argument("--params", default=None, metavar="FILE",
                       help="trace this saved network (an .npz of fbp train --save-params, a checkpoint, the "
                            "book's network2 JSON) instead of a new one, its numbers as they are")
    trace.add_argument("--sizes", type=_sizes, default=None,
                       help="layer widths, input first, each at most 16; with --conv the input is an image of "
                            "at most 12×12 (default: 2,3,2; with --conv 36,2)")
    trace.add_argument("--conv", type=parse_conv, default=None, metavar="MAPS:K[:POOL],…",
                       help="convolutional layers after the input, as fbp train --conv makes them (the book's "
                            "ch. 6), at most 16 kernels each: shows each map, the pooling's routing of δ, and "
                            "BP2-BP4 through the convolution")
    trace.add_argument("--weights", default=None, metavar="W²|W³|…",
                       help="the network's weights, typed in (a textbook exercise's, say): each w^l a row for "
                            "each neuron of layer l, its numbers one for each neuron of layer l−1, separated by "
                            "commas, rows by ';', layers by '|' (the sizes follow from them); needs --biases. With "
                            "--conv, its layers' kernels first: a row for each kernel, map j over channel i in row "
                            "j·channels + i + 1, k·k numbers row by row (the image's size from --sizes, --data or "
                            "--input)")
    trace.add_argument("--biases", default=None, metavar="B²|B³|…",
                       help="the network's biases, with --weights: each b^l one number for each neuron of layer "
                            "l (of a convolutional layer, for each map), separated by commas, layers by '|'")
    trace.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=None,
                       help="hidden activation σ (default: sigmoid)")
    trace.add_argument("--output-activation", choices=ACTIVATIONS, default=None,
                       help="output activation (default: --activation)")
    trace.add_argument("--cost", choices=COSTS, default=None,
                       help="cost function C (default: quadratic; with --params the one it was trained with)")
    trace.add_argument("--init", choices=INITS, default=None,
                       help="weight initialization (default: normalized)")
    trace.add_argument("--input", default=None, metavar="X1,X2,…",
                       help="the example x, one number per input (default: drawn in [0, 1) by --seed)")
    trace.add_argument("--target", default=None, metavar="Y",
                       help="the wanted output: a class (one number, its one-hot y) or one number per output "
                            "(default: a class drawn by --seed)")
    trace.add_argument("--data", choices=DATASETS, default=None,
                       help="take the example from this data set (its --split; the images fbp evaluate's rows "
                            "number): its input and its class; a network of fbp train --save-params on it, or a new "
                            "one, --sizes (and --conv) fitting its images; the bundled digits are 8×8, for a "
                            "network with --conv (default with --params and --row or --split: the data it was "
                            "trained on)")
    trace.add_argument("--data-dir", default=None, help="for --data idx, mnist-pkl or npz, as fbp train takes it")
    trace.add_argument("--split", choices=["test", "validation", "train"], default=None,
                       help="which split of --data the rows are of: train for an example the network learns from, "
                            "as backpropagation is run (default: test)")
    trace.add_argument("--validation", type=_nonneg_int, default=None,
                       help="validation examples taken from the training set, for --split validation or train "
                            "(default: as --params was trained, else the data set's)")
    trace.add_argument("--row", type=_int_rows, default=None, metavar="N[,N…]",
                       help="with --data, trace image N of its --split (several, a mini-batch: see --batch) "
                            "(default: drawn by --seed)")
    trace.add_argument("--batch", type=_positive_int, default=None, metavar="M",
                       help="trace a mini-batch of M examples (16 at most), one a row, as the library computes it: "
                            "the recursion for all at once, BP3 and BP4 of the mean cost as (1/m) 1ᵀΔ and (1/m) "
                            "Δᵀ A, and each example's gradient norm ‖δ‖ ‖a‖ from the same rows (with --conv, each "
                            "example traced as one is, then their mean, a conv layer's norms from its formed "
                            "gradient); --input and --target then take a row an example, separated by ';' "
                            "(default: 1, one example)")
    trace.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                       help="drop each hidden unit with probability P (the book's ch. 3; kept ones times "
                            "1/(1 − P)), drawn by --seed, and show the masks in the forward pass, BP2 and BP4")
    trace.add_argument("--l2", type=_nonneg_float, default=0.0, metavar="λ",
                       help="the book's L2 regularization (ch. 3): the cost gains (λ/2n) Σ w² over every weight, "
                            "∂C/∂w^l gains (λ/n) w^l, and the step is the book's weight decay, w^l → (1 − ηλ/n) w^l "
                            "− η ∂C₀/∂w^l; shown after BP4")
    trace.add_argument("--l1", type=_nonneg_float, default=0.0, metavar="λ",
                       help="the book's L1 regularization (ch. 3): the cost gains (λ/n) Σ |w|, ∂C/∂w^l gains "
                            "(λ/n) sgn(w^l)")
    trace.add_argument("--train-size", type=_positive_int, default=None, metavar="n",
                       help="n of --l2's and --l1's λ/n, the training set's size (default: the examples traced)")
    trace.add_argument("--lr", type=_positive_float, default=None, metavar="η",
                       help="also take the step of gradient descent, w^l → w^l − η ∂C/∂w^l and b^l → b^l − η "
                            "∂C/∂b^l, and show the new weights and the cost after it")
    trace.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                       help="with --lr, take the step N times over on the same example(s), the gradient by "
                            "BP1-BP4 again before each (gradient descent on them), and show the cost after "
                            "steps 1, 2, 3, 5, 10, … and N, and the network after step N (at most 100,000)")
    trace.add_argument("--momentum", type=_fraction, default=None, metavar="μ",
                       help="with --steps, the book's momentum-based gradient descent (ch. 3): v → μ v − η ∇C, "
                            "w → w + v, from v = 0")
    trace.add_argument("--seed", type=_seed, default=0, help="PRNG seed of the weights, input and class")
    trace.add_argument("--round", type=_nonneg_int, default=2, metavar="N",
                       help="round a new network's weights and biases, and a drawn input and target, to N "
                            "decimals, so that a hand calculation can start from the numbers shown")
    trace.add_argument("--digits", type=_nonneg_int, default=4, help="decimals shown")
    trace.add_argument("--json", default=None, metavar="FILE",
                       help="also write every number in full (not cut to --digits) as one JSON object into "
                            "FILE (- prints it on stdout instead of the trace)")

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
    network.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="sigmoid",
                         help="hidden activation σ (softmax is for --output-activation)")
    network.add_argument("--output-activation", choices=ACTIVATIONS, default="softmax",
                         help="output activation")
    network.add_argument("--cost", choices=COSTS, default="log_likelihood", help="cost function C")
    network.add_argument("--init", choices=INITS, default="normalized", help="weight initialization")
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
    sgd.add_argument("--keep-last-batch", action="store_true",
                     help="step on the last n mod m examples of each epoch's shuffle as one shorter mini-batch, as "
                          "the book's SGD does (by default they sit that epoch out)")
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
    checkpoints.add_argument("--checkpoint-dir", default=None, help="save a checkpoint here every epoch (atomic); "
                             "the newest three are kept, and the best epoch's")
    checkpoints.add_argument("--resume", action="store_true",
                             help="continue from the newest checkpoint in --checkpoint-dir")
    checkpoints.add_argument("--keep-every", type=_positive_int, default=None, metavar="N",
                             help="also keep the checkpoint of every N-th epoch: checkpoints over the whole run, "
                                  "for fbp evaluate --explain ROW --over-checkpoints")
    watching.add_argument("--save-params", default=None,
                          help="write the tested network (the last epoch's, or the best with --restore-best) to this "
                               ".npz file; fbp.load_params reads it back. A .json name writes the book's network2.py "
                               "file instead, which its network2.load reads (sigmoid layers and --cost quadratic or "
                               "cross_entropy only)")
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
                              f"with an error (jax's initialization_timeout; default: {JOIN_TIMEOUT:g})")
    network.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="floating-point type")
    devices.add_argument("--deterministic", action="store_true",
                         help="make XLA's GPU operations deterministic (XLA_FLAGS=--xla_gpu_deterministic_ops=true), "
                              "so that on a GPU, as on a CPU, a resumed run ends bitwise where an uninterrupted one "
                              "does; a CPU is deterministic already")
    watching.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = sub.add_parser(
        "evaluate",
        formatter_class=_DefaultsFormatter,
        help="test a network saved by fbp train --save-params, or one of its checkpoints, or let several vote",
        description="Load a network written by `fbp train --save-params` (or fbp.save_params), or the network "
        "of a training checkpoint, and report its cost, accuracy, each layer's ‖∂C/∂b^l‖ and per-class accuracy "
        "on a split of a data set; by default the test split of the data it was trained on. Given several "
        "networks, report each one's cost and accuracy and then the accuracy of their vote, an ensemble as in "
        "the book's chapter 6 (each network votes for its class; a tie goes to the largest summed output), and "
        "of their soft vote (the largest summed output).",
        epilog="examples:\n\n"
        "  fbp evaluate net.npz                                  # its test split, class by class\n"
        "  fbp evaluate run/ --split validation                  # the newest checkpoint of run/\n"
        "  fbp evaluate net.npz --split train --worst 16 --worst-images worst.png\n"
        "                                                        # the costliest training images: wrong labels?\n"
        "  fbp evaluate run/ --split train --worst 16 --over-checkpoints\n"
        "                                                        # … by their cost averaged over the run\n"
        "  fbp evaluate net.npz --weights-image w.png            # what each hidden unit looks for\n"
        "  fbp evaluate net.npz --explain 17                     # the training images that pull test row 17 "
        "each way\n"
        "  fbp evaluate run/ --explain 17 --over-checkpoints     # … summed over the run's checkpoints (TracIn)\n"
        "  fbp evaluate seed0.npz seed1.npz seed2.npz            # each network, then the three voting\n"
        "  fbp evaluate net.npz --worst 100 --json - | jq '.worst.rows[].row'\n"
        "                                                        # the report as JSON, for a script",
    )
    evaluate.add_argument("params", nargs="+", help="the .npz file written by --save-params, a checkpoint file, or "
                          "a --checkpoint-dir (its newest checkpoint); several for a vote")
    evaluate.add_argument("--data", choices=DATASETS, default=None,
                          help="data set (default: the one it was trained on; the first network's)")
    evaluate.add_argument("--data-dir", default=None, help="directory of the four MNIST-format IDX files, "
                          "the book's mnist.pkl.gz, or the .npz file (default: the one it was trained on)")
    evaluate.add_argument("--split", choices=["test", "validation", "train"], default="test", help="which split")
    evaluate.add_argument("--validation", type=_nonneg_int, default=None,
                          help="validation examples taken from the training set, for --split validation "
                               "or train (default: as it was trained)")
    evaluate.add_argument("--cost", choices=COSTS, default=None,
                          help="cost function C (default: the one it was trained with)")
    evaluate.add_argument("--voting", choices=["hard", "soft"], default=None,
                          help="with several networks: the vote whose accuracy per class and confusions are shown "
                               "(both votes' accuracies are): hard, the book's, counts each network's class; soft "
                               "takes the largest output summed over the networks (default: hard)")
    evaluate.add_argument("--confusion", action="store_true",
                          help="also print the whole confusion matrix: how many examples of each true class "
                               "went to each predicted one (--json holds it always)")
    evaluate.add_argument("--worst", type=_positive_int, default=None, metavar="N",
                          help="also list the N examples of the split with the largest cost C_x, each with the "
                               "norm of its own gradient ‖∇C_x‖ (from its δ's by BP3 and BP4, in the same pass); "
                               "mislabelled examples gather there")
    evaluate.add_argument("--worst-images", default=None, metavar="FILE",
                          help="draw --worst's examples as images into FILE (.png, .pdf, .svg), each titled with "
                               "its row, true → predicted class and the quantity that ranked it (--worst-by); "
                               "needs square images and matplotlib")
    evaluate.add_argument("--worst-by", choices=["cost", "gradient", "output-gradient"], default=None,
                          help="rank --worst's examples by their cost C_x; by ‖∇C_x‖, those that pull hardest on "
                               "the params; or by the output layer's part of it, ‖g^L_x‖ = ‖δ^L‖ (‖a^{L−1}‖² + "
                               "1)^½, which the hidden units' σ' does not blur (default: cost)")
    evaluate.add_argument("--explain", type=_rows, default=None, metavar="ROW[,ROW...]|worst|all|wrong|class:C",
                          help="list the training examples whose steps help and hurt example ROW of the split "
                               "most: the largest and smallest g_n · g_ROW, the inner products of their gradients "
                               "(a step of SGD on n changes ROW's cost by about −η g_n · g_ROW), from each "
                               "example's δ's (fbp.stats.grad_gram); several rows, like 3,17,42, are explained "
                               "in one pass over the training set (and one set of K-FAC factors); worst explains "
                               "the rows --worst N lists, in its order; all explains the split's mean cost, by "
                               "each training example's product with its mean gradient, g_n · Ḡ (the mean of its "
                               "products with the split's examples, from one pass): those whose steps lower and "
                               "raise the cost of the whole split most; wrong the same for the mean cost of the "
                               "split's examples the network classifies wrong, class:C for that of its examples "
                               "of class C (a number or a name)")
    evaluate.add_argument("--over-checkpoints", action="store_true",
                          help="with a --checkpoint-dir: sum --explain's products over the run's kept "
                               "checkpoints w_i, each times its epochs' η_i and the e_i epochs it stands for, "
                               "Σ_i η_i e_i g_n(w_i) · g_ROW(w_i) (TracIn, Pruthi et al. 2020): what the steps on "
                               "n did to ROW's cost over the run; and rank --worst's examples by their cost "
                               "averaged over the run, Σ_i e_i C_x(w_i) / Σ_i e_i (what found wrong labels best "
                               "in experiments/mislabelled.py), "
                               "or (--worst-by gradient, output-gradient) by their self-influence Σ_i η_i e_i "
                               "‖g_x(w_i)‖², of the output layer's part for output-gradient, what their own steps "
                               "did to their own cost; fbp train --keep-every N keeps checkpoints spread over the "
                               "run")
    evaluate.add_argument("--explain-by", choices=EXPLAIN_CHOICES, default=None, help=EXPLAIN_BY)
    evaluate.add_argument("--damping", type=_positive_float, default=None, metavar="ε", help=DAMPING)
    evaluate.add_argument("--factors", default=None, metavar="FILE", help=FACTORS)
    evaluate.add_argument("--explain-class", default=None, metavar="C",
                          help="take --explain's cost of ROW at class C, a number or a name (default: its true "
                               "class): the training examples that pull ROW toward C and away from it, to ask why "
                               "it was, or was not, taken for C")
    evaluate.add_argument("--explain-images", default=None, metavar="FILE",
                          help="draw --explain's example and the training examples listed for it into FILE (.png, "
                               ".pdf, .svg): the ones that help it on the first row, those that hurt it on the "
                               "second; needs square images and matplotlib")
    evaluate.add_argument("--json", default=None, metavar="FILE",
                          help="also write the report as one JSON object into FILE (written whole or not at all; - "
                               "prints it on stdout instead of the report): the data and split, the network, cost, "
                               "accuracy, each layer's ‖δ‖, each class's accuracy, every pair of classes confused "
                               "and how often, and --worst's and --explain's lists (with several networks each "
                               "one's figures and the votes'); a non-finite number is written as null")
    evaluate.add_argument("--weights-image", default=None, metavar="FILE",
                          help="draw the first layer's weights into FILE (.png, .pdf, .svg): each convolutional "
                               "kernel, as the book's ch. 6 draws its 20 feature maps, or each hidden unit's "
                               "incoming weights as an image of the input (square images); the first 100; needs "
                               "matplotlib")

    predict = sub.add_parser(
        "predict",
        formatter_class=_DefaultsFormatter,
        help="classify inputs of one's own (image files, .npy arrays) with a saved network",
        description="Run a network written by `fbp train --save-params` (or a checkpoint's, or the book's "
        "network2 JSON) on inputs of one's own and print each one's class, with the network's output for it and "
        "for the next likeliest classes. An image file is read as grey levels, inverted when its border is light "
        "(the training images are light on dark; --invert), padded to a square, its shape kept, and scaled as a "
        "whole to the network's input (crop it first to frame the object as the training images do; needs "
        "matplotlib). A .npy array holds "
        "one example or a stack of them, in [0, 1], as fbp.data gives them.",
        epilog="examples:\n\n"
        "  fbp predict f.npz shirt.jpg boot.png --crop   # a Fashion-MNIST network on two photographs\n"
        "  fbp predict net.npz rows.npy --top 1          # each row of an (n, 64) array, its class alone\n"
        "  fbp predict net.npz seven.png --json -        # as JSON, each class's output too\n"
        "  fbp predict net.npz seven.png --explain       # the training images behind its class\n"
        "  fbp predict run/ seven.png --explain --over-checkpoints\n"
        "                                                # … summed over the run's checkpoints (TracIn)",
    )
    predict.add_argument("network", help="the .npz file written by --save-params, a checkpoint file or "
                         "--checkpoint-dir, or the book's network2 JSON")
    predict.add_argument("inputs", nargs="+", help="image files (.png, .jpg, …) or .npy arrays")
    predict.add_argument("--top", type=_positive_int, default=3, help="classes shown for each input")
    predict.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                         help="turn an image's grey levels over (1 − v), so that its ink is light as in the "
                              "training images: auto does where the image's border is lighter than mid-grey")
    predict.add_argument("--crop", action="store_true",
                         help="cut an image to the box around its ink first, so that the object fills the frame "
                              "as in the training images (digits and Fashion-MNIST fill theirs)")
    predict.add_argument("--margin", type=_fraction, default=0.0, metavar="F",
                         help="with --crop, add F times the object's size around it on each side (MNIST's digits "
                              "sit in the middle 20 of their 28 pixels: 0.2)")
    predict.add_argument("--explain", action="store_true",
                         help="with each input, list the training examples whose steps pull it most toward its "
                              "predicted class and most away from it: the largest and smallest g_n · g_x, x the "
                              "input with its predicted class as the target (a step of SGD on n changes x's cost "
                              "there by about −η g_n · g_x), from each example's δ's (fbp.stats.tracin)")
    predict.add_argument("--over-checkpoints", action="store_true",
                         help="with a --checkpoint-dir: sum --explain's products over the run's kept checkpoints, "
                              "each times its η_i and the e_i epochs it stands for (TracIn, as fbp evaluate "
                              "--over-checkpoints does), the newest one's prediction as the target")
    predict.add_argument("--explain-by", choices=EXPLAIN_CHOICES, default=None, help=EXPLAIN_BY)
    predict.add_argument("--damping", type=_positive_float, default=None, metavar="ε", help=DAMPING)
    predict.add_argument("--factors", default=None, metavar="FILE", help=FACTORS)
    predict.add_argument("--explain-class", default=None, metavar="C",
                         help="take --explain's costs at class C, a number or a name (default: each input's "
                              "predicted class): the training examples that pull the inputs toward C and away from "
                              "it, to ask why an input was not taken for C")
    predict.add_argument("--explain-images", default=None, metavar="FILE",
                         help="draw each input and the training examples --explain lists for it into FILE (.png, "
                              ".pdf, .svg), two rows an input: those that pull toward its class, then those that "
                              "pull away; needs square images and matplotlib")
    predict.add_argument("--data", choices=DATASETS, default=None,
                         help="for --explain: the data set whose training examples are listed (default: the one "
                              "the network was trained on)")
    predict.add_argument("--data-dir", default=None, help="for --explain: directory of the four MNIST-format IDX "
                         "files, the book's mnist.pkl.gz, or the .npz file (default: the one it was trained on)")
    predict.add_argument("--validation", type=_nonneg_int, default=None,
                         help="for --explain: validation examples taken from the training set before its examples "
                              "are listed (default: as it was trained)")
    predict.add_argument("--center", choices=["box", "mass"], default="box",
                         help="where an image's object goes in the frame: box keeps the box around it in the "
                              "middle, as the padding leaves it; mass then moves it by whole pixels so that its "
                              "centre of mass is at the middle, as MNIST's digits were placed (with --crop --margin "
                              "0.2, MNIST's framing: the digit in the middle 20 of 28 pixels, centred by its mass)")
    predict.add_argument("--json", default=None, metavar="FILE",
                         help="also write the predictions as one JSON object into FILE, every class's output "
                              "included, and --explain's lists (- prints it on stdout instead of the lines)")

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
    parser.commands = {"check": check, "trace": trace, "train": train, "evaluate": evaluate, "predict": predict,
                       "plot": plot}
    return parser

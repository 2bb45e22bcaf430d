import argparse
import os
import re
import subprocess
import sys

import pytest

from fbp.cli import main
from fbp.cli_args import build_parser

from training_helpers import fbp_here


def test_check_prints_a_passing_table(capsys):
    rc = main(["check", "--sizes", "6,5,3", "--activation", "tanh", "--output-activation", "softmax",
               "--cost", "log_likelihood", "--batch-size", "4", "--fd-samples", "8"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for leaf in ("[0].w", "[0].b", "[1].w", "[1].b"):
        assert leaf in out
    assert "OK: worst relative difference" in out


def test_check_takes_a_saved_network_and_a_batch_of_real_data(tmp_path, capsys):
    """fbp check --params FILE --data NAME: the saved network (its weights
    widened to float64, its cost the one it was trained with) on training
    images drawn by --seed, the same comparison compare_grads makes of them;
    flags that would shape another network are refused."""
    import jax
    import jax.numpy as jnp

    import fbp
    from fbp import data as fdata

    net = str(tmp_path / "net.npz")
    r = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--save-params", net)
    assert r.returncode == 0, r.stderr
    r = fbp_here(capsys, "check", "--params", net, "--data", "digits", "--batch-size", "8", "--seed", "3")
    assert r.returncode == 0, r.stderr + r.stdout
    lines = r.stdout.splitlines()
    assert lines[0] == (f"fbp check: network={net} (64,20,10) activation=sigmoid output=softmax cost=log_likelihood "
                        f"batch=8 reduction=mean dtype=float64")
    rows = [int(v) for v in lines[1].removeprefix("on the training examples of digits, rows ").split(", ")]
    assert len(set(rows)) == 8 and "worst      float64" in r.stdout  # float32 weights, checked in float64
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), fbp.load_params(net))
    train = fdata.load("digits", None, 0).train
    report = fbp.compare_grads(params, train.X[rows], train.Y[rows], "log_likelihood", fd_samples=0)
    assert f"OK: worst relative difference from jax.grad {report.max_rel:.2e} (tolerance 1e-10)" in r.stdout
    other = fbp_here(capsys, "check", "--params", net, "--data", "digits", "--batch-size", "8", "--seed", "4")
    assert other.stdout.splitlines()[1] != lines[1]  # another seed, other rows
    for argv, needle in ((["--params", net, "--sizes", "64,5,10", "--init", "he"],
                          f"--params {net} gives the network, its layers and activations; drop --sizes, --init"),
                         (["--data", "digits"], "--data digits: its examples are 64 numbers in 10 classes, and the "
                                                "network takes 784 and gives 10; give --sizes 64,…,10"),
                         (["--data-dir", str(tmp_path)], "is where --data reads its files; give --data too"),
                         (["--params", str(tmp_path / "none.npz")], "none.npz: no such file")):
        r = fbp_here(capsys, "check", *argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_check_exits_1_above_tolerance(capsys):
    rc = main(["check", "--sizes", "6,5,3", "--fd-samples", "0", "--batch-size", "4", "--tol", "-1"])
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL: worst relative difference" in out


@pytest.mark.parametrize("argv,needle", [
    (["check", "--sizes", "3,x"], "--sizes"),
    (["check", "--cost", "nope"], "--cost"),
    (["check", "--batch-size", "0"], "--batch-size"),
    (["check", "--fd-samples", "-1"], "--fd-samples"),
    (["check", "--seed", "4294967296"], "argument --seed: expected an integer from 0 to 4294967295"),
    (["check", "--seed", "-1"], "argument --seed: expected an integer from 0 to 4294967295"),
    (["check", "--tol", "nan"], "argument --tol: expected a finite number, got 'nan'"),
    (["check", "--sizes", "3,1", "--output-activation", "softmax"],
     "--output-activation softmax over the one output unit of --sizes 3,1 is always 1"),
    (["check", "--activation", "softmax"], "argument --activation: invalid choice: 'softmax'"),
    (["check", "--cost", "log_likelihood", "--output-activation", "tanh"],
     "--cost log_likelihood with --output-activation tanh: cost 'log_likelihood' takes logarithms"),
])
def test_bad_flags_are_one_line_errors(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "fbp", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fbp check: error: "), proc.stderr  # no usage block
    assert needle in proc.stderr


@pytest.mark.parametrize("argv,said", [
    ([], "fbp: error: the following arguments are required: command; fbp --help lists the commands"),
    (["bogus"], "fbp: error: argument command: invalid choice: 'bogus' (choose from 'check', 'trace', 'train', "
                "'evaluate', 'predict', 'plot'); fbp --help lists the commands"),
    (["train", "--optimizer", "foo"], "fbp train: error: argument --optimizer: invalid choice: 'foo' (choose from "
                                      "'sgd', 'momentum', 'adam'); fbp train --help lists the flags"),
    # an unknown flag is said by its command, not by fbp (argparse's top level would)
    (["evaluate", "net.npz", "--bogus", "3"], "fbp evaluate: error: unrecognized arguments: --bogus 3; fbp evaluate "
                                              "--help lists the flags"),
    (["plot"], "fbp plot: error: the following arguments are required: metrics; fbp plot --help lists the flags"),
    # argparse reads a value that starts with '-' as a flag; '=' is the way to give it
    (["train", "--sizes", "-1,2"], "fbp train: error: argument --sizes: expected one argument (a value that starts "
                                   "with '-' is written --sizes=-1,2); fbp train --help lists the flags"),
    (["train", "--siz", "-1,2"], "fbp train: error: argument --sizes: expected one argument (a value that starts "
                                 "with '-' is written --siz=-1,2); fbp train --help lists the flags"),  # cut short
    (["train", "--sizes", "--epochs", "3"], "fbp train: error: argument --sizes: expected one argument; fbp train "
                                            "--help lists the flags"),  # a value left out: no '=' to suggest
    (["train", "--sizes", "--epo", "3"], "fbp train: error: argument --sizes: expected one argument; fbp train "
                                         "--help lists the flags"),
])
def test_argparses_own_errors_are_one_line_too(argv, said, capsys):
    proc = fbp_here(capsys, *argv)
    assert proc.returncode == 2 and proc.stderr == said + "\n" and proc.stdout == ""


def test_the_flags_take_the_names_the_library_takes():
    """cli_args spells the names out, so that the parser is built without jax; they must be the library's."""
    from fbp import activations, cli_args, costs, multihost, network

    assert cli_args.ACTIVATIONS == tuple(sorted(activations.ACTIVATIONS))
    assert cli_args.HIDDEN_ACTIVATIONS == tuple(sorted(n for n, a in activations.ACTIVATIONS.items()
                                                       if a.prime is not None))  # elementwise ones
    assert cli_args.COSTS == tuple(sorted(costs.COSTS)) and cli_args.INITS == tuple(sorted(network.INITS))
    assert cli_args.JOIN_TIMEOUT == multihost.JOIN_TIMEOUT


def test_help_and_a_refused_flag_answer_without_importing_jax():
    """``fbp --help`` and a refused flag are answered at once (0.2 s, against 0.7-1.2 s when the package
    imported jax first); the library's names import it on first use."""
    code = ("import contextlib, io, sys\n"
            "import fbp\n"
            "from fbp.cli import main\n"
            "said = []\n"
            "for argv in (['--help'], ['train', '--help'], ['train', '--epochs', 'x'], ['check', '--bogus']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit as e:\n"
            "            said.append(e.code)\n"
            "print(said, 'jax' in sys.modules)\n"
            "fbp.forward\n"
            "print('jax' in sys.modules, set(fbp.__all__) == {*fbp._WHERE, 'stats'} <= set(dir(fbp)))\n"
            "from fbp import *\n"  # every name there, each from its module
            "print(all(globals()[n] is getattr(fbp, n) for n in fbp.__all__), stats.__name__, Dense.__module__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[0, 0, 2, 2] False", "True True", "True fbp.stats fbp.layers"]


def test_version_names_fbp_and_the_jax_it_runs_on():
    import jax
    import optax

    proc = subprocess.run([sys.executable, "-m", "fbp", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")) as fh:  # no tomllib on 3.10
        packaged = re.search(r'(?m)^version = "([^"]+)"', fh.read()).group(1)  # the two places agree
    assert proc.stdout.strip() == (f"fbp {packaged} (jax {jax.__version__}, jaxlib {jax.lib.__version__}, "
                                   f"optax {optax.__version__})")


def test_a_closed_stdout_ends_quietly_as_with_any_unix_tool():
    read, write = os.pipe()
    os.close(read)  # `fbp check | head -0`: the reader is gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "fbp", "check", "--sizes", "4,3,2", "--fd-samples", "0"],
                              stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_ctrl_c_outside_training_is_one_line(capsys, monkeypatch):
    import fbp

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fbp, "compare_grads", interrupted)
    assert main(["check", "--sizes", "4,3,2"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["fbp check: interrupted"]


def _subparser(command):
    return next(a for a in build_parser()._actions if a.dest == "command").choices[command]


@pytest.mark.parametrize("command", ["train", "check", "trace", "evaluate", "predict", "plot"])
def test_help_documents_every_flag_and_its_default(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "%%" not in text
    for action in _subparser(command)._actions:
        assert action.help, f"{command} {action.option_strings} has no help text"
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in action.help:
            shown = ",".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
            assert f"(default: {shown})" in text, f"{command} {action.option_strings[0]}: default not shown"


@pytest.mark.parametrize("command,least", [("train", 4), ("check", 3), ("trace", 4), ("evaluate", 8),
                                           ("predict", 3)])
def test_the_help_examples_are_valid_command_lines(command, least):
    epilog = _subparser(command).epilog
    # each example up to its comment, or up to the pipe it feeds
    examples = [line.split("#")[0].split(" | ")[0].split()[1:] for line in epilog.splitlines()
                if line.startswith("  fbp ")]
    assert len(examples) >= least
    for argv in examples:
        args = build_parser().parse_args(argv)  # an unknown flag or bad value exits here
        assert args.command == argv[0]


def test_metrics_lines_are_strict_json_with_non_finite_numbers_as_null():
    import json
    import math

    import numpy as np

    from fbp.cli_report import metrics_line

    record = {"epoch": 3, "evaluation_cost": math.inf, "training_cost": np.float64("nan"), "final": False,
              "per_class": [0.5, -math.inf], "nested": {"cost": math.nan, "accuracy": 0.75}}
    line = metrics_line(record)
    assert line.endswith("\n") and line.count("\n") == 1

    def refuse(word):
        raise ValueError(f"not strict JSON: {word}")

    back = json.loads(line, parse_constant=refuse)  # Python would otherwise accept Infinity and NaN
    assert back == {"epoch": 3, "evaluation_cost": None, "training_cost": None, "final": False,
                    "per_class": [0.5, None], "nested": {"cost": None, "accuracy": 0.75}}
    assert json.loads(metrics_line({"cost": 0.25})) == {"cost": 0.25}

"""`fbp train` on the command line: the defaults on digits, monitoring,
--resume with other flags, the optimizers, --restore-best, --lr-halving,
writes that fail, bad flags."""

import errno
import functools
import json
import os
import re
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbp
from fbp import checkpoint as ckpt
from fbp import data as fdata
from fbp import train as ftrain

from training_helpers import fbp_cli, fbp_here


def test_cli_train_default_digits_and_metrics(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = fbp_cli("train", "--epochs", "30", "--metrics-out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l["epoch"] for l in lines[:-1]] == list(range(1, 31))
    assert lines[-1]["final"] and lines[-1]["test_accuracy"] >= 0.95
    final = lines[-1]  # with what produced it: the flags as they ran, defaults filled in, and the versions
    assert final["settings"]["--sizes"] == [64, 100, 10] and final["settings"]["--lr"] == 0.5
    assert final["settings"]["--epochs"] == 30 and final["settings"]["--data-dir"] is None
    assert final["versions"]["jax"] == jax.__version__ and final["versions"]["fbp"] == fbp.__version__
    assert final["device"] in proc.stdout.splitlines()[0]
    assert "test accuracy" in proc.stdout and f"; metrics in {out} (fbp plot draws them)" in proc.stdout
    assert re.search(r"^fbp train: digits .* devices=1 \((cpu|gpu: .+|tpu: .+)\)$", proc.stdout, re.M), proc.stdout
    assert all("training_accuracy" in l for l in lines[:-1]) and "train cost" in proc.stdout
    proc = fbp_cli("train", "--epochs", "2", "--metrics-out", str(out), "--quiet", "--no-monitor-training")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert not any(k.startswith("training_") for l in lines for k in l) and "evaluation_accuracy" in lines[0]
    assert "mean step cost" in proc.stdout and "train cost" not in proc.stdout


def test_cli_monitor_deltas_noise_scale_and_l2_and_l1_terms_show_and_record_them(tmp_path):
    out, net = tmp_path / "m.jsonl", tmp_path / "net.npz"
    proc = fbp_cli("train", "--sizes", "64,20,20,10", "--epochs", "2", "--monitor-deltas", "--metrics-out", str(out),
                "--quiet", "--monitor-noise-scale", "--l2", "5", "--l1", "2", "--save-params", str(net))
    assert proc.returncode == 0, proc.stderr
    assert " l2=5.0 l1=2.0 batch=10 " in proc.stdout.splitlines()[0]
    lines = [json.loads(l) for l in out.read_text().splitlines()][:-1]
    shown = [[float(v) for v in re.search(r"‖δ‖ by layer ([\d.e+-]+(?: [\d.e+-]+)*)", l).group(1).split()]
             for l in proc.stdout.splitlines() if l.startswith("epoch")]
    assert len(shown) == len(lines) == 2
    for line, numbers in zip(lines, shown):
        assert len(line["delta_norms"]) == 3 and all(v > 0 for v in line["delta_norms"])
        np.testing.assert_allclose(numbers, line["delta_norms"], rtol=5e-3)  # printed to 3 digits
    noise = [float(m) for m in re.findall(r"noise scale (\S+)", proc.stdout)]
    np.testing.assert_allclose(noise, [line["noise_scale"] for line in lines], rtol=5e-3)
    # --l2 λ: each epoch's L2 term (λ/2n) Σ_w w² over n = 1,257 training images, of the params it ended with
    params = fbp.load_params(str(net))
    by_hand = 0.5 * 5 / 1257 * sum(np.sum(np.asarray(p.w, np.float64) ** 2) for p in params)
    np.testing.assert_allclose(lines[-1]["l2_cost"], by_hand, rtol=1e-6)
    np.testing.assert_allclose([float(m) for m in re.findall(r"L2 term (\S+)", proc.stdout)],
                               [line["l2_cost"] for line in lines], atol=5e-5)  # printed to 4 decimals
    # --l1 λ: and its L1 term (λ/n) Σ_w |w|
    np.testing.assert_allclose(lines[-1]["l1_cost"], 2 / 1257 * sum(np.sum(np.abs(np.asarray(p.w, np.float64)))
                                                                    for p in params), rtol=1e-6)
    np.testing.assert_allclose([float(m) for m in re.findall(r"L1 term (\S+)", proc.stdout)],
                               [line["l1_cost"] for line in lines], atol=5e-5)
    assert json.loads(out.read_text().splitlines()[-1])["settings"]["--l1"] == 2.0
    plain = fbp_cli("train", "--epochs", "1", "--quiet").stdout
    assert "‖δ‖" not in plain and "noise scale" not in plain and "L2 term" not in plain and "L1 term" not in plain
    assert " l1=" not in plain


def test_cli_resume_with_other_flags_is_a_one_line_error_and_metrics_follow_the_checkpoint(tmp_path, capsys):
    cli = functools.partial(fbp_here, capsys)  # in this process: compiled once for all the runs
    run, out = str(tmp_path / "run"), tmp_path / "m.jsonl"
    flags = ["train", "--epochs", "2", "--quiet", "--checkpoint-dir", run, "--metrics-out", str(out)]
    assert cli(*flags).returncode == 0
    saved = ckpt.list_checkpoints(run)
    proc = cli(*flags)  # a fresh run into a used directory would have pruned its own checkpoints
    assert proc.returncode == 2 and "--resume" in proc.stderr.strip().splitlines()[-1]
    assert ckpt.list_checkpoints(run) == saved
    proc = cli(*flags, "--resume", "--lr", "0.1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--lr: saved 0.5, now 0.1" in proc.stderr.strip().splitlines()[-1]
    assert proc.stdout == ""  # no first line of settings that will not train
    elsewhere = tmp_path / "new" / "m.jsonl"  # refused after --metrics-out was opened: the file it made is gone
    proc = cli(*flags[:-1], str(elsewhere), "--resume", "--lr", "0.1")
    assert proc.returncode == 2 and "--lr: saved 0.5, now 0.1" in proc.stderr
    assert not (tmp_path / "new").exists() and ckpt.list_checkpoints(run) == saved
    # a run killed after its epoch-2 checkpoint but before its metrics line:
    out.write_text(out.read_text().splitlines()[0] + "\n")
    proc = cli(*[f if f != "2" else "3" for f in flags], "--resume")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fbp train: digits ")  # the first line, once the checkpoint is accepted
    assert f"resuming from the checkpoint of epoch 2 in {run}\n" in proc.stdout
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert [l.get("epoch") for l in lines] == [1, 2, 3, None] and lines[-1]["final"]
    proc = cli(*flags, "--resume")  # already past --epochs 2: says so, trains nothing
    assert proc.returncode == 0 and "it has reached --epochs 2: nothing to train" in proc.stdout
    assert "epoch   " not in proc.stdout and ckpt.newest_epoch(run) == 3
    other = str(tmp_path / "empty")
    # the metrics of an older run are replaced, not appended to, when no checkpoint is resumed
    proc = cli("train", "--epochs", "1", "--quiet", "--checkpoint-dir", other, "--resume", "--metrics-out", str(out))
    assert proc.returncode == 0 and f"--resume: no checkpoint in {other} yet; starting at epoch 1" in proc.stdout
    assert "done: 1 epoch in " in proc.stdout
    assert ckpt.newest_epoch(other) == 1
    assert [json.loads(l).get("epoch") for l in out.read_text().splitlines()] == [1, None]


def test_cli_momentum_coefficient_is_used_and_kept_with_the_checkpoint(tmp_path, capsys):
    cli = functools.partial(fbp_here, capsys)  # in this process: compiled once for all the runs
    run = str(tmp_path / "run")
    flags = ["train", "--optimizer", "momentum", "--sizes", "64,10,10", "--quiet", "--checkpoint-dir", run]
    proc = cli(*flags, "--momentum", "0.3", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert " momentum μ=0.3 lr=0.35 " in proc.stdout  # the default η = 0.5(1 − μ): SGD's long-run step
    proc = cli(*flags, "--epochs", "2", "--resume")  # the default μ is 0.9, not what the run trained with
    assert proc.returncode == 2 and "--momentum: saved 0.3, now 0.9" in proc.stderr.strip().splitlines()[-1]
    proc = cli(*flags, "--momentum", "0.3", "--epochs", "2", "--resume")
    assert proc.returncode == 0 and ckpt.newest_epoch(run) == 2, proc.stderr


def test_cli_dropout_trains_the_thinned_networks_and_is_kept_with_the_checkpoint(tmp_path, capsys):
    cli = functools.partial(fbp_here, capsys)  # in this process: compiled once for all the runs
    run, out = str(tmp_path / "run"), tmp_path / "m.jsonl"
    flags = ["train", "--sizes", "64,30,10", "--quiet", "--checkpoint-dir", run, "--metrics-out", str(out)]
    proc = cli(*flags, "--dropout", "0.5", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert " l2=0.0 dropout=0.5 batch=10 " in proc.stdout.splitlines()[0]
    first = [json.loads(l) for l in out.read_text().splitlines()]
    assert first[-1]["settings"]["--dropout"] == 0.5
    proc = cli(*flags, "--epochs", "3", "--resume")  # without it: another run
    assert proc.returncode == 2 and "--dropout: saved 0.5, now None" in proc.stderr.strip().splitlines()[-1]
    assert "fit's" not in proc.stderr  # the flags that differ, not fit's arguments that follow from them
    proc = cli(*flags, "--dropout", "0.5", "--epochs", "3", "--resume")
    assert proc.returncode == 0 and ckpt.newest_epoch(run) == 3, proc.stderr
    again = [json.loads(l) for l in out.read_text().splitlines()]
    assert again[-1]["test_accuracy"] > 0.85
    # the same epochs without dropout train other params
    plain = str(tmp_path / "plain")
    assert cli("train", "--sizes", "64,30,10", "--quiet", "--epochs", "2", "--checkpoint-dir", plain).returncode == 0
    a, b = (ckpt.load_params(os.path.join(d, "ckpt-000002.npz")) for d in (run, plain))
    assert fbp.relative_error(a[0].w, b[0].w) > 1e-3
    # with DP-SGD: each example's thinned gradient clipped
    proc = cli("train", "--sizes", "64,30,10", "--epochs", "1", "--dropout", "0.5", "--dp-clip", "1", "--dp-noise", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert " dropout=0.5 " in proc.stdout and " DP-SGD clip=1.0 noise=0.5" in proc.stdout.splitlines()[0]


def test_cli_keep_last_batch_steps_on_every_example_and_is_kept_with_the_checkpoint(tmp_path, capsys):
    """--keep-last-batch trains fit(drop_last=False)'s epochs (digits' 1257
    training images: 125 mini-batches of 10 and one of 7), says so in the
    header and the settings, and a resume must give it again; a mini-batch
    larger than the training set is then one step of it all."""
    cli = functools.partial(fbp_here, capsys)
    run, out = str(tmp_path / "run"), tmp_path / "m.jsonl"
    flags = ["train", "--sizes", "64,30,10", "--quiet", "--checkpoint-dir", run, "--metrics-out", str(out)]
    proc = cli(*flags, "--keep-last-batch", "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert " batch=10 keep-last-batch epochs=2 " in proc.stdout.splitlines()[0]
    assert json.loads(out.read_text().splitlines()[-1])["settings"]["--keep-last-batch"] is True
    proc = cli(*flags, "--epochs", "3", "--resume")
    assert proc.returncode == 2 and "--keep-last-batch: saved True, now None" in proc.stderr.strip().splitlines()[-1]
    proc = cli(*flags, "--keep-last-batch", "--epochs", "3", "--resume")
    assert proc.returncode == 0 and ckpt.newest_epoch(run) == 3, proc.stderr
    plain = str(tmp_path / "plain")
    assert cli("train", "--sizes", "64,30,10", "--quiet", "--epochs", "3", "--checkpoint-dir", plain).returncode == 0
    a, b = (ckpt.load_params(os.path.join(d, "ckpt-000003.npz")) for d in (run, plain))
    assert fbp.relative_error(a[0].w, b[0].w) > 1e-3  # the 7 examples more each epoch
    proc = cli("train", "--sizes", "64,30,10", "--epochs", "1", "--batch-size", "5000", "--keep-last-batch")
    assert proc.returncode == 0, proc.stderr


def test_cli_adam_gets_adams_own_learning_rate_by_default(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = fbp_cli("train", "--optimizer", "adam", "--quiet", "--metrics-out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert " adam lr=0.001 " in proc.stdout  # the SGD default 0.5 left Adam at chance (9%)
    assert json.loads(out.read_text().splitlines()[-1])["test_accuracy"] >= 0.9


def test_cli_restore_best_tests_the_best_epochs_params(tmp_path, capsys):
    evaluate = functools.partial(fbp_here, capsys, "evaluate")  # in this process: compiled once for all the calls
    out = tmp_path / "m.jsonl"
    net = tmp_path / "net.npz"
    proc = fbp_cli("train", "--epochs", "6", "--lr", "3", "--quiet", "--restore-best", "--metrics-out", str(out),
                "--save-params", str(net))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    best = 1 + int(np.argmax([l["evaluation_accuracy"] for l in lines[:-1]]))
    assert lines[-1]["best_epoch"] == lines[-1]["tested_epoch"] == best
    assert f"params of epoch {best}, the best" in proc.stdout
    # --save-params wrote the network that was tested: it scores the reported test accuracy.
    params, meta = fbp.load_params(str(net), with_meta=True)
    assert meta["tested_epoch"] == best and meta["sizes"] == [64, 100, 10]
    test = fdata.load("digits", None, None).test
    m = ftrain.evaluate(params, test.X, test.Y, "log_likelihood")
    # the records hold the exact fraction correct / n, not the program's float32 mean (257/360 would read 0.71388888359)
    assert int(m["correct"]) / len(test) == lines[-1]["test_accuracy"]
    assert all(round(l[k] * n) / n == l[k] for l in lines[:-1]
               for k, n in (("training_accuracy", 1257), ("evaluation_accuracy", 180)))
    assert float(m["accuracy"]) == pytest.approx(lines[-1]["test_accuracy"], rel=1e-7)
    # fbp evaluate reads it back and tests it on the data it was trained on, by default its test split.
    proc = evaluate(str(net))
    assert proc.returncode == 0, proc.stderr
    assert f"accuracy {lines[-1]['test_accuracy']:.4f}" in proc.stdout and "digits test (360 examples)" in proc.stdout
    n_by_class = [int(n) for n in re.findall(r"\d: [01]\.\d{3} \((\d+)\)", proc.stdout)]
    assert len(n_by_class) == 10 and sum(n_by_class) == 360
    # --worst N: the N test examples with the largest cost (or gradient of their own), largest first, as
    # evaluate gives them.
    m = ftrain.evaluate(params, test.X, test.Y, "log_likelihood", predictions=True, per_example=True)
    orders = []
    for by, key in (("cost", "costs"), ("gradient", "grad_norms"), ("output-gradient", "grad_norms_by_layer")):
        proc = evaluate(str(net), "--worst", "4", *(["--worst-by", by] if by != "cost" else []))
        assert proc.returncode == 0, proc.stderr
        rows = re.findall(r"row +(\d+)  true (\d) → predicted (\d)  cost +([\d.]+)  ‖∇C_x‖ +([\d.]+)", proc.stdout)
        scores = np.asarray(m[key]) if by != "output-gradient" else np.asarray(m[key])[:, -1]  # ‖g^L_x‖
        if by == "output-gradient":
            shown = [float(v) for v in re.findall(r"  ‖g\^L_x‖ ([\d.]+)", proc.stdout)]
            np.testing.assert_allclose(shown, scores[[int(r[0]) for r in rows]], rtol=1e-3)
        orders.append([int(r[0]) for r in rows])
        assert orders[-1] == list(np.argsort(-scores, kind="stable")[:4])
        for row, true, predicted, cost, norm in rows:
            i = int(row)
            assert (int(true), int(predicted)) == (int(np.argmax(test.Y[i])), int(m["predicted"][i]))
            np.testing.assert_allclose([float(cost), float(norm)], [m["costs"][i], m["grad_norms"][i]], atol=6e-5)
        assert scores[orders[-1][0]] > 3 * np.median(scores)  # the list picks out examples that stand apart
    assert orders[0] != orders[1] and orders[2] != orders[1]
    proc = evaluate(str(net), "--worst-by", "gradient")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "fbp evaluate: error: --worst-by gradient ranks the list of --worst N; give --worst N too")
    # --worst-images draws that list: a PNG of the 8×8 digits, written atomically, its name checked first
    images = tmp_path / "worst.png"
    (tmp_path / "d.png").mkdir()
    proc = evaluate(str(net), "--worst", "5", "--worst-images", str(images))
    assert proc.returncode == 0 and f"wrote {images}: 5 images" in proc.stdout, proc.stderr
    assert images.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".tmp-plot-*"))
    for argv, needle in ((["--worst-images", str(images)], "--worst-images " + str(images) + " draws the list of "
                                                             "--worst N; give --worst N too"),
                         (["--worst", "2", "--worst-images", "w.txt"], "--worst-images w.txt: the suffix names no "
                                                                       "image format"),
                         (["--worst", "2", "--worst-images", str(tmp_path / "d.png")], f"--worst-images "
                                                                                        f"{tmp_path / 'd.png'} is a "
                                                                                        "directory"),
                         # under a file: no directory can hold it (refused for root too)
                         (["--worst", "2", "--worst-images", str(net / "w.png")], f"--worst-images {net / 'w.png'} "
                                                                                  "cannot be written (a file, not a "
                                                                                  "directory)")):
        proc = evaluate(str(net), *argv)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
        assert "cost" not in proc.stdout  # refused before the evaluation
    # --weights-image draws the first layer's 100 units, checked first like --worst-images, one network only
    drawn = tmp_path / "weights.png"
    proc = evaluate(str(net), "--weights-image", str(drawn))
    assert proc.returncode == 0 and f"wrote {drawn}: the first layer's weights" in proc.stdout, proc.stderr
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for argv, needle in ((["--weights-image", "w.txt"], "--weights-image w.txt: the suffix names no image format"),
                         ([str(net), "--weights-image", str(drawn)], "draws the weights of one network; give one, "
                                                                    "not 2")):
        proc = evaluate(str(net), *argv)
        assert proc.returncode == 2 and needle in proc.stderr and "cost" not in proc.stdout, proc.stderr
    # --explain ROW: the training examples whose gradients point most with and against ROW's, by grad_gram
    proc = evaluate(str(net), "--explain", "3")
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(shown) if line.startswith("explain row 3 of the test split: "))
    train = fdata.load("digits", None, None).train
    dots = np.asarray(fbp.stats.grad_gram(params, train.X, train.Y, "log_likelihood", test.X[3:4], test.Y[3:4]))[:, 0]
    listed = [line.split() for line in shown[at + 2:at + 12]]
    assert [(" ".join(l[:2]), int(l[3])) for l in listed] == (
        [("helps most", int(r)) for r in np.argsort(-dots)[:5]] + [("hurts most", int(r)) for r in np.argsort(dots)[:5]])
    np.testing.assert_allclose([float(l[9]) for l in listed], dots[[int(l[3]) for l in listed]], rtol=1e-3)
    assert float(listed[0][9]) > 0 > float(listed[-1][9])
    # --explain-by cosine: ranked by g_n · g_x / (‖g_n‖ ‖g_x‖), the norms from the Gram matrices' diagonals
    norms = np.sqrt(np.diag(np.asarray(fbp.stats.grad_gram(params, train.X, train.Y, "log_likelihood"), np.float64)))
    own = np.sqrt(float(np.asarray(fbp.stats.grad_gram(params, test.X[3:4], test.Y[3:4], "log_likelihood"))[0, 0]))
    cosines = dots / norms / own
    proc = evaluate(str(net), "--explain", "3", "--explain-by", "cosine")
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(shown) if line.startswith("explain row 3 of the test split: "))
    listed = [line.split() for line in shown[at + 2:at + 12]]
    assert [int(l[3]) for l in listed] == list(np.argsort(-cosines)[:5]) + list(np.argsort(cosines)[:5])
    np.testing.assert_allclose([float(l[11]) for l in listed], cosines[[int(l[3]) for l in listed]], atol=1e-3)
    # --explain-class 5: ROW's cost at class 5, not at its true class
    five = np.eye(10, dtype=np.asarray(test.Y).dtype)[[5]]
    dots5 = np.asarray(fbp.stats.grad_gram(params, train.X, train.Y, "log_likelihood", test.X[3:4], five))[:, 0]
    proc = evaluate(str(net), "--explain", "3", "--explain-class", "5")
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(shown) if line.startswith("explain row 3 of the test split: "))
    assert ", at class 5, cost " in shown[at]
    listed = [line.split() for line in shown[at + 2:at + 12]]
    assert [int(l[3]) for l in listed] == list(np.argsort(-dots5)[:5]) + list(np.argsort(dots5)[:5])
    drawn = tmp_path / "explain.png"  # --explain-images draws the example and both lists
    proc = evaluate(str(net), "--explain", "3", "--explain-images", str(drawn))
    assert proc.returncode == 0 and f"wrote {drawn}: 11 images" in proc.stdout, proc.stderr
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for argv, needle in ((["--explain", "360"], "--explain 360: the digits test split has 360 examples, rows 0 to 359"),
                         (["--explain-images", str(drawn)], f"--explain-images {drawn} draws the lists of --explain "
                                                            f"ROW; give --explain ROW too"),
                         (["--explain-by", "cosine"], "--explain-by cosine ranks the lists of --explain ROW; give "
                                                      "--explain ROW too"),
                         (["--explain-class", "5"], "--explain-class 5 picks the class the lists of --explain ROW "
                                                    "are of; give --explain ROW too"),
                         (["--explain", "3", "--explain-class", "10"], "--explain-class 10: the network's classes "
                                                                       "are 0 to 9"),
                         ([str(net), "--explain", "0"], "--explain 0 looks at the gradients of one network; give "
                                                        "one, not 2")):
        proc = evaluate(str(net), *argv)
        assert proc.returncode == 2 and needle in proc.stderr and "cost" not in proc.stdout, proc.stderr
    # a float64 network is tested in float64, not narrowed to float32 on loading
    net64 = str(tmp_path / "net64.npz")
    fbp.save_params(net64, fbp.init_mlp(jax.random.key(0), [64, 5, 10], dtype=jnp.float64), dict(data_flag="digits"))
    proc = fbp_cli("evaluate", net64)  # a process of its own: this one has 64-bit mode on already
    assert proc.returncode == 0 and "64-bit mode is off" not in proc.stderr, proc.stderr
    # a network of other data, evaluated on digits: its --validation 10000 is that data's, not digits'
    other = str(tmp_path / "fashion.npz")
    fbp.save_params(other, fbp.init_mlp(jax.random.key(0), [784, 5, 10]),
                    dict(data="fashion-mnist", data_flag="fashion-mnist", data_dir=None, validation=10_000))
    for argv, needle in (([str(tmp_path / "none.npz")], "none.npz: no such file"),
                         ([str(tmp_path)], "a directory with no checkpoints in it, not a network"),
                         ([str(net), "--data", "fashion-mnist", "--data-dir", str(tmp_path)], "--data"),
                         ([str(out)], "not a network"),
                         ([other, "--data", "digits"], "(784,5,10) does not fit digits (64 inputs, 10 classes)"),
                         ([str(net), "--data", "idx"],  # the message names its flag once
                          "fbp evaluate: error: --data idx needs --data-dir, the directory holding the four"),
                         ([str(net), "--data-dir", str(tmp_path)],  # the flag's words, not load()'s data_dir
                          "for the IDX files there use --data idx (or fashion-mnist)")):
        proc = evaluate(*argv)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr.strip().splitlines()[-1]
    proc = fbp_cli("train", "--epochs", "0", "--quiet", "--restore-best")  # nothing trained: the initial params
    assert proc.returncode == 0, proc.stderr
    assert "--restore-best: no epoch was trained and evaluated; testing the params of epoch 0" in proc.stderr
    assert "None" not in proc.stderr and "params of epoch 0" in proc.stdout


def test_cli_evaluate_json_holds_the_report_as_one_object(tmp_path, capsys):
    """fbp evaluate --json FILE: the report's figures as one strict JSON
    object, written atomically beside the printed report (which it leaves as
    it was); --json - prints the object alone; a FILE that cannot be written
    is refused before the evaluation."""
    evaluate = functools.partial(fbp_here, capsys, "evaluate")
    net, out = str(tmp_path / "net.npz"), tmp_path / "report.json"
    proc = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--save-params", net)
    assert proc.returncode == 0, proc.stderr
    flags = [net, "--worst", "4", "--explain", "3"]
    plain = evaluate(*flags)
    proc = evaluate(*flags, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain.stdout + f"wrote {out}: the report as JSON\n"
    assert not list(tmp_path.glob(".tmp-json-*"))
    r = json.loads(out.read_text())
    params = fbp.load_params(net)
    ds = fdata.load("digits", None, None)
    X, Y = ds.test.X, ds.test.Y
    m = ftrain.evaluate(params, X, Y, "log_likelihood", predictions=True, per_example=True, deltas=True)
    truth, predicted = Y.argmax(1), np.asarray(m["predicted"])
    assert (r["data"], r["split"], r["examples"], r["cost_function"]) == ("digits", "test", 360, "log_likelihood")
    assert r["network"] == dict(path=net, checkpoint=None, layers="64,20,10", trained_epoch=2)
    assert r["correct"] == int(m["correct"]) and r["accuracy"] == int(m["correct"]) / 360
    np.testing.assert_allclose([r["cost"], *r["delta_norms"]], [m["cost"], *m["delta_norms"]], rtol=1e-6)
    assert [(c["class"], c["examples"], c["accuracy"]) for c in r["classes"]] == [
        (k, int(np.sum(truth == k)), float(np.mean(predicted[truth == k] == k))) for k in range(10)]
    pairs = [(c["true"], c["predicted"], c["count"]) for c in r["confusions"]]
    assert sum(n for _, _, n in pairs) == 360 - r["correct"] > 0
    assert [n for _, _, n in pairs] == sorted((n for _, _, n in pairs), reverse=True)
    assert all(n == np.sum((truth == t) & (predicted == p)) and t != p for t, p, n in pairs)
    matrix = np.asarray(r["confusion_matrix"])  # [true][predicted]
    assert matrix.shape == (10, 10) and np.trace(matrix) == r["correct"] and matrix.sum() == 360
    assert all(matrix[t, p] == n for t, p, n in pairs)
    shown = evaluate(net, "--confusion").stdout.splitlines()  # --confusion prints it, a row a true class
    at = shown.index("confusion matrix (a row for each true class, a column for each predicted one):")
    assert [[int(v) for v in line.split()[1:]] for line in shown[at + 2:at + 12]] == matrix.tolist()
    rows = list(np.argsort(-np.asarray(m["costs"]), kind="stable")[:4])
    assert r["worst"]["by"] == "cost" and [w["row"] for w in r["worst"]["rows"]] == rows
    np.testing.assert_allclose([[w["cost"], w["score"], w["grad_norm"]] for w in r["worst"]["rows"]],
                               [[m["costs"][i], m["costs"][i], m["grad_norms"][i]] for i in rows], rtol=1e-6)
    assert [(w["true"], w["predicted"]) for w in r["worst"]["rows"]] == [(truth[i], predicted[i]) for i in rows]
    dots = np.asarray(fbp.stats.grad_gram(params, ds.train.X, ds.train.Y, "log_likelihood", X[3:4], Y[3:4]))[:, 0]
    e = r["explain"]
    assert (e["row"], e["true"], e["predicted"], e["training_examples"]) == (3, truth[3], predicted[3], 1257)
    assert e["target"] == truth[3]  # the cost at its true class
    assert [h["row"] for h in e["helps"]] == list(np.argsort(-dots)[:5])
    assert [h["row"] for h in e["hurts"]] == list(np.argsort(dots)[:5])
    np.testing.assert_allclose([h["product"] for h in e["helps"] + e["hurts"]],
                               dots[[h["row"] for h in e["helps"] + e["hurts"]]], rtol=1e-4)
    assert all(0 < h["cos"] <= 1 for h in e["helps"]) and all(-1 <= h["cos"] < 0 for h in e["hurts"])
    # --json -: the object alone on stdout, the same one
    proc = evaluate(*flags, "--json", "-")
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1 and json.loads(proc.stdout) == r, proc.stderr
    (tmp_path / "d.json").mkdir()
    for argv, needle in ((["--json", str(tmp_path / "d.json")], "(a directory, not a file); give a writable file, "
                                                                 "or - for stdout"),
                         (["--json", os.path.join(net, "r.json")], "(a file, not a directory)"),
                         (["--explain", "360", "--json", "-"], "--explain 360: the digits test split has 360")):
        proc = evaluate(net, *argv)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
        assert proc.stdout == ""  # refused before the evaluation, and nothing half-said on stdout


def test_cli_evaluate_explains_several_rows_from_one_pass_over_the_training_set(tmp_path, capsys, monkeypatch):
    """fbp evaluate --explain 17,3,0: each row's lists as --explain ROW alone
    gives them, in the order given, from one pass over the training set (one
    call of the products, one set of K-FAC factors for --explain-by
    influence); --json holds a list of the rows' objects, --explain-images
    two rows of pictures for each."""
    evaluate = functools.partial(fbp_here, capsys, "evaluate")
    net = str(tmp_path / "net.npz")
    proc = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--save-params", net)
    assert proc.returncode == 0, proc.stderr
    calls = {"tracin": 0, "kfac_factors": 0}
    for name in calls:
        def counted(*args, _name=name, _f=getattr(fbp.stats, name), **kw):
            calls[_name] += 1
            return _f(*args, **kw)
        monkeypatch.setattr(fbp.stats, name, counted)
    rows = [17, 3, 0]
    params, test = fbp.load_params(net), fdata.load("digits", None, None).test
    for by, key in (("product", "product"), ("influence", "influence")):
        alone = [json.loads(evaluate(net, "--explain", str(r), "--explain-by", by, "--json", "-").stdout)["explain"]
                 for r in rows]
        before = dict(calls)
        drawn = tmp_path / f"{by}.png"
        proc = evaluate(net, "--explain", "17,3,0", "--explain-by", by, "--explain-images", str(drawn))
        assert proc.returncode == 0, proc.stderr
        assert calls == {"tracin": before["tracin"] + (by == "product"),
                         "kfac_factors": before["kfac_factors"] + (by == "influence")}, (by, calls)
        shown = proc.stdout.splitlines()
        starts = [i for i, line in enumerate(shown) if line.startswith("explain row ")]
        assert [shown[i].split()[2] for i in starts] == ["17", "3", "0"]
        assert sum(line.startswith("the training examples ") for line in shown) == 1  # what the lists are, once
        listed = sum(len(e["helps"]) + len(e["hurts"]) for e in alone)
        assert f"wrote {drawn}: {3 + listed} images" in proc.stdout and drawn.read_bytes()[:4] == b"\x89PNG"
        several = json.loads(evaluate(net, "--explain", "17,3,0", "--explain-by", by, "--json", "-").stdout)["explain"]
        assert isinstance(several, list) and len(several) == 3
        for one, both in zip(alone, several):
            assert {k: v for k, v in one.items() if k not in ("helps", "hurts")} == {
                k: v for k, v in both.items() if k not in ("helps", "hurts")}
            for what in ("helps", "hurts"):  # (float32: three rows' products and one's add up in other orders,
                # 1.5e-6 apart with jax 0.4.36)
                assert [h["row"] for h in one[what]] == [h["row"] for h in both[what]], (by, one["row"], what)
                np.testing.assert_allclose([h[key] for h in both[what]], [h[key] for h in one[what]], rtol=1e-5)
        if by == "product":  # and they are grad_gram's, each row's products with every training example
            train = fdata.load("digits", None, None).train
            dots = np.asarray(fbp.stats.grad_gram(params, train.X, train.Y, "log_likelihood", test.X[rows],
                                                  test.Y[rows]))
            for j, e in enumerate(several):
                assert [h["row"] for h in e["helps"]] == list(np.argsort(-dots[:, j])[:5])
    for flag, needle in (("3,3", "row 3 is given twice; give each row once"),
                         ("3,x", "like 3 or 3,17,42, or worst (--worst's rows), all (the split's mean cost), "
                                 "wrong (its wrong ones') or class:C (its class C's), got '3,x'"),
                         ("0,360", "--explain 0,360: the digits test split has 360 examples, rows 0 to 359")):
        proc = evaluate(net, "--explain", flag)
        assert proc.returncode == 2 and needle in proc.stderr and "cost" not in proc.stdout, proc.stderr


def test_cli_evaluate_explain_worst_explains_the_rows_worst_lists(tmp_path, capsys):
    """fbp evaluate --worst N --explain worst: the rows --worst lists (by its
    --worst-by), in its order, each explained as --explain ROW,ROW,... gives
    them; without --worst N a one-line error before any output."""
    evaluate = functools.partial(fbp_here, capsys, "evaluate")
    net = str(tmp_path / "net.npz")
    proc = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--save-params", net)
    assert proc.returncode == 0, proc.stderr
    for by in ("cost", "gradient"):
        r = json.loads(evaluate(net, "--worst", "3", "--worst-by", by, "--explain", "worst", "--json", "-").stdout)
        worst = [w["row"] for w in r["worst"]["rows"]]
        assert len(worst) == 3 and [e["row"] for e in r["explain"]] == worst, (by, worst, r["explain"])
        given = json.loads(evaluate(net, "--explain", ",".join(map(str, worst)), "--json", "-").stdout)["explain"]
        assert r["explain"] == given, by
    r = json.loads(evaluate(net, "--worst", "1", "--explain", "worst", "--json", "-").stdout)
    assert r["explain"]["row"] == r["worst"]["rows"][0]["row"]  # one row: its object, as --explain ROW gives it
    proc = evaluate(net, "--explain", "worst")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr
    assert "--explain worst explains the rows that --worst N lists; give --worst N too" in proc.stderr


def test_cli_factors_file_keeps_the_kfac_factors_for_the_next_command(tmp_path, capsys, monkeypatch):
    """--explain-by influence --factors FILE: the first command computes the
    K-FAC factors and writes them to FILE, the next ones (fbp evaluate's and
    fbp predict's, on the same training set) read them instead of computing
    them and explain as without the file; another network's (or cost's)
    factors are computed again and replace them; a file that is not fbp's
    factors, a directory, or --factors without an influence ranking are
    refused before any output."""
    evaluate = functools.partial(fbp_here, capsys, "evaluate")
    nets = [str(tmp_path / f"net{seed}.npz") for seed in (0, 1)]
    for seed, net in enumerate(nets):
        proc = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--seed", str(seed),
                        "--save-params", net)
        assert proc.returncode == 0, proc.stderr
    computed = []
    monkeypatch.setattr(fbp.stats, "kfac_factors",
                        lambda *a, _f=fbp.stats.kfac_factors, **kw: computed.append(1) or _f(*a, **kw))
    kept = str(tmp_path / "factors.npz")

    def explain(net, *flags):
        proc = evaluate(net, "--explain", "3,17", "--explain-by", "influence", *flags, "--json", "-")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    plain = explain(nets[0])
    assert "factors" not in plain and len(computed) == 1
    first = explain(nets[0], "--factors", kept)
    assert first["factors"]["read"] is False and first["factors"]["written"] is True and len(computed) == 2
    again = explain(nets[0], "--factors", kept)
    assert again["factors"]["read"] is True and not again["factors"]["written"] and len(computed) == 2
    for r in (first, again):
        assert r["explain"] == plain["explain"]  # the same lists and influences, to the last digit
    proc = evaluate(nets[0], "--explain", "3", "--explain-by", "influence", "--factors", kept)
    assert proc.returncode == 0 and f"K-FAC factors of the 1257 training examples read from {kept}" in proc.stdout
    # fbp predict on the same training set reads them too
    np.save(tmp_path / "x.npy", fdata.load("digits", None, None).test.X[:2])
    proc = fbp_here(capsys, "predict", nets[0], str(tmp_path / "x.npy"), "--explain", "--explain-by", "influence",
                    "--factors", kept, "--json", "-")
    assert proc.returncode == 0 and json.loads(proc.stdout)["factors"]["read"] is True, proc.stderr
    assert len(computed) == 2
    # another network, or another cost: its own factors, which replace the file's
    other = explain(nets[1], "--factors", kept)
    assert other["factors"]["read"] is False and other["factors"]["written"] is True and len(computed) == 3
    assert other["explain"] == explain(nets[1])["explain"] and len(computed) == 4
    assert explain(nets[1], "--factors", kept)["factors"]["read"] is True and len(computed) == 4
    assert explain(nets[1], "--factors", kept, "--cost", "quadratic")["factors"]["read"] is False
    held = open(nets[0], "rb").read()
    for flags, needle in (
            (["--factors", nets[0]], f"--factors {nets[0]}: not K-FAC factors written by fbp (fbp evaluate "
                                     f"--factors) (its header says 'fbp-params'): a file the command would replace "
                                     f"with the factors; give a new file's name (or remove it)"),
            (["--factors", str(tmp_path)], f"--factors {tmp_path} is a directory; give the name of a file"),
            (["--explain-by", "product", "--factors", kept], f"--factors {kept} keeps the K-FAC factors of "
                                                             f"--explain-by influence and influence-cosine")):
        proc = evaluate(nets[0], "--explain", "3", *(["--explain-by", "influence"] if flags[0] != "--explain-by"
                                                      else []), *flags)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
        assert proc.stdout == ""
    assert open(nets[0], "rb").read() == held  # the network named by mistake is left as it was


def test_cli_evaluate_explain_all_ranks_by_the_products_with_the_splits_mean_gradient(tmp_path, capsys):
    """fbp evaluate --explain all: the training examples whose products with
    the split's mean gradient Ḡ are the largest and most negative, the means
    of their products (or influences) with the split's examples, with the
    cosines over ‖g_n‖ ‖Ḡ‖; --explain wrong and class:C the same over the
    examples classified wrong, or of class C; --explain-images draws the split's mean input and
    them; --explain-class is refused with it (float64 network: the lists
    exact)."""
    evaluate = functools.partial(fbp_here, capsys, "evaluate")
    net = str(tmp_path / "net.npz")
    proc = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--dtype", "float64",
                    "--save-params", net)
    assert proc.returncode == 0, proc.stderr
    params, ds = fbp.load_params(net), fdata.load("digits", None, None)
    train, test = (type(s)(np.asarray(s.X, np.float64), np.asarray(s.Y, np.float64)) for s in (ds.train, ds.test))
    cost = "log_likelihood"
    mean = fbp.batch_backward(params, test.X, test.Y, cost)
    own = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(mean)))
    norms = np.asarray(fbp.stats.per_example_grad_norms(params, train.X, train.Y, cost))
    dots = np.asarray(fbp.stats.grad_gram(params, train.X, train.Y, cost, test.X, test.Y)).mean(1)
    influence = np.asarray(fbp.stats.influence(params, train.X, train.Y, cost, test.X, test.Y)).mean(1)
    for by, scores, key in (("product", dots, "product"), ("cosine", dots / norms, "product"),
                            ("influence", influence, "influence")):
        r = json.loads(evaluate(net, "--explain", "all", "--explain-by", by, "--json", "-").stdout)
        e = r["explain"]
        assert (e["row"], e["examples"], e["training_examples"], e["ranked_by"]) == ("all", 360, 1257, by)
        assert e["cost"] == pytest.approx(r["cost"], rel=1e-12) and e["grad_norm"] == pytest.approx(own, rel=1e-10)
        assert [h["row"] for h in e["helps"]] == list(np.argsort(-scores)[:5]), by
        assert [h["row"] for h in e["hurts"]] == list(np.argsort(scores)[:5]), by
        listed = [h["row"] for h in e["helps"] + e["hurts"]]
        np.testing.assert_allclose([h[key] for h in e["helps"] + e["hurts"]],
                                   (influence if by == "influence" else dots)[listed], rtol=1e-10)
        if by != "influence":
            np.testing.assert_allclose([h["cos"] for h in e["helps"] + e["hurts"]],
                                       dots[listed] / (norms[listed] * own), rtol=1e-10)
    # --explain wrong: the same for the mean cost of the examples classified wrong
    wrong = np.flatnonzero(np.argmax(np.asarray(fbp.forward(params, test.X)), 1) != np.argmax(test.Y, 1))
    assert 0 < len(wrong) < 360
    e = json.loads(evaluate(net, "--explain", "wrong", "--json", "-").stdout)["explain"]
    assert (e["row"], e["examples"], e["rows"]) == ("wrong", len(wrong), list(wrong))
    dots_wrong = np.asarray(fbp.stats.grad_gram(params, train.X, train.Y, cost, test.X[wrong],
                                                test.Y[wrong])).mean(1)
    assert [h["row"] for h in e["helps"]] == list(np.argsort(-dots_wrong)[:5])
    assert [h["row"] for h in e["hurts"]] == list(np.argsort(dots_wrong)[:5])
    np.testing.assert_allclose([h["product"] for h in e["helps"] + e["hurts"]],
                               dots_wrong[[h["row"] for h in e["helps"] + e["hurts"]]], rtol=1e-10)
    # --explain class:C: over the split's examples of class C
    threes = np.flatnonzero(np.argmax(test.Y, 1) == 3)
    e = json.loads(evaluate(net, "--explain", "class:3", "--json", "-").stdout)["explain"]
    assert (e["row"], e["class"], e["examples"], e["rows"]) == ("class", 3, len(threes), list(threes))
    dots_3 = np.asarray(fbp.stats.grad_gram(params, train.X, train.Y, cost, test.X[threes], test.Y[threes])).mean(1)
    assert [h["row"] for h in e["helps"] + e["hurts"]] == list(np.argsort(-dots_3)[:5]) + list(np.argsort(dots_3)[:5])
    # a split the network gets all right has no wrong ones to explain, one without a class none of it: said, not
    # an error
    right = np.setdiff1d(np.arange(360), wrong)
    right = right[np.argmax(ds.test.Y[right], 1) != 7][:20]
    np.savez(tmp_path / "right.npz", x_train=ds.train.X, y_train=np.argmax(ds.train.Y, 1), x_test=ds.test.X[right],
             y_test=np.argmax(ds.test.Y[right], 1))
    for flag, said in (("wrong", "explain wrong: the network classifies all 20 examples of the test split right"),
                       ("class:7", "explain class:7: the test split has no example of class 7")):
        proc = evaluate(net, "--data", "npz", "--data-dir", str(tmp_path / "right.npz"), "--explain", flag)
        assert proc.returncode == 0 and said in proc.stdout, proc.stderr
    drawn = tmp_path / "all.png"
    proc = evaluate(net, "--explain", "all", "--explain-images", str(drawn))
    assert proc.returncode == 0 and f"wrote {drawn}: 11 images" in proc.stdout, proc.stderr
    assert "explain the mean cost of the test split (360 examples)" in proc.stdout
    for flags, needle in ((["all", "--explain-class", "3"], "--explain all takes a mean cost over the split's "
                                                             "examples"),
                          (["class:10"], "--explain class:10: the network's classes are 0 to 9")):
        proc = evaluate(net, "--explain", *flags)
        assert proc.returncode == 2 and needle in proc.stderr and proc.stdout == "", proc.stderr


def test_cli_evaluate_worst_lines_up_its_columns_whatever_their_widths(tmp_path, capsys):
    """--worst's columns stay aligned when a cost or norm reaches 100 or more
    among smaller ones (an untrained network with large weights)."""
    net = str(tmp_path / "big.npz")
    params = fbp.init_mlp(jax.random.key(0), [64, 20, 10], output_activation="softmax", init="large")
    fbp.save_params(net, [fbp.Dense(layer.w * 40, layer.b, layer.activation) for layer in params],
                    dict(data_flag="digits"))
    proc = fbp_here(capsys, "evaluate", net, "--worst", "60", "--worst-by", "output-gradient")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("  row ")]
    costs = [float(re.search(r"cost +(\S+)", line).group(1)) for line in lines]
    norms = [float(re.search(r"‖∇C_x‖ +(\S+)", line).group(1)) for line in lines]
    assert len(lines) == 60 and min(costs) < 100 <= max(costs) and min(norms) < 10 <= max(norms)
    for column in ("cost ", "‖∇C_x‖", "‖g^L_x‖"):
        assert len({line.index(column) for line in lines}) == 1, column
    assert len({line.index("(wrong)") for line in lines if "(wrong)" in line}) == 1


def test_cli_save_params_to_a_json_name_writes_the_books_network2_file(tmp_path, capsys):
    """fbp train --save-params net.json writes the book's network2.py file
    (sigmoid layers, the quadratic or cross-entropy cost), refused before
    training for a network network2 cannot hold; fbp evaluate reads it, and
    for a file of the book's own, which says no data, names the book's."""
    net = str(tmp_path / "net.json")
    proc = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--save-params", net)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert (f"--save-params {net}: a .json file is the book's network2.py format, whose layers are all sigmoid (the "
            f"output too), fully connected, and whose cost is quadratic or cross_entropy, and this run has "
            f"--output-activation softmax, --cost log_likelihood; give --output-activation sigmoid") in proc.stderr
    assert "epoch" not in proc.stdout and not os.path.exists(net)
    proc = fbp_here(capsys, "train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--output-activation",
                    "sigmoid", "--cost", "cross_entropy", "--save-params", net)
    assert proc.returncode == 0, proc.stderr
    with open(net) as f:
        data = json.load(f)
    assert data["sizes"] == [64, 20, 10] and data["cost"] == "CrossEntropyCost"
    assert [np.shape(b) for b in data["biases"]] == [(20, 1), (10, 1)]
    accuracy = re.search(r"test accuracy (\S+) ", proc.stdout).group(1)
    proc = fbp_here(capsys, "evaluate", net)  # the data and cost it was trained with, from the file
    assert proc.returncode == 0 and f"accuracy {accuracy}  (cross_entropy)" in proc.stdout, proc.stderr
    del data["fbp"]  # as the book's network2.save writes it: no data named
    book = tmp_path / "book.json"
    book.write_text(json.dumps(dict(data, sizes=[784, 20, 10], weights=[np.zeros((20, 784)).tolist(),
                                                                           data["weights"][1]])))
    proc = fbp_here(capsys, "evaluate", str(book))
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "does not fit digits (64 inputs, 10 classes); give the --data it was trained on (the book's network2.py "
        "trains on MNIST: --data mnist-pkl --data-dir mnist.pkl.gz, or --data idx)"), proc.stderr


def test_cli_lr_halving_halves_eta_and_stops_at_one_128th(tmp_path):
    out = tmp_path / "m.jsonl"
    proc = fbp_cli("train", "--epochs", "40", "--quiet", "--lr-halving", "1", "--metrics-out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(l) for l in out.read_text().splitlines()[:-1]]
    factors = [r["lr_factor"] for r in records]
    assert factors[0] == 1 and all(b in (a, a / 2) for a, b in zip(factors, factors[1:]))
    accs = [r["evaluation_accuracy"] for r in records]
    for e in range(1, len(records)):  # halved after exactly the epochs that did not beat the best so far
        assert (factors[e] < factors[e - 1]) == (accs[e - 1] <= max(accs[:e - 1], default=-1))
    stopped = "stop: η halved down to 1/128 of 0.5" in proc.stdout
    assert stopped == (len(records) < 40) and (not stopped or factors[-1] == 1 / 64)


def test_cli_failed_writes_are_one_line_errors_that_say_what_is_kept(tmp_path, capsys, monkeypatch):
    from fbp.cli import main

    # a pipe (or a device: /dev/null) is refused, not replaced by the atomic rename
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    assert main(["train", "--epochs", "1", "--quiet", "--save-params", fifo]) == 2
    assert f"--save-params {fifo} cannot be written (a device or a pipe" in capsys.readouterr().err
    with pytest.raises(OSError, match="a device or a pipe, not a regular file"):
        fbp.save_params(fifo, fbp.init_mlp(jax.random.key(0), [2, 2]))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    # a full disk under --metrics-out (every write to /dev/full fails) stops the run after epoch 1's checkpoint
    run = str(tmp_path / "run")
    assert main(["train", "--epochs", "3", "--quiet", "--metrics-out", "/dev/full", "--checkpoint-dir", run]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fbp train: error: could not write to --metrics-out /dev/full (No space left on device); "
        f"the checkpoint of epoch 1 is in {run}: add --resume to the same command to go on")
    # a failed save of the network at the end: the summary is printed and the checkpoint named
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_params", disk_full)
    net = str(tmp_path / "net.npz")
    assert main(["train", "--epochs", "2", "--quiet", "--checkpoint-dir", run, "--resume", "--save-params", net]) == 1
    out, err = capsys.readouterr()
    assert "done: 2 epochs" in out and "network in" not in out and not os.path.exists(net)
    assert err.strip().splitlines()[-1] == (
        f"fbp train: error: could not write --save-params {net} (No space left on device); "
        f"the checkpoint of epoch 2 is in {run}: add --resume to the same command to go on")


def test_standard_output_that_cannot_be_written_is_a_one_line_error_that_says_what_is_kept(tmp_path, capsys,
                                                                                            monkeypatch):
    """`fbp train > log` on a disk that fills during epoch 2's line: one line
    on stderr naming the checkpoint of epoch 2 (saved before its line), not
    a traceback; `fbp check` into a full disk says so too."""
    import io

    from fbp.cli import main

    class FillsUp(io.StringIO):
        def write(self, text):
            if "epoch   2" in text:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(text)

    run = str(tmp_path / "run")
    monkeypatch.setattr(sys, "stdout", FillsUp())
    assert main(["train", "--epochs", "3", "--quiet", "--checkpoint-dir", run]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fbp train: error: could not write to standard output (No space left on device); "
        f"the checkpoint of epoch 2 is in {run}: add --resume to the same command to go on")
    assert ckpt.newest_epoch(run) == 2
    proc = subprocess.run(f"{sys.executable} -m fbp check > /dev/full", shell=True, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr == (
        "fbp check: error: could not write to standard output (No space left on device)\n")
    # --help and --version too, whose writes argparse would let fail without a word (status 0)
    proc = subprocess.run(f"{sys.executable} -m fbp --help > /dev/full", shell=True, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr == (
        "fbp: error: could not write to standard output (No space left on device)\n")

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    capsys.readouterr()
    for argv in (["train", "--help"], ["--version"]):
        monkeypatch.setattr(sys, "stdout", Full())
        assert main(argv) == 1
        assert capsys.readouterr().err == "fbp: error: could not write to standard output (No space left on device)\n"
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(SystemExit) as e:  # a usage error is still argparse's, status 2
        main(["train", "--bogus"])
    assert e.value.code == 2


def test_cli_progress_bar_moves_within_epochs_on_a_terminal_only(monkeypatch, capsys):
    """On a terminal fbp train's bar moves by fractions of an epoch as fit
    reports the steps to on_progress. With --quiet, or when stderr is not a
    terminal, there is no bar to move; the reports are asked for all the
    same, as a second Ctrl-C ends the running epoch at the next one."""
    import io

    from fbp import train as ftrain
    from fbp.cli import main

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    fit, seen = ftrain.fit, []

    def spy(*args, on_progress=None, **kw):
        seen.append([on_progress is not None])

        def watched(epoch, done, steps):
            on_progress(epoch, done, steps)
            bar = on_progress.__self__.report.bar
            seen[-1].append(None if bar is None or bar.disable else bar.n)  # the bar's position, in epochs
        return fit(*args, on_progress=watched, **kw)

    monkeypatch.setattr(ftrain, "fit", spy)
    monkeypatch.setattr(ftrain, "PROGRESS_SECONDS", 0.0)  # digits' 2 ms epochs report too
    for stderr, quiet in ((Terminal(), []), (Terminal(), ["--quiet"]), (io.StringIO(), [])):
        monkeypatch.setattr(sys, "stderr", stderr)
        assert main(["train", "--epochs", "2", *quiet]) == 0
    capsys.readouterr()
    (on_tty, *where), (quiet_tty, *quiet_where), (piped, *piped_where) = seen
    assert on_tty and quiet_tty and piped
    assert len(quiet_where) == len(piped_where) == len(where) > 20 and set(quiet_where + piped_where) == {None}
    steps = 1257 // 10
    assert where == sorted(where) and where[-1] == 2.0 and 0 < where[0] < 0.1  # 7 of 125 steps: 0.06
    assert [round(1 + k / steps, 2) for k in (7, 14)] == where[len(where) // 2: len(where) // 2 + 2]


def test_stopping_stops_after_the_epoch_it_names_and_a_second_signal_ends_that_epoch(capfd):
    """fbp train's signal handling: the first signal names the epoch
    running then and stops the run after it (not after the epoch just
    recorded); the second makes the next step report end the epoch,
    with the signal's own exception (in a multi-host run, only on process
    0, where the reports come); once training has ended, signals only say
    that the network is being tested and saved."""
    import signal

    from fbp import cli_signals

    class Report:
        last_epoch, notes, running = 3, [], 4

        def note(self, line):
            self.notes.append(line)

        def steps(self, *a):
            self.notes.append(a)

    report = Report()
    s = cli_signals.Stopping(report)
    s.steps(4, 5, 10)
    assert s.stop() is None and report.notes == [(4, 5, 10)]
    s.handle(signal.SIGTERM, None)
    assert report.notes[-1] == ("fbp train: SIGTERM: stopping when epoch 4 ends, which is kept; SIGTERM again "
                                "stops at once, without it")
    assert s.stop() is None  # epoch 3's record is in; 4 runs on
    report.last_epoch = 4
    assert s.stop() == "terminated"
    s.handle(signal.SIGINT, None)
    assert report.notes[-1] == "fbp train: Ctrl-C: stopping at once"
    with pytest.raises(KeyboardInterrupt) as stopped:
        s.steps(5, 1, 10)
    assert type(stopped.value) is KeyboardInterrupt
    s.training = False
    capfd.readouterr()
    s.handle(signal.SIGINT, None)  # written past stderr's buffer, which the main thread may be writing into
    line = "fbp train: Ctrl-C: training has ended; the network is being tested and saved"
    assert capfd.readouterr().err == line + "\n" or report.notes[-1] == line

    not_process_0 = cli_signals.Stopping(report, within_epochs=False)  # of a multi-host run
    not_process_0.handle(signal.SIGINT, None)
    not_process_0.handle(signal.SIGTERM, None)
    assert report.notes[-1] == ("fbp train: SIGTERM: only process 0 of the run can stop an epoch midway; "
                                "stopping when epoch 4 ends")


# --deterministic's flag swapped for one whose effect a CPU shows: XLA writes
# each program it compiles to the directory --xla_dump_to names.
_FLAG_PROBE = """
import sys
from fbp import cli_train
from fbp.cli import main
cli_train.DETERMINISTIC_XLA_FLAG = "--xla_dump_to=" + sys.argv[1]
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_puts_its_flag_where_xla_reads_it(tmp_path, deterministic):
    dump = tmp_path / "xla"
    argv = ["train", "--epochs", "1", "--quiet"] + (["--deterministic"] if deterministic else [])
    # no XLA_FLAGS of ours, and no persistent cache (conftest's): an executable read back
    # from it is not compiled, so XLA would not dump it
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    proc = subprocess.run([sys.executable, "-c", _FLAG_PROBE, str(dump), *argv], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith(" deterministic") == deterministic
    # XLA read the flag (set before jax started its backend): the run's programs are there
    assert (dump.is_dir() and any(dump.iterdir())) == deterministic


def test_deterministic_is_refused_once_jax_has_started_in_the_process(monkeypatch, capsys):
    from fbp.cli import main

    jnp.ones(1).block_until_ready()  # this process's backend has started: XLA has read XLA_FLAGS
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert main(["train", "--deterministic", "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fbp train: error: --deterministic: jax has started its backend in this process already, so XLA "
                   "would ignore the flag; set XLA_FLAGS=--xla_gpu_deterministic_ops=true before Python starts "
                   "instead"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")  # as if set before it started
    assert main(["train", "--deterministic", "--epochs", "1", "--quiet"]) == 0


@pytest.mark.parametrize("argv,needle", [
    (["--lr-halving", "0"], "--lr-halving"),
    (["--sizes", "63,30,10"], "--sizes"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "abc"], "--lr"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--epochs", "-3"], "--epochs"),
    # Past 32 bits jax.random.key wraps around without x64 (2**32 was seed 0) and then a traceback.
    (["--seed", "4294967296"], "argument --seed: expected an integer from 0 to 4294967295 (2**32 − 1), got"),
    (["--seed", "99999999999999999999"], "argument --seed: expected an integer from 0 to 4294967295"),
    (["--data", "idx"], "--data-dir"),
    (["--data-dir", "/some/mnist"], "--data-dir: digits are bundled with scikit-learn and read no directory, "
                                    "but --data-dir was given (/some/mnist); for the IDX files there use "
                                    "--data idx (or fashion-mnist)"),
    (["--data", "fashion-mnist", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir"),
    (["--resume"], "--checkpoint-dir"),
    (["--batch-size", "5000"], "--batch-size 5000 is larger than the training set (1257 examples); use at most "
                               "1257, or add --keep-last-batch"),
    (["--keep-last-batch", "--dp-clip", "1", "--dp-noise", "1"], "--keep-last-batch with DP-SGD"),
    (["--restore-best", "--validation", "0"], "--validation"),
    (["--validation", "2000"], "--validation: validation size must be in [0, 1437) for 1437 training examples"),
    (["--patience", "3", "--validation", "0"], "--patience stops training by validation accuracy"),
    (["--lr-halving", "5", "--validation", "0"], "--lr-halving"),
    (["--save-params", "/"], "--save-params"),
    # a flag wrong whatever the data is refused before the data is read (here it could not be)
    (["--data", "fashion-mnist", "--data-dir", "/nonexistent/dir", "--save-params", "/"], "--save-params / cannot"),
    (["--save-params", "out/run", "--metrics-out", "out/../out/run"], "both name out/run"),
    (["--num-processes", "2"], "--coordinator, --num-processes and --process-id go together"),
    (["--coordinator", "host0", "--num-processes", "2", "--process-id", "0"], "expected HOST:PORT"),
    (["--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "2"], "--process-id 2 is not below"),
    (["--coordinator", "host0:65536", "--num-processes", "2", "--process-id", "1"], "the port must be 1 to 65535"),
    (["--join-timeout", "30"], "--join-timeout bounds the wait of a multi-host run; it does nothing without "
                               "--coordinator"),
    (["--join-timeout", "0"], "argument --join-timeout: expected a positive number, got '0'"),
    (["--cost", "cross_entropy", "--output-activation", "relu"], "--cost cross_entropy with --output-activation relu"),
    (["--activation", "softmax"], "argument --activation: invalid choice: 'softmax'"),
    (["--momentum", "0.5"], "--momentum is the coefficient of --optimizer momentum; it does nothing with "
                            "--optimizer sgd"),
    (["--optimizer", "momentum", "--momentum", "1"], "argument --momentum: expected a number in [0, 1), got '1'"),
    (["--dropout", "1"], "argument --dropout: expected a number in [0, 1), got '1'"),
    (["--l1", "-1"], "argument --l1: expected a number ≥ 0, got '-1'"),
    (["--dropout", "0.5", "--sizes", "64,10"], "--dropout drops hidden units, but --sizes 64,10 has no hidden layer; "
                                                "add one (--sizes 64,100,10) or leave out --dropout"),
])
def test_bad_train_flags_are_one_line_errors(argv, needle, capsys):
    proc = fbp_here(capsys, "train", *argv)  # an exception out of it (a traceback) fails the test too
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fbp train: error: "), proc.stderr
    assert needle in proc.stderr


def test_a_refused_run_takes_away_the_empty_directories_it_made_and_leaves_the_others(tmp_path, capsys):
    # --sizes is refused once the data is read, after --checkpoint-dir was made (and found writable)
    new, there = tmp_path / "new", tmp_path / "there"
    there.mkdir()
    for run in (new / "a" / "ck", there):
        proc = fbp_here(capsys, "train", "--sizes", "64,100,9", "--checkpoint-dir", str(run))
        assert proc.returncode == 2 and "--sizes 64,100,9 does not fit digits" in proc.stderr
    assert not new.exists() and there.is_dir()  # the directories above the new one too; one given empty stays

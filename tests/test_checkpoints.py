"""Checkpoints: atomic saves and pruning, saved networks, resuming bitwise
after kill -9 (mid-run and mid-save), damaged checkpoints, the directory
lock, Ctrl-C and SIGTERM."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fbp
from fbp import checkpoint as ckpt
from fbp import data as fdata
from fbp import train as ftrain

from training_helpers import fbp_cli, fbp_here, params_of, small_problem


def test_pruning_keeps_the_newest_and_the_protected(tmp_path):
    tree = dict(w=jnp.ones(3))
    for e in range(1, 7):
        ckpt.save(str(tmp_path), e, tree, keep=3, protect=(2,))
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == [
        "ckpt-000002.npz", "ckpt-000004.npz", "ckpt-000005.npz", "ckpt-000006.npz"]
    ckpt.save(str(tmp_path), 7, tree, keep=3, protect=(6,))  # the best moved on: 2 goes
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path))] == [
        "ckpt-000005.npz", "ckpt-000006.npz", "ckpt-000007.npz"]
    spread = str(tmp_path / "spread")  # keep_every: those of the epochs it divides stay too
    for e in range(1, 9):
        ckpt.save(spread, e, tree, keep=3, protect=(1,), keep_every=3)
    assert [ckpt.epoch_of(p) for p in ckpt.list_checkpoints(spread)] == [1, 3, 6, 7, 8]


def test_checkpoint_roundtrip_and_atomic_leftovers(tmp_path):
    params, X, Y = small_problem(jnp.float32)
    opt = optax.adam(1e-3)
    tree = dict(params=params, opt_state=opt.init(params), key=jax.random.key(5))
    ckpt.save(str(tmp_path), 1, tree, dict(history=[{"epoch": 1}]))
    (tmp_path / ".tmp-ckpt-000002-99999.npz").write_bytes(b"half a file")  # a save killed midway
    (tmp_path / "ckpt-000003.npz").write_bytes(b"garbage")  # unreadable: skipped
    whole = open(ckpt.list_checkpoints(str(tmp_path))[0], "rb").read()
    (tmp_path / "ckpt-000004.npz").write_bytes(whole[: len(whole) * 2 // 3])  # cut short (a partial copy)
    damaged = bytearray(whole)  # zip directory intact, the last data byte flipped: the member's CRC catches it
    damaged[whole.index(b"PK\x01\x02") - 1] ^= 0xFF
    (tmp_path / "ckpt-000005.npz").write_bytes(bytes(damaged))
    with pytest.warns(ckpt.CheckpointWarning) as skipped:
        restored, header = ckpt.latest(str(tmp_path), tree)
    assert [str(w.message).split(": ")[1] for w in skipped] == [
        str(tmp_path / f"ckpt-00000{e}.npz") for e in (5, 4, 3)]
    assert "not an .npz (zip) archive; cut short" in str(skipped[1].message)
    assert "CRC" in str(skipped[0].message)
    assert header["epoch"] == 1 and header["meta"]["history"] == [{"epoch": 1}]
    assert ckpt.newest_epoch(str(tmp_path)) == 1  # what Ctrl-C reports: the one resume will use
    assert ckpt.newest_epoch(str(tmp_path / "missing")) is None
    for a, b in zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(tree["key"]))
    other = dict(params=fbp.init_mlp(jax.random.key(0), [6, 5, 3]), opt_state=None, key=tree["key"])
    with pytest.raises(ckpt.CheckpointError, match="different network or optimizer"), \
            pytest.warns(ckpt.CheckpointWarning):  # the three unreadable ones, passed over again
        ckpt.latest(str(tmp_path), other)


def test_a_full_disk_mid_run_keeps_the_earlier_checkpoints_and_says_so(tmp_path, monkeypatch, capsys):
    params, X, Y = small_problem(jnp.float32)
    d, real_savez, calls = str(tmp_path / "run"), np.savez, []

    def savez_until_full(f, **arrays):  # the third save finds the disk full halfway
        calls.append(1)
        if len(calls) == 3:
            f.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        real_savez(f, **arrays)

    monkeypatch.setattr(ckpt.np, "savez", savez_until_full)

    def run(**kw):
        return ftrain.fit(params, (X, Y), optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=5,
                          batch_size=8, key=jax.random.key(0), checkpoint_dir=d, **kw)

    with pytest.raises(ckpt.CheckpointWriteError, match="epoch 3 .*No space left.*epoch 2 is intact"):
        run()
    assert sorted(os.listdir(d)) == [ckpt.LOCK_NAME, "ckpt-000001.npz", "ckpt-000002.npz"]  # no partial file left
    assert run(resume=True).epochs_run == 5
    # The CLI says the same in one line, before anything else is lost.
    from fbp.cli import main

    calls.clear()
    rc = main(["train", "--epochs", "4", "--quiet", "--checkpoint-dir", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "Traceback" not in "".join(err)
    assert err[-1].startswith("fbp train: error: could not write the checkpoint of epoch 3")
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(str(tmp_path / "cli"))] == [
        "ckpt-000001.npz", "ckpt-000002.npz"]


def test_load_params_reads_the_network_of_a_training_checkpoint(tmp_path, digits):
    # With momentum the optimizer state holds leaves of its own, ahead of the params among the checkpoint's.
    params = fbp.init_mlp(jax.random.key(0), [64, 12, 10], activation="tanh", output_activation="softmax")
    run_dir = str(tmp_path / "run")
    result = ftrain.fit(params, digits.train, optimizer=ftrain.make_optimizer("momentum", 0.05), cost="log_likelihood",
                        epochs=3, batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir, config=dict(note=1))
    back, meta = fbp.load_params(ckpt.path_of(run_dir, 3), with_meta=True)
    assert [layer.activation for layer in back] == ["tanh", "softmax"]
    for a, b in zip(jax.tree.leaves(result.params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
    assert meta["epoch"] == 3 and meta["config"] == dict(note=1) and len(meta["history"]) == 3
    earlier = fbp.load_params(ckpt.path_of(run_dir, 2))  # an earlier epoch's network, not the last one's
    assert not np.array_equal(earlier[0].w, back[0].w)
    # The directory stands for its newest checkpoint that reads, as it does for resume=True.
    newest, meta = fbp.load_params(run_dir, with_meta=True)
    assert meta["checkpoint"] == ckpt.path_of(run_dir, 3) and meta["epoch"] == 3
    np.testing.assert_array_equal(newest[0].w, back[0].w)
    with open(ckpt.path_of(run_dir, 3), "r+b") as fh:
        fh.truncate(100)  # cut short
    with pytest.warns(ckpt.CheckpointWarning, match=r"skipped a checkpoint: .*ckpt-000003\.npz"):
        fallback, meta = fbp.load_params(run_dir, with_meta=True)
    assert meta["epoch"] == 2 and meta["checkpoint"] == ckpt.path_of(run_dir, 2)
    np.testing.assert_array_equal(fallback[0].w, earlier[0].w)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ckpt.CheckpointError, match="empty: a directory with no checkpoints in it"):
        fbp.load_params(str(tmp_path / "empty"))


def test_cli_evaluate_takes_a_training_checkpoint_as_it_takes_a_saved_network(tmp_path, capsys):
    run_dir, net = str(tmp_path / "run"), str(tmp_path / "net.npz")
    metrics = tmp_path / "m.jsonl"
    proc = fbp_cli("train", "--epochs", "2", "--quiet", "--sizes", "64,20,10", "--optimizer", "adam",
                "--checkpoint-dir", run_dir, "--save-params", net, "--monitor-deltas", "--metrics-out", str(metrics))
    assert proc.returncode == 0, proc.stderr
    from_ckpt, from_net = (fbp_here(capsys, "evaluate", path) for path in (ckpt.path_of(run_dir, 2), net))
    assert from_ckpt.returncode == from_net.returncode == 0, from_ckpt.stderr + from_net.stderr
    first, *rest = from_ckpt.stdout.splitlines()
    assert first.startswith(f"fbp evaluate: {ckpt.path_of(run_dir, 2)} (64,20,10, trained to epoch 2) on digits test")
    assert rest == from_net.stdout.splitlines()[1:]  # the same network, cost, accuracy and confusions
    from_dir = fbp_here(capsys, "evaluate", run_dir)  # the directory: its newest checkpoint, named
    assert from_dir.returncode == 0, from_dir.stderr
    assert from_dir.stdout.splitlines()[0] == first and from_dir.stdout.splitlines()[1:] == rest
    # its --validation: digits' 180
    proc = fbp_here(capsys, "evaluate", ckpt.path_of(run_dir, 1), "--split", "validation")
    assert proc.returncode == 0 and "trained to epoch 1) on digits validation (180 examples)" in proc.stdout
    # Each layer's ‖∂C/∂b^l‖, on the training split: what --monitor-deltas recorded for that epoch.
    proc = fbp_here(capsys, "evaluate", ckpt.path_of(run_dir, 2), "--split", "train")
    shown = re.search(r"^‖δ‖ by layer .*, layer 2 to 3 as the book numbers them: (\S+) (\S+)$", proc.stdout, re.M)
    recorded = json.loads(metrics.read_text().splitlines()[1])["delta_norms"]
    np.testing.assert_allclose([float(shown.group(1)), float(shown.group(2))], recorded, rtol=5e-3)


def test_cli_keeps_every_nth_checkpoint_and_explains_a_row_over_them_as_tracin(tmp_path, capsys):
    """fbp train --keep-every N keeps checkpoints over the run; fbp evaluate
    run/ --explain ROW --over-checkpoints sums each one's products g_n · g_x
    times its epochs' η (here halved as --lr-halving goes) and the epochs it
    stands for."""
    run_dir = str(tmp_path / "run")
    # 12 epochs: digits' 180 validation images stop improving now and then, and each time η halves
    proc = fbp_cli("train", "--epochs", "12", "--quiet", "--sizes", "64,20,10", "--lr-halving", "1",
                   "--keep-every", "3", "--checkpoint-dir", run_dir)
    assert proc.returncode == 0, proc.stderr
    epochs = [ckpt.epoch_of(p) for p in ckpt.list_checkpoints(run_dir)]
    last = epochs[-1]  # 12, or fewer where η came down to η/128 first
    assert {e for e in (3, 6, 9) if e < last} | {last - 2, last - 1, last} <= set(epochs)  # every third, the newest
    assert len(epochs) <= len({3, 6, 9, last - 2, last - 1, last}) + 1  # and maybe the best: no more
    r = fbp_here(capsys, "evaluate", run_dir, "--explain", "3", "--over-checkpoints")
    assert r.returncode == 0, r.stderr
    shown = r.stdout.splitlines()
    at = next(i for i, line in enumerate(shown) if line.startswith("TracIn over the run's"))
    ds = fdata.load("digits", None, None)
    weighted, spans, rates, before = [], [], [], 0
    for path in ckpt.list_checkpoints(run_dir):
        net, meta = fbp.load_params(path, with_meta=True)
        factor = meta["history"][-1]["lr_factor"]  # the factor its own epoch trained with
        weighted.append((net, 0.5 * factor * (meta["epoch"] - before)))
        spans.append(meta["epoch"] - before)
        rates.append(0.5 * factor)
        before = meta["epoch"]
    assert len(set(rates)) > 1  # the halvings show: a test that tells the epochs' η apart
    assert (f"of epochs {', '.join(map(str, epochs))}, each standing for e_i = {', '.join(map(str, spans))} epochs "
            f"of step size η_i = {', '.join(f'{lr:g}' for lr in rates)}:") in shown[at]
    scores = np.asarray(fbp.stats.tracin(weighted, ds.train.X, ds.train.Y, "log_likelihood", ds.test.X[3:4],
                                         ds.test.Y[3:4]))[:, 0]
    listed = [line.split() for line in shown[at + 1:at + 11]]
    assert [(" ".join(l[:2]), int(l[3])) for l in listed] == (
        [("helps most", int(r)) for r in np.argsort(-scores)[:5]] + [("hurts most", int(r)) for r in np.argsort(scores)[:5]])
    np.testing.assert_allclose([float(l[11]) for l in listed], scores[[int(l[3]) for l in listed]], rtol=1e-3)
    newest = np.asarray(fbp.stats.grad_gram(weighted[-1][0], ds.train.X, ds.train.Y, "log_likelihood",
                                            ds.test.X[3:4], ds.test.Y[3:4]))[:, 0]
    assert list(np.argsort(-scores)[:5]) != list(np.argsort(-newest)[:5])  # not the newest checkpoint's list
    # --worst N --over-checkpoints: the examples of the largest cost averaged over the run, Σ_i e_i C_x(w_i) / Σ_i e_i
    # (the default), or self-influence Σ_i η_i e_i ‖g_x(w_i)‖², of all the params, or of the output layer's alone
    # (--worst-by output-gradient); here from example_loss and vmap(jax.grad)'s gradients
    loss = jax.vmap(lambda p, x, y: fbp.example_loss(p, x, y, "log_likelihood"), in_axes=(None, 0, 0))
    grads = jax.vmap(jax.grad(lambda p, x, y: fbp.example_loss(p, x, y, "log_likelihood")), in_axes=(None, 0, 0))
    X, Y = ds.train.X, ds.train.Y
    for by, part in (("cost", None), ("gradient", lambda g: g), ("output-gradient", lambda g: g[-1])):
        if part is None:
            influence = sum(span * np.asarray(loss(net, X, Y), np.float64)
                            for (net, _), span in zip(weighted, spans)) / sum(spans)
        else:
            influence = sum(weight * sum(np.sum(np.asarray(leaf, np.float64).reshape(len(X), -1) ** 2, axis=1)
                                         for leaf in jax.tree.leaves(part(grads(net, X, Y))))
                            for net, weight in weighted)
        images = tmp_path / f"{by}.png"  # drawn too, each image titled with its score
        r = fbp_here(capsys, "evaluate", run_dir, "--split", "train", "--worst", "6", "--over-checkpoints",
                     "--worst-images", str(images), *(["--worst-by", by] if by != "cost" else []))
        assert r.returncode == 0, r.stderr
        assert f"wrote {images}: 6 images" in r.stdout and images.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"over the run's {len(epochs)} checkpoints w_i, of epochs {', '.join(map(str, epochs))}, " in r.stdout
        listed = re.findall(r"^  row +(\d+) .*  (?:Σ ηe ‖g(?:\^L)?_x‖²|mean C_x) (\S+)", r.stdout, re.M)
        rows, shown_values = [int(row) for row, _ in listed], [float(v) for _, v in listed]
        assert len(rows) == 6 and shown_values == sorted(shown_values, reverse=True)
        np.testing.assert_allclose(shown_values, influence[rows], rtol=1e-3)
        assert np.sort(influence)[-7] <= min(shown_values) * (1 + 1e-3)  # none left out that ranks above them
        assert influence[rows[0]] > 5 * np.median(influence)
        if by == "cost":  # --json: the checkpoints and the list, unrounded
            rec = json.loads(fbp_here(capsys, "evaluate", run_dir, "--split", "train", "--worst", "6",
                                      "--over-checkpoints", "--json", "-").stdout)
            assert rec["checkpoints"] == [dict(epoch=e, lr=lr, epochs_spanned=span)
                                          for e, lr, span in zip(epochs, rates, spans)]
            assert rec["worst"]["over_checkpoints"] and [w["row"] for w in rec["worst"]["rows"]] == rows
            np.testing.assert_allclose([w["score"] for w in rec["worst"]["rows"]], influence[rows], rtol=1e-6)
        assert "was not trained on" not in r.stdout
    # on a split not trained on, the self-influence is only a weighted sum of norms, and the list says so
    r = fbp_here(capsys, "evaluate", run_dir, "--worst", "2", "--over-checkpoints", "--worst-by", "gradient")
    assert r.returncode == 0 and "  (the test split was not trained on: for its examples the sum weighs" in r.stdout
    # a checkpoint that cannot be read is passed over, said in one line, and the next stands for its epochs too
    cut = ckpt.path_of(run_dir, epochs[1])
    with open(cut, "r+b") as f:
        f.truncate(os.path.getsize(cut) // 2)
    r = fbp_here(capsys, "evaluate", run_dir, "--explain", "3", "--over-checkpoints")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"fbp evaluate: warning: --over-checkpoints: skipped a checkpoint: {cut}")
    assert r.stderr.count("\n") == 1, r.stderr
    rest = [e for e in epochs if e != epochs[1]]
    assert f"of epochs {', '.join(map(str, rest))}, each standing for e_i = {epochs[0]}, {epochs[2] - epochs[0]}, " \
        in r.stdout, r.stdout
    for argv, needle in ((["--explain", "3", "--over-checkpoints", ckpt.path_of(run_dir, 6)],
                          f"--over-checkpoints sums over the checkpoints of a run, and {ckpt.path_of(run_dir, 6)} "
                          f"is one file; give the --checkpoint-dir it is in"),
                         (["--over-checkpoints", run_dir], "--over-checkpoints sums --explain's products, or "
                                                           "--worst's costs or gradients, over a run's checkpoints; "
                                                           "give --explain ROW or --worst N too")):
        r = fbp_here(capsys, "evaluate", *argv)
        assert r.returncode == 2 and needle in r.stderr and "cost" not in r.stdout, r.stderr
    r = fbp_here(capsys, "train", "--keep-every", "2")
    assert r.returncode == 2 and "--keep-every 2 keeps checkpoints: give --checkpoint-dir too" in r.stderr, r.stderr
    # fit's checkpoints from a script: keep_every there too, and η not recorded (no config) is said, and taken as 1
    script_dir = str(tmp_path / "script")
    ftrain.fit(fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax"), ds.train,
               optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=5, batch_size=10, key=jax.random.key(1),
               monitor_training=False, checkpoint_dir=script_dir, keep_every=1)
    assert [ckpt.epoch_of(p) for p in ckpt.list_checkpoints(script_dir)] == [1, 2, 3, 4, 5]
    r = fbp_here(capsys, "evaluate", script_dir, "--explain", "0", "--over-checkpoints")
    assert r.returncode == 0, r.stderr
    assert ("of epochs 1, 2, 3, 4, 5, each standing for e_i = 1, 1, 1, 1, 1 epochs of step size η_i = "
            + ", ".join(["1 (not recorded)"] * 5)) in r.stdout, r.stdout

def test_cli_evaluate_lets_several_networks_vote(tmp_path, capsys):
    """fbp evaluate NET NET NET: a line for each network (its cost and
    accuracy, as it alone gives them), then the vote's and the soft vote's
    accuracies, which are fbp.train.vote's on the loaded networks, and the
    per-class accuracy of the one --voting names; --worst and --voting want
    one network and several, and
    a network that does not fit the data is named; networks of other
    kinds and dtypes vote together."""
    paths = [str(tmp_path / f"seed{k}.npz") for k in range(3)]
    for k, path in enumerate(paths):
        proc = fbp_here(capsys, "train", "--epochs", "1", "--quiet", "--sizes", "64,12,10", "--seed", str(k),
                        "--save-params", path)
        assert proc.returncode == 0, proc.stderr
    proc = fbp_here(capsys, "evaluate", *paths)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "fbp evaluate: a vote of 3 networks on digits test (360 examples)"
    for path, line in zip(paths, lines[1:4]):
        alone = fbp_here(capsys, "evaluate", path).stdout.splitlines()[1]  # "cost C  accuracy A  (cost name)"
        assert line.split()[:5] == [path] + alone.split()[:4]
    ds = fdata.digits(n_validation=0)
    nets = [fbp.load_params(path) for path in paths]
    hard = np.asarray(ftrain.vote(nets, ds.test.X))
    voted = np.mean(hard == ds.test.Y.argmax(1))
    assert re.match(rf"vote: accuracy {voted:.4f} \(the best network alone: ", lines[4]), lines[4]
    soft = np.asarray(ftrain.vote(nets, ds.test.X, voting="soft"))
    truth = ds.test.Y.argmax(1)
    assert lines[5].startswith(f"soft vote (the largest summed output): accuracy {np.mean(soft == truth):.4f}; ")
    assert lines[6:8] == ["the vote (--voting hard), class by class:",
                          "accuracy per class: " + "  ".join(
                              f"{c}: {np.mean(hard[truth == c] == c):.3f} ({np.sum(truth == c)})" for c in range(10))]
    record = json.loads(fbp_here(capsys, "evaluate", *paths, "--json", "-").stdout)  # the same, as JSON
    assert [(n["path"], f"{n['accuracy']:.4f}") for n in record["networks"]] == [
        (path, line.split()[4]) for path, line in zip(paths, lines[1:4])]
    assert record["vote"]["accuracy"] == voted and record["soft_vote"]["accuracy"] == np.mean(soft == truth)
    assert record["voting"] == "hard" and [c["accuracy"] for c in record["classes"]] == [
        np.mean(hard[truth == c] == c) for c in range(10)]
    proc = fbp_here(capsys, "evaluate", *paths, "--voting", "soft")
    assert proc.stdout.splitlines()[6:8] == ["the soft vote (--voting soft), class by class:",
                                             "accuracy per class: " + "  ".join(
                                                 f"{c}: {np.mean(soft[truth == c] == c):.3f} ({np.sum(truth == c)})"
                                                 for c in range(10))]
    proc = fbp_here(capsys, "evaluate", paths[0], "--voting", "soft")
    assert proc.returncode == 2 and "give two or more" in proc.stderr
    proc = fbp_here(capsys, "evaluate", *paths[:2], "--worst", "3")
    assert proc.returncode == 2 and "give one, not 2" in proc.stderr.strip().splitlines()[-1]
    # networks of other kinds and dtypes vote together: a float64 MLP first, a float32 convolutional one
    mixed = [str(tmp_path / "f64.npz"), str(tmp_path / "conv.npz")]
    fbp.save_params(mixed[0], fbp.init_mlp(jax.random.key(0), [64, 12, 10], output_activation="softmax",
                                           dtype=jnp.float64))
    fbp.save_params(mixed[1], fbp.init_convnet(jax.random.key(1), (8, 8), [(3, 3, 2)], [10],
                                               output_activation="softmax"))
    proc = fbp_here(capsys, "evaluate", *mixed)
    assert proc.returncode == 0 and proc.stdout.splitlines()[3].startswith("vote: accuracy "), proc.stderr
    wide = str(tmp_path / "wide.npz")
    fbp.save_params(wide, fbp.init_mlp(jax.random.key(0), [64, 5, 3]))
    proc = fbp_here(capsys, "evaluate", paths[0], wide)
    assert proc.returncode == 2 and f"the network {wide} (64,5,3) does not fit" in proc.stderr


def test_kfac_factors_files_round_trip_and_an_unreadable_or_older_one_is_computed_again(tmp_path, digits):
    """save_factors / load_factors keep each layer's (A, G) bitwise, dtype
    and all; a file of an older FACTORS_VERSION, or cut short, is not read:
    --factors replaces the older one with factors computed again and refuses
    the damaged one (it might not be fbp's) before any work."""
    from fbp import cli_evaluate

    params = fbp.init_mlp(jax.random.key(0), [64, 12, 10], output_activation="softmax", dtype=jnp.float64)
    X, Y = np.asarray(digits.train.X[:200], np.float64), np.asarray(digits.train.Y[:200], np.float64)
    factors = fbp.stats.kfac_factors(params, X, Y, "log_likelihood")
    path = str(tmp_path / "f.npz")
    ckpt.save_factors(path, factors, dict(key="k", seconds=1.5))
    back, meta = ckpt.load_factors(path)
    assert meta == dict(key="k", seconds=1.5) and len(back) == len(factors) == 2
    for (a, g), (a2, g2) in zip(factors, back):
        assert a2.dtype == a.dtype and g2.dtype == g.dtype
        np.testing.assert_array_equal(a2, a)
        np.testing.assert_array_equal(g2, g)
    assert ckpt.load_factors(path, with_factors=False) == (None, meta)
    got, said = cli_evaluate.kfac_factors_kept(path, params, X, Y, "log_likelihood", 64)
    assert said["read"] is False and said["written"] is True  # another key: computed again, written
    got, said = cli_evaluate.kfac_factors_kept(path, params, X, Y, "log_likelihood", 64)
    assert said["read"] is True and said["line"].startswith("K-FAC factors of the 200 training examples read from")
    for (a, g), (a2, g2) in zip(factors, got):  # (chunks of 64 add up in another order than all at once)
        np.testing.assert_allclose(a2, a, rtol=1e-12)
        np.testing.assert_allclose(g2, g, rtol=1e-12)
    with np.load(path) as z:  # the same file, as an older fbp would have written it
        arrays = dict(z)
    header = json.loads(bytes(arrays["header"]).decode())
    arrays["header"] = np.frombuffer(json.dumps(dict(header, version=0)).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ckpt.CheckpointError, match="K-FAC factors of format version 0, and this fbp reads version 1"):
        ckpt.load_factors(path)
    assert cli_evaluate.factors_problem(path) is None
    got, said = cli_evaluate.kfac_factors_kept(path, params, X, Y, "log_likelihood", 64)
    assert said["read"] is False and said["written"] is True and "it held none that this fbp reads" in said["line"]
    assert ckpt.load_factors(path)[1]["key"] == cli_evaluate.factors_key(params, X, Y, "log_likelihood")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    problem = cli_evaluate.factors_problem(path)
    assert problem.startswith(f"--factors {path}: not K-FAC factors written by fbp") and "give a new file" in problem


def test_an_unwritable_checkpoint_dir_or_metrics_file_is_refused_before_training(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="a-file cannot be written .*a file, not a directory"):
        ftrain.check_checkpoint_dir(str(a_file), resume=False)
    for flag, path in (("--checkpoint-dir", a_file), ("--metrics-out", tmp_path)):
        proc = fbp_cli("train", "--quiet", flag, str(path))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert str(path) in last and "cannot be written" in last and "epoch" not in proc.stdout


def test_an_output_files_check_leaves_no_directory_it_made_and_its_write_makes_them(tmp_path, capsys):
    """fbp's commands check each output file's directory before their work (making it to write a probe there);
    a command refused after that leaves none of them behind, and one that succeeds writes its file."""
    ckpt.check_writable(str(tmp_path / "kept" / "run"))  # a checkpoint directory stays, for the run it is for
    ckpt.check_params_path(str(tmp_path / "new" / "a" / "net.npz"))
    assert (tmp_path / "kept" / "run").is_dir() and not (tmp_path / "new").exists()
    net = str(tmp_path / "net.npz")
    fbp.save_params(net, fbp.init_mlp(jax.random.key(0), [64, 5, 10], output_activation="softmax"))
    out = tmp_path / "new" / "a" / "e.json"
    proc = fbp_here(capsys, "evaluate", net, "--json", str(out), "--explain", "99999")  # refused after the check
    assert proc.returncode == 2 and "--explain 99999" in proc.stderr and not (tmp_path / "new").exists()
    proc = fbp_here(capsys, "evaluate", net, "--json", str(out))
    assert proc.returncode == 0 and json.loads(out.read_text())["examples"] == 360


def test_fit_makes_its_checkpoint_dir_only_once_its_data_is_found_good(tmp_path):
    params = fbp.init_mlp(jax.random.key(0), [4, 3, 2])
    good = (np.ones((8, 4), np.float32), np.ones((8, 2), np.float32) / 2)
    args = dict(optimizer=optax.sgd(0.1), cost="quadratic", epochs=1, batch_size=2, key=jax.random.key(0))
    run = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match=r"train X has shape \(8, 5\)"):  # refused: nothing made
        ftrain.fit(params, (np.ones((8, 5), np.float32), good[1]), checkpoint_dir=str(run), **args)
    assert not (tmp_path / "new").exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="a-file cannot be written"):  # still refused before any epoch
        ftrain.fit(params, good, checkpoint_dir=str(a_file), **args)
    assert ftrain.fit(params, good, checkpoint_dir=str(run), **args).epochs_run == 1
    assert ckpt.newest_epoch(str(run)) == 1


def test_a_network_saved_as_a_tuple_loads_as_a_tuple(tmp_path):
    """save_params and fit's checkpoints keep the params' container: a tuple
    of layers comes back a tuple (so that optimizer state made for it fits
    again), a list a list."""
    params, X, Y = small_problem()
    for container in (tuple, list):
        net = container(params)
        path = str(tmp_path / f"{container.__name__}.npz")
        fbp.save_params(path, net)
        assert type(fbp.load_params(path)) is container
        run = str(tmp_path / container.__name__)
        fit = ftrain.fit(net, (X, Y), optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1, batch_size=16,
                         key=jax.random.key(0), checkpoint_dir=run)
        back = fbp.load_params(run)
        assert type(back) is container
        for a, b in zip(jax.tree.leaves(fit.params), jax.tree.leaves(back), strict=True):
            np.testing.assert_array_equal(a, b)


def test_save_params_and_load_params_round_trip_without_a_template(tmp_path):
    twice = fbp.Activation("twice", lambda z: 2 * z, lambda z: 2 * jnp.ones_like(z))
    net = fbp.init_mlp(jax.random.key(3), [5, 4, 3, 2], activation="tanh", output_activation="softmax",
                       dtype=jnp.float64)
    net[0] = fbp.Dense(net[0].w, net[0].b, twice)
    path = str(tmp_path / "sub" / "net.npz")
    assert fbp.save_params(path, net, dict(note="for the test")) == path
    assert not [n for n in os.listdir(tmp_path / "sub") if n != "net.npz"]  # no temporary file left
    with pytest.raises(ckpt.CheckpointError, match="custom activation 'twice'.*activations="):
        fbp.load_params(path)
    back, meta = fbp.load_params(path, activations={"twice": twice}, with_meta=True)
    assert meta == dict(note="for the test")
    assert [layer.activation for layer in back] == [twice, "tanh", "softmax"]
    for a, b in zip(jax.tree.leaves(net), jax.tree.leaves(back)):
        assert a.dtype == b.dtype == jnp.float64
        np.testing.assert_array_equal(a, b)
    x = np.linspace(0, 1, 5)
    np.testing.assert_array_equal(fbp.forward(net, x), fbp.forward(back, x))
    # float64 params where JAX's 64-bit mode is off come back as float32, with a warning saying how to keep them
    jax.config.update("jax_enable_x64", False)  # (jax.enable_x64 as a context is newer than our oldest jax)
    try:
        with pytest.warns(UserWarning, match=r"holds float64 params, loaded as float32 because .*jax_enable_x64"):
            narrowed = fbp.load_params(path, activations={"twice": twice})
    finally:
        jax.config.update("jax_enable_x64", True)
    assert narrowed[0].w.dtype == jnp.float32
    # A built-in name shadowed by another function is saved as custom, not confused with the built-in.
    fake = fbp.Activation("sigmoid", jnp.tanh, lambda z: 1 - jnp.tanh(z) ** 2)
    fbp.save_params(path, [fbp.Dense(net[0].w, net[0].b, fake)])
    with pytest.raises(ckpt.CheckpointError, match="custom activation 'sigmoid'"):
        fbp.load_params(path)
    # Files that are not a saved network: a training checkpoint, garbage; and inputs that are not a network.
    ckpt.save(str(tmp_path / "ck"), 1, dict(params=net[1:]))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    whole = open(path, "rb").read()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])  # zipfile's BadZipFile escaped here before
    with pytest.raises(ckpt.CheckpointError, match="none: no such file"):
        fbp.load_params(str(tmp_path / "none"))
    for bad in (ckpt.list_checkpoints(str(tmp_path / "ck"))[0], str(tmp_path / "junk.npz"), str(tmp_path / "cut.npz"),
                str(tmp_path)):
        with pytest.raises(ckpt.CheckpointError, match="not a network written by fbp.save_params"):
            fbp.load_params(bad)
    with pytest.raises(TypeError, match="list of fbp.Dense"):
        fbp.save_params(path, dict(w=1))
    with pytest.raises(TypeError, match="JSON-able"):
        fbp.save_params(path, net[1:], dict(x=object()))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    params, X, Y = small_problem(jnp.float32)
    d = str(tmp_path)

    def run(key=0, lr=0.1, config=None, params=params, epochs=2, batch_size=8, n=len(X), cost="log_likelihood",
            **more):
        return ftrain.fit(params, (X[:n], Y[:n]), optimizer=optax.sgd(lr), cost=cost, epochs=epochs,
                          batch_size=batch_size, key=jax.random.key(key), checkpoint_dir=d, resume=True,
                          config=config if config is not None else dict(lr=lr), **more)

    first = run()
    assert first.epochs_run == 2
    saved = ckpt.list_checkpoints(d)
    # fit's own words (its arguments), not the command line's flags
    with pytest.raises(ValueError, match=r"already holds another run's checkpoints .*; resume that run "
                                         r"\(resume=True\), or give an empty or new checkpoint_dir\.$"):
        ftrain.fit(params, (X, Y), optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=1, batch_size=8,
                   key=jax.random.key(0), checkpoint_dir=d)  # a fresh run, not resume
    assert ckpt.list_checkpoints(d) == saved
    with pytest.raises(ValueError, match=r"^resume=True needs a checkpoint directory \(checkpoint_dir\)\.$"):
        ftrain.fit(params, (X, Y), optimizer=optax.sgd(0.1), cost="log_likelihood", epochs=1, batch_size=8,
                   key=jax.random.key(0), resume=True)
    params64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    for kw, needle in ((dict(lr=0.5), r"lr: saved 0\.1, now 0\.5"), (dict(key=1), "another PRNG key"),
                       (dict(params=params64), "is float32, expected float64"),
                       # fit's own arguments that shape each step, whatever config holds
                       (dict(batch_size=4), r"fit's batch_size: saved 8, now 4"),
                       (dict(n=len(X) - 8), rf"fit's training_examples: saved {len(X)}, now {len(X) - 8}"),
                       (dict(drop_last=False, dropout=0.5), r"fit's drop_last: saved True, now False; "
                                                            r"fit's dropout: saved 0\.0, now 0\.5"),
                       (dict(cost="cross_entropy"), r"fit's cost: saved 'log_likelihood', now 'cross_entropy'"),
                       # config's differences alone, where it has any: the caller's words
                       (dict(lr=0.5, batch_size=4), r"\(lr: saved 0\.1, now 0\.5\)")):
        with pytest.raises(ckpt.CheckpointMismatch, match=needle) as e:
            run(epochs=3, **kw)
        assert "--" not in str(e.value) and "fresh checkpoint directory" in str(e.value)
    more = run(epochs=3, notes=dict(data="here"))  # same run, more epochs: resumes
    assert [h["epoch"] for h in more.history] == [1, 2, 3]
    # notes are saved with each checkpoint, and not compared on resume: other notes go on
    assert ckpt.load_params(d, with_meta=True)[1]["notes"] == dict(data="here")
    assert run(epochs=4, notes=dict(data="moved")).epochs_run == 4
    assert ckpt.load_params(d, with_meta=True)[1]["notes"] == dict(data="moved")
    with pytest.raises(TypeError, match="config must be JSON-able"):
        run(config=dict(lr=object()))
    with pytest.raises(TypeError, match="notes must be JSON-able"):
        run(notes=dict(lr=object()))
    with pytest.raises(TypeError, match=r"^notes must be a dict \(saved with each checkpoint\) or None, got list$"):
        run(notes=["data"])


# The runs compared bitwise across processes below pass --deterministic: on a
# GPU, XLA's autotuner may pick another algorithm for a product in each
# process (fbp.cli_train._deterministic_xla); a CPU needs nothing.
def test_kill_9_and_resume_gives_bitwise_the_same_params(tmp_path):
    flags = ["train", "--sizes", "64,40,10", "--epochs", "12", "--batch-size", "5", "--quiet",
             "--optimizer", "momentum", "--lr", "0.1", "--deterministic"]
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    ref = fbp_cli(*flags, "--checkpoint-dir", ref_dir)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([sys.executable, "-m", "fbp", *flags, "--checkpoint-dir", run_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(ckpt.list_checkpoints(run_dir)) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # mid-run, likely mid-save or mid-epoch
    proc.wait()
    done = ckpt.list_checkpoints(run_dir)
    assert done, "the run was killed before its first checkpoint"
    killed_at = ckpt.read_header(done[-1])["epoch"]
    assert killed_at < 12, "the run finished before it was killed; nothing was tested"
    resumed = fbp_cli(*flags, "--checkpoint-dir", run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.read_header(ckpt.list_checkpoints(run_dir)[-1])["epoch"] == 12
    for a, b in zip(params_of(ref_dir), params_of(run_dir)):
        np.testing.assert_array_equal(a, b)


_HOLD_DIR = """
import sys, time
from fbp import checkpoint as ckpt
with ckpt.lock_dir(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(directory):
    """A process that holds ``directory`` with lock_dir until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_DIR, directory], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_checkpoint_dir_is_held_by_one_run_and_freed_by_its_death_even_kill_9(tmp_path, digits):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    holder = _hold(run_dir)
    try:
        with pytest.raises(ckpt.CheckpointDirInUse, match=rf"checkpoint directory {re.escape(run_dir)} is in use "
                                                         rf"by another run \(process {holder.pid}\)"):
            with ckpt.lock_dir(run_dir):
                pass
        params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
        with pytest.raises(ckpt.CheckpointDirInUse):  # fit holds the directory it writes
            ftrain.fit(params, digits.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1,
                       batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir, resume=True)
        assert ckpt.list_checkpoints(run_dir) == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the dead holder's lock: no stale lock to clear by hand.
    with ckpt.lock_dir(run_dir):
        with ckpt.lock_dir(run_dir):  # re-entrant in one process (the CLI holds it, then fit)
            pass
        with open(os.path.join(run_dir, ckpt.LOCK_NAME)) as f:
            assert f.read() == str(os.getpid())
    result = ftrain.fit(params, digits.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1,
                        batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir)
    assert len(result.history) == 1 and len(ckpt.list_checkpoints(run_dir)) == 1


def test_a_file_system_without_flock_runs_unlocked_with_one_warning(tmp_path, monkeypatch, digits):
    class NoFlock:  # some network and FUSE file systems answer flock with ENOLCK
        LOCK_EX, LOCK_NB = 2, 4

        @staticmethod
        def flock(fd, op):
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(ckpt, "fcntl", NoFlock)
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    with pytest.warns(ckpt.CheckpointWarning) as caught:
        with ckpt.lock_dir(run_dir):  # as the CLI holds it, then fit inside
            result = ftrain.fit(params, digits.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=1,
                                batch_size=10, key=jax.random.key(1), checkpoint_dir=run_dir)
    assert [str(w.message) for w in caught] == [
        f"cannot lock checkpoint directory {run_dir} (No locks available): another run there would not be refused"]
    assert len(result.history) == 1 and len(ckpt.list_checkpoints(run_dir)) == 1
    assert ckpt._held == {}  # let go of at the end, as a held directory is


def test_cli_refuses_a_checkpoint_dir_in_use_before_touching_its_metrics(tmp_path):
    # Before the lock, a --resume typed while the first run went on wrote the
    # same epochs and deleted the other's half-written file ("could not write
    # the checkpoint ... No such file or directory"), and truncated a shared
    # --metrics-out.
    run_dir, metrics = str(tmp_path / "run"), tmp_path / "m.jsonl"
    os.makedirs(run_dir)
    metrics.write_text('{"epoch": 1}\n')
    holder = _hold(run_dir)
    try:
        for extra in ([], ["--resume"]):
            proc = fbp_cli("train", "--epochs", "1", "--quiet", "--checkpoint-dir", run_dir, "--metrics-out",
                        str(metrics), *extra)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            assert proc.stderr.strip().splitlines()[-1] == (
                f"fbp train: error: --checkpoint-dir: checkpoint directory {run_dir} is in use by another run "
                f"(process {holder.pid}); wait for it to end, or give another directory")
            assert metrics.read_text() == '{"epoch": 1}\n' and ckpt.list_checkpoints(run_dir) == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_resume_passes_over_a_damaged_newest_checkpoint_says_so_and_ends_bitwise(tmp_path):
    # The newest checkpoint cut short after the run (a partial copy, a damaged
    # disk): --resume says which file it passed over, goes on from the one
    # before, and ends where the undamaged run ended. Before, zipfile's
    # BadZipFile escaped as a traceback.
    flags = ["train", "--sizes", "64,20,10", "--epochs", "3", "--batch-size", "10", "--quiet",
             "--optimizer", "adam", "--checkpoint-dir", str(tmp_path), "--deterministic"]
    first = fbp_cli(*flags)
    assert first.returncode == 0, first.stderr
    want = params_of(str(tmp_path))
    newest = ckpt.list_checkpoints(str(tmp_path))[-1]
    whole = open(newest, "rb").read()
    with open(newest, "wb") as fh:
        fh.write(whole[: len(whole) // 2])
    resumed = fbp_cli(*flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    ours = [line for line in resumed.stderr.splitlines() if line.startswith("fbp train:")]  # not JAX's own
    assert ours == [
        f"fbp train: warning: skipped an unreadable checkpoint: {newest}: not a readable fbp checkpoint: not an "
        f".npz (zip) archive; cut short (a partial copy, a damaged disk), or another kind of file"]
    assert f"resuming from the checkpoint of epoch 2 in {tmp_path}" in resumed.stdout
    for a, b in zip(want, params_of(str(tmp_path)), strict=True):
        np.testing.assert_array_equal(a, b)


# `fbp train` whose save of epoch 3 stops at a chosen point and waits to be
# killed: inside the library's own write, half of the file written
# ("mid-write"), or the file complete and renamed into place but the directory
# not yet synced, the older checkpoints not pruned, the metrics line not
# written ("renamed").
_STALLED_SAVE = """
import io, os, sys, time
import numpy as np
from fbp import checkpoint, cli
marker, stage = sys.argv[1:3]
savez, fsync_dir = np.savez, checkpoint._fsync_dir
def stall():
    open(marker, "w").close()
    time.sleep(300)
def half_savez(f, **arrays):
    if stage != "mid-write" or "ckpt-000003" not in getattr(f, "name", ""):
        return savez(f, **arrays)
    buf = io.BytesIO()
    savez(buf, **arrays)
    f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    f.flush()
    os.fsync(f.fileno())
    stall()
def fsync_then_stall(directory):
    if stage == "renamed" and os.path.exists(os.path.join(directory, "ckpt-000003.npz")):
        stall()
    fsync_dir(directory)
np.savez, checkpoint._fsync_dir = half_savez, fsync_then_stall
sys.exit(cli.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("stage", ["mid-write", "renamed"])
def test_kill_9_during_a_save_keeps_a_loadable_checkpoint_and_resume_is_bitwise(tmp_path, stage):
    flags = ["train", "--sizes", "64,20,10", "--epochs", "5", "--batch-size", "10", "--quiet",
             "--optimizer", "adam", "--lr", "0.01", "--deterministic"]
    ref_dir, run_dir, marker = str(tmp_path / "ref"), str(tmp_path / "run"), str(tmp_path / "stalled")
    metrics = str(tmp_path / "m.jsonl")
    ref = fbp_cli(*flags, "--checkpoint-dir", ref_dir)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen([sys.executable, "-c", _STALLED_SAVE, marker, stage, *flags, "--checkpoint-dir", run_dir,
                             "--metrics-out", metrics], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(marker) and proc.poll() is None:
        time.sleep(0.005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert os.path.exists(marker), f"the run never reached the save of epoch 3:\n{err}"
    left = sorted(os.listdir(run_dir))
    if stage == "mid-write":  # the half-written file is a temporary one; epoch 3 never appeared
        assert any(n.startswith(".tmp-ckpt-000003-") for n in left), left
        assert not os.path.exists(ckpt.path_of(run_dir, 3)) and ckpt.newest_epoch(run_dir) == 2
    else:
        assert ckpt.newest_epoch(run_dir) == 3
    with np.load(ckpt.list_checkpoints(run_dir)[-1]) as z:  # a complete file: every array reads back
        assert all(z[k].size >= 0 for k in z.files) and any(k.startswith("leaf_") for k in z.files)
    resumed = fbp_cli(*flags, "--checkpoint-dir", run_dir, "--metrics-out", metrics, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint of epoch {2 if stage == 'mid-write' else 3}" in resumed.stdout
    assert not [n for n in os.listdir(run_dir) if n.startswith(".tmp-ckpt-")]  # the dead run's leftover is gone
    assert ckpt.newest_epoch(run_dir) == 5
    for a, b in zip(params_of(ref_dir), params_of(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(line) for line in open(metrics)]
    assert [line["epoch"] for line in lines[:-1]] == [1, 2, 3, 4, 5] and lines[-1]["final"]


# Ctrl-C as a terminal delivers it: a test runner launched as a background
# job (`cmd &` in a script) ignores SIGINT, and `python -m fbp` would inherit
# that and train on to the end (POSIX's rule, which fbp train keeps), so the
# child puts Python's own handler back first. (Not preexec_fn: it runs Python
# between fork and exec, which can deadlock with JAX's threads.)
_AS_FROM_A_TERMINAL = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); {}"
                       "runpy.run_module('fbp', run_name='__main__', alter_sys=True)")


def _train_until_a_checkpoint(run_dir, flags, before="", env=None):
    """fbp train started in a child process as from a terminal, once it has written its first checkpoint."""
    proc = subprocess.Popen([sys.executable, "-c", _AS_FROM_A_TERMINAL.format(before), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.list_checkpoints(run_dir):
        time.sleep(0.005)
    return proc


@pytest.mark.parametrize("sig,rc,what,name", [(signal.SIGINT, 130, "interrupted", "Ctrl-C"),
                                              (signal.SIGTERM, 143, "terminated", "SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_stop_the_run_once_the_running_epoch_is_kept(tmp_path, sig, rc, what, name):
    """The epoch running when the signal comes is finished, recorded,
    checkpointed and tested; then the run says what is kept and how to go
    on, and exits as a shell reports the signal."""
    run_dir = str(tmp_path / "run")
    proc = _train_until_a_checkpoint(run_dir, ["train", "--epochs", "500", "--quiet", "--checkpoint-dir", run_dir])
    proc.send_signal(sig)
    out, err = proc.communicate()
    assert proc.returncode == rc and "Traceback" not in err, err
    newest = ckpt.read_header(ckpt.list_checkpoints(run_dir)[-1])["epoch"]
    assert newest < 500, "the run finished before it was interrupted; nothing was tested"
    note = re.search(rf"fbp train: {name}: stopping when epoch (\d+) ends, which is kept; {name} again stops at "
                     rf"once, without it", err)
    assert note and int(note.group(1)) == newest, err
    assert re.search(rf"^done: {newest} epochs? in .* test accuracy 0\.\d+ \(params of epoch {newest}", out, re.M), out
    assert err.strip().splitlines()[-1] == (f"fbp train: {what} after epoch {newest}; the checkpoint of epoch "
                                            f"{newest} is in {run_dir}: add --resume to the same command to go on")


@pytest.mark.parametrize("devices", [None, 2], ids=["one-device", "data-parallel"])
def test_a_second_ctrl_c_stops_the_running_epoch_at_once(tmp_path, devices):
    """The second Ctrl-C ends the running epoch at its next step report:
    that epoch is not recorded nor kept, and the run names the checkpoint
    of the one before. (Every epoch reports, as fit's threshold is set to 0,
    and each of its 20 reports waits 0.05 s, so that an epoch lasts a second
    or more however fast the machine: the two signals below come 0.1 s
    apart. It relied on a wide network's epochs of about 0.7 s before.)
    With --devices 2 (forced host devices, mini-batch 2), every device's
    part of the epoch ends at the same report."""
    run_dir = str(tmp_path / "run")
    flags = ["train", "--epochs", "50", "--quiet", "--checkpoint-dir", run_dir, "--batch-size", str(devices or 1),
             "--no-monitor-training"]
    env = None
    if devices:
        flags += ["--devices", str(devices)]
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    slow_reports = ("import time, fbp.train, fbp.cli_report as c; fbp.train.PROGRESS_SECONDS = 0.0; "
                    "steps = c.Report.steps; c.Report.steps = lambda *a: (time.sleep(0.05), steps(*a))[1]; ")
    proc = _train_until_a_checkpoint(run_dir, flags, before=slow_reports, env=env)
    time.sleep(0.1)  # epoch 1 recorded, the next one running
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130 and "Traceback" not in err, err
    newest = ckpt.read_header(ckpt.list_checkpoints(run_dir)[-1])["epoch"]
    note = re.search(r"fbp train: Ctrl-C: stopping when epoch (\d+) ends", err)
    assert note and int(note.group(1)) == newest + 1, err  # the epoch announced was stopped, not finished
    assert "fbp train: Ctrl-C: stopping at once" in err and "done:" not in out
    assert f"epoch {newest + 1:3d} " not in out
    assert err.strip().splitlines()[-1] == (f"fbp train: interrupted; the checkpoint of epoch {newest} is in "
                                            f"{run_dir}: add --resume to the same command to go on")


def _book_file(path, sizes, cost, seed=0):
    """A network written as the book's network2.py writes one (Network.save):
    its weights (n_out, n_in) and its biases as columns (n_out, 1), as lists."""
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((m, n)) for n, m in zip(sizes[:-1], sizes[1:])]
    bs = [rng.standard_normal((m, 1)) for m in sizes[1:]]
    with open(path, "w") as f:
        json.dump({"sizes": sizes, "weights": [w.tolist() for w in ws], "biases": [b.tolist() for b in bs],
                   "cost": cost}, f)
    return ws, bs


def _book_backprop(ws, bs, x, y, cost):
    """network2.py's backprop, one example as a column: δ^L = a − y for its
    CrossEntropyCost, (a − y) σ'(z) for its QuadraticCost; then BP2, BP3, BP4."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    a, activations, zs = x[:, None], [x[:, None]], []
    for w, b in zip(ws, bs):
        zs.append(w @ a + b)
        a = sigmoid(zs[-1])
        activations.append(a)
    delta = a - y[:, None]
    if cost == "QuadraticCost":
        delta = delta * sigmoid(zs[-1]) * (1 - sigmoid(zs[-1]))
    nabla_w, nabla_b = [delta @ activations[-2].T], [delta]
    for l in range(2, len(ws) + 1):
        s = sigmoid(zs[-l])
        delta = (ws[-l + 1].T @ delta) * s * (1 - s)
        nabla_w.insert(0, delta @ activations[-l - 1].T)
        nabla_b.insert(0, delta)
    return a[:, 0], nabla_w, nabla_b


@pytest.mark.parametrize("cost", ["CrossEntropyCost", "QuadraticCost"])
def test_a_network_of_the_books_network2_file_loads_and_gets_the_books_gradient(tmp_path, cost):
    """load_params reads the JSON the book's network2.py saves: the same
    outputs, and from fbp's hand-written backward the gradient network2's
    own backprop gives (float64, 1e-12); save_network2 writes what
    network2.load reads, and reads back bitwise."""
    path = str(tmp_path / "book.json")
    sizes = [6, 5, 4, 3]
    ws, bs = _book_file(path, sizes, cost)
    params, meta = fbp.load_params(path, with_meta=True)
    name = {"CrossEntropyCost": "cross_entropy", "QuadraticCost": "quadratic"}[cost]
    assert meta == dict(format="network2", sizes=sizes, cost=name)
    assert [layer.activation for layer in params] == ["sigmoid"] * 3 and params[0].w.dtype == jnp.float64
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y = rng.uniform(size=6), np.eye(3)[rng.integers(3)]
        out, nabla_w, nabla_b = _book_backprop(ws, bs, x, y, cost)
        np.testing.assert_allclose(fbp.forward(params, x), out, rtol=1e-13)
        g = fbp.backward(params, x, y, name)
        for layer, w, b in zip(g, nabla_w, nabla_b, strict=True):
            assert fbp.relative_error(layer.w, w) <= 1e-12 and fbp.relative_error(layer.b, b[:, 0]) <= 1e-12
    # written back as network2 writes it: what network2.load reads (json, then np.array of each list)
    again = str(tmp_path / "again.json")
    assert fbp.save_network2(again, params, name, dict(note="fbp's")) == again
    with open(again) as f:
        data = json.load(f)
    assert data["sizes"] == sizes and data["cost"] == cost and data["fbp"] == dict(note="fbp's")
    for w, b, w0, b0 in zip(data["weights"], data["biases"], ws, bs, strict=True):
        np.testing.assert_array_equal(np.array(w), w0)
        np.testing.assert_array_equal(np.array(b), b0)  # a column, (n, 1), as network2 keeps its biases
    back, meta = fbp.load_params(again, with_meta=True)
    assert meta["note"] == "fbp's" and meta["cost"] == name
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_networks_network2_cannot_hold_and_files_it_did_not_write_are_refused_saying_why(tmp_path):
    path = str(tmp_path / "n.json")
    net = fbp.init_mlp(jax.random.key(0), [4, 3, 2], output_activation="sigmoid", dtype=jnp.float64)
    for params, cost, needle in (
            (net, "log_likelihood", "QuadraticCost or CrossEntropyCost, the costs quadratic and cross_entropy, not "
                                    "log_likelihood"),
            (fbp.init_mlp(jax.random.key(0), [4, 3, 2], output_activation="softmax"), "cross_entropy",
             "and the output layer is softmax"),
            (fbp.init_mlp(jax.random.key(0), [4, 3, 2], activation="relu", output_activation="sigmoid"),
             "quadratic", "and layer 0 is relu"),
            (fbp.init_convnet(jax.random.key(0), (4, 4), [(2, 3, 1)], [2], output_activation="sigmoid"),
             "quadratic", "layer 0 is a Conv"),
            ([fbp.Dense(net[0].w.at[0, 0].set(jnp.nan), net[0].b), net[1]], "quadratic", "not finite")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            fbp.save_network2(path, params, cost)
    assert not os.path.exists(path)
    # files that are not the book's network, each said for what it is
    for text, needle in (('{"sizes": [2, 3], "weights": [[[1, 2', "starts as JSON but does not read as JSON"),
                         ('{"epoch": 1, "training_cost": 0.9}\n{"epoch": 2, "training_cost": 0.5}\n',
                          "not a network but epoch records, one JSON object a line (fbp train's --metrics-out"),
                         ('{"sizes": [2, 3]}\n{"sizes": [2, 3]}\n', "starts as JSON but does not read as JSON"),
                         ('{"sizes": [2, 3]}', "not a network saved by the book's network2.py (Network.save): it "
                                               "has no 'weights', 'biases', 'cost'"),
                         ('{"sizes": [2, 3], "weights": [[[1, 2]]], "biases": [[[0]]], "cost": "LogCost"}',
                          "its cost 'LogCost' is none of network2.py's (QuadraticCost, CrossEntropyCost)"),
                         ('{"sizes": [2, 3], "weights": [[[1, 2]]], "biases": [[[0]]], "cost": "QuadraticCost"}',
                          "layer 0 has weights (1, 2) and biases (1, 1), where its sizes [2, 3] say (3, 2) and "
                          "(3, 1)"),
                         ('{"sizes": [2, 3, 1], "weights": [], "biases": [], "cost": "QuadraticCost"}',
                          "its sizes [2, 3, 1] do not match its lists")):
        with open(path, "w") as f:
            f.write(text)
        with pytest.raises(ckpt.CheckpointError, match=re.escape(f"{path}: ") + ".*" + re.escape(needle)):
            fbp.load_params(path)
    # with JAX's 64-bit mode off, the book's float64 numbers load as float32, as an .npz of float64 does
    _book_file(path, [3, 2], "QuadraticCost")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.warns(UserWarning, match=r"holds float64 params \(the book's network2.py\), loaded as float32"):
            narrowed = fbp.load_params(path)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert narrowed[0].w.dtype == jnp.float32

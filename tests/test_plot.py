"""fbp plot: learning curves drawn from what --metrics-out wrote."""

import json
import math
import os
import sys

import jax
import numpy as np
import pytest

import fbp
from fbp import plot
from fbp.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _lines(ax):
    """{label: (x, y)} of the labelled lines of an axis."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_a_real_runs_metrics_are_drawn_as_recorded(tmp_path, capsys):
    metrics, run_dir = tmp_path / "run.jsonl", tmp_path / "run"
    assert main(["train", "--epochs", "3", "--quiet", "--monitor-deltas", "--monitor-noise-scale", "--l2", "1",
                 "--l1", "0.5", "--metrics-out", str(metrics), "--checkpoint-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["plot", str(metrics)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'run.png'}: 1 run (3 epochs)"
    assert (tmp_path / "run.png").read_bytes()[:8] == PNG

    run = plot.read_metrics(str(metrics))
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert run.label == "run" and run.final == records[-1] and run.epochs == records[:-1]
    fig = plot.figure([run])
    cost, accuracy, deltas, noise = fig.axes
    final = records[-1]
    drawn = _lines(accuracy)
    assert drawn[f"run: validation (test {final['test_accuracy']:.4f})"] == (  # fbp train's own name for it
        [1, 2, 3], [r["evaluation_accuracy"] for r in records[:-1]])
    assert drawn["run: training"][1] == [r["training_accuracy"] for r in records[:-1]]
    assert _lines(cost)["run: validation"][1] == [r["evaluation_cost"] for r in records[:-1]]
    assert _lines(cost)["run: training + L2 + L1 terms"] == (
        [1, 2, 3], [r["training_cost"] + r["l2_cost"] + r["l1_cost"] for r in records[:-1]])
    layers = _lines(deltas)
    assert sorted(layers) == ["run: δ², hidden layer 1", "run: δ³, the output layer"]  # the book's numbers
    assert layers["run: δ³, the output layer"][1] == [r["delta_norms"][1] for r in records[:-1]]
    assert deltas.get_yscale() == "log" and noise.get_yscale() == "log"
    assert _lines(noise)["run"][1] == [r["noise_scale"] for r in records[:-1]]

    # A checkpoint carries the same history up to its epoch, and the best epoch, not the test result.
    def best_of(rs):  # the first epoch of the highest evaluation accuracy
        return max(rs, key=lambda r: (r["evaluation_accuracy"], -r["epoch"]))["epoch"]

    for where, epochs in ((str(run_dir) + os.sep, 3), (os.path.join(run_dir, "ckpt-000002.npz"), 2)):
        from_checkpoint = plot.read_metrics(where)
        assert from_checkpoint.epochs == records[:epochs]
        assert from_checkpoint.final["best_epoch"] == best_of(records[:epochs])
        assert from_checkpoint.final["settings"]["--validation"] == 180
    assert from_checkpoint.label == "ckpt-000002"
    assert main(["plot", str(run_dir) + os.sep]) == 0  # beside the directory, not inside it as ".png"
    assert capsys.readouterr().out.strip() == f"wrote {run_dir}.png: 1 run (3 epochs)"


def test_several_runs_halvings_best_epoch_gaps_and_step_costs(tmp_path):
    # One run with --lr-halving (η halved before epochs 3 and 5), an overflowed
    # cost written as null, and a best epoch; one with --no-monitor-training.
    a = _write(tmp_path / "a.jsonl", [
        {"epoch": 1, "lr_factor": 1.0, "training_cost": 1.0, "training_accuracy": 0.5,
         "evaluation_cost": 1.1, "evaluation_accuracy": 0.4, "delta_norms": [0.1, 0.2]},
        {"epoch": 2, "lr_factor": 1.0, "training_cost": None, "training_accuracy": 0.6,
         "evaluation_cost": 0.9, "evaluation_accuracy": 0.7, "delta_norms": [0.0, 0.3]},
        {"epoch": 3, "lr_factor": 0.5, "training_cost": 0.7, "training_accuracy": 0.7,
         "evaluation_cost": 0.8, "evaluation_accuracy": 0.6, "delta_norms": [0.05, 0.1]},
        {"epoch": 4, "lr_factor": 0.5, "training_cost": 0.6, "training_accuracy": 0.8,
         "evaluation_cost": 0.8, "evaluation_accuracy": 0.65, "delta_norms": [0.04, 0.1]},
        {"epoch": 5, "lr_factor": 0.25, "training_cost": 0.5, "training_accuracy": 0.9,
         "evaluation_cost": 0.7, "evaluation_accuracy": 0.66, "delta_norms": [0.03, 0.1]},
        {"final": True, "best_epoch": 2, "test_accuracy": 0.69},
    ])
    b = _write(tmp_path / "b.jsonl", [
        {"epoch": 1, "train_step_cost": 2.0, "evaluation_cost": 1.5, "evaluation_accuracy": 0.3},
        {"epoch": 2, "train_step_cost": 1.0, "evaluation_cost": 1.2, "evaluation_accuracy": 0.5},
        {"final": True, "settings": {"--validation": 0}},  # its held-out set was the test set
    ])
    fig = plot.figure([plot.read_metrics(a, "sgd"), plot.read_metrics(b)])
    assert len(fig.axes) == 3  # cost, accuracy, ‖δ‖ (neither recorded the noise scale)
    cost, accuracy, deltas = fig.axes
    drawn = _lines(cost)
    assert drawn["b: mean step cost"] == ([1, 2], [2.0, 1.0])
    assert not any("L2" in label for label in drawn)  # neither ran with --l2
    xs, ys = drawn["sgd: training"]
    assert xs == [1, 2, 3, 4, 5] and math.isnan(ys[1]) and ys[2] == 0.7
    assert "b: test" in _lines(accuracy) and "sgd: evaluation (test 0.6900)" in _lines(accuracy)
    assert math.isnan(_lines(deltas)["sgd: δ², hidden layer 1"][1][1])  # ‖δ‖ = 0 is a gap on the log scale,
    crosses = [line for line in deltas.get_lines() if line.get_marker() == "x"]  # and a × on its floor
    assert [(list(c.get_xdata()), list(c.get_ydata())) for c in crosses] == [([2], [deltas.get_ylim()[0]])]
    assert deltas.get_title().endswith("×: exactly 0")
    for ax in fig.axes:
        marks = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
        assert marks == [2.5, 4.5]
    rings = [line for line in accuracy.get_lines() if line.get_marker() == "o"]
    assert len(rings) == 1 and list(rings[0].get_xdata()) == [2] and list(rings[0].get_ydata()) == [0.7]

    out = tmp_path / "figures" / "compare.svg"  # its directory is made; the suffix picks the format
    assert main(["plot", a, b, "--labels", "sgd,adam", "-o", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml") and "adam: mean step cost" in out.read_text()
    assert os.listdir(out.parent) == ["compare.svg"]  # nothing left beside it


def test_the_report_line_counts_the_runs_and_their_epochs(tmp_path, capsys):
    one = _write(tmp_path / "one.jsonl", [{"epoch": 1, "evaluation_accuracy": 0.5}])
    two = _write(tmp_path / "two.jsonl", [{"epoch": 1, "evaluation_accuracy": 0.5},
                                          {"epoch": 2, "evaluation_accuracy": 0.6}])
    assert main(["plot", one]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'one.png'}: 1 run (1 epoch)"
    assert main(["plot", one, two, "-o", str(tmp_path / "both.png")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'both.png'}: 2 runs (1, 2 epochs)"


@pytest.mark.parametrize("case, needle", [
    ("missing", "no such file"),
    ("not_json", "line 2: not JSON"),
    ("not_ours", "line 1: not a record of fbp train's --metrics-out"),
    ("empty", "no epoch records to plot (empty)"),
    ("two_runs", "line 3: epoch 1 after epoch 2; the file holds more than one run"),
    ("final_only", "no epoch records to plot (the run ended before its first epoch)"),
    ("no_metrics", "nothing to plot: no epoch of bare records a cost, an accuracy, ‖δ^l‖ or the noise scale"),
    ("directory", "a directory without a readable checkpoint of fbp train"),
    ("saved_network", "holds no training history (a network saved by --save-params?)"),
    ("not_a_checkpoint", "not a readable fbp checkpoint"),
    ("suffix", "--out"),
    ("out_is_directory", "is a directory; give the image's file name"),
    ("labels", "--labels: 1 name for 2 files"),
    ("unwritable", "cannot be written"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, case, needle):
    good = _write(tmp_path / "good.jsonl", [{"epoch": 1, "evaluation_accuracy": 0.5}])
    argv = {
        "missing": [str(tmp_path / "nope.jsonl")],
        "not_json": [str(tmp_path / "bad.jsonl")],
        "not_ours": [_write(tmp_path / "other.jsonl", [{"loss": 1.0, "epoch": "1"}])],
        "empty": [str(tmp_path / "empty.jsonl")],
        "two_runs": [_write(tmp_path / "two.jsonl", [{"epoch": 1}, {"epoch": 2}, {"epoch": 1}])],
        "final_only": [_write(tmp_path / "final.jsonl", [{"final": True, "error": "x"}])],
        "no_metrics": [_write(tmp_path / "bare.jsonl", [{"epoch": 1}, {"epoch": 2, "lr": 0.5}])],
        "directory": [str(tmp_path)],
        "saved_network": [str(tmp_path / "net.npz")],
        "not_a_checkpoint": [str(tmp_path / "good.npz")],
        "suffix": [good, "-o", str(tmp_path / "curves.jsonl")],
        "out_is_directory": [good, "-o", str(tmp_path / "d.png")],
        "labels": [good, good, "--labels", "one"],
        "unwritable": [good, "-o", "/proc/fbp-curves.png"],
    }[case]
    (tmp_path / "bad.jsonl").write_text('{"epoch": 1}\n{"epoch": 2,\n')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "d.png").mkdir()
    (tmp_path / "good.npz").write_text(open(good).read())
    fbp.save_params(str(tmp_path / "net.npz"), fbp.init_mlp(jax.random.key(0), [3, 2]))
    assert main(["plot", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fbp plot: error: ") and err.count("\n") == 1 and needle in err, err


def test_without_matplotlib_it_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    good = _write(tmp_path / "good.jsonl", [{"epoch": 1, "evaluation_accuracy": 0.5}])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["plot", good]) == 2
    assert "plotting needs matplotlib, which is not installed: pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "good.png").exists()


def test_a_failed_save_keeps_the_old_image_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "curves.png"
    out.write_bytes(b"the old image")
    fig = plot.figure([plot.read_metrics(_write(tmp_path / "m.jsonl", [{"epoch": 1, "evaluation_accuracy": 0.5}]))])

    def half_then_fail(path, **kw):
        with open(path, "wb") as f:
            f.write(PNG[:4])
        raise OSError(28, "No space left on device")

    fig.savefig = half_then_fail
    with pytest.raises(OSError):
        plot.save(fig, str(out))
    assert out.read_bytes() == b"the old image"
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "m.jsonl"]


def test_a_scripts_fit_history_is_drawn_as_it_is():
    import optax

    from fbp import data, train

    ds = data.digits()
    params = fbp.init_mlp(jax.random.key(0), [64, 10, 10], output_activation="softmax")
    result = train.fit(params, ds.train, optimizer=optax.sgd(0.5), cost="log_likelihood", epochs=2,
                       batch_size=10, key=jax.random.key(1), evaluation=ds.validation)
    fig = plot.figure([("sgd", result.history)])
    assert _lines(fig.axes[1])["sgd: evaluation"][1] == [r["evaluation_accuracy"] for r in result.history]
    named = plot.figure([("sgd", result.history)], held_out="validation")  # the script knows what it held out
    assert set(_lines(named.axes[0])) == {"sgd: training", "sgd: validation"}
    assert _lines(named.axes[1])["sgd: validation"] == _lines(fig.axes[1])["sgd: evaluation"]
    for bad in ([], [("sgd", [])], [("sgd", [{"loss": 1.0}])]):
        with pytest.raises(plot.MetricsError, match="no runs|a history is fit's list"):
            plot.figure(bad)


@pytest.mark.parametrize("runs", [2, 5])
def test_a_long_legend_goes_below_its_panel_clear_of_its_curves_and_its_axis_label(runs):
    """Five runs of two or three curves each made a legend of 13 lines drawn
    over the cost panel's curves (experiment 9's figure): more than
    LEGEND_INSIDE lines now go below the panel, under its axis label, and
    the figure grows to hold them; a short legend stays inside."""
    history = [{"epoch": e, "training_cost": 1 / e, "training_accuracy": 1 - 1 / (e + 1), "evaluation_cost": 2 / e,
                "evaluation_accuracy": 0.9 - 1 / (e + 2), "l2_cost": 0.1, "delta_norms": [0.1 / e, 0.2 / e]}
               for e in range(1, 6)]
    fig = plot.figure([(f"run {k}", history) for k in range(runs)])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # as saving it does: the labels take their places
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        legend, panel = ax.get_legend(), ax.get_window_extent(renderer)
        box = legend.get_window_extent(renderer)
        lines = len(legend.get_texts())
        if lines > plot.LEGEND_INSIDE:
            assert box.y1 < ax.xaxis.label.get_window_extent(renderer).y0 < panel.y0  # below both
            assert box.y0 >= 0  # inside the (grown) figure
        else:
            assert panel.x0 <= box.x0 and box.x1 <= panel.x1 and panel.y0 <= box.y0 and box.y1 <= panel.y1
    crowded = [len(ax.get_legend().get_texts()) > plot.LEGEND_INSIDE for ax in fig.axes]
    assert crowded == ([False] * 3 if runs == 2 else [True] * 3)  # cost 15 lines, accuracy 10, ‖δ‖ 10
    assert (fig.get_figheight() > 4.0) == (runs == 5)  # one row of panels, 4 inches high, grown for the legends


def test_images_draws_square_rows_with_their_titles():
    X = np.random.default_rng(0).uniform(size=(10, 49))
    fig = plot.images(X, [f"#{i}" for i in range(10)], cols=4, title="ten")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 12 and len(drawn) == 10  # a 3 × 4 grid, the last two empty
    for i, ax in enumerate(drawn):
        np.testing.assert_array_equal(ax.images[0].get_array(), X[i].reshape(7, 7))
        assert ax.get_title() == f"#{i}"
    assert fig._suptitle.get_text() == "ten"
    assert [plot.image_side(n) for n in (784, 64, 12, 1)] == [28, 8, None, None]
    for bad, titles, needle in ((X[:, :48], ["a"] * 10, "square images"), (X[:0], [], "n ≥ 1"),
                                (X, ["a"], "1 titles for 10 images")):
        with pytest.raises(plot.MetricsError, match=needle):
            plot.images(bad, titles)


def test_weights_draws_each_first_layer_unit_or_kernel_on_one_colour_scale():
    """Each hidden unit's incoming weights as an image of the (square) input,
    or each kernel of a first Conv layer: the arrays drawn are the weights,
    in order, on one colour scale symmetric about 0 and set by the largest
    |w| drawn; the first ``limit`` only; an input that is not square is named."""
    params = fbp.init_mlp(jax.random.key(0), [49, 12, 10])
    w = np.asarray(params[0].w, np.float64)  # (12, 49)
    fig = plot.weights(params, cols=5, limit=8)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 8 and len(fig.axes) == 10  # 2 rows of 5, the last two empty
    scale = np.max(np.abs(w[:8]))
    for j, ax in enumerate(drawn):
        np.testing.assert_array_equal(ax.images[0].get_array(), w[j].reshape(7, 7))
        assert ax.images[0].get_clim() == pytest.approx((-scale, scale))
        assert ax.get_title() == f"unit {j + 1}\n‖w‖ {np.linalg.norm(w[j]):.2f}"
    assert fig._suptitle.get_text() == ("the first layer's incoming weights of the 12 hidden units, each as a 7×7 "
                                        f"image (the first 8); colour scale ±{scale:.3g}")
    conv = fbp.init_convnet(jax.random.key(1), (8, 8), [(3, 3, 2)], [10])
    k = np.asarray(conv[0].w, np.float64)  # (3 maps, 1 channel, 3, 3)
    drawn = [ax for ax in plot.weights(conv, title="net.npz").axes if ax.images]
    assert [ax.get_title().split("\n")[0] for ax in drawn] == ["map 1", "map 2", "map 3"]
    for m, ax in enumerate(drawn):
        np.testing.assert_array_equal(ax.images[0].get_array(), k[m, 0])
    with pytest.raises(plot.MetricsError, match="takes 12 inputs, not a square image"):
        plot.weights(fbp.init_mlp(jax.random.key(0), [12, 5, 3]))

"""Learning curves from ``fbp train --metrics-out``: what ``fbp plot`` draws.

The book's chapter-3 figures, cost and accuracy on the training and the
evaluation data epoch by epoch (with ``--l2`` or ``--l1``, the training
cost with its regularization term too), for one run or several on the same
axes, and, when a run recorded them, each layer's ‖δ^l‖ (``--monitor-deltas``)
and the gradient noise scale (``--monitor-noise-scale``). A dotted line
marks each epoch at which ``--lr-halving`` halved η, a ring the epoch of the
best evaluation accuracy. ``images`` draws examples as pictures (``fbp
evaluate --worst-images``), ``weights`` a network's first-layer weights
(``fbp evaluate --weights-image``). matplotlib is needed only here (``pip install
matplotlib``); nothing else in fbp imports it.
"""

from __future__ import annotations

import json
import math
import os
from typing import NamedTuple, Optional, Sequence, Union

_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


class MetricsError(ValueError):
    """A --metrics-out file that cannot be plotted: the message names it."""


class Run(NamedTuple):
    """One run to draw: its legend name and its records."""

    label: str
    epochs: list  # the per-epoch records, in order
    final: Optional[dict]  # the closing record (absent while a run goes on, or if it was killed)


def read_metrics(path: str, label: Optional[str] = None) -> Run:
    """The records of one ``--metrics-out`` file (JSON lines: one object per
    epoch, then ``{"final": true, ...}``). A line that is not such an object
    is a ``MetricsError`` naming the file and the line.

    ``path`` may also be a training checkpoint or a ``--checkpoint-dir`` (its
    newest checkpoint that reads, as for ``fbp evaluate``): the history it
    carries is the same records, up to its epoch, without the test result.
    The label is the file's name without its suffix, or the directory's."""
    if os.path.isdir(path) or path.endswith(".npz"):
        return _read_checkpoint(path, label)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise MetricsError(f"{path}: no such file (the one fbp train --metrics-out wrote)") from None
    except UnicodeDecodeError:
        raise MetricsError(f"{path}: not text; give the .jsonl file fbp train --metrics-out writes") from None
    except OSError as e:
        raise MetricsError(f"{path}: cannot be read ({e.strerror or e})") from None
    epochs: list = []
    final = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetricsError(f"{path}, line {number}: not JSON ({e.msg}); is it fbp train's --metrics-out?") from None
        if not isinstance(record, dict) or not (_is_epoch(record) or record.get("final") is True):
            raise MetricsError(f"{path}, line {number}: not a record of fbp train's --metrics-out "
                               f"(neither an epoch's, with \"epoch\", nor the final one)")
        if record.get("final") is True:
            final = record
        elif epochs and not record["epoch"] > epochs[-1]["epoch"]:  # fbp train writes one run per file
            raise MetricsError(f"{path}, line {number}: epoch {record['epoch']} after epoch "
                               f"{epochs[-1]['epoch']}; the file holds more than one run (give each its own file)")
        else:
            epochs.append(record)
    if not epochs:
        raise MetricsError(f"{path}: no epoch records to plot" + (" (the run ended before its first epoch)"
                                                                   if final is not None else " (empty)"))
    if label is None:
        label = os.path.splitext(os.path.basename(path))[0]
    return Run(label, epochs, final)


def _is_epoch(record) -> bool:
    """Whether ``record`` is an epoch's record: a dict with an int ``epoch``."""
    return isinstance(record, dict) and type(record.get("epoch")) is int


def _read_checkpoint(path: str, label: Optional[str]) -> Run:
    from fbp import checkpoint as ckpt

    if label is None:
        label = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    try:
        if os.path.isdir(path):
            newest = ckpt.newest_header(path)
            if newest is None:
                raise MetricsError(f"{path}: a directory without a readable checkpoint of fbp train (a "
                                   f"--checkpoint-dir holds ckpt-NNNNNN.npz files); give one, or the .jsonl file "
                                   f"--metrics-out wrote")
            header = newest[1]
        else:
            header = ckpt.read_header(path)
    except ckpt.CheckpointError as e:
        raise MetricsError(str(e)) from None
    meta = header.get("meta") or {}
    history = meta.get("history")
    if not isinstance(history, list) or not all(_is_epoch(r) for r in history):
        raise MetricsError(f"{path}: holds no training history (a network saved by --save-params?); give the "
                           f".jsonl file --metrics-out wrote, or a checkpoint of fbp train")
    if not history:
        raise MetricsError(f"{path}: no epoch records to plot")
    final = {"best_epoch": meta.get("best_epoch")}
    if isinstance(meta.get("config"), dict):  # fbp train's flags (a script's fit keeps what it was given)
        final["settings"] = meta["config"]
    return Run(label, history, final)


def _from_history(label: str, history) -> Run:
    history = list(history)
    if not history or not all(_is_epoch(r) for r in history):
        raise MetricsError(f"run {label!r}: a history is fit's list of per-epoch records (dicts with \"epoch\"), "
                           f"at least one")
    return Run(str(label), history, None)


def _held_out(run: Run, name: Optional[str] = None) -> str:
    """What a run's evaluation data was: ``name`` where the caller says;
    else as fbp train names it, the validation split or the test set under
    --validation 0; "evaluation" where the run does not say."""
    if name is not None:
        return name
    settings = (run.final or {}).get("settings") or {}
    n = settings.get("--validation")
    return "evaluation" if not isinstance(n, int) else ("validation" if n else "test")


def _series(run: Run, key: str) -> tuple:
    """(epochs, values) of the records that hold ``key``; a null (a cost
    that overflowed) reads as NaN, a gap in the line."""
    xs, ys = [], []
    for r in run.epochs:
        if key in r:
            xs.append(r["epoch"])
            v = r[key]
            ys.append(math.nan if v is None else v)
    return xs, ys


def _halvings(run: Run) -> list:
    """The epochs that trained with a smaller η than the epoch before."""
    out, last = [], 1.0
    for r in run.epochs:
        factor = r.get("lr_factor", 1.0)
        if factor is not None and factor < last:
            out.append(r["epoch"])
        last = factor if factor is not None else last
    return out


PLOTTED = ("training_cost", "train_step_cost", "evaluation_cost", "training_accuracy", "evaluation_accuracy",
           "delta_norms", "noise_scale")  # an epoch's numbers that figure draws


def figure(runs: Sequence[Union[Run, tuple]], held_out: Optional[str] = None):
    """A matplotlib ``Figure`` of ``runs``: cost and accuracy, then each
    layer's ‖δ^l‖ and the noise scale when any run has them; one colour per
    run, the training data solid and the evaluation data dashed. A run
    trained with ``--no-monitor-training`` shows the mean of each epoch's
    step costs in place of the training set's cost. Save it with ``save``,
    or ``fig.savefig``.

    Each run is a ``Run`` (``read_metrics`` gives one) or a pair
    ``(label, history)``, the history as ``fit`` returns it:
    ``figure([("sgd", result.history)])``. A history does not say what its
    evaluation data was, so its dashed curves are named "evaluation" unless
    ``held_out`` names it (``held_out="validation"``); fbp train's runs name
    their own.
    """
    drawn = [r if isinstance(r, Run) else _from_history(*r) for r in runs]
    if not drawn:
        raise MetricsError("no runs to plot")
    if not any(_series(run, key)[0] for run in drawn for key in PLOTTED):
        raise MetricsError(f"nothing to plot: no epoch of {', '.join(run.label for run in drawn)} records a cost, an "
                           f"accuracy, ‖δ^l‖ or the noise scale (what fbp train's --metrics-out writes)")
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure

    has_deltas = any("delta_norms" in r for run in drawn for r in run.epochs)
    has_noise = any("noise_scale" in r for run in drawn for r in run.epochs)
    panels = 2 + has_deltas + has_noise
    # A Figure of its own, not pyplot's: nothing is kept after it is returned,
    # so a script can draw many.
    rows, cols = (2, 2) if panels == 4 else (1, panels)
    fig = Figure(figsize=(5.2 * cols, 4.0 * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    cost_ax, acc_ax = axes[0], axes[1]
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    zeros = []  # (epoch, colour, alpha) of each ‖δ^l‖ that is exactly 0
    for i, run in enumerate(drawn):
        colour = colours[i % len(colours)]
        tested = ""
        if run.final is not None and run.final.get("test_accuracy") is not None:
            tested = f" (test {run.final['test_accuracy']:.4f})"
        # The training set's cost at the epoch's end, or, with --no-monitor-training,
        # the mean of the epoch's step costs (a different quantity, named so).
        train_key = "training_cost" if any("training_cost" in r for r in run.epochs) else "train_step_cost"
        for ax, key, style, what in (
                (cost_ax, train_key, "-", "training" if train_key == "training_cost" else "mean step cost"),
                (cost_ax, "evaluation_cost", "--", _held_out(run, held_out)),
                (acc_ax, "training_accuracy", "-", "training"),
                (acc_ax, "evaluation_accuracy", "--", _held_out(run, held_out) + tested)):
            xs, ys = _series(run, key)
            if xs:
                ax.plot(xs, ys, style, color=colour, label=f"{run.label}: {what}",
                        marker="." if len(xs) <= 30 else None)
        # With --l2 or --l1: the cost that the steps descend, the book's total_cost of the training data.
        terms = [key for key in ("l2_cost", "l1_cost") if any(r.get(key) is not None for r in run.epochs)]
        total = [(r["epoch"], r["training_cost"] + sum(r[key] for key in terms)) for r in run.epochs
                 if r.get("training_cost") is not None and all(r.get(key) is not None for key in terms)]
        if terms and total:
            names = " + ".join(key[:2].upper() for key in terms)
            cost_ax.plot(*zip(*total), "-.", color=colour,
                         label=f"{run.label}: training + {names} term{'s' if len(terms) > 1 else ''}")
        best = run.final.get("best_epoch") if run.final else None
        for x, y in zip(*_series(run, "evaluation_accuracy")):
            if x == best:
                acc_ax.plot([x], [y], "o", color=colour, fillstyle="none", markersize=9)
        for epoch in _halvings(run):
            for ax in axes:
                ax.axvline(epoch - 0.5, color=colour, linestyle=":", linewidth=1)
        k = 2
        if has_deltas:
            xs, norms = _series(run, "delta_norms")
            if xs:
                layers = len(norms[0])
                for layer in range(layers):
                    # Layers first to last from faint to full: the vanishing gradient reads as a fan.
                    alpha = 0.35 + 0.65 * (layer + 1) / layers
                    ys = [n[layer] if isinstance(n, list) and n[layer] is not None else math.nan for n in norms]
                    # A norm of exactly 0 (no gradient reaches the layer: dead ReLUs, say) has no place on
                    # the log scale; it is a gap in the line and a × on the axis's floor.
                    zeros += [(x, colour, alpha) for x, y in zip(xs, ys) if y == 0]
                    # numbered as the book and fbp trace number them: δ² is the first hidden layer's
                    which = "the output layer" if layer == layers - 1 else f"hidden layer {layer + 1}"
                    axes[k].plot(xs, [y if y != 0 else math.nan for y in ys], color=colour, alpha=alpha,
                                 label=f"{run.label}: δ{str(layer + 2).translate(_SUPERSCRIPTS)}, {which}")
            k += 1
        xs, scales = _series(run, "noise_scale")
        if xs:
            axes[k].plot(xs, scales, color=colour, label=run.label)
    cost_ax.set(title="cost", xlabel="epoch")
    acc_ax.set(title="accuracy", xlabel="epoch")
    k = 2
    if has_deltas:
        ax = axes[k]
        ax.set(title="each layer's ‖δˡ‖ = ‖∂C/∂bˡ‖ (training set)" + ("; ×: exactly 0" if zeros else ""),
               xlabel="epoch", yscale="log")
        if zeros:
            floor, top = ax.get_ylim()
            for x, colour, alpha in zeros:
                ax.plot([x], [floor], "x", color=colour, alpha=alpha, clip_on=False)
            ax.set_ylim(floor, top)
        k += 1
    if has_noise:
        axes[k].set(title="gradient noise scale tr Σ / ‖G‖² (training set)", xlabel="epoch", yscale="log")
    # A legend of a few lines sits where the curves leave room; a longer one
    # (several runs, each with two or three curves) would hide them, so it
    # goes below its panel, under the axis label, in two columns, and the
    # figure grows to hold it.
    below = []
    for ax in axes:
        ax.grid(alpha=0.3)
        entries = len(ax.get_legend_handles_labels()[0])
        if entries > LEGEND_INSIDE:
            below.append((ax, entries))
        elif entries:
            ax.legend(fontsize="x-small")
    if below:
        fig.set_figheight(fig.get_figheight() + rows * (0.3 + 0.14 * max(math.ceil(n / 2) for _, n in below)))
    fig.tight_layout()
    if below:
        from matplotlib.transforms import offset_copy

        # The label's distance below its panel is in points (the tick labels' and its own height), so
        # the legend is put that far below the panel, where it stays as the layout resizes the panel.
        fig.draw_without_rendering()
        for ax, _ in below:
            drop = (ax.get_window_extent().y0 - ax.xaxis.label.get_window_extent().y0) * 72 / fig.dpi + 4
            ax.legend(fontsize="x-small", loc="upper center", ncol=2, bbox_to_anchor=(0.5, 0),
                      bbox_transform=offset_copy(ax.transAxes, fig=fig, y=-drop, units="points"))
        fig.tight_layout()
    return fig


LEGEND_INSIDE = 6  # the most legend lines drawn over a panel's curves


def image_side(n_in: int) -> Optional[int]:
    """The side k of a k×k image of ``n_in`` pixels (28 for MNIST's 784), or None."""
    k = math.isqrt(n_in)
    return k if k * k == n_in and k > 1 else None


def images(X, titles: Sequence[str], cols: int = 8, title: Optional[str] = None):
    """A matplotlib ``Figure`` of the rows of ``X`` (n, k²) drawn as k×k
    grey images (dark is 1, as MNIST's figures in the book), each with its
    title, ``cols`` to a row, and ``title`` above them all. For ``fbp
    evaluate --worst-images``."""
    import numpy as np

    X = np.asarray(X)
    if X.ndim != 2 or not len(X) or image_side(X.shape[1]) is None:
        raise MetricsError(f"images: X must be (n, k²) rows of square images, n ≥ 1, got shape {X.shape}")
    if len(titles) != len(X):
        raise MetricsError(f"images: {len(titles)} titles for {len(X)} images")
    k = image_side(X.shape[1])
    return _grid(X.reshape(len(X), k, k), titles, cols, title, dict(cmap="gray_r", vmin=0.0, vmax=1.0))


def weights(params, cols: int = 10, limit: int = 100, title: Optional[str] = None):
    """A matplotlib ``Figure`` of the first layer's weights, one image for
    each unit, as the book's ch. 6 draws the 5×5 weights of its first
    convolutional layer's 20 feature maps: for a ``Conv`` layer each kernel
    (each map's, and each input channel's), for a ``Dense`` layer on square
    images each unit's incoming weights w_j as an image of the input (what
    the unit looks for in it). One colour scale for all of them, symmetric
    about 0 (red positive, blue negative, white 0), so that they compare;
    the first ``limit`` units are drawn, ``cols`` to a row. For ``fbp
    evaluate --weights-image``."""
    import numpy as np

    from fbp.layers import Conv
    from fbp.network import check_int, validate_params

    validate_params(params)
    first = params[0]
    w = np.asarray(first.w, np.float64)
    if isinstance(first, Conv):  # (C_out, C_in, k, k)
        maps, channels = w.shape[:2]
        pictures = w.reshape(maps * channels, *w.shape[2:])
        names = [f"map {m + 1}" + (f", channel {c + 1}" if channels > 1 else "")
                 for m in range(maps) for c in range(channels)]
        what = f"{w.shape[2]}×{w.shape[3]} kernels of the {maps} feature maps"
    else:  # Dense: (n_out, n_in)
        k = image_side(w.shape[1])
        if k is None:
            raise MetricsError(f"weights: the first layer takes {w.shape[1]} inputs, not a square image; each "
                               f"unit's weights can be drawn only as an image of a square input")
        pictures = w.reshape(len(w), k, k)
        names = [f"unit {j + 1}" for j in range(len(w))]
        what = f"incoming weights of the {len(w)} hidden units, each as a {k}×{k} image"
    shown = pictures[:check_int("limit", limit, 1)]
    norms = np.sqrt(np.sum(shown ** 2, axis=(1, 2)))
    scale = float(np.max(np.abs(shown))) or 1.0
    heading = f"the first layer's {what}" + (f" (the first {len(shown)})" if len(shown) < len(pictures) else "")
    heading += f"; colour scale ±{scale:.3g}"
    return _grid(shown, [f"{name}\n‖w‖ {norm:.2f}" for name, norm in zip(names, norms)], cols,
                 f"{title}: {heading}" if title else heading, dict(cmap="RdBu_r", vmin=-scale, vmax=scale))


def _grid(pictures, titles: Sequence[str], cols: int, title: Optional[str], style: dict):
    """The pictures (n, h, w) in a grid, ``cols`` to a row, each with its title."""
    _matplotlib()
    from matplotlib.figure import Figure

    cols = min(cols, len(pictures))
    rows = -(-len(pictures) // cols)
    top = 0.5 if title else 0.0  # inches for the title above the grid
    height = 2.0 * rows + top
    fig = Figure(figsize=(1.8 * cols, height))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(pictures):
            ax.imshow(pictures[i], interpolation="nearest", **style)
            ax.set_title(titles[i], fontsize=7.5)
    if title:  # a tenth of an inch from the top, however tall the grid
        fig.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - (top + 0.15) / height,
                        wspace=0.15, hspace=0.45)
    return fig


def formats() -> list:
    """The file suffixes ``save`` can write (matplotlib's: png, pdf, svg, …)."""
    _matplotlib()
    from matplotlib.figure import Figure

    return sorted(Figure().canvas.get_supported_filetypes())


def save(fig, path: str) -> None:
    """Write ``fig`` to ``path`` atomically (a file beside it, then a rename),
    in the format its suffix names; its directory is made if missing."""
    from fbp.checkpoint import write_atomic

    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    write_atomic(path, os.path.join(directory, f".tmp-plot-{os.getpid()}.{suffix}"),
                 lambda tmp: fig.savefig(tmp, format=suffix, dpi=100))


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise MetricsError("plotting needs matplotlib, which is not installed: pip install matplotlib "
                           "(or pip install 'fbp[plot]')") from None
    return matplotlib

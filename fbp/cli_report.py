"""What ``fbp train`` shows and writes as it trains: the run's first line, a
progress bar, a line per epoch, and the --metrics-out file (``Report``)."""

from __future__ import annotations

import math
import sys
from typing import Optional

from fbp.cli_args import conv_text


def device_kind() -> str:
    """What the run trains on, for its first line: "cpu", or "gpu: NVIDIA H200" (the platform and its kind)."""
    import jax

    d = jax.devices()[0]
    return d.platform if d.platform == "cpu" else f"{d.platform}: {d.device_kind}"


class MetricsWriteError(Exception):
    """A --metrics-out line could not be written (a full disk, say)."""


def metrics_line(record) -> str:
    """One --metrics-out line: the record as strict JSON (RFC 8259), a
    non-finite number (an evaluation cost that overflowed, say) written as
    null. Python's json would write the bare words Infinity and NaN, which
    jq and most JSON readers outside Python refuse."""
    import json

    def strict(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [strict(x) for x in v]
        return v

    return json.dumps(strict(record), allow_nan=False) + "\n"


def open_metrics(args, resuming: bool):
    """--metrics-out opened for ``Report`` (its directories made), or None
    without the flag. --resume keeps the file until the checkpoint's
    history rewrites it (``Report.resumed``); with no checkpoint to go on
    from, the run starts afresh. Raises OSError."""
    import os

    if not args.metrics_out:
        return None
    os.makedirs(os.path.dirname(os.path.abspath(args.metrics_out)), exist_ok=True)
    return open(args.metrics_out, "a" if resuming else "w")


class Report:
    """What fbp train shows and writes as it trains: the run's first line, a
    progress bar, a line per epoch, and --metrics-out (one JSON object per
    epoch, then a final one)."""

    def __init__(self, args, run, metrics):
        """``run``: fbp train's ``_Run``; ``metrics``: --metrics-out, open (``open_metrics``), or None."""
        self.args, self.eval_split = args, run.eval_split
        self.metrics, self.bar = metrics, None
        self.last_epoch = 0  # the newest epoch recorded (or resumed from)
        ds = run.ds
        self.header: Optional[str] = (
            f"fbp train: {ds.name} ({len(ds.train)} train{' (expanded ×5)' if args.expand else ''} / "
            f"{len(ds.validation)} validation / {len(ds.test)} test), "
            f"sizes={','.join(map(str, run.sizes))}{f' conv={conv_text(args.conv)}' if args.conv else ''} "
            f"{args.activation}/{args.output_activation} {args.cost} "
            f"init={args.init} {args.optimizer}{'' if run.momentum is None else f' μ={run.momentum}'} lr={args.lr} "
            f"l2={args.l2}{f' l1={args.l1}' if args.l1 else ''}{f' dropout={args.dropout}' if args.dropout else ''} "
            f"batch={args.batch_size}{' keep-last-batch' if args.keep_last_batch else ''} "
            f"epochs={args.epochs} seed={args.seed} devices={run.n_devices} ({device_kind()})"
            + (f" DP-SGD clip={args.dp_clip} noise={args.dp_noise}" if args.dp_clip is not None else "")
            + (" deterministic" if args.deterministic else ""))
        # Going on from a checkpoint, the first line waits for fit to accept
        # it (resumed): a checkpoint of another run is then refused in one
        # line, not under a header of settings that will not train.
        if not run.resuming:
            self.show_header()
        if not args.quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=args.epochs, unit="epoch", desc="training", file=sys.stderr, disable=None,
                                leave=False)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                pass

    def show_header(self) -> None:
        """The run's first line, once."""
        if self.header is not None:
            print(self.header, flush=True)
            self.header = None

    def write(self, records, restart=False) -> None:
        """Append ``records`` to --metrics-out (after emptying it, with ``restart``)."""
        if self.metrics is None:
            return
        try:
            if restart:
                self.metrics.truncate(0)
            self.metrics.writelines(metrics_line(r) for r in records)
            self.metrics.flush()
        except OSError as e:
            raise MetricsWriteError(f"could not write to --metrics-out {self.args.metrics_out} "
                                    f"({e.strerror or e})") from e

    def epoch(self, r: dict) -> None:
        """fit's on_epoch: the epoch's line, and its metrics record."""
        self.show_header()  # a --resume whose checkpoint's header read but its arrays did not starts afresh
        line = f"epoch {r['epoch']:3d}"
        if "training_accuracy" in r:  # the end-of-epoch params, as for the evaluation set
            line += f"  train cost {r['training_cost']:.4f} acc {r['training_accuracy']:.4f}"
        else:  # only the mean over the epoch's mini-batch steps is known
            line += f"  mean step cost {r['train_step_cost']:.4f}"
        if "evaluation_accuracy" in r:
            line += f"  {self.eval_split} cost {r['evaluation_cost']:.4f} acc {r['evaluation_accuracy']:.4f}"
        for key, name in (("l2_cost", "L2"), ("l1_cost", "L1")):
            if key in r:
                line += f"  {name} term {r[key]:.4f}"
        if r.get("lr_factor", 1) != 1:
            line += f"  η {self.args.lr * r['lr_factor']:.4g}"
        if "delta_norms" in r:
            line += "  ‖δ‖ by layer " + " ".join(f"{v:.3g}" for v in r["delta_norms"])
        if "noise_scale" in r:
            line += f"  noise scale {r['noise_scale']:.3g}"
        line += f"  ({r['seconds'] * 1000:.0f} ms)"
        self.last_epoch = r["epoch"]
        if self.bar is not None:
            self.bar.n = r["epoch"]
            self.bar.set_postfix_str(f"{self.eval_split} acc {r.get('evaluation_accuracy', float('nan')):.4f}")
            self.bar.write(line)
        else:
            print(line, flush=True)
        self.write([r])

    def steps(self, epoch: int, done: int, steps: int) -> None:
        """fit's on_progress: the bar moves within an epoch of a second or
        more (a fraction of an epoch is its share of the steps done)."""
        if self.bar is not None:
            self.bar.update(round(epoch - 1 + done / steps, 2) - self.bar.n)

    @property
    def running(self) -> int:
        """The epoch training now (or next)."""
        return min(self.last_epoch + 1, max(self.args.epochs, 1))

    def note(self, line: str) -> None:
        """A line to stderr, above the bar if there is one."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    @property
    def moves_within_epochs(self) -> bool:
        """Whether the bar is shown (a terminal, not --quiet), so that fit's step reports are wanted."""
        return self.bar is not None and not self.bar.disable

    def resumed(self, history: list) -> None:
        """fit's on_resume."""
        self.show_header()
        done, epochs = len(history), self.args.epochs
        self.last_epoch = done
        print(f"resuming from the checkpoint of epoch {done} in {self.args.checkpoint_dir}"
              + (f"; it has reached --epochs {epochs}: nothing to train (give a larger --epochs to go on)"
                 if done >= epochs else ""), flush=True)
        if self.bar is not None:
            self.bar.n = min(done, epochs)
            self.bar.refresh()
        # The metrics file restarts from the checkpoint's history: a run killed
        # between its save and its metrics line loses no epoch, and repeats none.
        self.write(history, restart=True)

    def close(self) -> None:
        for f in (self.bar, self.metrics):
            if f is not None:
                try:
                    f.close()
                except OSError:  # a failed metrics write; it has been reported
                    pass

"""Ctrl-C and SIGTERM while ``fbp train`` trains (``Stopping``): the first
stops the run once the running epoch ends and keeps that epoch, a second
stops it at once; ``in_a_thread`` keeps the main thread free to take them."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from fbp.cli_report import Report


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a cluster scheduler's notice): training stops as on Ctrl-C."""


class Stopping:
    """Ctrl-C and SIGTERM while fbp train trains. The first
    asks the run to stop once the running epoch ends: that epoch is
    recorded, checkpointed, tested and saved as a last epoch is, and the
    run exits with 130 (Ctrl-C) or 143 (SIGTERM). A second stops it at
    once: the running epoch ends at its next step report (fit's
    on_progress, a twentieth of an epoch of a second or more), and nothing
    of it is kept. Once training has ended, the testing and saving are let
    finish. In a run of several processes, a signal to any of them stops
    them all after the same epoch (fit's stop agrees), and a second signal
    to process 0, where the step reports come, ends every process's epoch
    at the same step; one to another process cannot. For the handlers to
    run at once, ``fit`` runs in a worker thread while the main thread
    waits (``in_a_thread``)."""

    def __init__(self, report: Report, within_epochs: bool = True):
        self.report, self.within_epochs = report, within_epochs  # whether a second signal here can end an epoch
        self.reason: Optional[str] = None  # fit's stop reason: "interrupted" or "terminated"
        self.after = 0  # the epoch to stop after: the one running when the first signal came
        self.now: Optional[int] = None  # the signal that asked to stop at once
        self.training = True  # False once fit has returned: the network is tested and saved

    def handle(self, signum, frame) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        if not self.training:  # the main thread itself may be writing to stderr: past its buffer, then
            import os

            try:
                os.write(sys.stderr.fileno(), f"fbp train: {name}: training has ended; the network is being tested "
                                              f"and saved\n".encode())
            except (OSError, ValueError, AttributeError):  # no file descriptor behind stderr (a test's)
                self.report.note(f"fbp train: {name}: training has ended; the network is being tested and saved")
        elif self.reason is None:
            self.reason = "interrupted" if signum == signal.SIGINT else "terminated"
            self.after = self.report.running
            self.report.note(f"fbp train: {name}: stopping when epoch {self.after} ends, which is kept; "
                             f"{name} again stops at once, without it")
        elif self.now is None:
            self.now = signum
            self.report.note(f"fbp train: {name}: stopping at once" if self.within_epochs else
                             f"fbp train: {name}: only process 0 of the run can stop an epoch midway; stopping "
                             f"when epoch {self.after} ends")

    def stop(self) -> Optional[str]:
        """fit's stop: after the epoch that was running when the first signal came."""
        return self.reason if self.reason is not None and self.report.last_epoch >= self.after else None

    def steps(self, epoch: int, done: int, steps: int) -> None:
        """fit's on_progress: the bar's, or, after a second signal, the end
        of the epoch."""
        if self.now is not None:
            raise Terminated() if self.now == signal.SIGTERM else KeyboardInterrupt()
        self.report.steps(epoch, done, steps)

    @contextlib.contextmanager
    def handling_signals(self):
        """Within the block, SIGINT and SIGTERM go to ``handle``; yields
        whether they do (not where this is not the main thread). SIGINT is
        left alone where it is not Python's own handler: ignored, as in a
        job started in the background (POSIX), or the caller's."""
        ours = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is signal.default_int_handler
                                   else [])
        previous = {}
        try:
            for sig in ours:
                previous[sig] = signal.signal(sig, self.handle)
        except ValueError:  # not the main thread
            yield False
            return
        try:
            yield True
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def in_a_thread(fn: Callable):
    """``fn()`` run in a worker thread while the calling (main) thread
    waits for it: what it returns, or raises. The main thread then takes
    signals as they come; waiting on a jitted call itself, it would run
    their handlers only once the call returned."""
    import threading

    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            out["error"] = e

    worker = threading.Thread(target=run, name="fbp-train-fit", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if "error" in out:
        raise out["error"]
    return out["value"]


SIGNAL_STATUS = {"interrupted": 130, "terminated": 143}  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them

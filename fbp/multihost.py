"""A run of several processes (multi-host): joining it, and keeping its
processes in step.

Every process runs the same program on its own share of each mini-batch and
all-reduces the gradients (``fbp.parallel``). So they must be given the same
arguments and data (``same_on_every_process`` compares a CRC-32 of each, in
one all-gather), and process 0 alone reads and writes the checkpoints,
sending what it read to the others (``process_0_does``, ``from_process_0``).
``join`` is ``jax.distributed.initialize`` with the mistakes it handles badly
found first (``address_problem``) and its wait bounded; its messages name
``fbp train``'s flags, whose values it takes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import zlib
from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from fbp import checkpoint as ckpt

JOIN_TIMEOUT = 300.0  # s, the default of --join-timeout: jax's initialization_timeout


# --- joining the run (fbp train's --coordinator, --num-processes, --process-id) ---
# jax.distributed.initialize handles neither mistake below well (jax 0.10.2):
# process 0 given a port that something else listens on dies of a
# segmentation fault, and a process whose coordinator never answers (a wrong
# host, process 0 not started) waits in silence for twice its
# initialization_timeout (300 s by default), then aborts with a C++ stack
# trace. So the address is checked first and the wait is bounded here.
def host_port(coordinator: str):
    host, _, port = coordinator.rpartition(":")
    return host.strip("[]"), int(port)  # [::1]:1234 names an IPv6 host


def _port_in_use(port: int) -> bool:
    """Whether something listens on ``port`` here, where process 0's
    coordination service binds it (on every address, [::] then 0.0.0.0)."""
    import errno

    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine
            continue
        with s:
            # as gRPC binds: a port whose old connections linger in TIME_WAIT
            # (a run that just ended) is free, one with a listener is not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return True
                continue  # EADDRNOTAVAIL: IPv6 present but not configured
            return False
    return False


def _answers(host: str, port: int) -> bool:
    """Whether anything accepts a TCP connection at host:port."""
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def address_problem(coordinator: str, process_id: int) -> Optional[str]:
    """What would stop this process joining the run at ``coordinator``,
    found before jax.distributed.initialize is called, or None."""
    host, port = host_port(coordinator)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        return (f"--coordinator {coordinator}: the host name {host!r} does not resolve "
                f"({getattr(e, 'strerror', None) or e}); give the host name or address of process 0's machine")
    if process_id == 0 and _port_in_use(port):
        return (f"--coordinator {coordinator}: port {port} is in use on this machine, where process 0 serves "
                f"the run; give every process a free port, or end what holds it")
    return None


def join(coordinator: str, num_processes: int, process_id: int, timeout: float = JOIN_TIMEOUT) -> None:
    """jax.distributed.initialize, with the wait bounded by ``timeout`` seconds (--join-timeout).

    After 10 s without the run gathering, one line says what this process
    waits for; at the timeout, a one-line error says why (nothing answers at
    the coordinator's address, or not every process came) and the process
    exits with status 1, before jax's own abort (set later than ours)."""
    import threading

    host, port = host_port(coordinator)
    n, i = num_processes, process_id
    joined = threading.Event()

    def watch():
        notice = min(10.0, timeout / 2)
        if joined.wait(notice):
            return
        print(f"fbp train: process {i} of {n} waiting for the run to gather at {coordinator} (up to "
              f"{timeout:g} s, --join-timeout)", file=sys.stderr, flush=True)
        if joined.wait(timeout - notice):
            return
        if i != 0 and not _answers(host, port):
            why = (f"nothing answered there in {timeout:g} s (--join-timeout): start process 0 (--process-id 0) "
                   f"on that host with this --coordinator, or correct the address")
        else:
            why = (f"not all {n} processes of the run joined in {timeout:g} s (--join-timeout): start each of "
                   f"--process-id 0 to {n - 1} with this --coordinator and --num-processes {n}")
        print(f"fbp train: error: --coordinator {coordinator}: {why}", file=sys.stderr, flush=True)
        os._exit(1)

    # CPU processes talk over gloo: jax 0.10's default; 0.4.36's is none, no collectives between them
    if jax.config.values.get("jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    threading.Thread(target=watch, daemon=True, name="fbp-join-watch").start()
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=i,
                                   initialization_timeout=int(math.ceil(timeout)) + 60)
    finally:
        joined.set()


# --- collectives: a GPU driven by two processes of the run is named, not a NCCL trace ---
class SharedDeviceError(RuntimeError):
    """Two processes of the run drive the same GPU."""


SHARED_GPU = ("two processes of this run drive the same GPU, and NCCL cannot join them: give each process a GPU of "
              "its own (CUDA_VISIBLE_DEVICES=i for process i on a machine of several GPUs), or run the processes on "
              "the CPU (JAX_PLATFORMS=cpu)")


def _collective(fn, x):
    """``fn(x)``, one of multihost_utils's collectives. Processes started on
    one machine of one GPU all take that GPU, and their first collective then
    fails inside NCCL ("Duplicate GPU detected", jax 0.11.2) with a C++
    trace; that is raised as a ``SharedDeviceError`` saying what to do."""
    try:
        return fn(x)
    except Exception as e:  # jax.errors.JaxRuntimeError; its name has changed across jax versions
        if "Duplicate GPU detected" in str(e):
            raise SharedDeviceError(SHARED_GPU) from None
        raise


def allgather(x):
    """``multihost_utils.process_allgather(x)``: every process's ``x``, stacked."""
    from jax.experimental import multihost_utils

    return _collective(multihost_utils.process_allgather, x)


# --- agreeing: process 0 alone touches the checkpoints; the others get what it read ---
def from_process_0(tree):
    """``tree`` as process 0 holds it, on every process (as it is in a run of
    one process). Every process calls it, with a tree of the same structure,
    shapes and dtypes; PRNG keys go as their data."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree.flatten(tree)
    keys = [jnp.issubdtype(jnp.asarray(x).dtype, jax.dtypes.prng_key) for x in leaves]
    sent = [jax.random.key_data(x) if k else x for x, k in zip(leaves, keys)]
    got = _collective(multihost_utils.broadcast_one_to_all, [np.asarray(x) for x in sent])
    out = [np.asarray(g).astype(np.asarray(x).dtype) for g, x in zip(got, sent)]
    out = [jax.random.wrap_key_data(jnp.asarray(o), impl=jax.random.key_impl(x)) if k else o
           for o, x, k in zip(out, leaves, keys)]
    return jax.tree.unflatten(treedef, out)


def text_from_process_0(text: str) -> str:
    data = np.frombuffer(text.encode(), np.uint8)
    n = int(from_process_0(np.array(len(data), np.int32)))
    buf = data.copy() if jax.process_index() == 0 else np.zeros(n, np.uint8)
    return bytes(np.asarray(from_process_0(buf), np.uint8)).decode()


_SHARED_ERRORS = {c.__name__: c for c in (ValueError, TypeError, ckpt.CheckpointError, ckpt.CheckpointMismatch,
                                          ckpt.CheckpointDirInUse)}


def process_0_does(fn: Callable):
    """``fn()`` on process 0 alone, its JSON-able result shared with every
    process; in a run of one process, just ``fn()``. An error there is raised
    on every process (process 0's own; on the others a copy of its type and
    message, or a RuntimeError naming it for types not in ``_SHARED_ERRORS``),
    so that none of them is left waiting for the others in the next collective.
    Checkpoints are read and written this way: one writer, and a directory the
    other hosts need not see."""
    if jax.process_count() == 1:
        return fn()
    out, error = None, None
    if jax.process_index() == 0:
        try:
            out = {"value": fn()}
        except Exception as e:  # shared, then raised here as it was
            error = e
            if isinstance(e, ckpt.CheckpointWriteError):  # an OSError: its errno travels too
                out = {"error": [type(e).__name__, e.strerror, e.errno]}
            else:
                out = {"error": [type(e).__name__, str(e), None]}
    shared = json.loads(text_from_process_0(json.dumps(out)))
    if error is not None:
        raise error
    if "error" in shared:
        name, message, errno_ = shared["error"]
        if name == "CheckpointWriteError":
            raise ckpt.CheckpointWriteError(errno_, message)
        raise _SHARED_ERRORS.get(name, RuntimeError)(message if name in _SHARED_ERRORS else
                                                     f"process 0 failed: {name}: {message}")
    return shared["value"]


def fingerprint(value) -> int:
    """A CRC-32 of ``value`` that is the same in every process given the same
    thing: a pytree by its structure and its arrays' dtypes, shapes and bytes
    (PRNG keys by their data), anything else by its repr."""
    try:
        leaves, treedef = jax.tree.flatten(value)
    except Exception:  # not a pytree; a bad argument that fit reports anyway
        return zlib.crc32(type(value).__name__.encode())
    code = zlib.crc32(str(treedef).encode())
    for x in leaves:
        if isinstance(x, (np.ndarray, np.generic, jax.Array)):
            if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
                x = jax.random.key_data(x)  # type: ignore[arg-type]  # a key is a jax.Array
            if isinstance(x, jax.Array) and not x.is_fully_addressable:  # spans the processes (a FitResult's)
                if not x.is_fully_replicated:  # each process holds its own part: compare what all see
                    code = zlib.crc32(f"{x.dtype.str}{x.shape}".encode(), code)
                    continue
                x = x.addressable_data(0)
            a = np.ascontiguousarray(np.asarray(x))
            code = zlib.crc32(f"{a.dtype.str}{a.shape}".encode(), code)
            code = zlib.crc32(a.reshape(-1).view(np.uint8), code)  # type: ignore[arg-type]  # a buffer
        else:
            code = zlib.crc32(repr(x).encode(), code)
    return code


class RaisedElsewhere(RuntimeError):
    """Raised by ``agreed`` on the processes of a run where its function did
    not raise, when it raised on another: ``process`` is the first process
    where it did, ``error`` what it raised there ("on_epoch raised OSError:
    ...", cut at ``agreed``'s size)."""

    def __init__(self, process: int, error: str):
        self.process, self.error = process, error
        super().__init__(f"process {process} of the run stopped: its {error}")


def agreed(fn: Callable[[], Optional[str]], what: Union[str, Callable[[], str]] = "a function",
           size: int = 256) -> Optional[str]:
    """``fn()`` (None, or a short str: its first ``size`` bytes count) on
    every process, agreed in one all-gather of ``size`` + 1 bytes from each:
    the first process's str that is not None, or None. Where ``fn`` raised
    on some process, every process raises instead (so that none is left
    waiting for the others in the next collective): its own error where fn
    raised, a ``RaisedElsewhere`` naming the first process that raised, and
    what (``what`` names fn, or a function of no arguments says what part
    of it was running), where it did not (an Exception; a KeyboardInterrupt
    leaves at once, as from any collective). In a run of one process, ``fn()``.
    How fit's processes decide together whether to stop after an epoch,
    whether an epoch reports its steps, and what its callbacks raised."""
    if jax.process_count() == 1:
        return fn()
    error = None
    try:
        text = fn()
    except Exception as e:  # raised here once every process knows
        error, text = e, f"{what() if callable(what) else what} raised {type(e).__name__}: {e}"
    row = np.zeros(size + 1, np.uint8)
    if text is not None:
        data = np.frombuffer(text.encode()[:size], np.uint8)
        row[0], row[1:1 + len(data)] = 1 if error is None else 2, data
    rows = np.asarray(allgather(row)).reshape(-1, size + 1)
    if error is not None:
        raise error
    decoded = [bytes(r[1:]).rstrip(b"\0").decode(errors="replace") for r in rows]
    for i, r in enumerate(rows):
        if r[0] == 2:
            raise RaisedElsewhere(i, decoded[i])
    for r, text in zip(rows, decoded):
        if r[0] == 1:
            return text
    return None


def first_given(text: Optional[str], size: int = 64) -> Optional[str]:
    """Every process's ``text`` (None, or a short str: its first ``size``
    bytes count), agreed: the first process's that is not None, or None.
    In a run of one process, ``text``. One all-gather of ``size`` + 1 bytes
    from each (``agreed``)."""
    return agreed(lambda: text, size=size)


def same_on_every_process(arguments: dict) -> None:
    """Multi-host: raise the same ValueError on every process when some
    argument was given otherwise than on process 0 (one all-gather of a
    CRC-32 of each). fit runs the same program on each process and all-reduces
    their gradients, so other params or another key would train on without a
    word, and another epoch count would leave the others waiting."""
    if jax.process_count() == 1:
        return
    names = list(arguments)
    mine = np.array([fingerprint(arguments[n]) for n in names], np.uint32).view(np.int32)
    differ = differing(allgather(mine), names)
    if differ:
        raise ValueError(f"fit was called otherwise on the processes of the run: {differ_text(differ)} from "
                         f"process 0's; every process must call fit with the same arguments and data.")


def differing(rows, names: Sequence[str]) -> dict:
    """Given every process's fingerprints of ``names`` (a row each, as an
    all-gather returns them), each name whose fingerprint differs somewhere
    from process 0's, with the processes where it does."""
    rows = np.asarray(rows).reshape(-1, len(names))
    differ = {}
    for j, name in enumerate(names):
        ids = [int(i) for i in np.flatnonzero(rows[:, j] != rows[0, j])]
        if ids:
            differ[name] = ids
    return differ


def differ_text(differ: dict) -> str:
    """``{"epochs": [1], "key": [1, 2]}`` as "epochs on process 1, key on processes 1, 2 differ"."""
    parts = [f"{name} on process{'es' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
             for name, ids in differ.items()]
    return f"{', '.join(parts)} differ{'s' if len(parts) == 1 else ''}"

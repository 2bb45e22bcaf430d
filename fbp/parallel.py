"""Data-parallel training with JAX's own sharding.

A 1-D ``Mesh`` over the devices with one axis, ``"batch"``. Params and
optimizer state are replicated; every mini-batch is split along its leading
axis (``NamedSharding(mesh, P("batch"))``). ``batch_backward`` runs unchanged
inside: its Δᵀ A contracts over the sharded batch axis, so XLA turns the sum
over the batch into an all-reduce of the gradient (2 × parameter bytes moved
per step in a ring), and nothing gathers the batch onto one device.

Multi-host: call ``jax.distributed.initialize()`` in every process (one per
host) before anything else; ``jax.devices()`` then lists every host's devices
and the same mesh spans them (see the README).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fbp.network import check_int
from fbp.epoch import (check_drop_last, check_progress_args, decode_inputs, epoch_steps, keyed_step, scan_steps,
                       shuffle, step_keys, tail_key, takes_key)

AXIS = "batch"


def make_mesh(n_devices: Optional[int] = None, devices=None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over the first ``n_devices`` devices (default: all)."""
    available = list(devices) if devices is not None else jax.devices()
    n = len(available) if n_devices is None else n_devices
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of devices must be a positive int, got {n_devices!r}.")
    if n > len(available):
        raise ValueError(
            f"asked for {n} devices but only {len(available)} exist ({available[0].platform}); "
            f"use {len(available)} or fewer. (On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
            f"makes N host devices for testing.)"
        )
    return Mesh(np.array(available[:n]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Split axis ``axis`` over the devices, replicate the rest."""
    return NamedSharding(mesh, P(*([None] * axis), AXIS))


def check_batch(mesh: Mesh, batch_size: int) -> None:
    check_int("batch_size", batch_size, 1)
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {n} devices; every device needs the same "
            f"share: use a batch size that is a multiple of {n} (e.g. {max(n, batch_size // n * n)})."
        )


def replicate(mesh: Mesh, tree):
    """Put a pytree (params, optimizer state) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def shard(mesh: Mesh, array, axis: int = 0):
    """Split ``array`` along ``axis`` over the devices of the mesh."""
    check_batch(mesh, np.shape(array)[axis])
    return jax.device_put(array, batch_sharded(mesh, axis))


def sharded_grad(mesh: Mesh, grad_fn: Callable, cost, reduction: str = "mean") -> Callable:
    """``grad_fn(params, X, Y, cost, reduction)`` jitted with replicated params and
    output and a batch-sharded X, Y: the data-parallel gradient.

    Works for ``fbp.batch_backward`` and for the ``fbp.stats`` reductions
    (``clipped_grad``, ``grad_second_moment``, …) alike.
    """
    rep, sh = replicated(mesh), batch_sharded(mesh)
    return jax.jit(
        lambda params, X, Y: grad_fn(params, X, Y, cost, reduction),
        in_shardings=(rep, sh, sh),
        out_shardings=rep,
    )


def _global_array(host_array: np.ndarray, sharding: NamedSharding):
    """Every process holds the same host array (same data, same shuffle key);
    each device receives only its own slice. Works on one host and on many."""
    return jax.make_array_from_callback(host_array.shape, sharding, lambda index: host_array[index])


def make_sharded_epoch(train_step: Callable, batch_size: int, mesh: Mesh, *, unroll: int = 1,
                       progress: Optional[Callable[..., Optional[bool]]] = None,
                       updates: int = 20, drop_last: bool = True) -> Callable:
    """The data-parallel epoch, with the signature of ``fbp.train.make_epoch``'s.

    The shuffle is the same one ``make_epoch`` draws (``fbp.train.shuffle(key, n)``),
    applied on the host; the (n_batches, batch, ...) arrays are put on the mesh
    split along the batch axis, and one jitted ``lax.scan`` runs the steps.
    With ``drop_last=False`` the short last mini-batch (n mod batch_size
    examples, which need not divide over the devices) is put on every
    device whole and stepped last, on each alike.
    X may be the bytes of byte images, as in ``make_epoch``: each device
    decodes its part of a mini-batch.

    ``progress(steps_done, steps, *progress_args)`` is called as the steps
    go by, as in ``make_epoch`` (with the arguments given after Y), and
    True from it ends the epoch there on every device (the steps after it
    are not run; their losses are NaN). The calls are
    made in one process (the one holding the mesh's first device), and what
    one raises is raised by the epoch once its computation has ended,
    which that call ends as True would (raised inside the computation, it
    would leave the other devices waiting for it in the step's all-reduce).
    """
    check_batch(mesh, batch_size)
    check_int("unroll", unroll, 1)
    check_int("updates", updates, 1)
    check_drop_last(drop_last)
    raised: list = []  # what progress raised during the epoch running now

    def report(done, steps, *args) -> bool:
        if raised:
            return True
        try:
            return bool(progress(done, steps, *args))  # type: ignore[misc]  # report runs only with a progress
        except BaseException as e:  # noqa: BLE001 - raised by the epoch once its computation has ended
            raised.append(e)
            return True
    rep = replicated(mesh)
    data = batch_sharded(mesh, axis=1)

    keyed = takes_key(train_step)

    def scan(params, opt_state, Xb, Yb, last, progress_args, key=None):
        def body(carry, xs):
            params, opt_state = carry
            xb, yb, k = xs
            params, opt_state, value = keyed_step(train_step, params, opt_state, decode_inputs(xb), yb, k)
            return (params, opt_state), value

        def last_step(carry):  # the short mini-batch (Xr, Yr) of drop_last=False, whole on every device
            (params, opt_state), (Xr, Yr) = carry, last
            params, opt_state, value = keyed_step(train_step, params, opt_state, decode_inputs(Xr), Yr,
                                                  None if key is None else tail_key(train_step, key, Xb.shape[0]))
            return (params, opt_state), value

        xs = (Xb, Yb, None if key is None else step_keys(train_step, key, Xb.shape[0]))
        (params, opt_state), losses = scan_steps(body, (params, opt_state), xs,
                                                 last_step if last and last[0].shape[0] else None,
                                                 None if progress is None else report, updates, progress_args,
                                                 unroll=unroll, ordered=False)
        return params, opt_state, losses

    # (params, opt_state, Xb, Yb), then with drop_last=False the short mini-batch (Xr, Yr), then the arguments
    # for progress where there is one, then with dropout the epoch's key, from which step_keys splits the same
    # keys as make_epoch's: each step's masks are drawn for the whole mini-batch, as on one device.
    lasts, reports, keys = () if drop_last else (rep, rep), () if progress is None else (rep,), (rep,) if keyed else ()

    def run(params, opt_state, Xb, Yb, *rest):
        last, rest = rest[:len(lasts)], rest[len(lasts):]
        progress_args, rest = (rest[0], rest[1:]) if reports else ((), rest)
        return scan(params, opt_state, Xb, Yb, last, progress_args, *rest)

    scan_jit = jax.jit(run, in_shardings=(rep, rep, data, data) + lasts + reports + keys,
                       out_shardings=(rep, rep, rep))

    def epoch(params, opt_state, key, X, Y, *progress_args):
        check_progress_args(progress, progress_args)
        X, Y = np.asarray(X), np.asarray(Y)
        n = len(X)
        n_batches, rest = epoch_steps(n, batch_size, drop_last)
        perm = np.asarray(shuffle(key, n))
        order = perm[: n_batches * batch_size].reshape(n_batches, batch_size)
        Xb = _global_array(X[order], data)  # (n_batches, batch, n_in), batch split over devices
        Yb = _global_array(Y[order], data)
        last = () if drop_last else tuple(_global_array(A[perm[n_batches * batch_size:]], rep) for A in (X, Y))
        args = (params, opt_state, Xb, Yb) + last + more_args(progress_args, key)
        if progress is None:
            return scan_jit(*args)
        raised.clear()
        out = jax.block_until_ready(scan_jit(*args))
        if raised:
            raise raised[0]
        return out

    def lower(params, opt_state, key, X, Y, *progress_args):
        """The epoch's computation lowered for these arguments, as ``jax.jit``'s
        ``lower`` (``.compile()`` compiles it ahead of its first run)."""
        n_batches, rest = epoch_steps(len(X), batch_size, drop_last)
        Xb, Yb = (jax.ShapeDtypeStruct((n_batches, batch_size) + np.shape(A)[1:], A.dtype, sharding=data)
                  for A in (X, Y))
        last = () if drop_last else tuple(jax.ShapeDtypeStruct((rest,) + np.shape(A)[1:], A.dtype, sharding=rep)
                                          for A in (X, Y))
        return scan_jit.lower(params, opt_state, Xb, Yb, *last, *more_args(progress_args, key))

    def more_args(progress_args, key) -> tuple:
        return ((progress_args,) if progress is not None else ()) + ((key,) if keyed else ())

    epoch.scan = scan_jit  # type: ignore[attr-defined]  # for inspecting the compiled program
    epoch.lower = lower  # type: ignore[attr-defined]
    return epoch

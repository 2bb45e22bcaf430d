"""Checkpoints that survive a crash.

A checkpoint is one ``.npz`` file: every array leaf of the saved pytree, plus
a JSON header (epoch, history, the tree's structure). It is written to a
temporary file in the same directory, flushed and fsynced, then renamed over
its final name with ``os.replace`` (atomic on POSIX), and the directory is
fsynced. A process killed at any moment, mid-save included, leaves the
previous complete checkpoints untouched and at worst a stray ``.tmp`` file,
which is ignored and cleaned up by the next save.

A run holds its directory with ``lock_dir`` (an exclusive ``flock`` on
``DIR/.lock``): a second run in the same directory, a ``--resume`` typed
while the first is still going say, is refused at once instead of writing
the same epochs' files and deleting the other run's half-written ones.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import warnings
import zipfile
import zlib
from typing import Any, Callable, Iterator, Optional, Sequence, Union

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, and lock_dir locks nothing
    fcntl = None  # type: ignore[assignment]

import jax
import numpy as np

PATTERN = re.compile(r"^ckpt-(\d{6})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint written for another network or optimizer."""


class CheckpointWarning(UserWarning):
    """Something about checkpoints worth knowing that does not stop the run: a
    checkpoint passed over when resuming because it cannot be read, or a
    directory on a file system without locks (``lock_dir``)."""


class CheckpointDirInUse(RuntimeError):
    """A checkpoint directory that another live run holds (``lock_dir``)."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (a full disk, say); the ones
    written before it are intact."""


def path_of(directory: str, epoch: int) -> str:
    """Where the checkpoint of ``epoch`` lives in ``directory``."""
    return os.path.join(directory, f"ckpt-{epoch:06d}.npz")


def epoch_of(path: str) -> int:
    """The epoch of the checkpoint at ``path`` (``path_of``'s inverse)."""
    match = PATTERN.match(os.path.basename(path))
    if match is None:
        raise ValueError(f"{path}: not the name of a checkpoint (ckpt-NNNNNN.npz)")
    return int(match.group(1))


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(final: str, tmp: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` (a file beside ``final``), fsync it, rename it over
    ``final``, fsync the directory: ``final`` is the old file or the whole
    new one, never a part. On any failure the partial ``tmp`` is removed.
    Checkpoints, saved networks and ``fbp.plot.save``'s images are written so."""
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:  # a full disk, say: leave no partial file to fill it further
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(final)))


def _savez(arrays: dict) -> Callable[[str], None]:
    """``write_atomic``'s writer of ``arrays`` as an .npz."""
    def write(path: str) -> None:
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return write


def save(directory: str, epoch: int, tree: Any, meta: Optional[dict] = None, keep: int = 3,
         protect: Sequence[int] = (), keep_every: Optional[int] = None) -> str:
    """Atomically write ``tree`` (arrays and PRNG keys) and ``meta`` as epoch ``epoch``.

    Keeps the newest ``keep`` checkpoints, those of the epochs in ``protect``
    (fit protects the best one) and, given ``keep_every``, those of the
    epochs it divides (orbax's ``keep_period``: checkpoints spread over a
    run, for ``fbp.stats.tracin``). Returns the final path.
    """
    os.makedirs(directory, exist_ok=True)
    leaves, treedef = jax.tree.flatten(tree)
    arrays = {}
    kinds = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            arrays[f"leaf_{i:05d}"] = np.asarray(jax.random.key_data(leaf))
            kinds.append("key")
        else:
            arrays[f"leaf_{i:05d}"] = np.asarray(leaf)
            kinds.append("array")
    header = dict(epoch=epoch, treedef=str(treedef), kinds=kinds, meta=meta or {})
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    final = path_of(directory, epoch)
    write_atomic(final, os.path.join(directory, f".tmp-ckpt-{epoch:06d}-{os.getpid()}.npz"), _savez(arrays))
    kept = {path_of(directory, e) for e in protect}
    for old in list_checkpoints(directory)[:-keep] if keep else []:
        if old not in kept and not (keep_every and epoch_of(old) % keep_every == 0):
            os.remove(old)
    for stray in glob.glob(os.path.join(directory, ".tmp-ckpt-*")):
        if not stray.endswith(f"-{os.getpid()}.npz"):
            try:
                os.remove(stray)
            except OSError:
                pass
    return final


def check_writable(directory: str, keep: bool = True) -> None:
    """Create ``directory`` if needed and write (then remove) a small file
    there: OSError now, before training, rather than at the first save.
    With ``keep=False`` the directories made for the probe are removed after
    it (a file's, which its writer makes again when it writes it), so that a
    command refused or failed before then leaves none behind."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(errno.ENOTDIR, "a file, not a directory", directory)
    made = [] if keep else missing_paths(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".tmp-ckpt-probe-{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"fbp")
        os.remove(probe)
    finally:
        remove_if_empty(made)


def missing_paths(path: str) -> list:
    """``path`` (made absolute) and the directories above it that do not exist yet, the deepest first: what
    writing ``path`` would make, for ``remove_if_empty`` to take back."""
    missing, up = [], os.path.abspath(path)
    while not os.path.lexists(up):
        missing.append(up)
        up = os.path.dirname(up)
    return missing


def remove_if_empty(paths: list) -> None:
    """``missing_paths``' list, the deepest first, removed while each is an empty directory or an empty
    regular file; from the first that holds anything (another process's file, a record) up, all stay."""
    for path in paths:
        try:
            if os.path.isfile(path) and not os.path.islink(path):
                if os.path.getsize(path):
                    return
                os.remove(path)
            else:
                os.rmdir(path)  # only an empty one
        except OSError:
            return


LOCK_NAME = ".lock"
_held: dict = {}  # real path of a directory this process holds -> its lock file (None: not lockable)


@contextlib.contextmanager
def lock_dir(directory: str) -> Iterator[None]:
    """Hold ``directory`` (which must exist) for one run: an exclusive,
    non-blocking ``flock`` on ``DIR/.lock``, which records the holder's pid.
    Another process that asks for it meanwhile gets ``CheckpointDirInUse``
    naming that pid. Re-entrant within a process, so the CLI can take it
    before ``fit`` does. The kernel drops the lock when the holder ends, kill
    -9 included, so a crash leaves no stale lock to clear by hand; the file
    itself stays (removing it would race with the next run opening it)."""
    key = os.path.realpath(directory)
    if key in _held:  # this process holds it already
        yield
        return
    f = None
    if fcntl is not None:
        f = open(os.path.join(directory, LOCK_NAME), "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            f = None
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise CheckpointDirInUse(
                    f"checkpoint directory {directory} is in use by another run ({who}); wait for it to end, "
                    f"or give another directory"
                ) from None
            # ENOLCK, say: some network and FUSE file systems have no flock.
            # Run as before the lock existed, and say so once.
            warnings.warn(f"cannot lock checkpoint directory {directory} ({e.strerror or e}): another run "
                          f"there would not be refused", CheckpointWarning, stacklevel=3)
        else:
            try:
                f.seek(0)
                f.truncate()
                f.write(str(os.getpid()))
                f.flush()
            except OSError:  # a full disk, say: the pid is only for the message, and the lock holds without it
                pass
    _held[key] = f
    try:
        yield
    finally:
        del _held[key]
        if f is not None:
            f.close()  # drops the flock


def check_params_path(path: str, probe: bool = True) -> None:
    """OSError unless ``path`` can take a network file: not a directory, not
    a device or pipe (the atomic rename would replace it, /dev/null
    included), and with ``probe`` in a directory that can be written."""
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "a directory, not a file", path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise OSError(errno.EINVAL, "a device or a pipe, not a regular file: the atomic write would replace it",
                      path)
    if probe:
        check_writable(os.path.dirname(os.path.abspath(path)), keep=False)


def list_checkpoints(directory: str) -> list:
    """Complete checkpoints in ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    names = sorted(n for n in os.listdir(directory) if PATTERN.match(n))
    return [os.path.join(directory, n) for n in names]


def _read_npz(path: str, keys: Callable[[dict], list], what: str):
    """(JSON header, the arrays named by ``keys(header)``) of an ``.npz``
    written here; CheckpointError "``path``: not ``what``" if it cannot be
    read as one (``keys`` may raise ValueError to refuse a header)."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: a directory, not {what}")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):  # else np.load would try it as a pickle, and say that
        raise CheckpointError(f"{path}: not {what}: not an .npz (zip) archive; cut short (a partial copy, a "
                              f"damaged disk), or another kind of file")
    try:
        with np.load(path) as z:
            header = json.loads(bytes(z["header"]).decode())
            return header, [z[k] for k in keys(header)]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
            zlib.error) as e:  # BadZipFile: a damaged member (its CRC) in an intact directory
        raise CheckpointError(f"{path}: not {what} ({e})") from None


def _load(path: str, with_leaves: bool = True):
    """(header, stored leaves) of one checkpoint file; CheckpointError if unreadable."""
    def keys(header):
        return [f"leaf_{i:05d}" for i in range(len(header["kinds"]))] if with_leaves else []

    header, stored = _read_npz(path, keys, "a readable fbp checkpoint")
    return header, stored if with_leaves else None


def read_header(path: str) -> dict:
    """The JSON header of a checkpoint (epoch, meta, tree structure), without its arrays."""
    return _load(path, with_leaves=False)[0]


def restore(path: str, template: Any, check_header: Optional[Callable[[str, dict], None]] = None):
    """Load a checkpoint into the structure of ``template``; returns (tree, header).

    The template fixes the pytree structure (``Dense`` layers, the optimizer's
    state NamedTuples); the checkpoint must hold the same structure, shapes and
    dtypes. ``check_header(path, header)``, if given, runs first and may raise
    ``CheckpointMismatch`` (``fit`` uses it to compare the run's settings).
    """
    leaves_t, treedef = jax.tree.flatten(template)
    header, stored = _load(path)
    if check_header is not None:
        check_header(path, header)
    if header["treedef"] != str(treedef) or len(stored) != len(leaves_t):
        raise CheckpointMismatch(
            f"{path} was written for a different network or optimizer:\n  saved:    {header['treedef']}\n"
            f"  expected: {treedef}\nresume with the same network and optimizer "
            f"(sizes, activations, optimizer), or start in a fresh checkpoint directory."
        )
    leaves = []
    for i, (kind, arr, t) in enumerate(zip(header["kinds"], stored, leaves_t)):
        if kind == "key":
            leaves.append(jax.random.wrap_key_data(arr))
            continue
        if np.shape(arr) != np.shape(t):
            raise CheckpointMismatch(
                f"{path}: leaf {i} has shape {np.shape(arr)}, expected {np.shape(t)}; resume with the "
                f"same sizes, or start in a fresh checkpoint directory."
            )
        want = np.dtype(getattr(t, "dtype", arr.dtype))
        if arr.dtype != want:  # a silent cast would break bitwise resumption
            raise CheckpointMismatch(
                f"{path}: leaf {i} is {arr.dtype}, expected {want}; resume with the same dtype, "
                f"or start in a fresh checkpoint directory."
            )
        leaves.append(jax.numpy.asarray(arr))
    return jax.tree.unflatten(treedef, leaves), header


def _newest_readable(directory: str, read: Callable[[str], Any], say_skipped: bool = False):
    """``read(path)`` of the newest checkpoint in ``directory`` it succeeds on,
    falling back past unreadable ones (CheckpointError, not a mismatch), each
    named in a CheckpointWarning if ``say_skipped``; None if there is none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return read(path)
        except CheckpointMismatch:
            raise
        except CheckpointError as e:  # unreadable: fall back to the one before
            if say_skipped:
                warnings.warn(f"skipped an unreadable checkpoint: {e}", CheckpointWarning, stacklevel=3)
    return None


def latest(directory: str, template: Any, check_header: Optional[Callable[[str, dict], None]] = None):
    """Restore the newest complete checkpoint in ``directory``; None if there
    is none. Unreadable newer ones are passed over, each with a CheckpointWarning."""
    return _newest_readable(directory, lambda path: restore(path, template, check_header), say_skipped=True)


def newest_header(directory: str) -> Optional[tuple]:
    """``(path, read_header(path))`` of the newest checkpoint in ``directory``
    whose header reads (unreadable ones passed over, as ``latest`` does), or None."""
    return _newest_readable(directory, lambda path: (path, read_header(path)))


def newest_epoch(directory: str) -> Optional[int]:
    """The epoch that ``latest`` would resume from, or None."""
    newest = newest_header(directory)
    return None if newest is None else int(newest[1]["epoch"])


# --- a trained network on its own (the book's network2 save/load) -----------
PARAMS_FORMAT = "fbp-params"


def _activation_name(activation) -> tuple:
    """(name, custom): custom unless the name is a built-in that is this very activation."""
    from fbp.activations import ACTIVATIONS

    if isinstance(activation, str):
        return activation, activation not in ACTIVATIONS
    return activation.name, ACTIVATIONS.get(activation.name) is not activation


def _layers(params: list) -> list:
    """Each layer's activation by name, as the headers record it, and for a
    ``Conv`` its kind, input shape and pooling (a ``Dense`` one is the
    default, so headers of networks without convolutions read as before)."""
    from fbp.layers import Conv

    layers = []
    for layer in params:
        name, custom = _activation_name(layer.activation)
        layers.append(dict(activation=name, custom=custom))
        if isinstance(layer, Conv):
            layers[-1].update(kind="conv", in_shape=list(layer.in_shape), pool=layer.pool)
    return layers


def network_meta(tree: dict) -> dict:
    """What a training checkpoint of ``tree`` (a dict holding the network
    under ``"params"``) records so that ``load_params`` can read the network
    alone, without a template: the layers' activations and where the params'
    leaves begin among the tree's (``fit`` puts it in each checkpoint's meta)."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    first = next(i for i, path in enumerate(paths) if path[0] == jax.tree_util.DictKey("params"))
    return dict(layers=_layers(tree["params"]), first_leaf=first, **_container(tree["params"]))


def _container(params) -> dict:
    """What a header adds for a network held in a tuple, so that
    ``load_params`` gives a tuple back; nothing for a list (the headers of
    lists read as before)."""
    return dict(container="tuple") if isinstance(params, tuple) else {}


def save_params(path: str, params: list, meta: Optional[dict] = None) -> str:
    """Atomically write a network, ``list[Dense]`` (or a tuple of them), to one ``.npz`` file.

    Holds each layer's ``w`` and ``b`` (dtype kept) and a JSON header with the
    activations by name and ``meta`` (anything JSON-able: the data set, the
    test accuracy). ``load_params`` reads it back without a template, as the
    book's ``network2.load`` does. Returns the path.
    """
    from fbp.layers import LAYERS

    if not isinstance(params, (list, tuple)) or not params or not all(isinstance(p, LAYERS) for p in params):
        raise TypeError(f"save_params takes a network, a non-empty list of fbp.Dense (and fbp.Conv) layers; "
                        f"got {type(params).__name__}.")
    arrays, layers = {}, _layers(params)
    for i, layer in enumerate(params):
        arrays[f"w_{i}"], arrays[f"b_{i}"] = np.asarray(layer.w), np.asarray(layer.b)
    try:
        header = json.dumps(dict(format=PARAMS_FORMAT, version=1, layers=layers, meta=meta or {},
                                 **_container(params)))
    except (TypeError, ValueError) as e:
        raise TypeError(f"meta must be JSON-able: {e}") from None
    arrays["header"] = np.frombuffer(header.encode(), np.uint8)
    return _write_npz(path, arrays, "params")


def _write_npz(path, arrays: dict, tag: str) -> str:
    """``arrays`` written to the ``.npz`` file ``path`` atomically (``write_atomic``, through a temporary file
    beside it named by ``tag``), its directory made where it is missing; returns the path."""
    path = os.fspath(path)
    check_params_path(path, probe=False)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    write_atomic(path, os.path.join(directory, f".tmp-{tag}-{os.getpid()}.npz"), _savez(arrays))
    return path


def load_params(path: str, activations: Optional[dict] = None, with_meta: bool = False):
    """Read a network written by ``save_params``, or the network of a training
    checkpoint written by ``fit`` (its params alone, at that epoch):
    ``list[Dense]``, or a tuple where a tuple was saved (and the file's
    ``meta`` dict if ``with_meta``; a checkpoint's has its ``epoch``
    added). A network saved by the book's ``network2.py``
    (``Network.save``, JSON) reads too (``save_network2``). ``path`` may also be a checkpoint
    directory: its newest checkpoint that reads is taken (an unreadable newer
    one is passed over with a CheckpointWarning, as ``fit(resume=True)``
    does), and the meta names it under ``checkpoint``. Built-in activations
    come back by name; a custom one must be passed in ``activations`` as
    ``{name: fbp.Activation}``. CheckpointError if the file is neither."""
    import jax.numpy as jnp

    from fbp.layers import Conv, Dense
    from fbp.network import validate_params

    if os.path.isdir(path):
        return _newest_params(path, activations, with_meta)
    if _is_json(path):  # the book's network2.py saves its networks as JSON
        return _load_network2(path, with_meta)

    def keys(header):
        if header.get("format") == PARAMS_FORMAT:  # w_0 … w_{L-1}, then b_0 … b_{L-1}
            return [f"{name}_{i}" for name in "wb" for i in range(len(header["layers"]))]
        network = (header.get("meta") or {}).get("network") if "treedef" in header else None
        if network is None:
            raise ValueError(f"its header says format {header.get('format')!r}, not {PARAMS_FORMAT!r}")
        first = network["first_leaf"]  # w_0, b_0, w_1, b_1, … among the checkpoint's leaves
        return [f"leaf_{first + j:05d}" for j in range(2 * len(network["layers"]))]

    header, arrays = _read_npz(path, keys, "a network written by fbp.save_params or a checkpoint written by fit")
    if header.get("format") == PARAMS_FORMAT:
        layers, meta, container = header["layers"], header["meta"], header.get("container")
        ws, bs = arrays[:len(layers)], arrays[len(layers):]
    else:
        network = header["meta"]["network"]
        layers, container = network["layers"], network.get("container")
        meta = dict(header["meta"], epoch=header["epoch"])
        ws, bs = arrays[0::2], arrays[1::2]
    params: list = []
    made: Union[Dense, Conv]
    for i, (w, b, layer) in enumerate(zip(ws, bs, layers)):
        name = layer["activation"]
        if layer["custom"]:
            if not activations or name not in activations:
                raise CheckpointError(
                    f"{path}: layer {i} uses the custom activation {name!r}; pass it as "
                    f"load_params(path, activations={{{name!r}: your fbp.Activation}})."
                )
            act = activations[name]
        else:
            act = name
        kind = layer.get("kind", "dense")
        if kind == "conv":
            in_shape, pool = layer.get("in_shape"), layer.get("pool")
            if (w.ndim != 4 or b.shape != (w.shape[0],) or not isinstance(in_shape, list) or len(in_shape) != 3
                    or not all(isinstance(n, int) for n in in_shape) or not isinstance(pool, int)):
                raise CheckpointError(f"{path}: layer {i}, a Conv, has w {w.shape}, b {b.shape}, in_shape "
                                      f"{in_shape!r} and pool {pool!r}, which do not make a layer.")
            made = Conv(jnp.asarray(w), jnp.asarray(b), tuple(in_shape), pool, act)
        elif kind == "dense":
            if w.ndim != 2 or b.shape != (w.shape[0],) or (params and params[-1].n_out != w.shape[1]):
                raise CheckpointError(f"{path}: layer {i} has w {w.shape} and b {b.shape}, which do not chain.")
            made = Dense(jnp.asarray(w), jnp.asarray(b), act)
        else:
            raise CheckpointError(f"{path}: layer {i} is of kind {kind!r}, which this fbp does not know "
                                  f"(it knows dense and conv); a newer fbp may have written it.")
        params.append(made)
    try:
        validate_params(params)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its layers do not make a network: {e}") from None
    if params[0].w.dtype != ws[0].dtype:
        warnings.warn(f"{path} holds {ws[0].dtype} params, loaded as {params[0].w.dtype} because JAX's 64-bit "
                      f"mode is off; call jax.config.update('jax_enable_x64', True) before load_params to keep "
                      f"{ws[0].dtype}.", stacklevel=2)
    network = tuple(params) if container == "tuple" else params
    return (network, meta) if with_meta else network


# --- the book's own file: network2.py's Network.save and load ---------------
# network2.save writes {"sizes", "weights": [w.tolist()], "biases": [b.tolist()], "cost": cost.__name__}, each w
# (n_out, n_in) and each b a column (n_out, 1); every layer is sigmoid, the output too; load looks the cost class
# up by that name and reads no other key.
NETWORK2_COSTS = {"QuadraticCost": "quadratic", "CrossEntropyCost": "cross_entropy"}


class FactorsVersionError(CheckpointError):
    """K-FAC factors written by fbp, of another FACTORS_VERSION (``load_factors``): to compute again, not to
    refuse."""


FACTORS_FORMAT = "fbp-kfac-factors"
FACTORS_VERSION = 1  # raised whenever what stats.kfac_factors computes changes, so older files are computed again


def save_factors(path: str, factors, meta: Optional[dict] = None) -> str:
    """Atomically write K-FAC factors, ``fbp.stats.kfac_factors``' [(A, G)]
    (one pair per layer), to one ``.npz`` file, with ``meta`` (anything
    JSON-able: what they were computed from) in its JSON header; returns the
    path. ``load_factors`` reads them back."""
    arrays = {}
    for i, (a, g) in enumerate(factors):
        arrays[f"a_{i}"], arrays[f"g_{i}"] = np.asarray(a), np.asarray(g)
    header = json.dumps(dict(format=FACTORS_FORMAT, version=FACTORS_VERSION, layers=len(factors), meta=meta or {}))
    arrays["header"] = np.frombuffer(header.encode(), np.uint8)
    return _write_npz(path, arrays, "factors")


def load_factors(path: str, with_factors: bool = True) -> tuple:
    """(factors [(A, G)] as NumPy arrays, meta) of a file ``save_factors``
    wrote (factors None when not ``with_factors``: the header alone);
    CheckpointError naming the file if it is not one (FactorsVersionError
    for one of another FACTORS_VERSION)."""
    what = "K-FAC factors written by fbp (fbp evaluate --factors)"

    def keys(header):
        if header.get("format") != FACTORS_FORMAT:
            raise ValueError(f"its header says {header.get('format')!r}")
        return [f"{k}_{i}" for i in range(int(header["layers"])) for k in "ag"] if with_factors else []

    header, arrays = _read_npz(path, keys, what)
    if header.get("version") != FACTORS_VERSION:
        raise FactorsVersionError(f"{path}: K-FAC factors of format version {header.get('version')}, and this fbp "
                              f"reads version {FACTORS_VERSION}")
    factors = [(arrays[2 * i], arrays[2 * i + 1]) for i in range(len(arrays) // 2)] if with_factors else None
    return factors, header.get("meta", {})


def network2_problem(params, cost) -> Optional[str]:
    """Why the book's ``network2.py`` could not hold ``params`` trained with
    ``cost`` (it knows Dense sigmoid layers, the output too, and the
    quadratic and cross-entropy costs), in words; None if it can."""
    from fbp.activations import get_activation
    from fbp.costs import get_cost
    from fbp.layers import Dense

    name = get_cost(cost).name
    if name not in NETWORK2_COSTS.values():
        return (f"network2 trains with QuadraticCost or CrossEntropyCost, the costs quadratic and cross_entropy, "
                f"not {name}")
    for i, layer in enumerate(params):
        if not isinstance(layer, Dense):
            return f"network2's layers are fully connected, and layer {i} is a {type(layer).__name__}"
        if layer.act != get_activation("sigmoid"):  # the built-in one: network2 knows no other σ
            where = "the output layer" if i == len(params) - 1 else f"layer {i}"
            act = layer.act.name if layer.act.name != "sigmoid" else "a σ of its own named sigmoid"
            return f"network2's neurons are sigmoid in every layer, the output too, and {where} is {act}"
    return None


def save_network2(path: str, params, cost, meta: Optional[dict] = None) -> str:
    """Atomically write a network as the book's ``network2.py`` saves one
    (``Network.save``): JSON of its ``sizes``, its ``weights`` and ``biases``
    as nested lists (each bias a column, (n, 1), as network2 keeps them) and
    its cost's class name, ``QuadraticCost`` or ``CrossEntropyCost``, so that
    ``network2.load(path)`` reads it back; ``load_params`` reads it too.
    ``meta`` (JSON-able) goes under the key ``"fbp"``, which network2.load
    passes over. ValueError (saying why) for a network network2 cannot hold
    (``network2_problem``) or a weight that is not finite; returns the
    path."""
    from fbp.costs import get_cost
    from fbp.network import validate_params

    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"save_network2 takes a network, a non-empty list of fbp.Dense layers; got "
                        f"{type(params).__name__}.")
    validate_params(params)
    problem = network2_problem(params, cost)
    if problem:
        raise ValueError(f"save_network2: {problem}; save it with fbp.save_params (an .npz) instead.")
    name = get_cost(cost).name
    data: dict = dict(sizes=[params[0].n_in] + [layer.n_out for layer in params],
                      weights=[np.asarray(layer.w, np.float64).tolist() for layer in params],
                      biases=[np.asarray(layer.b, np.float64).reshape(-1, 1).tolist() for layer in params],
                      cost=next(k for k, v in NETWORK2_COSTS.items() if v == name))
    if meta:
        data["fbp"] = meta
    try:
        text = json.dumps(data, allow_nan=False)
    except ValueError:
        raise ValueError("save_network2: a weight or bias is not finite, which JSON cannot hold (and a network "
                         "cannot use)") from None
    except TypeError as e:
        raise TypeError(f"meta must be JSON-able: {e}") from None
    path = os.fspath(path)
    check_params_path(path, probe=False)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, os.path.join(directory, f".tmp-params-{os.getpid()}.json"), write)
    return path


def _is_json(path: str) -> bool:
    """Whether ``path`` is a file whose first character that is not white space is ``{``."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.lstrip()[:1] == b"{"


def _is_epoch_records(path: str) -> bool:
    """Whether ``path``'s first line is a JSON object with an "epoch", as
    each line of ``fit``'s JSON Lines records is."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(first, dict) and "epoch" in first


def _load_network2(path: str, with_meta: bool):
    """``load_params`` of a network saved by the book's ``network2.py``: Dense
    sigmoid layers, float64 (float32 with JAX's 64-bit mode off, with a
    warning, as for an .npz of float64 params); the meta names its cost by
    fbp's name and holds what ``save_network2`` put under "fbp"."""
    import jax.numpy as jnp

    from fbp.layers import Dense
    from fbp.network import validate_params

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        if _is_epoch_records(path):
            raise CheckpointError(f"{path}: not a network but epoch records, one JSON object a line (fbp train's "
                                  f"--metrics-out, which fbp plot draws); give the file --save-params wrote, or "
                                  f"the --checkpoint-dir") from None
        raise CheckpointError(f"{path}: not a network: it starts as JSON but does not read as JSON ({e}); cut "
                              f"short?") from None
    what = "JSON, but not a network saved by the book's network2.py (Network.save)"
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what}: not an object")
    missing = [k for k in ("sizes", "weights", "biases", "cost") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: {what}: it has no {', '.join(repr(k) for k in missing)}")
    sizes, cost = data["sizes"], data["cost"]
    if (not isinstance(sizes, list) or len(sizes) < 2 or not all(isinstance(n, int) and n > 0 for n in sizes)
            or not isinstance(data["weights"], list) or not isinstance(data["biases"], list)
            or not len(data["weights"]) == len(data["biases"]) == len(sizes) - 1):
        raise CheckpointError(f"{path}: {what}: its sizes {sizes!r} do not match its lists of weights and biases")
    if cost not in NETWORK2_COSTS:
        raise CheckpointError(f"{path}: its cost {cost!r} is none of network2.py's ({', '.join(NETWORK2_COSTS)})")
    dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 where JAX's 64-bit mode is off
    params = []
    for i, (w, b) in enumerate(zip(data["weights"], data["biases"])):
        try:
            w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: layer {i}'s weights or biases are not arrays of numbers") from None
        if w.shape != (sizes[i + 1], sizes[i]) or b.shape not in ((sizes[i + 1], 1), (sizes[i + 1],)):
            raise CheckpointError(f"{path}: layer {i} has weights {w.shape} and biases {b.shape}, where its sizes "
                                  f"{sizes} say ({sizes[i + 1]}, {sizes[i]}) and ({sizes[i + 1]}, 1)")
        params.append(Dense(jnp.asarray(w, dtype), jnp.asarray(b.reshape(-1), dtype), "sigmoid"))
    validate_params(params)
    if dtype != np.float64:
        warnings.warn(f"{path} holds float64 params (the book's network2.py), loaded as {dtype} because JAX's "
                      f"64-bit mode is off; call jax.config.update('jax_enable_x64', True) before load_params to "
                      f"keep float64.", stacklevel=3)
    own = data.get("fbp")  # what save_network2 kept of an fbp run
    meta = dict(own if isinstance(own, dict) else {}, format="network2", sizes=sizes, cost=NETWORK2_COSTS[cost])
    return (params, meta) if with_meta else params


def _newest_params(directory: str, activations: Optional[dict], with_meta: bool):
    """``load_params`` of the newest checkpoint in ``directory`` that reads."""
    paths = list_checkpoints(directory)
    if not paths:
        raise CheckpointError(f"{directory}: a directory with no checkpoints in it, not a network written by "
                              f"fbp.save_params or a checkpoint written by fit")
    newest_error = None
    for path in reversed(paths):
        try:
            params, meta = load_params(path, activations, with_meta=True)
        except CheckpointError as e:
            newest_error = newest_error or e
            warnings.warn(f"skipped a checkpoint: {e}", CheckpointWarning, stacklevel=3)
            continue
        meta = dict(meta, checkpoint=path)
        return (params, meta) if with_meta else params
    raise CheckpointError(f"{directory}: none of its {len(paths)} checkpoints holds a network that can be read; "
                          f"the newest: {newest_error}")

"""``fbp evaluate``: a network saved by ``fbp train --save-params`` (or a
checkpoint's) tested on a split of a data set: its cost and accuracy, each
layer's ‖δ‖, accuracy per class, the classes most confused; with
``--worst`` the costliest single examples (or those of the largest gradient,
or self-influence over a run's checkpoints), with ``--explain`` the training
examples that pull each example given each way; with ``--json FILE`` all of
it as one JSON object too (``fbp.cli`` parses the flags and calls
``cmd_evaluate``)."""

from __future__ import annotations

import functools
import os
from typing import Optional

from fbp.cli import (_data_dir_problem, _error, _image_path_problem, _validation_size_problem, class_named,
                     image_unwritten, network_text, trained_with, with_json)
from fbp.cli_args import ALL, CLASS, WORST, WRONG, rows_text


def cmd_evaluate(args) -> int:
    """fbp evaluate: the report on stdout; with --json FILE the same as one
    JSON object in FILE, written atomically once the report is whole (with
    --json -, on stdout in the report's place)."""
    return with_json("evaluate", args.json, _evaluate, args)


def _evaluate(args, record: dict) -> int:
    """fbp evaluate's work and its report, each figure of which also goes
    into ``record`` (--json); the command's exit status."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)  # a float64 network is tested in float64, as it was trained
    from fbp import checkpoint as fckpt
    from fbp import train as ftrain

    fail = functools.partial(_error, "evaluate")

    if args.worst is None and (args.worst_by is not None or args.worst_images is not None):
        flag = (f"--worst-by {args.worst_by} ranks" if args.worst_by is not None else
                f"--worst-images {args.worst_images} draws")
        return fail(f"{flag} the list of --worst N; give --worst N too")
    if args.explain == WORST and args.worst is None:
        return fail(f"--explain {WORST} explains the rows that --worst N lists; give --worst N too, or the rows "
                    f"themselves (--explain 3,17)")
    if of_set(args.explain) and args.explain_class is not None:
        return fail(f"--explain-class {args.explain_class} picks the class each row's cost is taken at, and --explain "
                    f"{args.explain} takes a mean cost over the split's examples, each example's at its own class; "
                    f"drop one of them")
    if args.explain is None and args.explain_images is not None:
        return fail(f"--explain-images {args.explain_images} draws the lists of --explain ROW; give --explain ROW too")
    if args.explain is None and args.explain_by is not None:
        return fail(f"--explain-by {args.explain_by} ranks the lists of --explain ROW; give --explain ROW too")
    if args.explain is None and args.explain_class is not None:
        return fail(f"--explain-class {args.explain_class} picks the class the lists of --explain ROW are of; give "
                    f"--explain ROW too")
    problem = explain_by_problem(args.explain_by, args.damping, args.over_checkpoints, args.factors)
    if problem:
        return fail(problem)
    if args.over_checkpoints and args.explain is None and args.worst is None:
        return fail("--over-checkpoints sums --explain's products, or --worst's costs or gradients, over a run's "
                    "checkpoints; give --explain ROW or --worst N too")
    for flag, path in (("--worst-images", args.worst_images), ("--weights-image", args.weights_image),
                       ("--explain-images", args.explain_images)):
        if path is None:
            continue
        from fbp import plot

        try:
            problem = _image_path_problem(flag, path)
        except plot.MetricsError as e:  # no matplotlib
            return fail(f"{flag}: {e}")
        if problem:
            return fail(problem)
    for given, what in ((args.worst is not None, "--worst lists the costliest examples of"),
                        (args.weights_image is not None, "--weights-image draws the weights of"),
                        (args.explain is not None, f"--explain {rows_text(args.explain or [])} looks at the "
                                                   f"gradients of")):
        if given and len(args.params) > 1:
            return fail(f"{what} one network; give one, not {len(args.params)}")
    if args.over_checkpoints and len(args.params) == 1 and not os.path.isdir(args.params[0]):
        return fail(f"--over-checkpoints sums over the checkpoints of a run, and {args.params[0]} is one file; "
                    f"give the --checkpoint-dir it is in")
    if args.voting is not None and len(args.params) == 1:
        return fail(f"--voting {args.voting} picks the vote of several networks; give two or more, or drop it")
    networks = []  # (path, params, meta) of each network, in the order given
    for path in args.params:
        try:
            params, meta = fckpt.load_params(path, with_meta=True)
        except fckpt.CheckpointError as e:
            return fail(str(e))
        networks.append((path, params, trained_with(meta)))
    params, meta = networks[0][1:]  # the data, split and cost they were trained with: the first one's
    cost = args.cost or meta.get("cost") or "log_likelihood"
    ds = trained_data(args, meta, args.split)
    if isinstance(ds, str):
        return fail(ds)
    split = getattr(ds, args.split)
    for path, net, net_meta in networks:
        problem = misfit(net, net_meta, ds, path if len(networks) > 1 else None)
        if problem:
            return fail(problem)
    if args.explain_by in INFLUENCE:
        problem = influence_problem(params, cost)
        if problem:
            return fail(f"--explain-by {args.explain_by}: {problem}")
    if len(split) == 0:
        return fail(f"{ds.name} has no {args.split} examples (--validation 0?)")
    if isinstance(args.explain, list) and max(args.explain) >= len(split):
        return fail(f"--explain {rows_text(args.explain)}: the {ds.name} {args.split} split has {len(split)} "
                    f"examples, rows 0 to {len(split) - 1}")
    target = None  # --explain-class: the class each ROW's cost is taken at, else its true class
    of_class: Optional[int] = None  # --explain class:C's class
    if isinstance(args.explain, str) and args.explain.startswith(CLASS):
        found = class_named(args.explain[len(CLASS):], ds.n_classes, ds.classes, flag=f"--explain {args.explain}")
        if isinstance(found, str):
            return fail(found)
        of_class = found
    if args.explain_class is not None:
        target = class_named(args.explain_class, ds.n_classes, ds.classes)
        if isinstance(target, str):
            return fail(target)
    for flag, path, lists in (("--worst-images", args.worst_images, "--worst"),
                              ("--explain-images", args.explain_images, "--explain")):
        if path is not None and plot.image_side(ds.n_in) is None:
            return fail(f"{flag}: an example of {ds.name} is {ds.n_in} numbers, not a square image to draw; "
                        f"drop {flag} ({lists} lists the examples)")
    weights_figure = None
    if args.weights_image is not None:
        try:
            weights_figure = plot.weights(params, title=networks[0][0])
        except plot.MetricsError as e:
            return fail(f"--weights-image: {str(e).removeprefix('weights: ')}; drop --weights-image")
    truth = np.argmax(split.Y, axis=1)
    record.update(data=ds.name, split=args.split, examples=len(split), cost_function=cost)
    if len(networks) > 1:
        predicted = _print_vote(networks, split, truth, cost, f"{ds.name} {args.split}", args.voting or "hard",
                                record)
        _print_classes(ds, truth, predicted, record, args.confusion)
        return 0
    X = np.asarray(split.X, params[0].w.dtype)
    m = ftrain.evaluate(params, X, np.asarray(split.Y, X.dtype), cost, predictions=True, deltas=True,
                        per_example=args.worst is not None)
    predicted = np.asarray(m["predicted"])
    trained = f", trained to epoch {meta['tested_epoch']}" if "tested_epoch" in meta else ""
    print(f"fbp evaluate: {meta.get('checkpoint') or networks[0][0]} ({network_text(params)}{trained}) on "
          f"{ds.name} {args.split} "
          f"({len(split)} examples)")
    print(f"cost {float(m['cost']):.4f}  accuracy {int(m['correct']) / len(split):.4f}  ({cost})")
    print(f"‖δ‖ by layer (‖∂C/∂b^l‖ of the mean cost here), layer 2 to {len(params) + 1} as the book numbers "
          f"them: " + " ".join(f"{v:.3g}" for v in np.asarray(m["delta_norms"])))
    record["network"] = _network_record(networks[0][0], params, meta)
    record.update(cost=float(m["cost"]), accuracy=int(m["correct"]) / len(split), correct=int(m["correct"]),
                  delta_norms=[float(v) for v in np.asarray(m["delta_norms"])])
    names = _print_classes(ds, truth, predicted, record, args.confusion)
    over = None  # --over-checkpoints: the run's checkpoints, [(epoch, params, η, span)]
    if args.over_checkpoints:
        over = _run_checkpoints(args.params[0], params)
        if isinstance(over, str):
            return fail(over)
        record["checkpoints"] = [dict(epoch=epoch, lr=lr, epochs_spanned=span) for epoch, _, lr, span in over]
    if args.worst is not None:
        by = args.worst_by or "cost"
        scores = _worst_scores(by, m, over, params, X, np.asarray(split.Y, X.dtype), cost)
        short, what = _ranked_by(by, over)
        rows = _print_worst(args.worst, by, args.split, truth, predicted, np.asarray(m["costs"]),
                            np.asarray(m["grad_norms"]), scores, over, short)
        record["worst"] = dict(by=by, over_checkpoints=over is not None, ranked_by=what, rows=[
            dict(row=int(r), true=int(truth[r]), predicted=int(predicted[r]), cost=float(m["costs"][r]),
                 grad_norm=float(m["grad_norms"][r]), score=float(scores[r])) for r in rows])
        if args.worst_images is not None:
            def named(c):
                return names[c] if names else str(c)

            titles = [f"row {r}, {short} {scores[r]:.3g}\n{named(truth[r])} → {named(predicted[r])}" for r in rows]
            problem = image_unwritten("--worst-images", args.worst_images, plot.images(
                split.X[rows], titles, title=f"{ds.name} {args.split}: the largest {what} of single examples (true "
                                             f"→ predicted class)"))
            if problem:
                return fail(problem)
            print(f"wrote {args.worst_images}: {len(rows)} images")
            record["worst"]["images"] = args.worst_images
    if of_set(args.explain):
        subset = (np.flatnonzero(predicted != truth) if args.explain == WRONG else
                  np.flatnonzero(truth == of_class) if of_class is not None else None)
        in_set = len(split) if subset is None else len(subset)  # the examples whose mean cost is explained
        if in_set == 0:
            print(f"explain {args.explain}: " + (
                f"the network classifies all {len(split)} examples of the {args.split} split right; there is no "
                f"mean cost of wrong ones to explain" if args.explain == WRONG else
                f"the {args.split} split has no example of class {names[of_class] if names else of_class}; there "
                f"is no mean cost of them to explain"))
            record["explain"] = None
            return 0
        pictures, titles, listed = _print_explained_split(params, ds, args.split, cost, names, over, record,
                                                          args.explain_by or "product", args.damping, args.factors,
                                                          subset, of_class)
    elif args.explain is not None:
        explain = args.explain if args.explain != WORST else [int(r) for r in rows]  # --worst's, in its order
        # (influence_problem was asked above, before any output: explained's ExplainError cannot come here)
        pictures, titles, listed = _print_explained(params, ds, args.split, explain, cost, truth, predicted,
                                                    names, over, record, args.explain_by or "product", target,
                                                    args.damping, args.factors)
    if args.explain is not None:
        if args.explain_images is not None:
            rows = [args.explain] if of_set(args.explain) else explain
            which = (f"help (first row) and hurt (second row) the {args.split} split's mean cost" if rows == [ALL]
                     else f"help (first row) and hurt (second row) the mean cost of the {args.split} split's "
                          f"{in_set} examples classified wrong" if rows == [WRONG]
                     else f"help (first row) and hurt (second row) the mean cost of the {args.split} split's "
                          f"{in_set} examples of class {named_class(of_class, names)}" if of_class is not None
                     else f"help (first row) and hurt (second row) {args.split} row {rows[0]}" if len(rows) == 1 else
                     f"help (a first row) and hurt (the row under it) {args.split} rows "
                     f"{', '.join(map(str, rows[:-1]))} and {rows[-1]}")
            problem = image_unwritten("--explain-images", args.explain_images, plot.images(
                pictures, titles, cols=EXPLAINED + 1, title=f"{ds.name}: the training examples whose "
                                                            f"{pulling(args.explain_by)} {which} most"))
            if problem:
                return fail(problem)
            print(f"wrote {args.explain_images}: {len(rows) + listed} images")
            for entry in [record["explain"]] if len(rows) == 1 else record["explain"]:
                entry["images"] = args.explain_images
    if weights_figure is not None:
        problem = image_unwritten("--weights-image", args.weights_image, weights_figure)
        if problem:
            return fail(problem)
        print(f"wrote {args.weights_image}: the first layer's weights")
        record["weights_image"] = args.weights_image
    return 0


EXPLAINED = 5  # the training examples listed each way by --explain


def of_set(explain) -> bool:
    """Whether --explain explains a mean cost over the split's examples (all, wrong, class:C), not rows."""
    return explain in (ALL, WRONG) or (isinstance(explain, str) and explain.startswith(CLASS))


def named_class(c: int, names) -> str:
    """A class as the lists name it: its number, and its name where the data has names."""
    return f"{c} {names[c]}" if names else str(c)


def say_factors(factors_from, record=None) -> None:
    """With --factors, ``kfac_factors_kept``'s word on where the K-FAC factors came from: its line printed, the
    rest into ``record["factors"]``; nothing without --factors (``factors_from`` None)."""
    if factors_from is None:
        return
    print(factors_from["line"])
    if record is not None:
        record["factors"] = {k: v for k, v in factors_from.items() if k != "line"}


def trained_data(args, meta: dict, split: str):
    """The data set of ``args.data``, ``args.data_dir`` and
    ``args.validation`` (fbp evaluate's and fbp predict's flags), each by
    default the one the network of ``meta`` (``trained_with``) was trained
    on, so that its training split is the one it was trained on; or the
    one-line problem. The directory and validation split the network was
    trained with hold only for its own data; other data gets that data's
    defaults."""
    from fbp import data as fdata

    data = args.data or meta.get("data_flag") or "digits"
    same_data = data == meta.get("data_flag")
    data_dir = args.data_dir if args.data_dir is not None else (meta.get("data_dir") if same_data else None)
    validation = args.validation if args.validation is not None else (meta.get("validation") if same_data else None)
    if validation is None and split == "test":
        validation = 0  # the test set is the same whatever the split, and a small IDX set then needs no flag
    problem = _data_dir_problem(data, data_dir)
    if problem:
        return problem
    try:
        return fdata.load(data, data_dir, validation)
    except (fdata.DataError, ValueError) as e:
        if isinstance(e, fdata.ValidationSizeError):
            return _validation_size_problem(e, given=validation is not None)
        return str(e) if str(e).startswith("--") else f"--data {data}: {e}"  # one that names its flag already


def misfit(params, meta: dict, ds, path=None):
    """Why the network ``params`` (``meta`` its ``trained_with``) cannot be run on ``ds``, its inputs or classes
    another number (``path`` names it where there are several), or None."""
    sizes = [params[0].n_in] + [p.n_out for p in params]
    if sizes[0] == ds.n_in and sizes[-1] == ds.n_classes:
        return None
    book = (" (the book's network2.py trains on MNIST: --data mnist-pkl --data-dir mnist.pkl.gz, or --data idx)"
            if meta.get("format") == "network2" and "data_flag" not in meta else "")
    return (f"the network{f' {path}' if path else ''} ({','.join(map(str, sizes))}) does not fit {ds.name} "
            f"({ds.n_in} inputs, {ds.n_classes} classes); give the --data it was trained on{book}")


def _network_record(path: str, params, meta: dict) -> dict:
    """A network as --json names it: the file given, the checkpoint read (for a --checkpoint-dir), its layers
    as fbp train's flags give them, and the epoch it was trained to where its file says."""
    return dict(path=path, checkpoint=meta.get("checkpoint"), layers=network_text(params),
                trained_epoch=meta.get("tested_epoch"))


def _run_checkpoints(directory: str, params):
    """--over-checkpoints: [(epoch, params, η, span)] of each checkpoint of
    the run in ``directory`` that reads, oldest first: η the step size its
    epoch trained with (fbp train's --lr times the epoch's --lr-halving
    factor; None where the checkpoint does not say), span the epochs it stands
    for (those since the checkpoint before it); or the one-line reason there
    are none."""
    import warnings

    import jax

    from fbp import checkpoint as fckpt

    over: list = []
    for path in fckpt.list_checkpoints(directory):
        try:
            net, meta = fckpt.load_params(path, with_meta=True)
        except fckpt.CheckpointError as e:  # one line on stderr (fbp.cli), and the next one stands for its epochs
            warnings.warn(f"--over-checkpoints: skipped a checkpoint: {e}", fckpt.CheckpointWarning, stacklevel=2)
            continue
        try:
            same = all(jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, net, params)))
        except ValueError:  # another structure: other layers or activations
            same = False
        if not same:
            return f"--over-checkpoints: {path} holds another network than the newest checkpoint of {directory}"
        config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        epoch = fckpt.epoch_of(path)
        record: dict = next((r for r in meta.get("history", []) if r.get("epoch") == epoch), {})
        lr = config.get("--lr")  # None: a checkpoint of fit from a script, whose config need not say
        lr = None if not isinstance(lr, (int, float)) else float(lr) * float(record.get("lr_factor", 1.0))
        over.append((epoch, net, lr, epoch - (over[-1][0] if over else 0)))
    if not over:
        return f"--over-checkpoints: no checkpoint of {directory} could be read"
    return over


def _checkpoints_text(over) -> str:
    """The checkpoints of --over-checkpoints, their epochs, the epochs each stands for and their η's, in words."""
    return (f"the run's {len(over)} checkpoints w_i, of epochs {', '.join(str(e) for e, _, _, _ in over)}, each "
            f"standing for e_i = {', '.join(str(span) for _, _, _, span in over)} epochs of step size η_i = "
            f"{', '.join('1 (not recorded)' if lr is None else f'{lr:g}' for _, _, lr, _ in over)}")


def _worst_scores(by: str, m: dict, over, params, X, Y, cost: str):
    """What ranks --worst's list, (n,): from ``m``, evaluate's per-example
    pass over the split, its costs, ‖∇C_x‖ or the output layer's ‖g^L_x‖
    (``by``); with ``over``, the run's checkpoints (``_run_checkpoints``), each
    example's cost averaged over the run, Σ_i e_i C_x(w_i) / Σ_i e_i, or its
    self-influence Σ_i η_i e_i ‖g_x(w_i)‖² (of the output layer's part for
    output-gradient)."""
    import jax.numpy as jnp
    import numpy as np

    from fbp import stats
    from fbp import train as ftrain

    if over is None:
        return np.asarray(m["costs"] if by == "cost" else m["grad_norms"] if by == "gradient"
                          else np.asarray(m["grad_norms_by_layer"])[:, -1])
    if by == "cost":
        X, Y = jnp.asarray(X), jnp.asarray(Y)  # on the device once, not once per checkpoint
        return sum(span * np.asarray(ftrain.evaluate(net, X, Y, cost, per_example=True)["costs"], np.float64)
                   for _, net, _, span in over) / sum(span for _, _, _, span in over)
    return np.asarray(stats.self_influence(_weighted(over), X, Y, cost, layers=None if by == "gradient" else -1,
                                           chunk_size=ftrain.chunk_for(params)), np.float64)


def _weighted(over) -> list:
    """The run's checkpoints as (params, weight) pairs, each weighing as its η (1 where not recorded) times the
    epochs it stands for: what ``stats.tracin`` and ``stats.self_influence`` take."""
    return [(net, (1.0 if lr is None else lr) * span) for _, net, lr, span in over]


def _ranked_by(by: str, over) -> tuple:
    """(a short name, a longer one) of what ranks --worst's list, for its column and its images' titles."""
    if over is None:
        return {"cost": ("cost", "cost"), "gradient": ("‖∇C_x‖", "‖∇C_x‖"),
                "output-gradient": ("‖g^L_x‖", "output layer's ‖g^L_x‖")}[by]
    if by == "cost":
        return "mean C_x", f"cost averaged over {len(over)} checkpoints"
    short = "Σ ηe ‖g^L_x‖²" if by == "output-gradient" else "Σ ηe ‖g_x‖²"
    return short, f"self-influence {short} over {len(over)} checkpoints"


EXPLAINED_AT_ONCE = 1000  # the examples explained in one pass over the training set: their products, n × this


INFLUENCE = ("influence", "influence-cosine")  # the --explain-by rankings of one network's K-FAC influence
COSINES = ("cosine", "influence-cosine")  # those that rank by a cosine
INFLUENCE_COSINE = "H̃⁻¹-cos"  # the influence rankings' cosine column: lengths measured by H̃⁻¹


class ExplainError(ValueError):
    """A network and cost that --explain-by influence cannot take (a cost and output without a Gauss-Newton
    matrix here)."""


def explain_by_problem(by: Optional[str], damping: Optional[float], over_checkpoints: bool,
                       factors: Optional[str] = None) -> Optional[str]:
    """What is wrong with --explain-by, --damping, --over-checkpoints and --factors together, if anything (the
    file --factors names too: ``factors_problem``)."""
    if damping is not None and by not in INFLUENCE:
        return (f"--damping {damping} is the damping of H̃ for --explain-by influence and influence-cosine; "
                f"give one of them, or drop --damping")
    if factors is not None and by not in INFLUENCE:
        return (f"--factors {factors} keeps the K-FAC factors of --explain-by influence and influence-cosine; "
                f"give one of them, or drop --factors")
    if over_checkpoints and by in INFLUENCE:
        return (f"--explain-by {by} is of one network, at its trained minimum, and --over-checkpoints sums TracIn's "
                f"products over a run's checkpoints; drop one of them")
    if factors is not None:
        return factors_problem(factors)
    return None


def factors_problem(path: str) -> Optional[str]:
    """What is wrong with --factors FILE, found before any work: a directory,
    a file that is not K-FAC factors written by fbp (the command would
    replace it), a place where the file cannot be written; or None."""
    from fbp import checkpoint as fckpt

    if os.path.isdir(path):
        return f"--factors {path} is a directory; give the name of a file for the factors"
    if os.path.exists(path):
        try:
            fckpt.load_factors(path, with_factors=False)
        except fckpt.FactorsVersionError:
            return None  # an older fbp's factors: computed again and the file replaced
        except fckpt.CheckpointError as e:
            return (f"--factors {e}: a file the command would replace with the factors; give a new file's name "
                    f"(or remove it)")
        return None
    try:
        fckpt.check_params_path(path)
    except OSError as e:
        return f"--factors {path} cannot be written ({e.strerror or e}); give a writable path"
    return None


def factors_key(params, train_X, train_Y, cost: str) -> str:
    """What K-FAC factors are computed from, as one SHA-256 digest: the
    network (its layers, each array's dtype, shape and bytes), the training
    set as it is given to ``stats.kfac_factors`` (the same), and the cost.
    --factors reads a file's factors only where its key is this one."""
    import hashlib
    import json

    import jax
    import numpy as np

    from fbp import checkpoint as fckpt

    h = hashlib.sha256(json.dumps([fckpt._layers(params), cost]).encode())
    for a in jax.tree.leaves(params) + [train_X, train_Y]:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def kfac_factors_kept(path: Optional[str], params, train_X, train_Y, cost: str, chunk: int) -> tuple:
    """(the K-FAC factors of the training set, where they came from): with
    --factors FILE (``path``) the file's, when it holds the factors of this
    network, training set and cost (``factors_key``); else computed
    (``stats.kfac_factors``) and written there atomically for the next
    command. Where they came from: None without --factors, else dict(file,
    read: from the file or not, written: to it or not, seconds: the time it
    took to compute them, line: all that in words). A file that cannot be
    written is said on stderr, and the factors are used all the same."""
    import sys
    import time

    import jax.numpy as jnp

    from fbp import checkpoint as fckpt
    from fbp import stats

    if path is None:
        return stats.kfac_factors(params, train_X, train_Y, cost, chunk_size=chunk), None
    key = factors_key(params, train_X, train_Y, cost)
    other = ""
    if os.path.exists(path):
        try:
            factors, meta = fckpt.load_factors(path)
        except fckpt.CheckpointError as e:
            other = f"; it held none that this fbp reads ({e})"
        else:
            if meta.get("key") == key:
                dtype = params[0].w.dtype
                seconds = float(meta.get("seconds", 0.0))
                return [(jnp.asarray(a, dtype), jnp.asarray(g, dtype)) for a, g in factors], dict(
                    file=path, read=True, written=False, seconds=seconds,
                    line=f"K-FAC factors of the {len(train_X)} training examples read from {path} (computed in "
                         f"{seconds:.1f} s)")
            other = "; it held those of another network, training set or cost"
    start = time.perf_counter()
    factors = stats.kfac_factors(params, train_X, train_Y, cost, chunk_size=chunk)
    factors = [(a.block_until_ready(), g.block_until_ready()) for a, g in factors]
    seconds = time.perf_counter() - start
    said = f"K-FAC factors of the {len(train_X)} training examples computed in {seconds:.1f} s"
    try:
        fckpt.save_factors(path, factors, dict(key=key, cost=cost, examples=len(train_X), seconds=seconds))
    except OSError as e:
        print(f"fbp: --factors {path} could not be written ({e.strerror or e}); the factors were used, not kept",
              file=sys.stderr)
        return factors, dict(file=path, read=False, written=False, seconds=seconds, line=f"{said}, not kept")
    return factors, dict(file=path, read=False, written=True, seconds=seconds,
                         line=f"{said} and written to {path}{other}")


def cosine_named(by: Optional[str]) -> str:
    """The lists' cosine column: "H̃⁻¹-cos" for the influence rankings (lengths measured by H̃⁻¹), else "cos"."""
    return INFLUENCE_COSINE if by in INFLUENCE else "cos"


def pulling(by: Optional[str]) -> str:
    """What --explain-images' title says moves the example: the training examples' steps, or their influence."""
    return "influence would" if by in INFLUENCE else "steps"


def influence_problem(params, cost: str) -> Optional[str]:
    """Why --explain-by influence cannot take this network and cost, or None: the Gauss-Newton matrix is
    known for some costs and outputs only."""
    from fbp import stats

    problem = stats.gauss_newton_problem(cost, params[-1].act.name)
    return problem and f"{problem.rstrip('.')}; rank by product or cosine"


def explained(params, weighted, train_X, train_Y, X, Y, cost: str, by: str = "product",
              damping: Optional[float] = None, factors_file: Optional[str] = None) -> dict:
    """The training examples that pull each example of X, Y (k of them)
    each way: ``weighted``, (params, weight) pairs (one checkpoint weighing
    1, or a run's, ``_weighted``), gives the products Σ_i η_i g_n(w_i) ·
    g_x(w_i) of every training example n with each x (``stats.tracin``, the
    gradients by each one's δ's, EXPLAINED_AT_ONCE examples x a pass); for
    each x, up to EXPLAINED of the largest positive ones (their steps lower
    its cost most) and of the most negative (they raise it most), ranked
    ``by`` the products or by their cosines (the products over ‖g_n‖ ‖g_x‖,
    the norms of the gradients stacked over the checkpoints, each times the
    √ of its weight: one more pass over the training set, for every ‖g_n‖).
    ``by`` "influence" and "influence-cosine" do the same with g_nᵀ H̃⁻¹ g_x
    in place of the product and √(gᵀ H̃⁻¹ g) in place of ‖g‖, H̃ the K-FAC
    Gauss-Newton matrix of the training set at ``params`` (its factors one
    pass over it, or read from ``factors_file`` and kept there,
    ``kfac_factors_kept``; ``damping`` ε, ``stats.influence``'s by default).
    Returns dict(n, the training examples; factors, where the factors came
    from, ``kfac_factors_kept``'s; lists [(helps rows, hurts rows)]
    for each x; products and cos [{row: product or cosine}] for each x, its
    listed rows only; costs (k,) and grad_norms (k,), the examples' own
    under ``params``)."""
    import numpy as np

    from fbp import stats
    from fbp import train as ftrain

    k = len(X)
    tiny = np.finfo(np.float64).tiny
    # a Conv layer forms each example's gradient (its im2col patches with it): evaluate's chunks (about 700
    # for the book's first conv net) keep it on Fashion-MNIST under 1 GB (3.1 GB at 10,000, in about the same time)
    chunk = ftrain.chunk_for(params)
    factors_from = None
    if by in INFLUENCE:
        damping, factors, factors_from = _influence_setup(params, cost, damping, factors_file, train_X, train_Y,
                                                          chunk)

        def products_of(Xb, Yb):
            return stats.influence(params, train_X, train_Y, cost, Xb, Yb, factors=factors, damping=damping,
                                   chunk_size=chunk)

        def squares(Xs, Ys, chunk_size=None):  # g_nᵀ H̃⁻¹ g_n, the squared lengths of the cosines
            return stats.influence_diagonal(params, Xs, Ys, cost, factors=factors, damping=damping,
                                            chunk_size=chunk_size)
    else:
        def products_of(Xb, Yb):
            return stats.tracin(weighted, train_X, train_Y, cost, Xb, Yb, chunk_size=chunk)

        def squares(Xs, Ys, chunk_size=None):  # Σ_i η_i ‖g(w_i)‖²
            return stats.self_influence(weighted, Xs, Ys, cost, chunk_size=chunk_size)

    cosine = by in COSINES
    if cosine:
        norms_all = np.sqrt(np.asarray(squares(train_X, train_Y, chunk), np.float64))
    lists, products, cos = [], [], []
    for at in range(0, k, EXPLAINED_AT_ONCE):
        block = slice(at, at + EXPLAINED_AT_ONCE)
        dots = np.asarray(products_of(X[block], Y[block]))
        scores = dots
        if cosine:
            own = np.sqrt(np.asarray(squares(X[block], Y[block]), np.float64))
            scores = dots / np.maximum(norms_all[:, None] * own[None, :], tiny)
        by_example = np.ascontiguousarray(scores.T)  # each example's scores in a row: a column is read strided
        for j in range(dots.shape[1]):
            lists.append(_extremes(by_example[j]))
            rows = lists[-1][0] + lists[-1][1]
            products.append({r: dots[r, j] for r in rows})
            if cosine:
                cos.append({r: scores[r, j] for r in rows})
    if cosine:
        m = ftrain.evaluate(params, X, Y, cost, per_example=True)
        return dict(n=len(train_X), factors=factors_from, lists=lists, products=products, cos=cos,
                    costs=np.asarray(m["costs"]), grad_norms=np.asarray(m["grad_norms"]))
    # the cosines need the lengths of the examples and of the listed ones only: one small pass, not one over the set
    listed = [r for helps, hurts in lists for r in helps + hurts]
    both = np.concatenate([X, train_X[listed]]), np.concatenate([Y, train_Y[listed]])
    m = ftrain.evaluate(params, *both, cost, per_example=True)
    sq = np.asarray(squares(*both, chunk_size=chunk if len(both[0]) > chunk else None), np.float64)
    own, norms = np.sqrt(sq[:k]), np.sqrt(sq[k:])
    at = 0
    for j, (helps, hurts) in enumerate(lists):
        rows = helps + hurts
        cos.append(dict(zip(rows, np.array([products[j][r] for r in rows], np.float64)
                            / np.maximum(norms[at:at + len(rows)] * own[j], tiny))))
        at += len(rows)
    return dict(n=len(train_X), factors=factors_from, lists=lists, products=products, cos=cos,
                costs=np.asarray(m["costs"])[:k], grad_norms=np.asarray(m["grad_norms"])[:k])


def explained_split(params, weighted, train_X, train_Y, X, Y, cost: str, by: str = "product",
                    damping: Optional[float] = None, factors_file: Optional[str] = None) -> dict:
    """``explained``'s dict for the mean cost of all of X, Y, as one
    example: each training example's product with the split's mean gradient
    Ḡ = (1/k) Σ_x g_x (``stats.mean_grad``, ``stats.grad_dots``; summed over
    the (params, weight) pairs of ``weighted``, each with its own Ḡ), by
    linearity the mean of its products with the split's examples, from one
    pass over the split and one over the training set; ``by`` influence,
    g_nᵀ H̃⁻¹ Ḡ (``stats.kfac_solve``). The cosines are over ‖g_n‖ ‖Ḡ‖ (over
    √(g_nᵀ H̃⁻¹ g_n) √(Ḡᵀ H̃⁻¹ Ḡ) for influence; over the norms stacked over
    the checkpoints, as ``explained``'s). costs (1,) holds the split's mean
    cost and grad_norms (1,) ‖Ḡ‖, both under ``params``."""
    import jax
    import numpy as np

    from fbp import stats
    from fbp import train as ftrain

    def dot(u, v) -> float:
        return float(sum(np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64))
                         for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v))))

    tiny = np.finfo(np.float64).tiny
    chunk = ftrain.chunk_for(params)
    factors_from = None
    means = [stats.mean_grad(net, X, Y, cost, chunk_size=chunk) for net, _ in weighted]
    if by in INFLUENCE:
        damping, factors, factors_from = _influence_setup(params, cost, damping, factors_file, train_X, train_Y,
                                                          chunk)
        solved = stats.kfac_solve(params, means[0], factors, damping)
        dots = np.asarray(stats.grad_dots([(params, 1.0)], train_X, train_Y, cost, [solved], chunk_size=chunk))
        own = np.sqrt(max(dot(means[0], solved), 0.0))

        def squares(Xs, Ys):  # g_nᵀ H̃⁻¹ g_n
            return stats.influence_diagonal(params, Xs, Ys, cost, factors=factors, damping=damping,
                                            chunk_size=chunk if len(Xs) > chunk else None)
    else:
        dots = np.asarray(stats.grad_dots(weighted, train_X, train_Y, cost, means, chunk_size=chunk))
        own = np.sqrt(sum(w * dot(v, v) for (_, w), v in zip(weighted, means)))

        def squares(Xs, Ys):  # Σ_i η_i ‖g(w_i)‖²
            return stats.self_influence(weighted, Xs, Ys, cost, chunk_size=chunk if len(Xs) > chunk else None)

    dots = np.asarray(dots, np.float64)
    if by in COSINES:
        scores = dots / np.maximum(np.sqrt(np.asarray(squares(train_X, train_Y), np.float64)) * own, tiny)
        lists = _extremes(scores)
        cos = {r: scores[r] for r in lists[0] + lists[1]}
    else:
        lists = _extremes(dots)
        listed = lists[0] + lists[1]
        norms = np.sqrt(np.asarray(squares(train_X[listed], train_Y[listed]), np.float64)) if listed else np.zeros(0)
        cos = {r: dots[r] / max(norm * own, tiny) for r, norm in zip(listed, norms)}
    mean = means[0] if len(weighted) == 1 and weighted[0][0] is params else stats.mean_grad(params, X, Y, cost,
                                                                                          chunk_size=chunk)
    m = ftrain.evaluate(params, X, Y, cost)
    return dict(n=len(train_X), factors=factors_from, lists=[lists], products=[{r: dots[r] for r in cos}],
                cos=[cos], costs=np.array([float(m["cost"])]), grad_norms=np.array([np.sqrt(dot(mean, mean))]))


def _influence_setup(params, cost: str, damping: Optional[float], factors_file: Optional[str], train_X, train_Y,
                     chunk: int) -> tuple:
    """(ε, the K-FAC factors of the training set, where they came from) for the influence rankings: the damping
    used, and the factors by ``kfac_factors_kept``; ExplainError for a network and cost without a Gauss-Newton
    matrix."""
    problem = influence_problem(params, cost)
    if problem:
        raise ExplainError(problem)
    return (damping_used(damping),) + kfac_factors_kept(factors_file, params, train_X, train_Y, cost, chunk)


def damping_used(damping: Optional[float]) -> float:
    """--damping's ε as the influence rankings use it: the flag's, or stats.influence's default."""
    from fbp import stats

    return stats.INFLUENCE_DAMPING if damping is None else damping


def _extremes(scores) -> tuple:
    """The rows of the EXPLAINED largest positive ``scores`` (those that help), largest first, and of the
    EXPLAINED most negative (those that hurt), most negative first; ties in the order a stable sort of −scores
    gives them and its reverse, found by a partition, not by sorting all n."""
    import numpy as np

    n = len(scores)
    k = min(EXPLAINED, n)
    top = np.partition(scores, n - k)[n - k]  # the k-th largest: the rows at least as large are the candidates
    cand = np.flatnonzero(scores >= top)
    helps = cand[np.lexsort((cand, -scores[cand]))][:k]
    low = np.partition(scores, k - 1)[k - 1]
    cand = np.flatnonzero(scores <= low)
    hurts = cand[np.lexsort((-cand, scores[cand]))][:k]
    return [int(r) for r in helps if scores[r] > 0], [int(r) for r in hurts if scores[r] < 0]


def explained_lines(n: int, products, lists, cos, labels, named, product: str, indent: str = "  ",
                    cosine: str = "cos") -> list:
    """--explain's lines for one example: each listed training row (of ``n``), its class, its product and cosine
    (named ``cosine``: "H̃⁻¹-cos" for influence's); the class column as wide as its widest name, so that the
    numbers line up."""
    width = len(str(n - 1))
    cw = max([len(named(labels[r])) for rows in lists for r in rows], default=0)
    return [f"{indent}{title}  row {r:>{width}}  true {named(labels[r]):<{cw}}  {product} {products[r]:>+10.4g}  "
            f"{cosine} {cos[r]:+.3f}"
            for title, rows in zip(("helps most", "hurts most"), lists) for r in rows]


def explained_record(products, lists, cos, labels, score: str = "product") -> dict:
    """--explain's lists as --json holds them: each listed training row, its class, product (under the key
    ``score``: "influence" for --explain-by influence's g_nᵀ H̃⁻¹ g_x) and cosine."""
    return {title: [{"row": int(r), "true": int(labels[r]), score: float(products[r]), "cos": float(cos[r])}
                    for r in rows]
            for title, rows in zip(("helps", "hurts"), lists)}


def explained_pictures(x, title: str, lists, cos, train_X, labels, named, cosine: str = "cos") -> tuple:
    """--explain-images' two rows for one example: it and the training examples that help it, then a blank and
    those that hurt it, blanks where a list is short; and their titles (each with its cosine, named ``cosine``)."""
    import numpy as np

    blank = np.zeros_like(x)
    pictures, titles = [x], [title]
    for (what, rows), lead in zip(zip(("helps", "hurts"), lists), (0, 1)):
        pictures += [blank] * lead + list(train_X[rows]) + [blank] * (EXPLAINED - len(rows))
        titles += [""] * lead + [f"{what}: row {r}\n{named(labels[r])}, {cosine} {cos[r]:+.2f}"
                                 for r in rows] + [""] * (EXPLAINED - len(rows))
    return pictures, titles


def _print_explained(params, ds, split: str, rows: list, cost: str, truth, predicted, names, over=None,
                     record=None, by: str = "product", target=None, damping: Optional[float] = None,
                     factors_file: Optional[str] = None):
    """fbp evaluate --explain ROW[,ROW...]: for each row, the training
    examples whose gradients point most with and most against its
    (``stats.grad_gram``), those whose steps lower and raise its cost most;
    with ``over``, the [(epoch, params, η, span)] of a run's checkpoints, the
    same from the products summed over them, each times its η and the epochs
    it stands for (``stats.tracin``): each example is stepped on once an
    epoch, so the sum follows what its steps did over the whole run
    (``explained``, for all the rows in one pass over the training set);
    each row's cost taken at its true class, or at class ``target``. Returns
    the pictures for --explain-images (for each row: it, those that help, a
    blank, those that hurt), their titles, and how many training examples
    were listed; the lists go into ``record["explain"]`` too (one row's
    object, or a list of them for several rows, in the order given)."""
    import numpy as np

    def named(c):
        return named_class(c, names)

    dtype = params[0].w.dtype
    X = np.asarray(getattr(ds, split).X[rows], dtype)
    Y = np.asarray(getattr(ds, split).Y[rows], dtype)
    if target is not None:
        Y = np.eye(ds.n_classes, dtype=dtype)[[target] * len(rows)]
    train_X, train_Y = np.asarray(ds.train.X, dtype), np.asarray(ds.train.Y, dtype)
    e = explained(params, [(params, 1.0)] if over is None else _weighted(over), train_X, train_Y, X, Y, cost, by,
                  damping, factors_file)
    say_factors(e["factors"], record)
    n = e["n"]
    product = "g_n · g_x"
    if by in INFLUENCE:
        product = "g_nᵀ H̃⁻¹ g_x"
        about = (f"the training examples of the most positive and most negative influence g_nᵀ H̃⁻¹ g_x on this "
                 f"one's cost, of the {n} (Koh & Liang's influence functions: weighing n up by ε in the training "
                 f"cost lowers x's cost at the trained minimum by about ε g_nᵀ H̃⁻¹ g_x; H̃ the K-FAC Gauss-Newton "
                 f"matrix of the training set, damping ε = {damping_used(damping):g})"
                 + (f"; {INFLUENCE_COSINE} its cosine, the influence over √(g_nᵀ H̃⁻¹ g_n) √(g_xᵀ H̃⁻¹ g_x):"
                    if by == "influence" else
                    ", ranked by its cosine, the influence over √(g_nᵀ H̃⁻¹ g_n) √(g_xᵀ H̃⁻¹ g_x) (which leaves out "
                    "how large g_n is, as RelatIF ranks):"))
    elif over is None and by == "product":
        about = (f"the training examples whose gradient g_n points most with and against this one's g_x, of the "
                 f"{n} (a step of SGD on n changes its cost by about −η g_n · g_x):")
    elif over is None:
        about = (f"the training examples whose gradient g_n points most nearly with and against this one's g_x, by "
                 f"the cosine g_n · g_x / (‖g_n‖ ‖g_x‖), of the {n} (a step of SGD on n changes its cost by "
                 f"about −η g_n · g_x; the cosine leaves out how large g_n is):")
    else:
        product = "Σ ηe g_n · g_x"
        about = (f"TracIn over {_checkpoints_text(over)}: the training examples whose steps lowered and "
                 f"raised this one's cost most over the run, of the {n}, by Σ_i η_i e_i g_n(w_i) · g_x(w_i)"
                 + (":" if by == "product" else ", over the norms of the two gradients stacked over the checkpoints "
                                                 "(the cosine, which leaves out how large g_n is):"))
    labels = np.argmax(ds.train.Y, axis=1)
    cosine = cosine_named(by)
    at = "" if target is None else f", at class {named(target)}"
    pictures, titles, listed, records = [], [], 0, []
    for j, row in enumerate(rows):
        products, lists, cos = e["products"][j], e["lists"][j], e["cos"][j]
        if j:
            print()
        print(f"explain row {row} of the {split} split: true {named(truth[row])} → predicted "
              f"{named(predicted[row])}{at}, cost {float(e['costs'][j]):.4f}, ‖∇C_x‖ {float(e['grad_norms'][j]):.4f}")
        if j == 0:  # what the lists are, once
            print(about)
        records.append(dict(
            row=row, true=int(truth[row]), predicted=int(predicted[row]),
            target=int(truth[row]) if target is None else target, cost=float(e["costs"][j]),
            grad_norm=float(e["grad_norms"][j]), over_checkpoints=over is not None, training_examples=n,
            ranked_by=by, **({"damping": damping_used(damping)} if by in INFLUENCE else {}),
            **explained_record(products, lists, cos, labels, "influence" if by in INFLUENCE else "product")))
        for line in explained_lines(n, products, lists, cos, labels, named, product, cosine=cosine):
            print(line)
        more, more_titles = explained_pictures(X[j], f"{split} row {row}\n{named(truth[row])} → "
                                                     f"{named(predicted[row])}"
                                               + ("" if target is None else f", at {named(target)}"), lists, cos,
                                               ds.train.X, labels, named, cosine)
        pictures += more
        titles += more_titles
        listed += sum(len(r) for r in lists)
    if record is not None:
        record["explain"] = records[0] if len(rows) == 1 else records
    return np.stack(pictures), titles, listed


def _print_explained_split(params, ds, split: str, cost: str, names, over=None, record=None, by: str = "product",
                           damping: Optional[float] = None, factors_file: Optional[str] = None, subset=None,
                           of_class: Optional[int] = None):
    """fbp evaluate --explain all (and wrong): the training examples whose
    gradients point most with and most against the split's mean gradient Ḡ
    (of its rows ``subset`` only: for --explain wrong those classified
    wrong, for class:C those of class ``of_class``), those whose steps
    lower and raise the mean cost of the whole split (of those rows) most;
    by influence, or over a run's checkpoints,
    as ``_print_explained`` does for a row (``explained_split``). Returns
    the pictures for --explain-images (the mean of their inputs, those that
    help, a blank, those that hurt), their titles and how many training
    examples were listed; the lists go into ``record["explain"]``, its row
    "all", "wrong" or "class" (with the rows, and the class)."""
    import numpy as np

    def named(c):
        return named_class(c, names)

    dtype = params[0].w.dtype
    part = getattr(ds, split)
    inputs = part.X if subset is None else part.X[subset]
    X = np.asarray(inputs, dtype)
    Y = np.asarray(part.Y if subset is None else part.Y[subset], dtype)
    train_X, train_Y = np.asarray(ds.train.X, dtype), np.asarray(ds.train.Y, dtype)
    e = explained_split(params, [(params, 1.0)] if over is None else _weighted(over), train_X, train_Y, X, Y, cost,
                        by, damping, factors_file)
    say_factors(e["factors"], record)
    n, k = e["n"], len(X)
    of = "the split's" if subset is None else "their"  # whose mean cost: the split's, or the wrong ones'
    product = "g_n · Ḡ"
    if by in INFLUENCE:
        product = "g_nᵀ H̃⁻¹ Ḡ"
        about = (f"the training examples of the most positive and most negative influence g_nᵀ H̃⁻¹ Ḡ on {of} "
                 f"mean cost, Ḡ its gradient, of the {n} (weighing n up by ε in the training cost lowers that mean "
                 f"cost at the trained minimum by about ε g_nᵀ H̃⁻¹ Ḡ, the mean of n's influences on the {k} "
                 f"examples; H̃ the K-FAC Gauss-Newton matrix of the training set, damping ε = "
                 f"{damping_used(damping):g})"
                 + (f"; {INFLUENCE_COSINE} its cosine, the influence over √(g_nᵀ H̃⁻¹ g_n) √(Ḡᵀ H̃⁻¹ Ḡ):"
                    if by == "influence" else
                    ", ranked by its cosine, the influence over √(g_nᵀ H̃⁻¹ g_n) √(Ḡᵀ H̃⁻¹ Ḡ):"))
    elif over is None:
        about = (f"the training examples whose gradient g_n points most {'nearly ' if by == 'cosine' else ''}with "
                 f"and against {of} mean gradient Ḡ = (1/{k}) Σ_x g_x"
                 + (", by the cosine g_n · Ḡ / (‖g_n‖ ‖Ḡ‖)" if by == "cosine" else "")
                 + f", of the {n} (a step of SGD on n changes that mean cost by about −η g_n · Ḡ, the mean of n's "
                   f"products with the {k} examples):")
    else:
        product = "Σ ηe g_n · Ḡ"
        about = (f"TracIn over {_checkpoints_text(over)}: the training examples whose steps lowered and raised "
                 f"{of} mean cost most over the run, of the {n}, by Σ_i η_i e_i g_n(w_i) · Ḡ(w_i), Ḡ(w_i) {of} "
                 f"mean gradient at w_i"
                 + (":" if by == "product" else ", over the norms of the two gradients stacked over the checkpoints "
                                                 "(the cosine, which leaves out how large g_n is):"))
    labels = np.argmax(ds.train.Y, axis=1)
    cosine = cosine_named(by)
    products, lists, cos = e["products"][0], e["lists"][0], e["cos"][0]
    whose = (f"the {split} split ({k} examples)" if subset is None else
             f"the {k} examples of the {split} split classified wrong" if of_class is None else
             f"the {k} examples of class {named(of_class)} in the {split} split")
    print(f"explain the mean cost of {whose}: cost {float(e['costs'][0]):.4f}, ‖Ḡ‖ {float(e['grad_norms'][0]):.4g}")
    print(about)
    for line in explained_lines(n, products, lists, cos, labels, named, product, cosine=cosine):
        print(line)
    if record is not None:
        record["explain"] = dict(
            row=ALL if subset is None else WRONG if of_class is None else "class", examples=k,
            **({} if of_class is None else {"class": of_class}),
            **({} if subset is None else {"rows": [int(r) for r in subset]}),
            cost=float(e["costs"][0]), grad_norm=float(e["grad_norms"][0]),
            over_checkpoints=over is not None, training_examples=n, ranked_by=by,
            **({"damping": damping_used(damping)} if by in INFLUENCE else {}),
            **explained_record(products, lists, cos, labels, "influence" if by in INFLUENCE else "product"))
    title = (f"{split} split: the mean\nof its {k} inputs" if subset is None else
             f"{split} split: the mean of\nthe {k} classified wrong" if of_class is None else
             f"{split} split: the mean of\nits {k} of class {named(of_class)}")
    pictures, titles = explained_pictures(np.mean(inputs, axis=0), title, lists, cos, ds.train.X, labels, named,
                                          cosine)
    return np.stack(pictures), titles, sum(len(r) for r in lists)


def _print_worst(n: int, by: str, split: str, truth, predicted, costs, norms, scores, over, short: str):
    """fbp evaluate --worst: the n examples of the split with the largest
    ``scores`` (``_worst_scores``), largest first, one line each with its
    cost and ‖∇C_x‖, and ``short``, the name of the scores, where they are
    neither; returns their rows."""
    import numpy as np

    rows = np.argsort(-np.asarray(scores), kind="stable")[:n]
    g = "g^L_x" if by == "output-gradient" else "g_x"
    column = None if over is None and by != "output-gradient" else short
    if over is None:
        what = {"cost": "costs C_x", "gradient": "gradients ‖∇C_x‖",
                "output-gradient": "gradients of the output layer, ‖g^L_x‖ = ‖∂C_x/∂(w^L, b^L)‖,"}[by]
        print(f"the {len(rows)} largest {what} of single examples (‖∇C_x‖ by BP3 and BP4 from each one's δ's), by "
              f"row of the {split} split:")
    elif by == "cost":
        print(f"the {len(rows)} largest costs C_x averaged over {_checkpoints_text(over)}, each checkpoint weighing "
              f"as the epochs it stands for, Σ_i e_i C_x(w_i) / Σ_i e_i, by row of the {split} split (the cost and "
              f"‖∇C_x‖ are the newest checkpoint's):")
    else:
        layer = " of the output layer" if by == "output-gradient" else ""
        print(f"the {len(rows)} largest self-influences Σ_i η_i e_i ‖{g}(w_i)‖²{layer} (TracIn) of single examples "
              f"over {_checkpoints_text(over)}, by row of the {split} split (the cost and ‖∇C_x‖ are the newest "
              f"checkpoint's):")
        if split != "train":  # nothing stepped on these examples: the sum is of their norms, not of their steps
            print(f"  (the {split} split was not trained on: for its examples the sum weighs the squared norms of "
                  f"their gradients over the run, not what steps on them did; --worst-by cost ranks by the cost "
                  f"averaged over the run)")
    width = len(str(len(norms) - 1))
    # each column as wide as its widest entry (the two of 4 decimals 7 at least), so that they line up
    cw, nw, sw = (max([least] + [len(f"{v[r]:{f}}") for r in rows])
                  for v, f, least in ((costs, ".4f", 7), (norms, ".4f", 7), (scores, ".4g", 0)))
    for r in rows:
        mark = "" if truth[r] == predicted[r] else "  (wrong)"
        extra = "" if column is None else f"  {column} {scores[r]:<{sw}.4g}"
        print(f"  row {r:>{width}}  true {truth[r]} → predicted {predicted[r]}  cost {costs[r]:{cw}.4f}  "
              f"‖∇C_x‖ {norms[r]:{nw}.4f}{extra}{mark}")
    return rows


def _print_classes(ds, truth, predicted, record: dict, matrix: bool = False):
    """Accuracy per class, the classes' names where the data set has them,
    and the pairs of classes most confused, with ``matrix`` the whole
    confusion matrix; returns the names (or None). ``record`` gets each
    class's accuracy, every pair confused (most often first) and the
    matrix."""
    import numpy as np

    names = ds.classes if ds.classes is not None and len(ds.classes) == ds.n_classes else None
    confusion = np.zeros((ds.n_classes, ds.n_classes), np.int64)  # [true][predicted]: the rest comes from it
    np.add.at(confusion, (truth, predicted), 1)
    per_class, classes = [], []
    for c, (n_c, right) in enumerate(zip(confusion.sum(axis=1).tolist(), np.diag(confusion).tolist())):
        if n_c:
            per_class.append(f"{c}: {right / n_c:.3f} ({n_c})")
            classes.append(dict({"class": c}, name=names[c] if names else None, examples=n_c, accuracy=right / n_c))
    print("accuracy per class: " + "  ".join(per_class))
    if names is not None:
        print("classes: " + ", ".join(f"{c} {name}" for c, name in enumerate(names)))
    true, said = np.nonzero(confusion * (1 - np.eye(ds.n_classes, dtype=np.int64)))  # the pairs confused, in order
    counts = confusion[true, said]
    order = np.argsort(-counts, kind="stable")  # most often first
    if len(order):
        print("most confused (true → predicted): " + ", ".join(
            f"{true[i]} → {said[i]} ×{counts[i]}" for i in order[:5]))
    record.update(classes=classes, confusions=[
        dict(true=int(true[i]), predicted=int(said[i]), count=int(counts[i])) for i in order],
        confusion_matrix=confusion.tolist())
    if matrix:
        width = max(3, len(str(int(confusion.max()))))
        print("confusion matrix (a row for each true class, a column for each predicted one):")
        print("true ↓ predicted → " + " ".join(f"{c:>{width}}" for c in range(ds.n_classes)))
        for c, row in enumerate(confusion):
            label = f"{c} {names[c]}" if names else str(c)
            print(f"  {label:<16.16} " + " ".join(f"{v:>{width}}" for v in row))
    return names


def _print_vote(networks, split, truth, cost: str, where: str, voting: str, record: dict):
    """fbp evaluate with several networks: each one's cost and accuracy,
    then the accuracy of their vote and of their soft vote
    (``fbp.train.vote_of``), all from one pass over the split per network;
    returns the classes of the vote named by ``voting``, and puts what it
    printed into ``record``."""
    import numpy as np

    from fbp import train as ftrain

    print(f"fbp evaluate: a vote of {len(networks)} networks on {where} ({len(split)} examples)")
    width = max(len(path) for path, _, _ in networks)
    alone, outputs, classes = [], [], []
    for path, params, meta in networks:  # each tested, and its outputs taken, as it would be alone
        X = np.asarray(split.X, params[0].w.dtype)
        m = ftrain.evaluate(params, X, np.asarray(split.Y, X.dtype), cost, predictions=True, outputs=True)
        alone.append(int(m["correct"]) / len(split))
        trained = f", epoch {meta['tested_epoch']}" if "tested_epoch" in meta else ""
        print(f"  {path:<{width}}  cost {float(m['cost']):.4f}  accuracy {alone[-1]:.4f}  "
              f"({network_text(params)}{trained})")
        outputs.append(m["outputs"])
        classes.append(np.asarray(m["predicted"]))
        record.setdefault("networks", []).append(dict(_network_record(path, params, meta), cost=float(m["cost"]),
                                                      accuracy=alone[-1], correct=int(m["correct"])))
    voted = {v: np.asarray(ftrain.vote_of(outputs, v)) for v in ("hard", "soft")}
    split_votes = int(np.sum(np.any(np.stack(classes) != classes[0], axis=0)))
    print(f"vote: accuracy {np.mean(voted['hard'] == truth):.4f} (the best network alone: {max(alone):.4f}; the "
          f"networks disagree on {split_votes} of the {len(split)} examples)")
    differ = int(np.sum(voted["soft"] != voted["hard"]))
    print(f"soft vote (the largest summed output): accuracy {np.mean(voted['soft'] == truth):.4f}; it differs from "
          f"the vote on {differ} example{'' if differ == 1 else 's'}")
    print(f"{'the vote' if voting == 'hard' else 'the soft vote'} (--voting {voting}), class by class:")
    record.update(vote=dict(accuracy=float(np.mean(voted["hard"] == truth)), disagree=split_votes),
                  soft_vote=dict(accuracy=float(np.mean(voted["soft"] == truth)), differs=differ),
                  voting=voting)
    return voted[voting]

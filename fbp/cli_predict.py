"""``fbp predict``: a saved network's classes for inputs of one's own, image
files (a drawing, a photograph) or ``.npy`` arrays, each with its output
for the likeliest classes (``fbp.cli`` parses the flags and calls
``cmd_predict``)."""

from __future__ import annotations

import functools
import os
from typing import Any, Optional

from fbp.cli import _error, class_named, network_text, trained_with, with_json
from fbp import cli_evaluate
from fbp.cli_evaluate import explain_by_problem


class InputError(ValueError):
    """An input that cannot be made into examples for the network; the message says why."""


def cmd_predict(args) -> int:
    """fbp predict: a line for each input (its class, then the runners-up);
    with --json the same as one JSON object."""
    return with_json("predict", args.json, _predict, args)


def _predict(args, record: dict) -> int:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)  # a float64 network runs in float64, as it was trained
    import fbp
    from fbp import checkpoint as fckpt
    from fbp import data as fdata
    from fbp import plot

    fail = functools.partial(_error, "predict")
    for given, flag in ((args.over_checkpoints, "--over-checkpoints sums --explain's products over a run's "
                                                "checkpoints"),
                        (args.explain_images is not None, f"--explain-images {args.explain_images} draws --explain's "
                                                          f"lists"),
                        (args.explain_by is not None, f"--explain-by {args.explain_by} ranks --explain's lists"),
                        (args.damping is not None, f"--damping {args.damping} is the damping of --explain-by "
                                                   f"influence"),
                        (args.factors is not None, f"--factors {args.factors} keeps the K-FAC factors of "
                                                   f"--explain-by influence"),
                        (args.explain_class is not None, f"--explain-class {args.explain_class} picks the class "
                                                         f"--explain's lists are of"),
                        (args.data is not None, f"--data {args.data} names the data whose training examples "
                                                f"--explain lists"),
                        (args.data_dir is not None, f"--data-dir {args.data_dir} names the data whose training "
                                                    f"examples --explain lists"),
                        (args.validation is not None, f"--validation {args.validation} takes the validation "
                                                      f"examples out of --explain's training examples")):
        if given and not args.explain:
            return fail(f"{flag}; give --explain too")
    problem = explain_by_problem(args.explain_by, args.damping, args.over_checkpoints, args.factors)
    if problem:
        return fail(problem)
    if args.over_checkpoints and not os.path.isdir(args.network):
        return fail(f"--over-checkpoints sums over the checkpoints of a run, and {args.network} is one file; "
                    f"give the --checkpoint-dir it is in")
    if args.explain_images is not None:
        from fbp.cli import _image_path_problem

        try:
            problem = _image_path_problem("--explain-images", args.explain_images)
        except plot.MetricsError as e:  # no matplotlib
            return fail(f"--explain-images: {e}")
        if problem:
            return fail(problem)
    try:
        params, meta = fckpt.load_params(args.network, with_meta=True)
    except fckpt.CheckpointError as e:
        return fail(str(e))
    meta = trained_with(meta)
    if args.explain_by in cli_evaluate.INFLUENCE:
        problem = cli_evaluate.influence_problem(params, meta.get("cost") or "log_likelihood")
        if problem:
            return fail(f"--explain-by {args.explain_by}: {problem}")
    n_in, n_out = params[0].n_in, params[-1].n_out
    side = plot.image_side(n_in)
    names = meta.get("classes") or fdata.CLASS_NAMES.get(meta.get("data_flag") or "")  # older files: by the data
    names = names if isinstance(names, (list, tuple)) and len(names) == n_out else None
    target: Optional[int] = None  # --explain-class: the class the costs are taken at, else each one's predicted
    if args.explain_class is not None:
        found = class_named(args.explain_class, n_out, names)
        if isinstance(found, str):
            return fail(found)
        target = found
    examples, labels, notes = [], [], []
    for path in args.inputs:
        try:
            if path.lower().endswith((".npy", ".npz")):
                rows = _array_rows(path, n_in, side)
                examples.append(rows)
                labels += [path] if len(rows) == 1 else [f"{path}[{i}]" for i in range(len(rows))]
                notes += [""] * len(rows)
            else:
                if side is None:
                    return fail(f"{path}: the network takes {n_in} numbers, not a square image; give its "
                                f"inputs as a .npy array of {n_in} numbers")
                x, note = image_input(path, side, args.invert, args.crop, args.margin, args.center)
                examples.append(x[None])
                labels.append(path)
                notes.append(note)
        except InputError as e:
            return fail(f"{path}: {e}")
    X = np.concatenate(examples).astype(params[0].w.dtype)
    ds: Any = None
    over = None
    if args.explain:  # the training data and the run's checkpoints, their problems before any output
        ds = cli_evaluate.trained_data(args, meta, "train")
        if isinstance(ds, str):
            return fail(ds)
        problem = cli_evaluate.misfit(params, meta, ds)
        if problem:
            return fail(problem)
        if len(ds.train) == 0:
            return fail(f"{ds.name} has no training examples to list (--validation {args.validation}?)")
        if args.explain_images is not None and plot.image_side(ds.n_in) is None:
            return fail(f"--explain-images: an example of {ds.name} is {ds.n_in} numbers, not a square image to "
                        f"draw; drop --explain-images (--explain lists the examples)")
        if args.over_checkpoints:
            over = cli_evaluate._run_checkpoints(args.network, params)
            if isinstance(over, str):
                return fail(over)
    outputs = np.asarray(jax.jit(fbp.forward)(params, X), np.float64)
    top = min(args.top, n_out)
    output = params[-1].act.name
    trained = f", trained on {meta['data_flag']}" if meta.get("data_flag") else ""
    print(f"fbp predict: {meta.get('checkpoint') or args.network} ({network_text(params)}{trained}); "
          f"for each input its class and output a^L ({'probabilities' if output == 'softmax' else output})"
          + (f", then the next {top - 1} likeliest" if top > 1 else ""))

    def named(c: int) -> str:
        return f"{c} {names[c]}" if names else str(c)

    width, class_width = max(len(label) for label in labels), max(len(named(c)) for c in range(n_out))
    record.update(network=args.network, checkpoint=meta.get("checkpoint"), layers=network_text(params),
                  output_activation=output, predictions=[])
    explained: Optional[dict] = None
    if ds is not None:
        # (influence_problem was asked above, before any output: explained's ExplainError cannot come here)
        explained = _explain(params, ds, over, X, np.argmax(outputs, axis=1) if target is None else
                             np.full(len(X), target), meta, record, args.explain_by or "product",
                             "its predicted class" if target is None else f"class {named(target)}", args.damping,
                             args.factors)
        record["explain"]["target"] = target
    pictures: list = []
    titles: list = []
    listed = 0  # the training images drawn
    for j, (label, out, note) in enumerate(zip(labels, outputs, notes)):
        order = np.argsort(-out, kind="stable")[:top]
        rest = ", ".join(f"{named(int(c))} {out[c]:.3f}" for c in order[1:])
        print(f"  {label:<{width}}  {named(int(order[0])):<{class_width}}  {out[order[0]]:.3f}"
              + (f"  (then {rest})" if rest else "") + (f"  [{note}]" if note else ""))
        record["predictions"].append(dict(input=label, predicted=int(order[0]),
                                          name=names[int(order[0])] if names else None,
                                          outputs=[float(v) for v in out], note=note or None))
        if explained is None:
            continue

        products, lists, cos = explained["products"][j], explained["lists"][j], explained["cos"][j]
        train_labels = explained["labels"]
        at = int(order[0]) if target is None else target
        print(f"    its cost at {named(at)} {float(explained['costs'][j]):.4f}, ‖∇C_x‖ "
              f"{float(explained['grad_norms'][j]):.4f}" + ("" if any(lists) else "; no training example pulls it"))
        cosine = cli_evaluate.cosine_named(args.explain_by)
        for line in cli_evaluate.explained_lines(explained["n"], products, lists, cos, train_labels, named,
                                                 explained["product"], indent="    ", cosine=cosine):
            print(line)
        record["predictions"][-1]["explain"] = dict(
            target=at, cost=float(explained["costs"][j]), grad_norm=float(explained["grad_norms"][j]),
            **cli_evaluate.explained_record(products, lists, cos, train_labels, explained["score"]))
        if args.explain_images is not None:
            title = f"{label}\n→ {named(int(order[0]))}" + ("" if target is None else f", at {named(at)}")
            more, more_titles = cli_evaluate.explained_pictures(X[j], title, lists, cos, ds.train.X, train_labels,
                                                                named, cosine)
            pictures += more
            titles += more_titles
            listed += sum(len(rows) for rows in lists)
    if args.explain_images is not None:
        from fbp.cli import image_unwritten
        from fbp.cli_evaluate import EXPLAINED

        problem = image_unwritten("--explain-images", args.explain_images, plot.images(
            np.stack(pictures), titles, cols=EXPLAINED + 1,
            title=f"the {ds.name} training examples whose {cli_evaluate.pulling(args.explain_by)} pull each input "
                  f"toward {'its predicted class' if target is None else f'class {named(target)}'} (first row) "
                  f"and away from it (second row) most"))
        if problem:
            return fail(problem)
        print(f"wrote {args.explain_images}: {len(labels)} input{'s' if len(labels) > 1 else ''} and {listed} "
              f"training images")
        record["explain"]["images"] = args.explain_images
    return 0


def _explain(params, ds, over, X, targets, meta: dict, record: dict, by: str, at: str,
             damping: Optional[float] = None, factors_file: Optional[str] = None) -> dict:
    """--explain's products of every training example of ``ds`` with each
    input of ``X``, its class of ``targets`` the target (each one's
    predicted class, or --explain-class's; ``at`` says which), under the
    network or (``over``) summed over the run's checkpoints, ranked ``by``
    the products or their cosines (``cli_evaluate.explained``); prints what
    they are and puts it into ``record["explain"]`` (and, with --factors,
    ``factors_file``, where the K-FAC factors came from into
    ``record["factors"]``). Returns ``explained``'s dict with the training
    examples' classes (labels), the products' name (product) and their
    --json key (score) added."""
    import numpy as np


    dtype = params[0].w.dtype
    cost = meta.get("cost") or "log_likelihood"
    Y = np.eye(params[-1].n_out, dtype=dtype)[targets]
    train_X, train_Y = np.asarray(ds.train.X, dtype), np.asarray(ds.train.Y, dtype)
    weighted = [(params, 1.0)] if over is None else cli_evaluate._weighted(over)
    e = cli_evaluate.explained(params, weighted, train_X, train_Y, X, Y, cost, by, damping, factors_file)
    cli_evaluate.say_factors(e["factors"], record)
    n = len(train_X)
    cosine = ("" if by == "product" else
              ", ranked by the cosine, the product over ‖g_n‖ ‖g_x‖ (which leaves out how large g_n is)")
    e["score"] = "product"
    if by in cli_evaluate.INFLUENCE:
        e["product"], e["score"] = "g_nᵀ H̃⁻¹ g_x", "influence"
        print(f"with each input, the {ds.name} training examples (of the {n}) of the most positive and most "
              f"negative influence g_nᵀ H̃⁻¹ g_x on the input's cost, {at} the target ({cost}): weighing n up by ε "
              f"in the training cost lowers that cost at the trained minimum by about ε g_nᵀ H̃⁻¹ g_x (Koh & "
              f"Liang's influence functions; H̃ the K-FAC Gauss-Newton matrix of the training set, "
              f"damping ε = {cli_evaluate.damping_used(damping):g})"
              + (f"; {cli_evaluate.INFLUENCE_COSINE} its cosine, the influence over √(g_nᵀ H̃⁻¹ g_n) "
                 f"√(g_xᵀ H̃⁻¹ g_x)" if by == "influence" else
                 ", ranked by its cosine, the influence over √(g_nᵀ H̃⁻¹ g_n) √(g_xᵀ H̃⁻¹ g_x) (which leaves out "
                 "how large g_n is, as RelatIF ranks)"))
    elif over is None:
        e["product"] = "g_n · g_x"
        print(f"with each input, the {ds.name} training examples (of the {n}) whose gradient g_n points most with "
              f"and against the input's g_x, {at} the target ({cost}){cosine}: a step of SGD on n changes the "
              f"input's cost there by about −η g_n · g_x, so those that help pull it toward that class")
    else:
        e["product"] = "Σ ηe g_n · g_x"
        print(f"TracIn over {cli_evaluate._checkpoints_text(over)}: with each input, the {ds.name} training "
              f"examples (of the {n}) whose steps lowered and raised its cost at {at} ({cost}) "
              f"most over the run, by Σ_i η_i e_i g_n(w_i) · g_x(w_i)"
              + cosine.replace("‖g_n‖ ‖g_x‖", "the norms of the two gradients stacked over the checkpoints"))
    e["labels"] = np.argmax(ds.train.Y, axis=1)
    record["explain"] = dict(data=ds.name, training_examples=n, cost_function=cost,
                             over_checkpoints=over is not None, ranked_by=by)
    if by in cli_evaluate.INFLUENCE:
        record["explain"]["damping"] = cli_evaluate.damping_used(damping)
    if over is not None:
        record["explain"]["checkpoints"] = [dict(epoch=epoch, lr=lr, epochs_spanned=span)
                                            for epoch, _, lr, span in over]
    return e


def _array_rows(path: str, n_in: int, side: Optional[int]):
    """The examples of a .npy file: one example of ``n_in`` numbers (or a
    side × side image), or a stack of them, (n, n_in) or (n, side, side),
    in [0, 1] as fbp.data gives them; InputError otherwise."""
    import numpy as np

    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("no such file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"not a NumPy array file ({e})") from None
    if not isinstance(a, np.ndarray):  # an .npz: the archive's one array
        with a as archive:
            files = list(archive.files)
            if len(files) != 1:
                raise InputError(f"an .npz of {len(files)} arrays ({', '.join(files)}); give one array, a .npy")
            a = archive[files[0]]
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"an array of {a.dtype}, not of numbers")
    shapes = [(n_in,)] + ([(side, side)] if side else [])
    if a.shape in shapes:
        a = a.reshape(1, n_in)
    elif a.ndim >= 2 and a.shape[1:] in shapes and len(a):
        a = a.reshape(len(a), n_in)
    else:
        wanted = f"({n_in},)" + (f" or ({side}, {side})" if side else "")
        raise InputError(f"an array of shape {a.shape}; the network takes examples of shape {wanted}, one or a "
                         f"stack of them")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError("it holds NaN or infinite numbers; the network takes inputs in [0, 1]")
    if a.min() < 0 or a.max() > 1:
        if a.min() < 0:
            fix = "scale them into [0, 1], as the training inputs were"
        elif a.max() <= 16 and np.all(a == np.round(a)):  # scikit-learn's own digits, 0 to 16, read as they are
            fix = "scikit-learn's 8×8 digits run 0 to 16: divide them by 16, as fbp.data.digits does; bytes by 255"
        else:
            fix = "divide bytes by 255"
        raise InputError(f"its numbers run from {a.min():g} to {a.max():g}; the network was trained on inputs "
                         f"in [0, 1] ({fix})")
    return a


INK = 0.25  # --crop: a pixel is ink where it reaches this fraction of the image's brightest (after turning over)


def image_input(path: str, side: int, invert: str = "auto", crop: bool = False, margin: float = 0.0,
                center: str = "box") -> tuple:
    """An image file as one input of a network trained on side × side
    images: grey levels (colours by their luminance, ITU-R 601, transparency
    over white), inverted when ``invert`` is "yes", or "auto" and its
    border is lighter than mid-grey (training images are light ink, 1, on a
    dark ground, 0, and a drawing or a photograph of a page is the other way
    round); with ``crop``, cut to the box around its ink (the pixels of at
    least ``INK`` times the brightest) and ``margin`` times its side added
    around it on each side; padded with the dark ground to a square (its
    shape kept, as Fashion-MNIST's images were made and MNIST's centred),
    then scaled as a whole to side × side by averaging the pixels each new
    one covers (Pillow's box filter); with ``center`` "mass", moved then by
    whole pixels so that its centre of mass is at the middle, as MNIST's
    digits were placed (as near as its ink lets, none of it moved out of
    the frame: ``_centred_by_mass``). Returns (the (side²,) input in
    [0, 1], a note of what was done); InputError for a file that is not an
    image."""
    import numpy as np

    try:
        import matplotlib.image as mpimg
        from PIL import Image
    except ImportError:
        raise InputError("reading images needs matplotlib (and its Pillow): pip install matplotlib, or give "
                         "the input as a .npy array") from None
    if os.path.isdir(path):
        raise InputError("a directory, not an image file")
    if not os.path.isfile(path):
        raise InputError("no such file")
    try:
        img = np.asarray(mpimg.imread(path))
    except (OSError, ValueError, SyntaxError) as e:  # Pillow says an unknown format with an OSError
        raise InputError(f"not an image matplotlib can read ({e})") from None
    if np.issubdtype(img.dtype, np.integer):
        img = img / float(np.iinfo(img.dtype).max)
    img = img.astype(np.float64)
    if img.ndim == 3 and img.shape[2] in (2, 4):  # with transparency: over a white page
        alpha = img[..., -1:]
        img = img[..., :-1] * alpha + (1 - alpha)
    if img.ndim == 3:
        img = img[..., 0] if img.shape[2] == 1 else img[..., :3] @ np.array([0.299, 0.587, 0.114])
    if img.ndim != 2 or min(img.shape) == 0:
        raise InputError(f"an image of shape {img.shape}, not a picture")
    notes = [f"{img.shape[1]}×{img.shape[0]} image"]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    flip = invert == "yes" or (invert == "auto" and float(np.mean(border)) > 0.5)
    if flip:
        img = 1 - img
        notes.append("inverted")
    rows, cols = np.nonzero(img >= INK * img.max()) if img.max() > 0 else (np.arange(0), np.arange(0))
    hint = ""
    if crop and len(rows):
        img = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        notes.append(f"cropped to its ink, {img.shape[1]}×{img.shape[0]}")
    elif not crop and len(rows):
        filled = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) / img.size
        if filled < 0.4:  # the object is small in its frame, where the training images fill theirs
            hint = f"; its ink fills {filled:.0%} of it: --crop?"
    height, width = img.shape
    pad = int(round(margin * max(height, width)))
    # to a square on the dark ground, its shape kept, as MNIST and Fashion-MNIST framed theirs
    if height != width or pad:
        side_now = max(height, width) + 2 * pad
        top, left = (side_now - height) // 2, (side_now - width) // 2
        square = np.zeros((side_now, side_now))
        square[top:top + height, left:left + width] = img
        img = square
        notes.append("padded to a square" if not pad else f"padded to a square, a margin of {margin:g} of its side")
    resampling = getattr(Image, "Resampling", Image)  # Pillow ≥ 9.1 names its filters there
    if img.shape[0] != side:
        img = np.asarray(Image.fromarray(img.astype(np.float32)).resize((side, side), resampling.BOX), np.float64)
        notes.append(f"scaled to {side}×{side}")
    img = np.clip(img, 0, 1)
    if center == "mass" and img.sum() > 0:
        img, moved = _centred_by_mass(img)
        notes.append(f"moved {moved[1]:+d}, {moved[0]:+d} pixels to centre its mass" if any(moved) else
                     "its mass centred already")
    if float(np.ptp(img)) <= 1 / 255:  # the input within one 8-bit grey level: a blank page, or a save gone wrong
        hint = "; it comes out one flat shade: a blank image?"
    return img.reshape(-1), ", ".join(notes) + hint


def _centred_by_mass(img) -> tuple:
    """``img`` (side × side, ≥ 0, not all 0) moved by whole pixels, the
    ground filling in, so that its centre of mass Σ v·(row, col) / Σ v comes
    to the middle, (side − 1) / 2 each way, as near as whole pixels allow and
    no further than keeps every pixel of ink (as --crop counts it: at least
    INK times the brightest) in the frame; and the move (rows, cols)."""
    import numpy as np

    side = img.shape[0]
    at = np.arange(side)
    mass = img.sum()
    centre = ((img.sum(axis=1) @ at) / mass, (img.sum(axis=0) @ at) / mass)
    rows, cols = np.nonzero(img >= INK * img.max())  # ink as --crop counts it; the ground's faint rest may go
    moves = []
    for c, ink in zip(centre, (rows, cols)):
        want = int(np.round((side - 1) / 2 - c))
        moves.append(int(np.clip(want, -ink.min(), side - 1 - ink.max())))
    dr, dc = moves
    out = np.zeros_like(img)
    out[max(dr, 0):side + min(dr, 0), max(dc, 0):side + min(dc, 0)] = \
        img[max(-dr, 0):side + min(-dr, 0), max(-dc, 0):side + min(-dc, 0)]
    return out, (dr, dc)

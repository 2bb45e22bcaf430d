"""`fbp predict`: a saved network on inputs of one's own, image files and
.npy arrays, as fbp.forward gives their outputs."""

import functools
import json
import re

import jax
import matplotlib.image as mpimg
import numpy as np
import pytest

import fbp
from fbp import checkpoint as ckpt
from fbp import data as fdata

from training_helpers import fbp_here


@pytest.fixture(scope="module")
def digits_net(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("predict") / "net.npz")
    from fbp.cli import main

    assert main(["train", "--epochs", "3", "--quiet", "--sizes", "64,20,10", "--save-params", path]) == 0
    return path


def test_predict_reads_images_as_the_training_images_and_arrays_as_they_are(digits_net, tmp_path, capsys):
    """Digits drawn 5 times larger, dark on white (as a drawing is), come
    back inverted and scaled to 8×8: the class fbp.forward gives the image
    they were made from; a .npy of rows gives fbp.forward's outputs."""
    params = fbp.load_params(digits_net)
    X = fdata.load("digits", None, None).test.X[:8]
    exact = np.asarray(fbp.forward(params, X), np.float64)
    files = []
    for i, x in enumerate(X):
        files.append(str(tmp_path / f"d{i}.png"))
        mpimg.imsave(files[-1], 1 - np.kron(x.reshape(8, 8), np.ones((5, 5))), cmap="gray", vmin=0, vmax=1)
    light = str(tmp_path / "light.png")  # light ink on a dark ground, as the training images: left as it is
    mpimg.imsave(light, np.kron(X[0].reshape(8, 8), np.ones((3, 3))), cmap="gray", vmin=0, vmax=1)
    rows = str(tmp_path / "rows.npy")
    np.save(rows, X)
    r = fbp_here(capsys, "predict", digits_net, *files, light, rows)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"fbp predict: {digits_net} (64,20,10, trained on digits); for each input its class "
                               f"and output a^L (probabilities), then the next 2 likeliest")
    shown = [re.match(r"  (\S+) +(\d)  ([\d.]+)  \(then (\d) ([\d.]+), (\d) ([\d.]+)\)(?:  \[(.*)\])?$", line)
             for line in lines[1:]]
    assert all(shown) and [m.group(1) for m in shown] == files + [light] + [f"{rows}[{i}]" for i in range(8)]
    for m, out in zip(shown[9:], exact):  # the arrays: fbp.forward's outputs, its three largest
        order = np.argsort(-out)[:3]
        assert [int(m.group(k)) for k in (2, 4, 6)] == list(order)
        assert [m.group(k) for k in (3, 5, 7)] == [f"{out[c]:.3f}" for c in order]
    for m, out in zip(shown[:8], exact):  # the images: 8-bit grey levels, so the outputs within 0.02
        assert int(m.group(2)) == int(np.argmax(out)) and abs(float(m.group(3)) - out.max()) < 0.02
        assert m.group(8) == "40×40 image, inverted, scaled to 8×8"
    assert shown[8].group(8) == "24×24 image, scaled to 8×8" and int(shown[8].group(2)) == int(np.argmax(exact[0]))
    # --json -: every class's output; --invert no leaves the drawing dark on white, and it reads otherwise
    r = fbp_here(capsys, "predict", digits_net, rows, files[0], "--json", "-")
    record = json.loads(r.stdout)
    np.testing.assert_allclose([p["outputs"] for p in record["predictions"][:8]], exact, rtol=1e-6, atol=1e-9)
    assert [p["predicted"] for p in record["predictions"][:8]] == list(np.argmax(exact, axis=1))
    assert record["predictions"][8]["note"] == "40×40 image, inverted, scaled to 8×8"
    # scaling averages the pixels each new one covers: a 16×16 checkerboard is a grey of 0.5 at 8×8
    board = str(tmp_path / "board.png")
    mpimg.imsave(board, np.indices((16, 16)).sum(0) % 2, cmap="gray", vmin=0, vmax=1)
    r = fbp_here(capsys, "predict", digits_net, board, "--json", "-")
    p = json.loads(r.stdout)["predictions"][0]
    np.testing.assert_allclose(p["outputs"], fbp.forward(params, np.full(64, 0.5)), rtol=1e-5, atol=1e-7)
    assert p["note"].endswith("; it comes out one flat shade: a blank image?")  # what the network is given
    # a wide image is padded with the dark ground to a square, not squashed: a band of ink 8 high and 16 wide
    # is the middle half of the rows at 8×8
    band = str(tmp_path / "band.png")
    mpimg.imsave(band, np.ones((8, 16)), cmap="gray", vmin=0, vmax=1)
    r = fbp_here(capsys, "predict", digits_net, band, "--invert", "no", "--json", "-")
    p = json.loads(r.stdout)["predictions"][0]
    assert p["note"] == "16×8 image, padded to a square, scaled to 8×8"
    np.testing.assert_allclose(p["outputs"], fbp.forward(params, np.repeat([0.0, 1.0, 0.0], [16, 32, 16])),
                               rtol=1e-5, atol=1e-7)
    # --crop: an image small in a large page is cut to its ink first; without it the note says so
    framed = X[3].reshape(8, 8).copy()
    framed[[0, 0, -1, -1], [0, -1, 0, -1]] = 1.0  # ink in the corners: the ink's box is the whole 8×8
    page = np.ones((60, 80))
    page[10:34, 30:54] = 1 - np.kron(framed, np.ones((3, 3)))
    small = str(tmp_path / "small.png")
    mpimg.imsave(small, page, cmap="gray", vmin=0, vmax=1)
    r = fbp_here(capsys, "predict", digits_net, small, "--json", "-")
    assert json.loads(r.stdout)["predictions"][0]["note"] == ("80×60 image, inverted, padded to a square, scaled to "
                                                              "8×8; its ink fills 12% of it: --crop?")
    r = fbp_here(capsys, "predict", digits_net, small, "--crop", "--json", "-")
    p = json.loads(r.stdout)["predictions"][0]
    assert p["note"] == "80×60 image, inverted, cropped to its ink, 24×24, scaled to 8×8"
    np.testing.assert_allclose(p["outputs"], fbp.forward(params, framed.reshape(-1)), atol=0.02)
    r = fbp_here(capsys, "predict", digits_net, small, "--crop", "--margin", "0.25", "--json", "-")
    assert json.loads(r.stdout)["predictions"][0]["note"] == (
        "80×60 image, inverted, cropped to its ink, 24×24, padded to a square, a margin of 0.25 of its side, "
        "scaled to 8×8")
    # an image of one flat shade (a blank page, white or black) is read, and the note asks whether it is meant
    for shade, how in ((1.0, "inverted, "), (0.0, "")):
        blank = str(tmp_path / f"blank{shade:g}.png")
        mpimg.imsave(blank, np.full((20, 20), shade), cmap="gray", vmin=0, vmax=1)
        r = fbp_here(capsys, "predict", digits_net, blank, "--json", "-")
        assert json.loads(r.stdout)["predictions"][0]["note"] == (f"20×20 image, {how}scaled to 8×8; it comes "
                                                                  f"out one flat shade: a blank image?")
    r = fbp_here(capsys, "predict", digits_net, files[0], "--invert", "no", "--top", "1", "--json", "-")
    kept = json.loads(r.stdout)["predictions"][0]
    assert kept["note"] == "40×40 image, scaled to 8×8" and kept["outputs"] != record["predictions"][8]["outputs"]


def test_predict_names_fashion_mnist_classes_and_refuses_inputs_it_cannot_use(digits_net, tmp_path, capsys):
    fashion = str(tmp_path / "fashion.npz")
    net = fbp.init_mlp(jax.random.key(0), [784, 5, 10], output_activation="softmax")
    fbp.save_params(fashion, net, dict(data_flag="fashion-mnist"))
    x = str(tmp_path / "x.npy")
    np.save(x, np.full((28, 28), 0.5))
    r = fbp_here(capsys, "predict", fashion, x, "--top", "2")
    assert r.returncode == 0, r.stderr
    out = np.asarray(fbp.forward(net, np.full(784, 0.5)))
    first, second = np.argsort(-out)[:2]
    names = fdata.CLASS_NAMES["fashion-mnist"]
    column = max(len(f"{c} {name}") for c, name in enumerate(names))  # the classes' column, as wide as its widest
    assert r.stdout.splitlines()[1] == (f"  {x}  {f'{first} {names[first]}':<{column}}  {out[first]:.3f}  (then "
                                        f"{second} {names[second]} {out[second]:.3f})")
    (tmp_path / "text.png").write_text("not an image")
    np.save(tmp_path / "wide.npy", np.zeros((3, 65)))
    np.save(tmp_path / "bytes.npy", np.full((2, 64), 255))
    np.save(tmp_path / "raw_digit.npy", np.arange(64) % 17)  # load_digits().data[k] as scikit-learn gives it
    np.save(tmp_path / "signed.npy", np.linspace(-1, 1, 64))
    np.save(tmp_path / "nan.npy", np.full(64, np.nan))
    np.savez(tmp_path / "two.npz", a=np.zeros(64), b=np.zeros(64))
    small = str(tmp_path / "small.npz")
    fbp.save_params(small, fbp.init_mlp(jax.random.key(0), [10, 3, 2]))
    for argv, needle in (([digits_net, str(tmp_path / "none.png")], "none.png: no such file"),
                         ([digits_net, str(tmp_path)], f"{tmp_path}: a directory, not an image file"),
                         ([digits_net, str(tmp_path / "text.png")], "text.png: not an image matplotlib can read"),
                         ([digits_net, str(tmp_path / "wide.npy")], "wide.npy: an array of shape (3, 65); the "
                                                                    "network takes examples of shape (64,) or (8, 8)"),
                         ([digits_net, str(tmp_path / "bytes.npy")], "bytes.npy: its numbers run from 255 to 255; "
                                                                     "the network was trained on inputs in [0, 1] "
                                                                     "(divide bytes by 255)"),
                         ([digits_net, str(tmp_path / "raw_digit.npy")], "raw_digit.npy: its numbers run from 0 to 16; "
                          "the network was trained on inputs in [0, 1] (scikit-learn's 8×8 digits run 0 to 16: divide "
                          "them by 16, as fbp.data.digits does; bytes by 255)"),
                         ([digits_net, str(tmp_path / "signed.npy")], "signed.npy: its numbers run from -1 to 1; the "
                          "network was trained on inputs in [0, 1] (scale them into [0, 1], as the training inputs "
                          "were)"),
                         ([digits_net, str(tmp_path / "nan.npy")], "nan.npy: it holds NaN or infinite numbers"),
                         ([digits_net, str(tmp_path / "two.npz")], "two.npz: an .npz of 2 arrays (a, b); give one "
                                                                   "array, a .npy"),
                         ([small, str(tmp_path / "text.png")], "the network takes 10 numbers, not a square image"),
                         ([str(tmp_path / "none.npz"), x], "none.npz: no such file")):
        r = fbp_here(capsys, "predict", *argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
        assert r.stdout == ""


def test_predict_explain_lists_the_training_examples_behind_each_prediction(digits_net, tmp_path, capsys,
                                                                            monkeypatch):
    """--explain: with each input, the training examples whose gradients,
    the input's predicted class its target, have the largest and smallest
    products with the input's; the same, to float32's rounding, as jax.grad's
    gradients of all 1257 training examples and of the input give, their
    cosines and the input's cost and ‖∇C_x‖ too (--json holds them); the
    inputs taken two at a time here, as 1,000 are by default."""
    from fbp import cli_evaluate
    from fbp.cli import trained_with

    monkeypatch.setattr(cli_evaluate, "EXPLAINED_AT_ONCE", 2)

    params, meta = fbp.load_params(digits_net, with_meta=True)
    meta = trained_with(meta)
    ds = fdata.load("digits", None, meta["validation"])
    X = np.stack([ds.test.X[3], ds.test.X[40], np.full(64, 0.5, np.float32)])
    rows = str(tmp_path / "rows.npy")
    np.save(rows, X)
    r = fbp_here(capsys, "predict", digits_net, rows, "--explain", "--json", "-")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["explain"] == dict(data="digits", training_examples=len(ds.train), cost_function=meta["cost"],
                                  over_checkpoints=False, ranked_by="product", target=None)
    r = fbp_here(capsys, "predict", digits_net, rows, "--explain", "--explain-by", "cosine", "--json", "-")
    assert r.returncode == 0, r.stderr
    by_cosine = json.loads(r.stdout)
    assert by_cosine["explain"]["ranked_by"] == "cosine"
    f64 = functools.partial(jax.tree.map, lambda a: a.astype(np.float64))

    def grads(X, Y):  # each example's gradient by jax.grad, one row each, in float64
        g = jax.vmap(jax.grad(fbp.example_loss), in_axes=(None, 0, 0, None))(params, X, Y, meta["cost"])
        return np.concatenate([np.asarray(leaf, np.float64).reshape(len(X), -1) for leaf in jax.tree.leaves(g)], 1)

    G = grads(ds.train.X, ds.train.Y)
    labels = np.argmax(ds.train.Y, axis=1)
    predicted = np.argmax(np.asarray(fbp.forward(params, X)), axis=1)
    for x, c, p, q in zip(X, predicted, got["predictions"], by_cosine["predictions"]):
        assert p["predicted"] == c
        y = np.eye(10, dtype=np.float32)[c]
        gx = grads(x[None], y[None])[0]
        dots = G @ gx
        e = p["explain"]
        np.testing.assert_allclose(e["cost"], float(fbp.example_loss(f64(params), x.astype(np.float64), y,
                                                                     meta["cost"])), rtol=1e-5)
        np.testing.assert_allclose(e["grad_norm"], np.linalg.norm(gx), rtol=1e-5)
        for key, top in (("helps", np.sort(dots)[::-1][:5]), ("hurts", np.sort(dots)[:5])):
            listed = e[key]
            assert len(listed) == 5 and all(np.sign(top) == (1 if key == "helps" else -1))
            # the five largest (smallest) products, those of the rows listed, in order
            np.testing.assert_allclose([item["product"] for item in listed], top, rtol=1e-4)
            at = [item["row"] for item in listed]
            np.testing.assert_allclose([item["product"] for item in listed], dots[at], rtol=1e-4)
            np.testing.assert_allclose([item["cos"] for item in listed],
                                       dots[at] / np.linalg.norm(G[at], axis=1) / np.linalg.norm(gx), rtol=1e-4)
            assert [item["true"] for item in listed] == list(labels[at])
        # --explain-by cosine: the five largest (smallest) cosines, whatever the sizes of the gradients
        cosines = dots / np.linalg.norm(G, axis=1) / np.linalg.norm(gx)
        for key, top in (("helps", np.sort(cosines)[::-1][:5]), ("hurts", np.sort(cosines)[:5])):
            listed = q["explain"][key]
            np.testing.assert_allclose([item["cos"] for item in listed], top, rtol=1e-4)
            at = [item["row"] for item in listed]
            np.testing.assert_allclose([item["cos"] for item in listed], cosines[at], rtol=1e-4)
            np.testing.assert_allclose([item["product"] for item in listed], dots[at], rtol=1e-4)
    # --explain-class 3: every input's lists are of its cost at class 3, whatever it was taken for
    r = fbp_here(capsys, "predict", digits_net, rows, "--explain", "--explain-class", "3", "--json", "-")
    assert r.returncode == 0, r.stderr
    at3 = json.loads(r.stdout)
    assert at3["explain"]["target"] == 3 and got["explain"]["target"] is None
    y3 = np.eye(10, dtype=np.float32)[3]
    for x, p in zip(X, at3["predictions"]):
        dots = G @ grads(x[None], y3[None])[0]
        assert p["explain"]["target"] == 3
        np.testing.assert_allclose([i["product"] for i in p["explain"]["helps"]], np.sort(dots)[::-1][:5], rtol=1e-4)
        np.testing.assert_allclose([i["product"] for i in p["explain"]["hurts"]], np.sort(dots)[:5], rtol=1e-4)
    from fbp.cli import class_named

    names = fdata.CLASS_NAMES["fashion-mnist"]  # a network whose data names its classes takes names, in any case
    assert [class_named(t, 10, names) for t in ("ankle BOOT", " 9", "T-shirt/top")] == [9, 9, 0]
    assert class_named("boot", 10, names) == ("--explain-class boot: the network's classes are 0 T-shirt/top, 1 "
                                               "Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, "
                                               "8 Bag, 9 Ankle boot")
    for bad in ("10", "three"):  # digits name no classes: numbers only
        r = fbp_here(capsys, "predict", digits_net, rows, "--explain", "--explain-class", bad)
        assert r.returncode == 2 and r.stderr == (f"fbp predict: error: --explain-class {bad}: the network's "
                                                  f"classes are 0 to 9\n"), r.stderr
    # the text: each input's line, its cost, then its ten training rows
    drawn = tmp_path / "explain.png"
    r = fbp_here(capsys, "predict", digits_net, rows, "--explain", "--top", "1", "--explain-images", str(drawn))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith(f"with each input, the digits training examples (of the {len(ds.train)}) whose "
                               f"gradient g_n points most with and against")
    first = got["predictions"][0]
    assert lines[2].startswith(f"  {rows}[0]  {first['predicted']}  ")
    assert lines[3] == (f"    its cost at {first['predicted']} {first['explain']['cost']:.4f}, ‖∇C_x‖ "
                        f"{first['explain']['grad_norm']:.4f}")
    h = first["explain"]["helps"][0]
    assert lines[4] == (f"    helps most  row {h['row']:>4}  true {h['true']}  g_n · g_x {h['product']:>+10.4g}  "
                        f"cos {h['cos']:+.3f}")
    assert len(lines) == 2 + 3 * 12 + 1 and lines[-1] == f"wrote {drawn}: 3 inputs and 30 training images"
    assert mpimg.imread(drawn).ndim == 3  # two rows of six for each input


def test_predict_explain_over_checkpoints_is_evaluate_explain_for_a_row_it_gets_right(tmp_path, capsys):
    """--explain --over-checkpoints sums the products over a run's
    checkpoints as fbp evaluate --explain ROW --over-checkpoints does: for a
    test row the network gets right (its predicted class its true one), the
    same lists; and the flags that need --explain, a run, or data that fits
    are refused in a line."""
    run = str(tmp_path / "run")
    r = fbp_here(capsys, "train", "--epochs", "3", "--quiet", "--sizes", "64,12,10", "--keep-every", "1",
                 "--checkpoint-dir", run)
    assert r.returncode == 0, r.stderr
    ds = fdata.load("digits", None, None)
    params = fbp.load_params(run)
    predicted = np.argmax(np.asarray(fbp.forward(params, ds.test.X)), axis=1)
    row = int(np.flatnonzero(predicted == np.argmax(ds.test.Y, axis=1))[0])
    x = str(tmp_path / "x.npy")
    np.save(x, ds.test.X[row])
    r = fbp_here(capsys, "predict", run, x, "--explain", "--over-checkpoints", "--json", "-")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    r = fbp_here(capsys, "evaluate", run, "--explain", str(row), "--over-checkpoints", "--json", "-")
    assert r.returncode == 0, r.stderr
    want = json.loads(r.stdout)
    assert got["explain"]["checkpoints"] == want["checkpoints"] and len(want["checkpoints"]) == 3
    e = got["predictions"][0]["explain"]
    for key in ("helps", "hurts"):
        assert [i["row"] for i in e[key]] == [i["row"] for i in want["explain"][key]]
        np.testing.assert_allclose([i["product"] for i in e[key]], [i["product"] for i in want["explain"][key]],
                                   rtol=1e-5)
    r = fbp_here(capsys, "predict", run, x, "--explain", "--over-checkpoints")
    assert r.stdout.splitlines()[1].startswith("TracIn over the run's 3 checkpoints w_i, of epochs 1, 2, 3")
    # --explain-by cosine over the run: the five largest and smallest of stats.tracin(..., cosine=True) with the
    # checkpoints weighing as the JSON says, η_i times the epochs each stands for
    r = fbp_here(capsys, "predict", run, x, "--explain", "--over-checkpoints", "--explain-by", "cosine", "--json", "-")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["predictions"][0]["explain"]
    weighted = [(fbp.load_params(ckpt.path_of(run, c["epoch"])), c["lr"] * c["epochs_spanned"])
                for c in got["explain"]["checkpoints"]]
    y = np.eye(10, dtype=np.float32)[[predicted[row]]]
    cos = np.asarray(fbp.stats.tracin(weighted, ds.train.X, ds.train.Y, "log_likelihood", ds.test.X[row:row + 1], y,
                                      cosine=True))[:, 0]
    np.testing.assert_allclose([i["cos"] for i in e["helps"]], np.sort(cos)[::-1][:5], rtol=1e-4)
    np.testing.assert_allclose([i["cos"] for i in e["hurts"]], np.sort(cos)[:5], rtol=1e-4)
    three = str(tmp_path / "three.npz")  # 64 inputs, but 3 classes: not a digits network
    fbp.save_params(three, fbp.init_mlp(jax.random.key(0), [64, 5, 3]), dict(data_flag="digits"))
    one = str(tmp_path / "one.npz")
    fbp.save_params(one, params, dict(data_flag="digits"))
    for argv, needle in (([run, x, "--over-checkpoints"], "--over-checkpoints sums --explain's products over a "
                                                          "run's checkpoints; give --explain too"),
                         ([run, x, "--explain-by", "cosine"], "--explain-by cosine ranks --explain's lists; give "
                                                              "--explain too"),
                         ([run, x, "--explain-class", "3"], "--explain-class 3 picks the class --explain's lists "
                                                            "are of; give --explain too"),
                         ([run, x, "--data", "digits"], "--data digits names the data whose training examples "
                                                        "--explain lists; give --explain too"),
                         ([run, x, "--explain-images", str(tmp_path / "e.png")], "draws --explain's lists; give "
                                                                                 "--explain too"),
                         ([one, x, "--explain", "--over-checkpoints"], f"--over-checkpoints sums over the "
                                                                       f"checkpoints of a run, and {one} is one file"),
                         ([one, x, "--explain", "--data", "iris"], "invalid choice"),
                         ([three, x, "--explain"], "the network (64,5,3) does not fit digits (64 inputs, 10 "
                                                   "classes); give the --data it was trained on"),
                         ([one, x, "--explain", "--validation", "2000"],
                          "--validation: validation size must be in [0, 1437)"),
                         ([one, x, "--explain", "--explain-images", str(tmp_path / "e.txt")],
                          "--explain-images"),
                         ([run, x, "--explain", "--data", "fashion-mnist", "--data-dir", str(tmp_path)],
                          "fashion-mnist")):
        r = fbp_here(capsys, "predict", *argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, (argv, r.stderr)
        assert r.stdout == ""


def test_predict_center_mass_places_the_object_as_mnist_placed_its_digits(tmp_path, capsys):
    """--crop --margin 0.2 --center mass: MNIST's framing, the object in the
    middle 20 of 28 pixels, then moved by whole pixels so that its centre of
    mass is at the middle; an L whose mass sits low and left ends within
    half a pixel of the middle, where --center box leaves it over a pixel
    off; ink at the frame's edge is moved only as far as keeps all of it."""
    from fbp.cli_predict import image_input

    shape = np.zeros((40, 30))
    shape[:, :6] = 1.0  # an L: a bar down the left, a heavy foot along the bottom
    shape[-12:, :] = 1.0
    page = np.ones((300, 260))
    page[120:200, 90:150] = 1 - np.kron(shape, np.ones((2, 2)))
    path = str(tmp_path / "L.png")
    mpimg.imsave(path, page, cmap="gray", vmin=0, vmax=1)
    at = np.arange(28)

    def centre(x):
        img = x.reshape(28, 28)
        return np.array([img.sum(axis=1) @ at, img.sum(axis=0) @ at]) / img.sum()

    box, note_box = image_input(path, 28, crop=True, margin=0.2)
    mass, note_mass = image_input(path, 28, crop=True, margin=0.2, center="mass")
    rows = np.flatnonzero(box.reshape(28, 28).max(axis=1) > 0.5)
    assert rows.max() - rows.min() + 1 == 20  # the object's longer side: 20 of the 28 pixels
    assert np.max(np.abs(centre(box) - 13.5)) > 1 and np.max(np.abs(centre(mass) - 13.5)) <= 0.5
    assert mass.sum() == pytest.approx(box.sum(), rel=1e-12)  # moved, none of it lost
    dr, dc = np.round(centre(box) - centre(mass)).astype(int)
    assert note_mass == note_box + f", moved {-dc:+d}, {-dr:+d} pixels to centre its mass"
    # ink from edge to edge (no --crop, no margin): a bar across the top and a block at the left, whose mass asks
    # to go right; the bar would leave the frame, so it moves down only
    edge = np.ones((28, 28))
    edge[0:3, :] = 0.0  # dark on a white page: inverted, ink across the whole width
    edge[8:20, 0:8] = 0.0
    side_path = str(tmp_path / "edge.png")
    mpimg.imsave(side_path, edge, cmap="gray", vmin=0, vmax=1)
    kept, _ = image_input(side_path, 28)
    moved, note = image_input(side_path, 28, center="mass")
    ink = moved.reshape(28, 28) > 0.5
    assert ink.sum() == (kept.reshape(28, 28) > 0.5).sum() and ink[:, 0].any() and ink[:, -1].any()  # all of it
    assert abs(centre(moved)[0] - 13.5) <= 0.5 and centre(moved)[1] == pytest.approx(centre(kept)[1])
    assert abs(centre(kept)[1] - 13.5) > 3  # its mass is left of the middle, and stays there
    assert note.endswith(f"moved +0, {round(13.5 - centre(kept)[0]):+d} pixels to centre its mass")
    net = str(tmp_path / "net.npz")
    fbp.save_params(net, fbp.init_mlp(jax.random.key(0), [784, 5, 10]))
    r = fbp_here(capsys, "predict", net, path, "--crop", "--margin", "0.2", "--center", "mass", "--json", "-")
    assert r.returncode == 0 and json.loads(r.stdout)["predictions"][0]["note"] == note_mass, r.stderr


def test_explain_by_influence_is_each_gradient_through_the_damped_kfac_inverse(digits_net, tmp_path, capsys):
    """--explain-by influence: the lists of g_nᵀ H̃⁻¹ g_x, H̃ the damped K-FAC
    Gauss-Newton matrix of the training set, as jax.grad's gradients of all
    1257 training examples give them, each layer's [∂w | ∂b] of the input
    carried through H̃⁻¹ as G̃⁻¹ M Ã⁻¹ (the Kronecker product's inverse, not
    fbp's outer-product route), in float64 from the float32 network; the
    cosines over √(gᵀ H̃⁻¹ g); fbp predict for an input and fbp evaluate
    --explain ROW for a test row; a convolutional network's (KFC's
    factors); and the refusals."""
    params, meta = fbp.load_params(digits_net, with_meta=True)
    cost = meta["cost"]
    ds = fdata.load("digits", None, meta["validation"])
    eps = 0.01

    def references(params):
        """reference(x, c): the influences and H̃⁻¹-cosines of the training examples on input x, target c."""
        factors = fbp.stats.kfac_factors(jax.tree.map(lambda a: np.asarray(a, np.float64), params),
                                         ds.train.X.astype(np.float64), ds.train.Y.astype(np.float64), cost)
        inverses = [[np.linalg.inv(F + np.sqrt(eps) * np.trace(F) / len(F) * np.eye(len(F)))
                     for F in (np.asarray(A, np.float64), np.asarray(G, np.float64))] for A, G in factors]

        def grads(X, Y):  # each example's [∂w | ∂b] per layer by jax.grad, in float64: (B, n_out, n_in + 1)
            g = jax.vmap(jax.grad(fbp.example_loss), in_axes=(None, 0, 0, None))(params, X, Y, cost)
            return [np.concatenate([np.asarray(layer.w, np.float64).reshape(len(X), layer.w.shape[1], -1),
                                    np.asarray(layer.b, np.float64)[:, :, None]], 2) for layer in g]

        def through(M):  # H̃⁻¹ g per layer: G̃⁻¹ M Ã⁻¹
            return [np.einsum("ij,bjk,kl->bil", Gi, m, Ai) for (Ai, Gi), m in zip(inverses, M)]

        train = grads(ds.train.X, ds.train.Y)
        own = np.sum([np.sum(m * p, axis=(1, 2)) for m, p in zip(train, through(train))], axis=0)  # g_nᵀ H̃⁻¹ g_n

        def reference(x, c):
            gx = grads(x[None], np.eye(10, dtype=np.float32)[[c]])
            pre = through(gx)
            infl = np.sum([np.einsum("bij,ij->b", m, p[0]) for m, p in zip(train, pre)], axis=0)
            return infl, infl / np.sqrt(own) / np.sqrt(np.sum([np.sum(m * p) for m, p in zip(gx, pre)]))

        return reference

    reference = references(params)

    def check(listed, infl, cos, by):
        ranked = infl if by == "influence" else cos
        for key, top in (("helps", np.sort(ranked)[::-1][:5]), ("hurts", np.sort(ranked)[:5])):
            items = listed[key]
            assert len(items) == 5
            np.testing.assert_allclose([i["influence" if by == "influence" else "cos"] for i in items], top,
                                       rtol=2e-3)
            at = [i["row"] for i in items]
            np.testing.assert_allclose([i["influence"] for i in items], infl[at], rtol=2e-3)
            np.testing.assert_allclose([i["cos"] for i in items], cos[at], rtol=2e-3)

    x = ds.test.X[40]
    xs = str(tmp_path / "x.npy")
    np.save(xs, x)
    c = int(np.argmax(np.asarray(fbp.forward(params, x[None]))[0]))
    infl, cos = reference(x, c)
    for by in ("influence", "influence-cosine"):
        r = fbp_here(capsys, "predict", digits_net, xs, "--explain", "--explain-by", by, "--damping", str(eps),
                     "--json", "-")
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["explain"]["ranked_by"] == by and got["explain"]["damping"] == eps
        check(got["predictions"][0]["explain"], infl, cos, by)
    row = 17  # fbp evaluate --explain ROW: its true class the target
    infl, cos = reference(ds.test.X[row], int(np.argmax(ds.test.Y[row])))
    r = fbp_here(capsys, "evaluate", digits_net, "--explain", str(row), "--explain-by", "influence-cosine",
                 "--damping", str(eps), "--json", "-")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["explain"]
    assert e["ranked_by"] == "influence-cosine" and e["damping"] == eps
    check(e, infl, cos, "influence-cosine")
    r = fbp_here(capsys, "evaluate", digits_net, "--explain", str(row), "--explain-by", "influence")
    assert r.returncode == 0, r.stderr
    assert "influence g_nᵀ H̃⁻¹ g_x" in r.stdout and "damping ε = 0.001" in r.stdout
    assert re.search(r"helps most  row +\d+  true \d  g_nᵀ H̃⁻¹ g_x +[-+][0-9.e+-]+  H̃⁻¹-cos [-+]0\.\d{3}\n",
                     r.stdout)
    assert "; H̃⁻¹-cos its cosine, the influence over √(g_nᵀ H̃⁻¹ g_n) √(g_xᵀ H̃⁻¹ g_x):\n" in r.stdout
    drawn = tmp_path / "influence.png"  # --explain-images: the pictures' titles name the H̃⁻¹-cosine too
    r = fbp_here(capsys, "predict", digits_net, xs, "--explain", "--explain-by", "influence", "--explain-images",
                 str(drawn))
    assert r.returncode == 0 and r.stdout.endswith(f"wrote {drawn}: 1 input and 10 training images\n"), r.stderr
    from fbp import cli_evaluate

    titles = cli_evaluate.explained_pictures(x, "x", ([1, 2], [3]), {1: 0.5, 2: 0.25, 3: -0.125}, ds.train.X,
                                             np.zeros(len(ds.train), int), str, "H̃⁻¹-cos")[1]
    assert titles[1:3] == ["helps: row 1\n0, H̃⁻¹-cos +0.50", "helps: row 2\n0, H̃⁻¹-cos +0.25"]
    assert titles[7] == "hurts: row 3\n0, H̃⁻¹-cos -0.12"
    # a convolutional network: its layers' factors KFC's, carried through in the same way
    conv_params = fbp.init_convnet(jax.random.key(0), (8, 8), [(2, 3, 2)], [10], output_activation="softmax")
    conv = str(tmp_path / "conv.npz")
    fbp.save_params(conv, conv_params, dict(data_flag="digits", cost=cost))
    c = int(np.argmax(np.asarray(fbp.forward(conv_params, x[None]))[0]))
    infl, cos = references(conv_params)(x, c)
    r = fbp_here(capsys, "predict", conv, xs, "--explain", "--explain-by", "influence", "--damping", str(eps),
                 "--json", "-")
    assert r.returncode == 0, r.stderr
    check(json.loads(r.stdout)["predictions"][0]["explain"], infl, cos, "influence")
    sigmoid = str(tmp_path / "sigmoid.npz")  # the log-likelihood of a sigmoid output: no Gauss-Newton matrix here
    fbp.save_params(sigmoid, fbp.init_mlp(jax.random.key(0), [64, 5, 10]), dict(data_flag="digits",
                                                                                   cost="log_likelihood"))
    for argv, needle in (
            (["evaluate", digits_net, "--explain", "3", "--damping", "0.1"],
             "--damping 0.1 is the damping of H̃ for --explain-by influence and influence-cosine; give one of them, "
             "or drop --damping"),
            (["predict", digits_net, xs, "--damping", "0.1"],
             "--damping 0.1 is the damping of --explain-by influence; give --explain too"),
            (["evaluate", digits_net, "--explain", "3", "--explain-by", "influence", "--over-checkpoints"],
             "--explain-by influence is of one network, at its trained minimum, and --over-checkpoints sums "
             "TracIn's products over a run's checkpoints; drop one of them"),
            # with --factors too (it was let through, --over-checkpoints then ignored)
            (["evaluate", digits_net, "--explain", "all", "--explain-by", "influence", "--over-checkpoints",
              "--factors", str(tmp_path / "f.npz")],
             "--explain-by influence is of one network, at its trained minimum, and --over-checkpoints sums "
             "TracIn's products over a run's checkpoints; drop one of them"),
            (["evaluate", sigmoid, "--explain", "3", "--explain-by", "influence-cosine"],
             "--explain-by influence-cosine: the Gauss-Newton matrix (diag_ggn, kfac_factors, influence) is known "
             "for the costs quadratic and mse with any output, log_likelihood with a softmax output and "
             "cross_entropy with a sigmoid one; got cost 'log_likelihood' with output activation 'sigmoid'; rank "
             "by product or cosine")):
        r = fbp_here(capsys, *argv)
        assert r.returncode == 2 and r.stderr == f"fbp {argv[0]}: error: {needle}\n" and r.stdout == "", r.stderr
    assert not (tmp_path / "f.npz").exists()  # refused before any factors were computed or written

"""`fbp predict`: a saved network on inputs of one's own, image files and
.npy arrays, as fbp.forward gives their outputs."""

import json
import re

import jax
import matplotlib.image as mpimg
import numpy as np
import pytest

import fbp
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
    np.testing.assert_allclose(json.loads(r.stdout)["predictions"][0]["outputs"],
                               fbp.forward(params, np.full(64, 0.5)), rtol=1e-5, atol=1e-7)
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
                                                                     "the network was trained on inputs in [0, 1]"),
                         ([digits_net, str(tmp_path / "nan.npy")], "nan.npy: it holds NaN or infinite numbers"),
                         ([digits_net, str(tmp_path / "two.npz")], "two.npz: an .npz of 2 arrays (a, b); give one "
                                                                   "array, a .npy"),
                         ([small, str(tmp_path / "text.png")], "the network takes 10 numbers, not a square image"),
                         ([str(tmp_path / "none.npz"), x], "none.npz: no such file")):
        r = fbp_here(capsys, "predict", *argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
        assert r.stdout == ""

"""`fbp trace`: backpropagation's every number for one example of a small
network, as the book writes BP1-BP4, checked here against the book's own
arithmetic done in NumPy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fbp

from training_helpers import fbp_here


def _refused(capsys, argv, needle):
    """fbp trace with ``argv`` exits 2 with one line naming the problem (``needle`` in it), and prints nothing."""
    r = fbp_here(capsys, "trace", *argv)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert r.stdout == ""


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("output,cost", [("sigmoid", "quadratic"), ("softmax", "log_likelihood"),
                                         ("sigmoid", "cross_entropy"), ("softmax", "quadratic")])
def test_trace_gives_the_books_numbers_for_each_step(capsys, output, cost):
    r = fbp_here(capsys, "trace", "--sizes", "3,4,2", "--output-activation", output, "--cost", cost, "--seed", "5",
                 "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    ws = [np.asarray(layer["w"]) for layer in t["layers"]]
    bs = [np.asarray(layer["b"]) for layer in t["layers"]]
    x, y = np.asarray(t["x"]), np.asarray(t["y"])
    # rounded to 2 decimals, so that the arithmetic can start from what is shown
    assert all(float(f"{v:.2f}") == v for a in ws + bs + [x] for v in a.reshape(-1))
    assert t["label"] in (0, 1) and np.array_equal(y, np.eye(2)[t["label"]])
    z2 = ws[0] @ x + bs[0]
    a2 = _sigmoid(z2)
    z3 = ws[1] @ a2 + bs[1]
    if output == "sigmoid":
        a3 = _sigmoid(z3)
        d3 = (a3 - y) * a3 * (1 - a3) if cost == "quadratic" else a3 - y  # BP1; σ' cancels the cross-entropy's
    else:
        a3 = np.exp(z3) / np.sum(np.exp(z3))
        J = np.diag(a3) - np.outer(a3, a3)
        d3 = a3 - y if cost == "log_likelihood" else J.T @ (a3 - y)
    d2 = (ws[1].T @ d3) * a2 * (1 - a2)  # BP2
    for got, want in ((t["layers"][0]["z"], z2), (t["layers"][0]["a"], a2), (t["layers"][1]["z"], z3),
                      (t["layers"][1]["a"], a3), (t["layers"][1]["delta"], d3), (t["layers"][0]["delta"], d2),
                      (t["layers"][1]["grad_b"], d3), (t["layers"][0]["grad_b"], d2),  # BP3
                      (t["layers"][1]["grad_w"], np.outer(d3, a2)), (t["layers"][0]["grad_w"], np.outer(d2, x))):  # BP4
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert t["autodiff_max_relative"] <= 1e-14 and t["finite_differences_max_relative"] <= 1e-7  # ch. 2's nudges
    # and the gap it reports is BP3 and BP4's own from jax.grad of the same C (not a figure that only looks small)
    net = [fbp.Dense(jnp.asarray(w), jnp.asarray(b), act) for w, b, act in zip(ws, bs, ("sigmoid", output))]
    auto = fbp.autodiff_grad(net, jnp.asarray(x)[None], jnp.asarray(y)[None], cost)
    gap = max(float(np.max(np.abs(np.asarray(layer[key]) - np.asarray(getattr(a, key[-1])))))
              for layer, a in zip(t["layers"], auto) for key in ("grad_w", "grad_b"))
    assert t["autodiff_max_difference"] == pytest.approx(gap, rel=1e-6, abs=0)
    assert t["delta_norms"] == pytest.approx([np.linalg.norm(d2), np.linalg.norm(d3)], rel=1e-12)  # ch. 5's speeds
    # the printed trace shows the same numbers, to --digits decimals, under the book's labels
    r = fbp_here(capsys, "trace", "--sizes", "3,4,2", "--output-activation", output, "--cost", cost, "--seed", "5",
                 "--digits", "6")
    lines = r.stdout.splitlines()
    shown = "[" + ", ".join(f"{v + 0.0:.6f}" for v in np.round(d3, 6)) + "]"
    assert f"       δ³ = {shown}" in lines
    assert any(line.startswith("  BP1  δ³ = " + ("a³ − y" if (output, cost) in (("sigmoid", "cross_entropy"),
                                                                                ("softmax", "log_likelihood"))
                                                 else "J(z³)ᵀ ∇_a C" if output == "softmax" else "∇_a C ⊙ σ'(z³)"))
               for line in lines)
    assert "  BP2  δ² = ((w³)ᵀ δ³) ⊙ σ'(z²)" in lines
    assert lines[-1].startswith("jax.grad of the same C: the largest difference from BP3 and BP4 ")
    assert ("; finite differences, the book's ch. 2 way (each of the 26 weights and biases nudged by ±h, 52 costs): "
            "relative ") in lines[-1]


MAZUR = ["--weights", "0.15,0.2;0.25,0.3|0.4,0.45;0.5,0.55", "--biases", "0.35,0.35|0.6,0.6",
         "--input", "0.05,0.1", "--target", "0.01,0.99", "--lr", "0.5"]


def test_trace_weights_typed_in_give_a_published_worked_examples_numbers(tmp_path, capsys):
    """--weights and --biases: the network of M. Mazur's "A Step by Step
    Backpropagation Example" (2015, mattmazur.com), a 2-2-2 sigmoid network
    with the quadratic cost, its published numbers to the nine decimals it
    gives: out_h1, out_h2, net_o1, out_o1, out_o2, E_total; after one step at
    η = 0.5 its w1..w8 (its step leaves the biases, which are not compared)."""
    r = fbp_here(capsys, "trace", *MAZUR, "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    hidden, out = t["layers"]
    assert t["sizes"] == [2, 2, 2] and hidden["w"] == [[0.15, 0.2], [0.25, 0.3]] and out["b"] == [0.6, 0.6]
    published = ((hidden["a"], [0.593269992, 0.596884378]), (out["z"][:1], [1.105905967]),
                 (out["a"], [0.75136507, 0.772928465]), ([t["cost"]], [0.298371109]),
                 (t["step"]["layers"][0]["w"], [[0.149780716, 0.19956143], [0.24975114, 0.29950229]]),
                 (t["step"]["layers"][1]["w"], [[0.35891648, 0.408666186], [0.511301270, 0.561370121]]))
    for got, want in published:
        np.testing.assert_allclose(got, want, rtol=0, atol=6e-9)
    assert t["autodiff_max_relative"] <= 1e-14
    head = fbp_here(capsys, "trace", *MAZUR).stdout.splitlines()[0]
    assert head.endswith("cost=quadratic weights and biases given seed=0")  # nothing rounded: as typed
    tiny = str(tmp_path / "tiny.npz")
    fbp.save_params(tiny, fbp.init_mlp(jax.random.key(0), [2, 3, 2]))
    for argv, needle in ((["--weights", "1,2;3", "--biases", "0,0"], "--weights: w²'s rows have 2, 1 numbers"),
                         (["--weights", "1,2;3,4|1,2,3", "--biases", "0,0|0"], "--weights: w³ has 3 numbers a row, "
                                                                               "and layer 2 has 2 neurons"),
                         (["--weights", "1,2;3,4|1,2", "--biases", "0,0"], "--biases: 2 numbers, and --weights' "
                                                                           "layers have 2|1 neurons"),
                         (["--weights", "1,2;3,4", "--biases", "0,0", "--sizes", "2,3"],
                          "--sizes 2,3, and --weights makes 2,2; give one or the other"),
                         (["--weights", "1,2;3,4"], "give each b^l too, with --biases"),
                         (["--biases", "0,0"], "give each w^l too, with --weights"),
                         (["--weights", "1,x", "--biases", "0"], "--weights 1,x: w²: row 1: expected numbers "
                                                                 "separated by commas"),
                         (["--weights", "1,2|3", "--biases", "0|"], "--biases 0|: b³: expected numbers separated by "
                                                                    "commas"),
                         (["--weights", "1,2;3,4|5,6", "--biases", "0,0|0", "--output-activation", "softmax"],
                          "--output-activation softmax over the one output neuron of --weights is always 1"),
                         (["--weights", "1,2", "--biases", "0", "--init", "he"], "drop --init"),
                         (["--params", tiny, "--weights", "1,2", "--biases", "0"], "drop --weights, --biases")):
        _refused(capsys, argv, needle)


def test_trace_steps_repeat_the_step_as_gradient_descent_on_the_same_examples(capsys):
    """--steps N: --lr's step N times over, BP1-BP4 again before each: on
    Mazur's network the costs and the final weights are those of the book's
    update done N times in NumPy, with and without --momentum (the book's
    v → μ v − η ∇C, w → w + v); on a mini-batch with --l2 and dropout the
    first cost is the one step's and the descent lowers it."""
    descents: dict = {}  # each run's costs in NumPy, by momentum
    for momentum in (None, 0.9):  # plain gradient descent, and the book's momentum (ch. 3)
        r = fbp_here(capsys, "trace", *MAZUR, "--steps", "50", "--json", "-",
                     *(["--momentum", str(momentum)] if momentum else []))
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)["step"]
        assert s["steps"] == 50 and len(s["costs"]) == 50 and s["costs"][0] == pytest.approx(s["cost"], rel=1e-12)
        assert s["momentum"] == momentum
        params = [np.array([[0.15, 0.2], [0.25, 0.3]]), np.array([0.35, 0.35]), np.array([[0.4, 0.45], [0.5, 0.55]]),
                  np.array([0.6, 0.6])]  # w², b², w³, b³
        v = [np.zeros_like(p) for p in params]
        x, y, costs = np.array([0.05, 0.1]), np.array([0.01, 0.99]), []
        for _ in range(50):  # the book's update, one example, η = 0.5: v → μ v − η ∇C, w → w + v
            w2, b2, w3, b3 = params
            a2 = _sigmoid(w2 @ x + b2)
            a3 = _sigmoid(w3 @ a2 + b3)
            d3 = (a3 - y) * a3 * (1 - a3)
            d2 = (w3.T @ d3) * a2 * (1 - a2)
            v = [(momentum or 0) * vi - 0.5 * g for vi, g in zip(v, (np.outer(d2, x), d2, np.outer(d3, a2), d3))]
            params = [p + vi for p, vi in zip(params, v)]
            w2, b2, w3, b3 = params
            costs.append(0.5 * np.sum((_sigmoid(w3 @ _sigmoid(w2 @ x + b2) + b3) - y) ** 2))
        np.testing.assert_allclose(s["costs"], costs, rtol=1e-10)
        for got, want in zip([s["final"][i // 2]["wb"[i % 2]] for i in range(4)], params):
            np.testing.assert_allclose(got, want, rtol=1e-10)
        descents[momentum] = costs
    plain = descents[None]
    lines = fbp_here(capsys, "trace", *MAZUR, "--steps", "50", "--digits", "6").stdout.splitlines()
    assert any(line.startswith("the same step taken 50 times (BP1-BP4 again before each, the example and masks the "
                               f"same): C after step 1: {plain[0]:.6f}, 2: {plain[1]:.6f}, 3: ") and
               line.endswith(f", 20: {plain[19]:.6f}, 50: {plain[49]:.6f}") for line in lines)
    r = fbp_here(capsys, "trace", "--batch", "3", "--lr", "3", "--l2", "0.5", "--dropout", "0.3", "--steps", "20",
                 "--json", "-")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["step"]
    assert s["costs"][0] == pytest.approx(s["cost"], rel=1e-12) and s["costs"][-1] < s["costs"][0]
    for argv, needle in ((["--steps", "5"], "--steps 5 takes --lr's step of gradient descent again and again; give "
                                            "--lr too"),
                         (["--lr", "1", "--steps", "100001"], "--steps 100001: 100,000 at most"),
                         (["--lr", "1", "--momentum", "0.9"], "--momentum 0.9 carries a velocity from step to step; "
                                                              "give --lr and --steps N too")):
        _refused(capsys, argv, needle)


CONV_TYPED_IN = [  # --conv, --weights, --biases, and the kernels as (maps, channels, k, k)
    ("2:2:1,2:2:1", "1,0,0,-1;0.5,0.5,-0.5,0.5|0.3,-0.2,0.1,0.4;-0.6,0.2,0.5,0.1;0.2,0.2,-0.1,0;0.1,-0.3,0.4,0.2"
     "|0.7,-0.3,0.2,0.1,0.3,0.2,-0.1,0.4;-0.4,0.5,0.6,-0.2,0.1,-0.5,0.3,0.2", "0.1,-0.1|0.05,-0.05|0,0.2",
     [[[[[1, 0], [0, -1]]], [[[0.5, 0.5], [-0.5, 0.5]]]],
      [[[[0.3, -0.2], [0.1, 0.4]], [[-0.6, 0.2], [0.5, 0.1]]], [[[0.2, 0.2], [-0.1, 0]], [[0.1, -0.3], [0.4, 0.2]]]]]),
    ("1:3:2", "1,0,-1,2,0,-2,1,0,-1|0.5;-0.5", "0.1|0,0", [[[[[1, 0, -1], [2, 0, -2], [1, 0, -1]]]]])]


@pytest.mark.parametrize("conv,weights,biases,kernels", CONV_TYPED_IN)
def test_trace_weights_typed_in_with_conv_take_kernels_and_give_the_ch6_numbers(capsys, conv, weights, biases,
                                                                                   kernels):
    """--weights with --conv: each conv layer's kernels a row each (map j
    over channel i in row j·channels + i + 1, k·k numbers row by row), then
    the fully connected layers' rows; the trace of a 4×4 image through them
    is the ch. 6 loops' over the same numbers. Typed-in kernels that do not
    fit are refused with what each layer takes."""
    x = "0.12,0.85,0.33,0.47,0.91,0.06,0.58,0.24,0.7,0.39,0.15,0.64,0.28,0.97,0.51,0.8"
    r = fbp_here(capsys, "trace", "--conv", conv, "--weights", weights, "--biases", biases, "--input", x, "--target",
                 "0", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    *convs, dense = t["layers"]
    assert [layer["w"] for layer in convs] == kernels and t["sizes"][0] == 16 and t["sizes"][-1] == 2
    assert dense["w"] == [[float(v) for v in row.split(",")] for row in weights.split("|")[-1].split(";")]
    assert [layer["b"] for layer in t["layers"]] == [[float(v) for v in b.split(",")] for b in biases.split("|")]
    by_hand, cost = _conv_net_by_hand(convs, dense, t["x"], t["y"], [np.ones(len(layer["z"])) for layer in convs])
    for layer, want in zip(t["layers"], by_hand):
        for key in want.keys() & {"conv", "z", "delta", "delta_unpooled", "grad_b", "grad_w"}:
            np.testing.assert_allclose(layer[key], want[key], rtol=1e-12, atol=1e-15)
    assert t["cost"] == pytest.approx(cost, rel=1e-12) and t["autodiff_max_relative"] <= 1e-13


def test_trace_weights_typed_in_with_conv_refuse_kernels_that_do_not_fit(capsys):
    """Kernels typed in for an image whose size comes from --input, --sizes
    or --data, and the refusals of kernels, rows and biases that do not fit
    the layers --conv makes."""
    from fbp import data as fdata

    ones = ";".join([",".join(["0.05"] * 9)] * 10)  # a 3×3 kernel over the 8×8 digits, pooled to 3×3: 9 inputs
    r = fbp_here(capsys, "trace", "--data", "digits", "--row", "3", "--conv", "1:3:2", "--weights",
                 f"0.1,0,0,0,0.2,0,0,0,0.3|{ones}", "--biases", "0|" + ",".join(["0"] * 10), "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["sizes"] == [64, 9, 10] and t["layers"][0]["w"] == [[[[0.1, 0, 0], [0, 0.2, 0], [0, 0, 0.3]]]]
    np.testing.assert_array_equal(t["x"], fdata.load("digits", None, 0).test.X[3])
    x = ",".join(["0.5"] * 16)
    for argv, needle in ((["--conv", "2:2:1", "--weights", "1,0,0,1|1;2", "--biases", "0,0|0,0", "--input", x],
                          "--weights: w² has 1 row of 4 numbers, and layer 2 (--conv 2:2:1) sweeps 2 maps over 1 "
                          "channel: give 2 kernels (map j over channel i in row j·1 + i + 1), each 2×2 = 4 numbers"),
                         (["--conv", "1:2:1", "--weights", "1,0,0|1;2", "--biases", "0|0,0", "--input", x],
                          "--weights: w² has 1 row of 3 numbers, and layer 2 (--conv 1:2:1) sweeps 1 map"),
                         (["--conv", "1:2:1", "--weights", "1,0,0,1|1,2;3,4", "--biases", "0|0,0", "--input", x],
                          "--weights: w³'s rows have 2, 2 numbers, and layer 2 hands on 9 (its units, map after "
                          "map)"),
                         (["--conv", "1:2:1", "--weights", "1,0,0,1|1,2,3,4,5,6,7,8,9", "--biases", "0,0|0",
                           "--input", x], "--biases: b² has 2 numbers, and layer 2 has 1 map"),
                         (["--conv", "1:2:1", "--weights", "1,0,0,1", "--biases", "0", "--input", x],
                          "--weights has 1 layer, and --conv 1:2:1 gives 1 convolutional; give their kernels, then "
                          "each fully connected layer's w^l"),
                         (["--conv", "1:2:1", "--weights", "1,0,0,1|1,2,3,4,5,6,7,8,9", "--biases", "0|0"],
                          "--weights with --conv: kernels do not say how large the image is; give --sizes N,… (N its "
                          "pixels, like 16 for a 4×4 image), --input or --data"),
                         (["--conv", "1:2:1", "--weights", "1,0,0,1|1,2,3,4,5,6,7,8,9", "--biases", "0|0", "--sizes",
                           "15,1"], "--conv needs square images"),
                         (["--conv", "1:2:1", "--weights", "1,0,0,1|1,2,3,4,5,6,7,8,9", "--biases", "0|0", "--sizes",
                           "16,2"], "--sizes 16,2, and --weights makes 16,1 after its kernels"),
                         (["--conv", "1:2:1", "--weights", "1,0,0,1|1,2,3,4,5,6,7,8,9", "--biases", "0"],
                          "--biases has 1 layer, and --weights 2")):
        _refused(capsys, argv, needle)


def test_trace_l2_and_l1_add_the_books_weight_terms_and_the_step_is_weight_decay(capsys):
    """--l2 λ and --l1 λ (the book's ch. 3): C = C₀ + (λ/2n) Σ w² (+ (λ/n) Σ |w|),
    ∂C/∂w^l = BP4's ∂C₀/∂w^l + (λ/n) w^l (+ (λ/n) sgn(w^l), sgn(0) = 0), the
    biases untouched, and the step w^l → (1 − ηλ/n) w^l − η ∂C₀/∂w^l."""
    r = fbp_here(capsys, "trace", "--sizes", "3,4,2", "--seed", "2", "--l2", "0.6", "--train-size", "4", "--lr", "2",
                 "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    ws = [np.asarray(layer["w"]) for layer in t["layers"]]
    bs = [np.asarray(layer["b"]) for layer in t["layers"]]
    term = 0.6 / 8 * sum(np.sum(w * w) for w in ws)
    assert t["penalty"] == pytest.approx(dict(l2=0.6, l1=0.0, n=4, term=term, cost=t["cost"] + term), rel=1e-12)
    for layer, after, w, b in zip(t["layers"], t["step"]["layers"], ws, bs):
        np.testing.assert_allclose(layer["grad_w_total"], np.asarray(layer["grad_w"]) + 0.15 * w, rtol=1e-14)
        # the book's weight decay: (1 − ηλ/n) w − η ∂C₀/∂w; the biases as without the term
        np.testing.assert_allclose(after["w"], (1 - 2 * 0.15) * w - 2 * np.asarray(layer["grad_w"]), rtol=1e-13)
        np.testing.assert_allclose(after["b"], b - 2 * np.asarray(layer["grad_b"]), rtol=1e-14)
    w2, w3 = (np.asarray(layer["w"]) for layer in t["step"]["layers"])
    b2, b3 = (np.asarray(layer["b"]) for layer in t["step"]["layers"])
    a3 = _sigmoid(w3 @ _sigmoid(w2 @ np.asarray(t["x"]) + b2) + b3)
    after = 0.5 * np.sum((a3 - np.asarray(t["y"])) ** 2) + 0.6 / 8 * (np.sum(w2 * w2) + np.sum(w3 * w3))
    assert t["step"]["cost"] == pytest.approx(after, rel=1e-12)
    lines = fbp_here(capsys, "trace", "--sizes", "3,4,2", "--seed", "2", "--l2", "0.6", "--train-size", "4", "--lr",
                     "2").stdout.splitlines()
    assert any(line.startswith("  BP4  ∂C₀/∂w³ = δ³ (a²)ᵀ = [[") for line in lines)
    assert any(line.startswith("        C = C₀ + (λ/2n) Σ_l ‖w^l‖² = ")
               and line.endswith("(λ = 0.6, n = 4; the biases have no term)") for line in lines)
    assert any("with the L2 term that is w^l → (1 − ηλ/n) w^l − η ∂C₀/∂w^l, the book's weight decay" in line
               for line in lines)
    assert lines[-1].startswith("jax.grad of the same C₀: ")
    # L1, with a weight of exactly 0 (sgn(0) = 0), n the one example traced
    r = fbp_here(capsys, "trace", "--weights", "0,1;2,-3|1,0", "--biases", "0,0|0", "--l1", "0.3", "--json", "-")
    t = json.loads(r.stdout)
    for layer in t["layers"]:
        w = np.asarray(layer["w"])
        np.testing.assert_allclose(layer["grad_w_total"], np.asarray(layer["grad_w"]) + 0.3 * np.sign(w), rtol=1e-14)
    assert t["penalty"]["n"] == 1 and t["penalty"]["term"] == pytest.approx(0.3 * 7)
    # a mini-batch: n defaults to its m examples
    t = json.loads(fbp_here(capsys, "trace", "--batch", "3", "--l2", "1", "--json", "-").stdout)
    for layer in t["layers"]:
        np.testing.assert_allclose(layer["grad_w_total"], np.asarray(layer["grad_w"]) + np.asarray(layer["w"]) / 3,
                                   rtol=1e-14)
    r = fbp_here(capsys, "trace", "--train-size", "5")
    assert r.returncode == 2 and "--train-size 5 is the n of --l2's and --l1's λ/n; give --l2 or --l1 too" in r.stderr


def test_trace_dropout_shows_the_masks_where_the_book_puts_them(capsys):
    """--dropout P: the hidden layer hands on m ⊙ a, BP2 multiplies by m,
    BP4 takes m ⊙ a; the numbers as NumPy does the same arithmetic."""
    r = fbp_here(capsys, "trace", "--sizes", "3,6,2", "--dropout", "0.5", "--seed", "2", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    (m,) = [np.asarray(v) for v in t["masks"]]
    assert set(m) == {0.0, 2.0}  # some units dropped, the others kept and doubled
    w2, w3 = (np.asarray(layer["w"]) for layer in t["layers"])
    b2, b3 = (np.asarray(layer["b"]) for layer in t["layers"])
    x, y = np.asarray(t["x"]), np.asarray(t["y"])
    a2 = _sigmoid(w2 @ x + b2)
    a3 = _sigmoid(w3 @ (m * a2) + b3)
    d3 = (a3 - y) * a3 * (1 - a3)
    d2 = (w3.T @ d3) * m * a2 * (1 - a2)
    for got, want in ((t["layers"][1]["a"], a3), (t["layers"][0]["delta"], d2),
                      (t["layers"][1]["grad_w"], np.outer(d3, m * a2)), (t["layers"][0]["grad_w"], np.outer(d2, x))):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert t["autodiff_max_relative"] <= 1e-14
    lines = fbp_here(capsys, "trace", "--sizes", "3,6,2", "--dropout", "0.5", "--seed", "2").stdout.splitlines()
    assert "  BP2  δ² = ((w³)ᵀ δ³) ⊙ m² ⊙ σ'(z²)" in lines
    assert any(line.startswith("  BP4  ∂C/∂w³ = δ³ (m² ⊙ a²)ᵀ = ") for line in lines)


def test_trace_lr_takes_the_step_of_gradient_descent_and_it_lowers_the_cost(capsys):
    r = fbp_here(capsys, "trace", "--sizes", "2,3,2", "--lr", "0.5", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    for layer, after in zip(t["layers"], t["step"]["layers"], strict=True):
        np.testing.assert_allclose(after["w"], np.asarray(layer["w"]) - 0.5 * np.asarray(layer["grad_w"]), rtol=1e-15)
        np.testing.assert_allclose(after["b"], np.asarray(layer["b"]) - 0.5 * np.asarray(layer["grad_b"]), rtol=1e-15)
    stepped = [fbp.Dense(jnp.asarray(a["w"]), jnp.asarray(a["b"]), "sigmoid") for a in t["step"]["layers"]]
    after = float(fbp.example_loss(stepped, jnp.asarray(t["x"]), jnp.asarray(t["y"]), fbp.get_cost("quadratic")))
    assert t["step"]["cost"] == pytest.approx(after, rel=1e-12) and after < t["cost"]
    printed = fbp_here(capsys, "trace", "--sizes", "2,3,2", "--lr", "0.5").stdout
    assert f"cost    C = {after:.4f} after the step ({t['cost']:.4f} before)" in printed


def test_trace_takes_a_saved_network_its_input_and_target_and_refuses_what_it_cannot_show(tmp_path, capsys):
    tiny = str(tmp_path / "tiny.npz")
    net = fbp.init_mlp(jax.random.key(3), [2, 3, 2], output_activation="softmax", dtype=jnp.float64)
    fbp.save_params(tiny, net, dict(cost="log_likelihood"))
    r = fbp_here(capsys, "trace", "--params", tiny, "--input", "0.2,0.9", "--target", "0.3,0.7", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["cost_function"] == "log_likelihood" and t["x"] == [0.2, 0.9] and t["y"] == [0.3, 0.7]
    assert t["label"] is None and t["layers"][0]["w"] == np.asarray(net[0].w).tolist()  # its numbers as they are
    g = fbp.backward(net, jnp.array([0.2, 0.9]), jnp.array([0.3, 0.7]), "log_likelihood")
    np.testing.assert_array_equal(t["layers"][1]["grad_w"], np.asarray(g[1].w))
    conv = str(tmp_path / "conv.npz")
    conv_net = fbp.init_convnet(jax.random.key(0), (4, 4), [(2, 3, 1)], [2], dtype=jnp.float64)
    fbp.save_params(conv, conv_net)
    r = fbp_here(capsys, "trace", "--params", conv, "--json", "-")  # a saved convolutional network, 4×4 images
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert [layer["kind"] for layer in t["layers"]] == ["convolutional", "fully_connected"] and len(t["x"]) == 16
    g = fbp.backward(conv_net, jnp.asarray(t["x"]), jnp.asarray(t["y"]), "quadratic")
    np.testing.assert_array_equal(t["layers"][0]["grad_w"], np.asarray(g[0].w))
    heading = fbp_here(capsys, "trace", "--params", conv).stdout.splitlines()[0]  # its input drawn, and it says so
    assert heading.endswith(f"network={conv} seed=0 (input drawn uniformly from [0, 1), not a data set's: --row N "
                            f"takes one)"), heading
    assert fbp_here(capsys, "trace", "--params", tiny, "--input", "0.2,0.9").stdout.splitlines()[0].endswith(
        f"network={tiny}")  # an input given is not drawn
    big = str(tmp_path / "big.npz")
    fbp.save_params(big, fbp.init_convnet(jax.random.key(0), (14, 14), [(2, 3, 2)], [2]))
    for argv, needle in ((["--sizes", "2,20,2"], "the network 2,20,2 has a layer of 20 units; fbp trace prints every "
                                                 "weight, so give 16 units a layer or fewer"),
                         (["--input", "0.5"], "--input 0.5: 1 number, and the network takes 2"),
                         (["--input", "a,b"], "--input a,b: expected numbers separated by commas"),
                         (["--input", "nan,1"], "--input nan,1: expected finite numbers, not NaN or infinity"),
                         (["--target", "2"], "--target 2: one number is a class, 0 to 1"),
                         (["--target", "0.5"], "--target 0.5: one number is a class, 0 to 1"),
                         (["--target", "1,0,0"], "--target 1,0,0: 3 numbers, and the network gives 2"),
                         (["--params", tiny, "--sizes", "2,3,2"], f"--params {tiny} gives the network, its layers "
                                                                  f"and activations; drop --sizes"),
                         (["--params", big], "layer 2, convolutional, takes a 14×14 image; fbp trace prints every "
                                             "number of its maps, so give images of 12×12 or smaller"),
                         (["--conv", "2:3:2", "--sizes", "35,2"], "--sizes 35,2: with --conv the input is a square "
                                                                  "image, and 35 numbers are not one"),
                         (["--conv", "5:3:2", "--sizes", "36,2"], "layer 3, fully connected, has 2 units over 20 "
                                                                  "inputs (layer 2's maps, one after the other)"),
                         (["--conv", "9:3:1,2:3:2", "--sizes", "100,2"], "layer 3, convolutional, has 18 kernels (2 "
                                                                         "maps over 9 channels)"),
                         (["--conv", "2:7:2", "--sizes", "36,2"], "--conv 2:7:2 on 6×6 images: params[0] has 7×7 "
                                                                  "kernels, larger than its 6×6 input"),
                         (["--params", conv, "--conv", "2:3:1"], "drop --conv"),
                         (["--sizes", "2,3,1", "--output-activation", "softmax"],
                          "--output-activation softmax over the one output unit of --sizes 2,3,1 is always 1"),
                         (["--output-activation", "tanh", "--cost", "log_likelihood"],
                          "--cost log_likelihood with --output-activation tanh")):
        _refused(capsys, argv, needle)


def _conv_layer(a, w, b, pool):
    """The book's ch. 6 layer, one loop a sum: c (maps, rows, columns) and z, the largest of each block + b."""
    maps, channels, k, _ = w.shape
    h, v = a.shape[1] - k + 1, a.shape[2] - k + 1
    c = np.zeros((maps, h, v))
    for j in range(maps):
        for x in range(h):
            for y in range(v):
                c[j, x, y] = sum(w[j, i, p, q] * a[i, x + p, y + q]
                                 for i in range(channels) for p in range(k) for q in range(k))
    z = np.zeros((maps, h // pool, v // pool))
    for j in range(maps):
        for x in range(h // pool):
            for y in range(v // pool):
                z[j, x, y] = c[j, x * pool:(x + 1) * pool, y * pool:(y + 1) * pool].max() + b[j]
    return c, z


def _unpooled(c, d, pool):
    """Each δ_{j,x,y} at the unit of its block that was the largest in c (the first, row by row, of a tie)."""
    out = np.zeros_like(c)
    for j in range(d.shape[0]):
        for x in range(d.shape[1]):
            for y in range(d.shape[2]):
                block = c[j, x * pool:(x + 1) * pool, y * pool:(y + 1) * pool]
                p, q = np.unravel_index(np.argmax(block), block.shape)
                out[j, x * pool + p, y * pool + q] = d[j, x, y]
    return out


def _kernel_grads(dt, a, k):
    """BP4 through a convolution: ∂C/∂w_{j,i,p,q} = Σ_{x,y} δ̃_{j,x,y} a_{i,x+p,y+q}."""
    maps, h, v = dt.shape
    return np.array([[[[sum(dt[j, x, y] * a[i, x + p, y + q] for x in range(h) for y in range(v))
                        for q in range(k)] for p in range(k)] for i in range(a.shape[0])] for j in range(maps)])


def _sent_back(w, dt, in_shape):
    """BP2's half through a convolution: Σ_j Σ_{p,q} w_{j,i,p,q} δ̃_{j,x−p,y−q} over the δ̃'s that exist."""
    maps, channels, k, _ = w.shape
    out = np.zeros(in_shape)
    for i in range(channels):
        for x in range(in_shape[1]):
            for y in range(in_shape[2]):
                out[i, x, y] = sum(w[j, i, p, q] * dt[j, x - p, y - q] for j in range(maps) for p in range(k)
                                   for q in range(k) if 0 <= x - p < dt.shape[1] and 0 <= y - q < dt.shape[2])
    return out


def _conv_net_by_hand(convs, dense, x, y, masks) -> tuple:
    """One example through sigmoid conv layers and a sigmoid output layer, quadratic cost, by loops over the
    book's ch. 6 formulas: each conv layer's c, z, δ, δ̃, ∂C/∂b and ∂C/∂w (``masks`` what dropout keeps of
    each, 1 for all without), then the output layer's δ, ∂C/∂b and ∂C/∂w; and the cost."""
    side = int(np.sqrt(len(x)))
    a, y = np.asarray(x).reshape(1, side, side), np.asarray(y)
    ins, cs, zs = [], [], []
    for layer, m in zip(convs, masks):  # forward
        c, z = _conv_layer(a, np.asarray(layer["w"]), np.asarray(layer["b"]), layer["pool"])
        ins.append(a)
        cs.append(c)
        zs.append(z)
        a = _sigmoid(z) * np.asarray(m).reshape(z.shape)  # what the next layer takes in
    W, bW = np.asarray(dense["w"]), np.asarray(dense["b"])
    aL = _sigmoid(W @ a.reshape(-1) + bW)
    dL = (aL - y) * aL * (1 - aL)  # BP1
    out = [{}] * len(convs) + [dict(delta=dL, grad_b=dL, grad_w=np.outer(dL, a.reshape(-1)))]
    d = (W.T @ dL).reshape(a.shape)  # BP2's (w^L)ᵀ δ^L read as maps
    for n in range(len(convs) - 1, -1, -1):  # BP2, BP3, BP4, last convolutional layer to first
        layer, s = convs[n], _sigmoid(zs[n])
        delta = d * np.asarray(masks[n]).reshape(d.shape) * s * (1 - s)
        dt = _unpooled(cs[n], delta, layer["pool"])
        out[n] = dict(conv=cs[n], z=zs[n].reshape(-1), delta=delta.reshape(-1), delta_unpooled=dt,
                      grad_b=delta.sum(axis=(1, 2)), grad_w=_kernel_grads(dt, ins[n], np.asarray(layer["w"]).shape[-1]))
        d = _sent_back(np.asarray(layer["w"]), dt, ins[n].shape)
    return out, 0.5 * np.sum((aL - y) ** 2)


def _row(values, width=0) -> str:
    return ", ".join(f"{v + 0.0:.6f}".rjust(width) for v in np.round(values, 6))


@pytest.mark.parametrize("conv,sizes,dropout", [("2:3:2", "36,2", "0"), ("2:3:1,2:3:2", "64,3", "0.3")])
def test_trace_conv_gives_the_books_ch6_numbers_through_pooling_and_convolution(capsys, conv, sizes, dropout):
    """--conv: each map, the pooling's routing of δ, BP2 through a
    convolution, BP3's and BP4's sums over the positions, as loops over
    the book's ch. 6 formulas compute them in NumPy (one convolutional layer,
    and two with dropout between them)."""
    r = fbp_here(capsys, "trace", "--conv", conv, "--sizes", sizes, "--dropout", dropout, "--seed", "4",
                 "--lr", "2", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    *convs, dense = t["layers"]
    assert [layer["kind"] for layer in convs] == ["convolutional"] * len(convs) and dense["kind"] == "fully_connected"
    masks = [np.asarray(m) for m in t["masks"]] if t["masks"] else [np.ones(len(layer["z"])) for layer in convs]
    assert (set(np.concatenate(masks)) == {0.0, 1 / 0.7}) if dropout != "0" else t["masks"] is None
    by_hand, _ = _conv_net_by_hand(convs, dense, t["x"], t["y"], masks)
    for layer, want in zip(convs, by_hand):
        for key in ("conv", "z", "delta", "delta_unpooled", "grad_b", "grad_w"):
            np.testing.assert_allclose(layer[key], want[key], rtol=1e-12, atol=1e-15)
    assert t["autodiff_max_relative"] <= 1e-13
    for layer, after in zip(t["layers"], t["step"]["layers"], strict=True):  # --lr: w^l − η ∂C/∂w^l, kernels too
        np.testing.assert_allclose(after["w"], np.asarray(layer["w"]) - 2 * np.asarray(layer["grad_w"]), rtol=1e-15)
    lines = fbp_here(capsys, "trace", "--conv", conv, "--sizes", sizes, "--dropout", dropout, "--seed", "4",
                     "--digits", "6").stdout.splitlines()
    first = convs[0]
    assert "  BP4  ∂C/∂w²_{j,i,p,q} = Σ_{x,y} δ̃²_{j,x,y} a¹_{i,x+p,y+q}:" in lines
    assert "  BP3  ∂C/∂b²_j = Σ_{x,y} δ²_{j,x,y} = [" + _row(first["grad_b"]) + "]" in lines
    kernel = np.asarray(first["grad_w"])[0, 0]
    width = max(len(f"{v + 0.0:.6f}") for v in np.round(kernel, 6).reshape(-1))
    at = lines.index("       ∂C/∂w²_{0,0} = [[" + _row(kernel[0], width) + "],")
    assert lines[at + 1] == " " * 23 + "[" + _row(kernel[1], width) + "],"  # the columns under one another
    if len(convs) == 2:
        assert any(line.startswith("  BP2  δ² = (w³ ⋆ δ̃³) ⊙ m² ⊙ σ'(z²), the full convolution of δ̃³")
                   for line in lines)
        assert "       δ̃² = δ² (no pooling)" in lines
        assert "  BP4  ∂C/∂w³_{j,i,p,q} = Σ_{x,y} δ̃³_{j,x,y} (m² ⊙ a²)_{i,x+p,y+q}:" in lines
    else:
        assert any(line.startswith("       δ̃²: each δ²_{j,x,y} sent back through the pooling") for line in lines)
        at = next(n for n, line in enumerate(lines) if line.startswith("       δ̃²_0 = [["))
        assert lines[at + 1].startswith(" " * 15 + "[")  # under the first row, δ̃'s tilde taking no column


@pytest.mark.parametrize("conv,sizes,dropout", [("2:3:2", "36,2", "0"), ("2:3:1,2:3:2", "64,3", "0.3")])
def test_trace_batch_of_a_conv_net_traces_each_example_and_averages_their_sums(capsys, conv, sizes, dropout):
    """--batch with --conv: each example's maps, δ's and δ̃'s as the ch. 6
    loops give them for that example alone (its own dropout masks), BP3 and
    BP4 the mean of the examples' sums over the positions, and each example's
    gradient norm, which for a conv layer is that of its formed gradient."""
    r = fbp_here(capsys, "trace", "--conv", conv, "--sizes", sizes, "--dropout", dropout, "--batch", "3", "--seed",
                 "4", "--lr", "2", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    *convs, dense = t["layers"]
    assert t["batch"] == 3 and [layer["kind"] for layer in t["layers"]] == ["convolutional"] * len(convs) + [
        "fully_connected"]
    masks = ([np.asarray(m) for m in t["masks"]] if t["masks"] else
             [np.ones((3, len(layer["z"][0]))) for layer in convs])
    kept = set(np.concatenate([m.reshape(-1) for m in masks]))
    assert (kept == {0.0, 1 / 0.7}) if dropout != "0" else t["masks"] is None
    by_hand = []
    for n in range(3):  # each example alone, its own row of every layer's record
        out, cost = _conv_net_by_hand(convs, dense, t["x"][n], t["y"][n], [m[n] for m in masks])
        for layer, want in zip(convs, out):
            for key in ("conv", "z", "delta", "delta_unpooled"):
                np.testing.assert_allclose(layer[key][n], want[key], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(dense["delta"][n], out[-1]["delta"], rtol=1e-12, atol=1e-15)
        assert t["costs"][n] == pytest.approx(cost, rel=1e-12)
        by_hand.append(out)
    for i, layer in enumerate(t["layers"]):  # the mean cost's BP3 and BP4; each example's norms
        for key in ("grad_w", "grad_b"):
            np.testing.assert_allclose(layer[key], np.mean([out[i][key] for out in by_hand], axis=0), rtol=1e-12,
                                       atol=1e-15)
            np.testing.assert_allclose(layer[key + "_norms"], [np.linalg.norm(out[i][key]) for out in by_hand],
                                       rtol=1e-12)
    norms = [np.sqrt(sum(np.sum(g[key] ** 2) for g in out for key in ("grad_w", "grad_b"))) for out in by_hand]
    np.testing.assert_allclose(t["example_grad_norms"], norms, rtol=1e-12)
    assert t["autodiff_max_relative"] <= 1e-13 and t["example_norms_max_relative"] <= 1e-13
    assert t["finite_differences_max_relative"] <= 1e-7  # each weight and kernel entry nudged, the masks held
    for layer, after in zip(t["layers"], t["step"]["layers"], strict=True):  # w − (η/m) Σ_n ∂C_n/∂w
        np.testing.assert_allclose(after["w"], np.asarray(layer["w"]) - 2 * np.asarray(layer["grad_w"]), rtol=1e-15)
    lines = fbp_here(capsys, "trace", "--conv", conv, "--sizes", sizes, "--dropout", dropout, "--batch", "3",
                     "--seed", "4", "--digits", "6").stdout.splitlines()
    assert "example 2 of the mini-batch (w^l and b^l as for example 0):" in lines
    assert sum(line.startswith("    w²_{0,0} = [[") for line in lines) == 1  # the kernels shown once
    assert "  BP4  ∂C/∂w²_{j,i,p,q} = (1/m) Σ_n Σ_{x,y} δ̃²_{n,j,x,y} a¹_{n,i,x+p,y+q}:" in lines
    assert f"  ‖∂C_n/∂θ‖ = (Σ_l ‖∂C_n/∂w^l‖² + ‖∂C_n/∂b^l‖²)^½ = [{_row(t['example_grad_norms'])}]" in lines
    assert lines[-1].startswith("jax.grad of the same C: the largest difference from BP3 and BP4 ")


@pytest.mark.parametrize("argv", [["--sizes", "3,4,2", "--seed", "6"],
                                  ["--sizes", "3,5,2", "--output-activation", "softmax", "--cost", "log_likelihood",
                                   "--dropout", "0.4", "--seed", "1"]])
def test_trace_batch_is_the_mini_batch_as_the_library_computes_it(capsys, argv):
    """--batch M: every example a row of Z, A and Δ; BP3 and BP4 of the mean
    cost, (1/m) 1ᵀΔ and (1/m) Δᵀ A; each example's gradient norm ‖δ‖ ‖a‖;
    all as NumPy gets them by forming each example's gradient, the book's
    update_mini_batch (its δ's, its outer products, their mean)."""
    r = fbp_here(capsys, "trace", "--batch", "4", *argv, "--lr", "3", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    (w2, w3), (b2, b3) = ([np.asarray(layer[k]) for layer in t["layers"]] for k in ("w", "b"))
    X, Y = np.asarray(t["x"]), np.asarray(t["y"])
    assert X.shape == (4, 3) and t["batch"] == 4 and np.array_equal(Y, np.eye(2)[t["labels"]])
    m2 = np.asarray(t["masks"][0]) if t["masks"] else np.ones((4, len(b2)))
    assert set(m2.reshape(-1)) == ({0.0, 1 / 0.6} if t["masks"] else {1.0})
    rows = []
    for x, y, m in zip(X, Y, m2):  # one example at a time, as the book's update_mini_batch
        a2 = _sigmoid(w2 @ x + b2)
        z3 = w3 @ (m * a2) + b3
        if t["output_activation"] == "softmax":
            a3 = np.exp(z3) / np.sum(np.exp(z3))
            d3, c = a3 - y, -np.sum(y * np.log(a3))
        else:
            a3 = _sigmoid(z3)
            d3, c = (a3 - y) * a3 * (1 - a3), 0.5 * np.sum((a3 - y) ** 2)
        d2 = (w3.T @ d3) * m * a2 * (1 - a2)
        grads = [np.outer(d2, x), d2, np.outer(d3, m * a2), d3]
        rows.append(dict(a2=a2, d2=d2, d3=d3, c=c, grads=grads, norm=np.sqrt(sum(np.sum(g * g) for g in grads))))
    mean = [np.mean([row["grads"][k] for row in rows], axis=0) for k in range(4)]
    for got, want in ((t["layers"][0]["a"], [row["a2"] for row in rows]),
                      (t["layers"][0]["delta"], [row["d2"] for row in rows]),
                      (t["layers"][1]["delta"], [row["d3"] for row in rows]), (t["costs"], [row["c"] for row in rows]),
                      (t["layers"][0]["grad_w"], mean[0]), (t["layers"][0]["grad_b"], mean[1]),
                      (t["layers"][1]["grad_w"], mean[2]), (t["layers"][1]["grad_b"], mean[3]),
                      (t["layers"][1]["grad_w_norms"], [np.linalg.norm(row["grads"][2]) for row in rows]),
                      (t["layers"][0]["grad_w_norms"], [np.linalg.norm(row["grads"][0]) for row in rows]),
                      (t["example_grad_norms"], [row["norm"] for row in rows])):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert t["cost"] == pytest.approx(np.mean([row["c"] for row in rows]), rel=1e-12)
    assert t["autodiff_max_relative"] <= 1e-13 and t["example_norms_max_relative"] <= 1e-13
    assert t["finite_differences_max_relative"] <= 1e-7  # of the mean cost, the masks held
    for layer, after in zip(t["layers"], t["step"]["layers"], strict=True):  # w − (η/m) Σ_n ∂C_n/∂w
        np.testing.assert_allclose(after["w"], np.asarray(layer["w"]) - 3 * np.asarray(layer["grad_w"]), rtol=1e-15)
    lines = fbp_here(capsys, "trace", "--batch", "4", *argv, "--digits", "6").stdout.splitlines()
    handed = "m²_n ⊙ a²_n" if t["masks"] else "a²_n"
    stacked = "(M² ⊙ A²)" if t["masks"] else "A²"
    assert any(line.startswith(f"  BP4  ∂C/∂w³ = (1/m) Σ_n δ³_n ({handed})ᵀ = (1/m) (Δ³)ᵀ {stacked} = [[")
               for line in lines)
    norms = "[" + ", ".join(f"{v + 0.0:.6f}" for v in np.round(t["example_grad_norms"], 6)) + "]"
    assert f"  ‖∂C_n/∂θ‖ = (Σ_l ‖δ^l_n‖² (‖a^(l−1)_n‖² + 1))^½ = {norms}" in lines
    assert lines[-1].startswith("jax.grad of the same C: the largest difference from BP3 and BP4 ")


def test_trace_batch_takes_rows_of_input_and_target_and_refuses_what_does_not_fit(capsys):
    r = fbp_here(capsys, "trace", "--input", "0.1,0.2;0.3,0.4;0.5,0.6", "--target", "1;0;0,1", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)  # three rows: a mini-batch of three, without --batch
    assert t["batch"] == 3 and t["x"] == [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    assert t["y"] == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]] and t["labels"] is None  # classes 1, 0, then a row of outputs
    lines = fbp_here(capsys, "trace", "--batch", "2", "--cost", "mse").stdout.splitlines()
    assert "cost    C = (1/m) Σ_n C_n, C_n = (1/2) Σ_j (a³_j − y_j)² of example n's a³ and y:" in lines  # n: an example
    assert any(line.startswith("       ∇_a C_n = 2(a³ − y)/2, a row an example = [[") for line in lines)
    for argv, needle in ((["--batch", "17"], "--batch gives 17 examples; fbp trace prints every example's numbers, "
                                             "so give 16 or fewer"),
                         (["--batch", "2", "--input", "0.1,0.2;0.3,0.4;0.5,0.6"],
                          "--input has 3 rows separated by ';', and --batch gives 2 examples"),
                         (["--input", "0.1,0.2;0.3,0.4", "--target", "1;0;1"],
                          "--target has 3 rows separated by ';', and --input gives 2 examples"),
                         (["--batch", "2", "--input", "0.1,0.2"], "--input has 1 row separated by ';', and "
                                                                  "--batch gives 2 examples"),
                         (["--input", "0.1,0.2;0.3,0.4", "--target", "1"], "--target has 1 row separated by ';', "
                                                                           "and --input gives 2 examples"),
                         (["--input", "0.1,0.2;0.3"], "--input 0.1,0.2;0.3: row 2 has 1 number, and the network "
                                                      "takes 2"),
                         (["--input", "0.1,0.2;1,nan"], "--input 0.1,0.2;1,nan: row 2: expected finite numbers"),
                         (["--batch", "2", "--target", "3;0"], "--target 3;0: one number a row is a class, 0 to 1"),
                         (["--batch", "2", "--target", "1,0,0;0,1"], "--target 1,0,0;0,1: row 1 has 3 numbers, and "
                                                                     "the network gives 2"),
                         (["--batch", "0"], "--batch: expected a positive integer")):
        _refused(capsys, argv, needle)


def test_the_readmes_trace_is_what_fbp_trace_prints(capsys):
    """The README shows the end of the default trace; it must not drift from
    what the command prints (all but the last line, whose 1e-17 differences
    from jax.grad may vary with the CPU)."""
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("```text\nbackward:\n") + len("```text\n")
    shown = readme[start:readme.index("```", start)].splitlines()
    printed = fbp_here(capsys, "trace").stdout.splitlines()
    assert len(shown) > 15 and printed[-len(shown):-1] == shown[:-1]
    assert shown[-1].startswith("jax.grad of the same C: the largest difference from BP3 and BP4 ")



def test_trace_data_takes_the_example_from_a_data_sets_split(tmp_path, capsys):
    """--data NAME --row N: the input and class of test image N (as fbp
    evaluate numbers its rows), through a saved conv net on the 8×8 digits
    or a new one; --split train or validation, by default of the data and
    validation size the saved net was trained with; several rows a
    mini-batch (here of a small .npz data set); and the refusals."""
    from fbp import data as fdata

    digits = fdata.load("digits", None, 0)
    net = str(tmp_path / "digits_conv.npz")
    conv_net = fbp.init_convnet(jax.random.key(2), (8, 8), [(4, 5, 2)], [10], output_activation="softmax",
                                dtype=jnp.float64)
    fbp.save_params(net, conv_net, dict(cost="log_likelihood"))
    trained = str(tmp_path / "trained_conv.npz")  # as fbp train --validation 300 --save-params writes it
    fbp.save_params(trained, conv_net, dict(cost="log_likelihood", data_flag="digits", validation=300))
    for split, row in (("train", 7), ("validation", 0)):  # the data and split it was trained with, by default
        r = fbp_here(capsys, "trace", "--params", trained, "--split", split, "--row", str(row), "--json", "-")
        assert r.returncode == 0, r.stderr
        t = json.loads(r.stdout)
        part, other = getattr(fdata.load("digits", None, 300), split), getattr(fdata.load("digits", None), split)
        assert t["data"] == dict(name="digits", split=split, rows=[row])
        assert t["label"] == int(np.argmax(part.Y[row]))
        np.testing.assert_array_equal(t["x"], part.X[row])
        assert split == "train" or not np.array_equal(part.X[row], other.X[row])  # not the default 180's row
    lines = fbp_here(capsys, "trace", "--params", trained, "--split", "train", "--row", "7").stdout.splitlines()
    assert (f"the example: train image 7 of digits (fbp evaluate --split train's row 7), its class "
            f"{int(np.argmax(fdata.load('digits', None, 300).train.Y[7]))}") in lines
    r = fbp_here(capsys, "trace", "--params", net, "--data", "digits", "--row", "5", "--json", "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    label = int(np.argmax(digits.test.Y[5]))
    assert t["data"] == dict(name="digits", split="test", rows=[5]) and t["label"] == label
    np.testing.assert_array_equal(t["x"], digits.test.X[5])
    assert t["autodiff_max_relative"] <= 1e-13
    lines = fbp_here(capsys, "trace", "--params", net, "--data", "digits", "--row", "5").stdout.splitlines()
    assert f"the example: test image 5 of digits (fbp evaluate's row 5), its class {label}" in lines
    assert lines[lines.index("input   a¹ = x, an 8×8 image:") + 1].startswith("  a¹_0 = [[")
    r = fbp_here(capsys, "trace", "--data", "digits", "--conv", "2:5:2", "--seed", "3", "--json", "-")  # a new net
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    (row,) = t["data"]["rows"]  # drawn by --seed
    assert t["sizes"][0] == 64 and t["sizes"][-1] == 10 and t["x"] == digits.test.X[row].tolist()
    printed = fbp_here(capsys, "trace", "--data", "digits", "--conv", "2:5:2", "--seed", "3").stdout
    assert printed.splitlines()[0].endswith(" seed=3 (weights and biases rounded to 2 decimals)")  # not the image
    r = fbp_here(capsys, "trace", "--params", net, "--data", "digits", "--row", "1,2", "--json", "-")  # conv, two
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["batch"] == 2 and t["labels"] == [int(c) for c in np.argmax(digits.test.Y[[1, 2]], axis=1)]
    np.testing.assert_array_equal(t["x"], digits.test.X[[1, 2]])
    small = str(tmp_path / "small.npz")  # 2×2 images: a fully connected network takes them, and a mini-batch
    rng = np.random.default_rng(0)
    np.savez(small, x_train=rng.uniform(size=(20, 2, 2)), y_train=rng.integers(0, 3, 20),
             x_test=rng.uniform(size=(6, 2, 2)), y_test=np.arange(6) % 3)
    r = fbp_here(capsys, "trace", "--data", "npz", "--data-dir", small, "--row", "4,1", "--sizes", "4,5,3", "--json",
                 "-")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    ds = fdata.load("npz", small, 0)
    assert t["batch"] == 2 and t["labels"] == [1, 1] and t["data"]["rows"] == [4, 1]
    np.testing.assert_array_equal(t["x"], ds.test.X[[4, 1]])
    tiny = str(tmp_path / "tiny.npz")
    fbp.save_params(tiny, fbp.init_mlp(jax.random.key(0), [2, 3, 2], dtype=jnp.float64))
    for argv, needle in ((["--data", "digits"], "--data digits: its examples are 64 numbers, and fbp trace shows a "
                                                "fully connected layer of 16 inputs at most; start the network with "
                                                "--conv"),
                         (["--row", "3"], "--row is for the examples of --data; give --data too"),
                         (["--split", "train"], "--split is for the examples of --data; give --data too"),
                         (["--params", net, "--row", "3"], f"--row is for the examples of --data; give --data too "
                                                           f"(--params {net} does not say what it was trained on)"),
                         (["--params", trained, "--split", "validation", "--row", "300"],
                          "--row 300: the validation split of digits has 300 examples, rows 0 to 299"),
                         (["--params", trained, "--split", "train", "--row", "1137"],  # 1,437 less its 300
                          "--row 1137: the train split of digits has 1137 examples, rows 0 to 1136"),
                         (["--params", trained, "--split", "validation", "--validation", "0"],
                          "digits has no validation examples (--validation 0?)"),
                         (["--params", net, "--data", "digits", "--row", "360"], "--row 360: the test split of digits "
                                                                                "has 360 examples, rows 0 to 359"),
                         (["--params", net, "--data", "digits", "--input", "1,2"],
                          "--input gives an example of your own, and --data digits takes it from a data set"),
                         (["--params", net, "--data", "digits", "--row", "1,2", "--batch", "3"],
                          "--row 1,2 lists 2 examples, and --batch gives 3; give one or the other"),
                         (["--params", tiny, "--data", "digits"], "--data digits: its examples are 64 numbers in 10 "
                                                                  "classes, and the network takes 2 and gives 2; give "
                                                                  "the --data it was trained on"),
                         (["--params", net, "--data", "digits", "--row", "1,1"], "row 1 is given twice"),
                         (["--data", "npz", "--data-dir", small, "--sizes", "4,3", "--batch", "7"],
                          "--batch 7: the test split of small has 6 examples")):
        _refused(capsys, argv, needle)


@pytest.mark.parametrize("argv,opening", [(["--conv", "2:3:2"], "       δ̃²: each"),
                                          (["--batch", "3"], "  BP3  ∂C/∂b³ = (1/m)")])
def test_the_readmes_conv_and_batch_traces_are_what_fbp_trace_prints(capsys, argv, opening):
    """The README's lines of `fbp trace --conv 2:3:2` (the pooling's δ̃² to
    BP4's kernels) and of `fbp trace --batch 3` (BP3 and BP4, then each
    example's gradient norm), as the command prints them, to the end of the
    backward pass."""
    import pathlib

    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("```text\n" + opening) + len("```text\n")
    shown = readme[start:readme.index("```", start)].splitlines()
    printed = fbp_here(capsys, "trace", *argv).stdout.splitlines()
    at = printed.index(shown[0])
    assert len(shown) > 8 and printed[at:at + len(shown)] == shown
    assert at + len(shown) == len(printed) - 2  # then a blank line and the difference from jax.grad

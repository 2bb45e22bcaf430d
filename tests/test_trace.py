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
    assert t["autodiff_max_relative"] <= 1e-14
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
    fbp.save_params(conv, fbp.init_convnet(jax.random.key(0), (4, 4), [(2, 3, 1)], [2]))
    for argv, needle in ((["--sizes", "2,20,2"], "the network 2,20,2 has a layer of 20 units; fbp trace prints every "
                                                 "weight, so give 16 units a layer or fewer"),
                         (["--input", "0.5"], "--input 0.5: 1 numbers, and the network takes 2"),
                         (["--input", "a,b"], "--input a,b: expected numbers separated by commas"),
                         (["--input", "nan,1"], "--input nan,1: expected finite numbers, not NaN or infinity"),
                         (["--target", "2"], "--target 2: one number is a class, 0 to 1"),
                         (["--target", "0.5"], "--target 0.5: one number is a class, 0 to 1"),
                         (["--target", "1,0,0"], "--target 1,0,0: 3 numbers, and the network gives 2"),
                         (["--params", tiny, "--sizes", "2,3,2"], f"--params {tiny} gives the network, its layers "
                                                                  f"and activations; drop --sizes"),
                         (["--params", conv], "starts with convolutional layers; fbp trace shows fully connected"),
                         (["--sizes", "2,3,1", "--output-activation", "softmax"],
                          "--output-activation softmax over the one output unit of --sizes 2,3,1 is always 1"),
                         (["--output-activation", "tanh", "--cost", "log_likelihood"],
                          "--cost log_likelihood with --output-activation tanh")):
        r = fbp_here(capsys, "trace", *argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
        assert r.stdout == ""


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

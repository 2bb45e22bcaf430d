"""x64 on for the whole suite (float32 tests ask for float32 explicitly), and
rank promotion raised, which catches silent broadcasting in outer products."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def assert_trees_close(tree, ref, rtol: float, what: str = "") -> float:
    """Same tree structure, then every leaf within rtol (normwise per leaf:
    max|x − r| ≤ rtol · max|r|). Returns the worst relative difference."""
    import fbp

    assert jax.tree.structure(tree) == jax.tree.structure(ref), (
        f"{what}: tree structures differ:\n{jax.tree.structure(tree)}\n{jax.tree.structure(ref)}"
    )
    worst = 0.0
    for path, (x, r) in zip(
        [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(ref)[0]],
        zip(jax.tree.leaves(tree), jax.tree.leaves(ref)),
    ):
        assert np.shape(x) == np.shape(r), f"{what}{path}: shape {np.shape(x)} vs {np.shape(r)}"
        assert np.all(np.isfinite(np.asarray(r))), f"{what}{path}: the reference is not finite"
        rel = fbp.relative_error(x, r)
        assert rel <= rtol, f"{what}{path}: relative difference {rel:.3e} > {rtol:.1e}"
        worst = max(worst, rel)
    return worst


@pytest.fixture(scope="session")
def trees_close():
    return assert_trees_close


@pytest.fixture(scope="module")
def digits():
    """The bundled digits (fbp.data.digits()), read once per test module."""
    from fbp import data

    return data.digits()

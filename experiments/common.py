"""What every experiment shares: its flags, where its results go, how they are written."""

import argparse
import json
import os

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small version that runs in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=RESULTS, help="directory for NAME.json and NAME.png")
    return p


def fashion_mnist_or_digits(quick: bool):
    """Fashion-MNIST when it is installed and the run is not ``--quick``,
    else scikit-learn's bundled digits."""
    from fbp import data as fdata

    if not quick:
        try:
            return fdata.fashion_mnist()
        except fdata.DataError:
            pass
    return fdata.digits()


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist"):
        return _plain(np.asarray(x).tolist())
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)
    return x


def save(out: str, name: str, results: dict, fig=None) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.json")
    with open(path, "w") as f:
        json.dump(_plain(results), f, indent=1)
    if fig is not None:
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"{name}.png"), dpi=100)
    print(f"wrote {path}" + (" and .png" if fig is not None else ""))
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

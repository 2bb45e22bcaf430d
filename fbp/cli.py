"""The command line: ``fbp check`` (and ``python -m fbp``)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def _sizes(text: str) -> list:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 784,30,10, got {text!r}")
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected at least two positive widths like 784,30,10, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _choices(names):
    return sorted(names)


def build_parser() -> argparse.ArgumentParser:
    from fbp.activations import ACTIVATIONS
    from fbp.costs import COSTS
    from fbp.network import INITS

    parser = argparse.ArgumentParser(
        prog="fbp", description="Backpropagation written by hand, checked against jax.grad."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check",
        help="compare the hand-written gradient with jax.grad and finite differences",
        description="Compare the hand-written gradient (batch_backward) with jax.grad and with "
        "central finite differences on random data, and print a per-leaf table.",
    )
    check.add_argument("--sizes", type=_sizes, default=[784, 30, 10], help="layer widths, input first (default 784,30,10)")
    check.add_argument("--activation", choices=_choices(ACTIVATIONS), default="sigmoid", help="hidden activation")
    check.add_argument("--output-activation", choices=_choices(ACTIVATIONS), default=None, help="output activation (default: --activation)")
    check.add_argument("--cost", choices=_choices(COSTS), default="quadratic")
    check.add_argument("--init", choices=_choices(INITS), default="normalized")
    check.add_argument("--batch-size", type=_positive_int, default=16)
    check.add_argument("--reduction", choices=["mean", "sum"], default="mean")
    check.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    check.add_argument("--fd-samples", type=int, default=24, help="finite-difference entries to check (0: none)")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--tol", type=float, default=None, help="fail (exit 1) above this relative difference from jax.grad (default 1e-10 in float64, 1e-4 in float32)")
    check.set_defaults(func=cmd_check)
    return parser


def cmd_check(args) -> int:
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import fbp

    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    k_params, k_x, k_y, k_fd = jax.random.split(jax.random.key(args.seed), 4)
    try:
        params = fbp.init_mlp(
            k_params, args.sizes, activation=args.activation,
            output_activation=args.output_activation, init=args.init, dtype=dtype,
        )
        n_in, n_out = args.sizes[0], args.sizes[-1]
        X = jax.random.uniform(k_x, (args.batch_size, n_in), dtype)
        labels = jax.random.randint(k_y, (args.batch_size,), 0, n_out)
        Y = jax.nn.one_hot(labels, n_out, dtype=dtype)
        report = fbp.compare_grads(params, X, Y, args.cost, args.reduction, fd_samples=args.fd_samples, key=k_fd)
    except (ValueError, TypeError) as e:
        print(f"fbp check: error: {e}", file=sys.stderr)
        return 2
    tol = args.tol if args.tol is not None else (1e-10 if args.dtype == "float64" else 1e-4)
    out = params[-1].act.name
    print(
        f"fbp check: sizes={','.join(map(str, args.sizes))} activation={args.activation} "
        f"output={out} cost={args.cost} init={args.init} batch={args.batch_size} "
        f"reduction={args.reduction} dtype={args.dtype}"
    )
    print("hand-written batch_backward vs jax.grad (rel = max|diff| / max|jax.grad| per leaf)")
    print("and vs central finite differences (fd rel = max|diff| / max|gradient| over all leaves)\n")
    print(report.table())
    ok = report.max_rel <= tol
    print(f"\n{'OK' if ok else 'FAIL'}: worst relative difference from jax.grad {report.max_rel:.2e} (tolerance {tol:.0e})")
    return 0 if ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

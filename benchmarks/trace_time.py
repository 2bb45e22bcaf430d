"""How long ``fbp trace`` takes, and how much of it is XLA compiling: for
four traces (the default, a mini-batch, a conv net, a conv mini-batch with
the L2 term and a step), the wall time of a fresh ``python -m fbp trace``
process from start to end, and, counted inside it with a ``jax.monitoring``
listener, the programs XLA compiled and their seconds. Each figure is the
median of ``--rounds`` processes. ``--against DIR`` times another checkout's
fbp (its ``fbp/`` first on PYTHONPATH) in the same rounds, the two taking
turns, so that a busy machine slows both alike.

    python benchmarks/trace_time.py [--rounds 3] [--against /path/to/old/checkout] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "default (2,3,2)": [],
    "--batch 3 --dropout 0.4": ["--batch", "3", "--dropout", "0.4"],
    "conv, dropout": ["--conv", "2:3:1,2:3:2", "--sizes", "64,3", "--dropout", "0.3", "--seed", "4"],
    "conv mini-batch, L2, a step": ["--conv", "2:3:1,2:3:2", "--sizes", "64,3", "--dropout", "0.3", "--batch", "3",
                                    "--l2", "0.5", "--lr", "1"],
}

# Run in the child: count XLA's compiles (jax's own event, public since jax 0.4) around fbp trace.
CHILD = """
import contextlib, io, json, sys
import jax.monitoring
seconds = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: seconds.append(secs) if name == "/jax/core/compile/backend_compile_duration" else None)
from fbp.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(["trace"] + sys.argv[1:])
print(json.dumps(dict(rc=rc, compiles=len(seconds), compile_s=sum(seconds))), file=sys.stderr)
"""


def one(argv: list, checkout: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # compile, as a first run does
    env["PYTHONPATH"] = checkout + os.pathsep + env.get("PYTHONPATH", "")
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD] + argv, env=env, capture_output=True, text=True,
                          cwd=checkout)  # python -c puts its directory first on the path: the checkout's fbp
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"fbp trace {' '.join(argv)} failed ({checkout}):\n{done.stderr[-2000:]}")
    counted = json.loads(done.stderr.strip().splitlines()[-1])
    return dict(wall_s=wall, compiles=counted["compiles"], compile_s=counted["compile_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--against", help="another checkout's root, timed in the same rounds")
    p.add_argument("--json")
    args = p.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"this": here} | ({"against": os.path.abspath(args.against)} if args.against else {})
    runs: dict = {case: {side: [] for side in sides} for case in CASES}
    for r in range(args.rounds):
        for case, argv in CASES.items():
            order = list(sides) if r % 2 == 0 else list(reversed(sides))  # who goes first alternates
            for side in order:
                runs[case][side].append(one(argv, sides[side]))
    print(f"fbp trace, medians of {args.rounds} fresh processes (wall time from start to end; XLA's compiles in it)")
    result = {}
    for case, by_side in runs.items():
        line, result[case] = f"{case:30s}", {}
        for side, rs in by_side.items():
            med = {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "compiles", "compile_s")}
            result[case][side] = dict(med, rounds=rs)
            line += f"  {side}: {med['wall_s']:5.2f} s, {med['compiles']:4.0f} compiles {med['compile_s']:5.2f} s"
        if args.against:
            line += f"  ({result[case]['against']['wall_s'] / result[case]['this']['wall_s']:.2f}× faster)"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(cases=CASES, sides=sides, results=result), f, indent=1)


if __name__ == "__main__":
    main()

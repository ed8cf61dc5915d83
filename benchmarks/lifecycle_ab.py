"""A/B of the lifecycle probe between two zray source trees, alternating runs.

    python -m benchmarks.lifecycle_ab BEFORE_TREE AFTER_TREE [--runs 9]

Each run is a fresh interpreter (``benchmarks.probe``) in that tree: init ->
first no-op task -> shutdown. Alternating the trees run by run spreads the
noise of a shared machine over both sides. Prints, per tree and field, the
median and the min..max spread.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

from .probe import MARK

FIELDS = ("init_only_s", "init_s", "shutdown_s")


def probe(tree, num_cpus, settle):
    # Run with the tree as cwd: its own zray and benchmarks (give both trees
    # this version of probe.py, so the figures mean the same thing).
    out = subprocess.run([sys.executable, "-m", "benchmarks.probe", "--module", "zray",
                          "--num-cpus", str(num_cpus), "--settle", str(settle)],
                         cwd=tree, capture_output=True, text=True, timeout=120)
    lines = [l for l in out.stdout.splitlines() if l.startswith(MARK)]
    if not lines:
        raise RuntimeError(f"probe in {tree} printed no result: {out.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARK):])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lifecycle_ab")
    parser.add_argument("trees", nargs=2)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--settle", type=float, default=0.5)
    args = parser.parse_args(argv)
    results = {tree: [] for tree in args.trees}
    for _ in range(args.runs):
        for tree in args.trees:
            results[tree].append(probe(os.path.abspath(tree), args.num_cpus, args.settle))
    for tree, runs in results.items():
        print(tree)
        for field in FIELDS:
            values = sorted(run[field] for run in runs)
            print(f"  {field:12} median {statistics.median(values) * 1000:7.1f} ms  "
                  f"spread {values[0] * 1000:.1f}..{values[-1] * 1000:.1f} ms  (n={len(values)})")


if __name__ == "__main__":
    main()

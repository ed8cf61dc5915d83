"""Child process for the lifecycle rows: one cold init -> first task ->
idle memory -> shutdown cycle, printed as one JSON line on stdout.

Run as `python -m benchmarks.probe --module ray`.  It has to be a fresh
interpreter: init cost and idle memory are only meaningful with nothing
warmed up or left over from earlier rows.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

MARK = "##probe "


def _tree_rss_mb():
    """RSS of this driver plus all its descendants (the local cluster)."""
    import psutil
    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total / (1024 * 1024), len(procs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to idle before reading memory")
    args = ap.parse_args(argv)

    from .remote_defs import noop, remote_of
    mod = importlib.import_module(args.module)   # import cost not counted
    t0 = time.perf_counter()
    mod.init(num_cpus=args.num_cpus)
    t_init = time.perf_counter()
    mod.get(remote_of(args.module, noop).remote())
    t1 = time.perf_counter()
    time.sleep(args.settle)   # let background worker start-up finish
    rss_mb, nprocs = _tree_rss_mb()
    t2 = time.perf_counter()
    mod.shutdown()
    t3 = time.perf_counter()
    out = {"init_s": t1 - t0, "init_only_s": t_init - t0, "shutdown_s": t3 - t2, "rss_mb": rss_mb,
           "procs": nprocs, "pid": os.getpid()}
    # Marked line: workers' log lines may share this stdout.
    sys.stdout.write(MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

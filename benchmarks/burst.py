"""A burst of tiny tasks submitted at once from one driver, and what each
pending task costs in memory.

    python -m benchmarks.burst --system zray --tasks 1000000
    /path/to/ray-venv/bin/python -m benchmarks.burst --system ray --tasks 1000000

One fresh cluster (``num_cpus=2``) per run: a warm-up of 1,000 tasks, then
N no-op tasks submitted in one loop and all gotten with one ``get``. A
sampler thread reads the RSS of every process of the tree every 0.1 s,
grouped as the driver, the node (zray: its node daemon and kv service;
Ray: raylet, GCS and its other services) and the workers. Printed (and
written with ``--json``): tasks per second, submit seconds, the peak RSS
of each group, and bytes per task: a group's peak minus its RSS before the
burst, divided by N. All N are pending at once only if submitting is much
faster than running them; the figure is then what a pending task costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from . import remote_defs as rd

SYSTEMS = {"zray": "zray", "ray": "ray"}
SAMPLE_S = 0.1


def _group(process, me):
    if process.pid == me:
        return "driver"
    try:
        line = " ".join(process.cmdline())
    except Exception:
        return "node"
    if "zray.core" in line or "default_worker" in line or line.startswith("ray::"):
        return "workers"
    return "node"


class Sampler(threading.Thread):
    """Peak RSS per group of the driver's process tree."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil
        self.psutil = psutil
        self.me = psutil.Process()
        self.peak = {}
        self.stop = threading.Event()

    def rss(self):
        totals = {"driver": 0, "node": 0, "workers": 0}
        for process in [self.me] + self.me.children(recursive=True):
            try:
                totals[_group(process, self.me.pid)] += process.memory_info().rss
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                pass
        return totals

    def run(self):
        while not self.stop.is_set():
            for group, rss in self.rss().items():
                self.peak[group] = max(self.peak.get(group, 0), rss)
            self.stop.wait(SAMPLE_S)


def run(system: str, n_tasks: int) -> dict:
    ray = __import__(SYSTEMS[system])
    ray.init(num_cpus=2)
    try:
        noop = rd.remote_of(ray.__name__, rd.noop)
        ray.get([noop.remote() for _ in range(1000)])
        sampler = Sampler()
        time.sleep(0.5)                   # let the warm-up's garbage settle
        before = sampler.rss()
        sampler.start()
        start = time.perf_counter()
        refs = [noop.remote() for _ in range(n_tasks)]
        submitted = time.perf_counter()
        ray.get(refs)
        done = time.perf_counter()
        sampler.stop.set()
        sampler.join()
        del refs
    finally:
        ray.shutdown()
    return {
        "system": system, "tasks": n_tasks, "seconds": done - start,
        "tasks_per_s": n_tasks / (done - start), "submit_s": submitted - start,
        "rss_before_mb": {g: v / 1e6 for g, v in before.items()},
        "rss_peak_mb": {g: v / 1e6 for g, v in sampler.peak.items()},
        "bytes_per_task": {g: (sampler.peak[g] - before[g]) / n_tasks for g in before},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.burst",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--system", choices=sorted(SYSTEMS), default="zray")
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Workers import benchmarks.remote_defs: they must find this repo.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    result = run(args.system, args.tasks)
    peak, per_task = result["rss_peak_mb"], result["bytes_per_task"]
    print(f"{args.system}: {args.tasks:,} tasks in {result['seconds']:.1f} s = "
          f"{result['tasks_per_s']:,.0f} tasks/s (submitted in {result['submit_s']:.1f} s)")
    for group in ("driver", "node", "workers"):
        print(f"  {group:8s} peak RSS {peak.get(group, 0):8.0f} MB, "
              f"{per_task.get(group, 0):6.0f} bytes per task")
    print(f"  total    peak RSS {sum(peak.values()):8.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

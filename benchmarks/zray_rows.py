"""zray's own rows: cluster lifecycle cost, task throughput at growing
batch sizes, and the latency of getting a large array back."""

from __future__ import annotations

import json
import subprocess
import sys

from . import remote_defs as rd
from .measure import Measurement, durations, pick
from .probe import MARK
from .registry import row

# --- lifecycle (fresh subprocesses) ---------------------------------------

_probe_cache: dict = {}
PROBE_TIMEOUT_S = 180


def _probes(module: str, quick: bool):
    """Runs the probe child `reps` times; the three lifecycle rows share the
    same runs, so the cost is paid once per system."""
    key = (module, quick)
    if key not in _probe_cache:
        reps = pick(quick, 3, 1)
        settle = pick(quick, 2.0, 0.5)
        runs, errors = [], []
        for _ in range(reps):
            cmd = [sys.executable, "-m", "benchmarks.probe", "--module", module,
                   "--settle", str(settle)]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True,
                                   timeout=PROBE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                errors.append(f"probe timed out after {PROBE_TIMEOUT_S}s")
                continue
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith(MARK)]
            if p.returncode == 0 and lines:
                runs.append(json.loads(lines[-1][len(MARK):]))
            else:
                tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
                errors.append(f"probe rc={p.returncode}: " + " | ".join(tail))
        _probe_cache[key] = (runs, errors)
    return _probe_cache[key]


def _lifecycle(name, unit, field_, ray, quick):
    runs, errors = _probes(ray.__name__, quick)
    if not runs:
        raise RuntimeError("; ".join(errors) or "no probe result")
    m = Measurement(name, unit, False, [r[field_] for r in runs])
    if errors:
        m.note = f"{len(errors)} probe(s) failed: {errors[0]}"
    elif field_ == "rss_mb":
        m.note = f"{runs[0]['procs']} processes"
    return m


@row("init seconds", "s", False, fresh_process=True)
def init_seconds(ray, quick):
    # init() call -> first task result, in a fresh interpreter.
    return _lifecycle("init seconds", "s", "init_s", ray, quick)


@row("shutdown seconds", "s", False, fresh_process=True)
def shutdown_seconds(ray, quick):
    return _lifecycle("shutdown seconds", "s", "shutdown_s", ray, quick)


@row("idle memory MB", "MB", False, fresh_process=True)
def idle_memory_mb(ray, quick):
    # Sum of RSS over driver + its process tree after one task and a settle.
    return _lifecycle("idle memory MB", "MB", "rss_mb", ray, quick)


# --- throughput at growing N ---------------------------------------------

def _tiny_tasks_row(full_n: int, quick_n: int, reps: int):
    @row(f"tiny tasks/s at {full_n}", "/s", True)
    def tiny_tasks(ray, quick):
        # Submit N no-op tasks in one go, then get them all.
        n = pick(quick, full_n, quick_n)
        f = rd.remote_of(ray.__name__, rd.noop)
        warm = min(n, 1000)
        ray.get([f.remote() for _ in range(warm)])
        secs = durations(lambda: ray.get([f.remote() for _ in range(n)]),
                         pick(quick, reps, 1), warmup=0)
        return [n / s for s in secs]
    return tiny_tasks


tiny_tasks_1000 = _tiny_tasks_row(1000, 20, reps=5)
tiny_tasks_10000 = _tiny_tasks_row(10000, 50, reps=3)
tiny_tasks_100000 = _tiny_tasks_row(100000, 200, reps=1)


# --- large object get ----------------------------------------------------

@row("get 1 GB array us", "us", False)
def get_1gb_array_us(ray, quick):
    # put once, then time repeated gets of the same object.
    import numpy as np
    nbytes = pick(quick, 1024 ** 3, 10 * 1024 * 1024)
    refs = [ray.put(np.zeros(nbytes // 8, dtype=np.int64))]
    # Warm-up gets: the first ones fault the mapping in, and a get's own
    # code takes a few dozen calls to reach its steady speed (both systems:
    # 1,100 us, then 50, 20, ... down to 8-13 us over the first 20 here).
    secs = durations(lambda: ray.get(refs[0]), pick(quick, 50, 3),
                     warmup=pick(quick, 20, 1))
    refs.clear()        # the object goes before the next row
    return [s * 1e6 for s in secs]

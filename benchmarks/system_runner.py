"""Runs the rows for ONE system in this process and writes JSON results.

    python -m benchmarks.system_runner --system zray|ray|pool|dask \
        [--filter PAT] [--quick] [--json OUT]

One system per process keeps the systems from sharing warm caches, ports or
leftover workers.  Progress goes to stderr as `##bench {json}` lines that
`python -m benchmarks` turns into its progress display.  The JSON file is
rewritten after every row, so a crash or kill still leaves what finished.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import signal
import sys
import time
import traceback

from .measure import ERROR, SKIPPED, TIMEOUT, Measurement
from .registry import all_rows, select
from .table import fmt_num

# System name -> module exposing the Ray API.
SYSTEMS = {
    "zray": "zray",
    "ray": "ray",
    "pool": "benchmarks.shims.pool_api",
    "dask": "benchmarks.shims.dask_api",
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = "##bench "
EXIT_NOT_INSTALLED = 3


class RowTimeout(BaseException):
    """BaseException so library code's `except Exception` cannot eat it."""


def _on_alarm(signum, frame):
    raise RowTimeout()


def _progress(**fields):
    sys.stderr.write(PROGRESS + json.dumps(fields) + "\n")
    sys.stderr.flush()


def _with_timeout(seconds, fn, *args):
    signal.alarm(max(1, int(seconds)))
    try:
        return fn(*args)
    finally:
        signal.alarm(0)


def _failed(row, status, note):
    return Measurement(row.name, row.fn.unit, row.fn.higher_is_better,
                       status=status, note=note)


def _run_row(mod, row, quick, timeout):
    start = time.perf_counter()
    try:
        return _with_timeout(timeout, row.fn, mod, quick)
    except RowTimeout:
        # The traceback shows where the row was stuck.
        m = _failed(row, TIMEOUT, f"no result within {timeout}s")
    except Exception as e:   # one broken row must not stop the others
        m = _failed(row, ERROR, _one_line(e))
    m.detail = traceback.format_exc()
    m.seconds = time.perf_counter() - start
    return m


def _one_line(e):
    # Remote errors carry a whole traceback in str(e): keep its first line
    # (what failed) and last line (the root cause) so the table note stays
    # one line; the full text goes to the JSON "detail" field.
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    if len(lines) > 1:
        text += f" ... {lines[-1]}"
    return text[:400]


def _summary(m):
    if m.status != "ok":
        return f"{m.status}: {m.note}"[:120]
    return f"{fmt_num(m.median)} {m.unit}"


def _version(mod):
    return getattr(mod, "__version__", None)


def _header(system, modname, quick):
    return {
        "system": system, "module": modname, "python": sys.executable,
        "quick": quick, "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(),
                 "python_version": platform.python_version()},
    }


def _write(path, doc):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def _print_plain(doc):
    for r in doc["rows"]:
        m = Measurement.from_json(r)
        print(f"{m.name:48s} {_summary(m)}")


def run_system(system, pattern=None, quick=False, json_path=None,
               row_timeout=None, num_cpus=2):
    """Runs the selected rows for `system`; returns the result document."""
    modname = SYSTEMS[system]
    # Workers and probe children must be able to import `benchmarks`.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    doc = _header(system, modname, quick)
    doc["rows"] = []
    try:
        mod = importlib.import_module(modname)
        if not callable(getattr(mod, "init", None)):
            # e.g. a bare namespace package while zray is being written
            raise ImportError(f"{modname} has no init()")
    except Exception as e:
        doc["error"] = f"import {modname} failed: {type(e).__name__}: {e}"
        _write(json_path, doc)
        return doc
    doc["version"] = _version(mod)
    timeout = row_timeout or (60 if quick else 240)
    rows = select(all_rows(), pattern)
    lacking = set(getattr(mod, "BENCH_UNSUPPORTED", ()))
    results = {}
    seq = iter(range(1, len(rows) + 1))   # progress counts in run order

    def start(row):
        _progress(system=system, index=len(results) + 1, total=len(rows),
                  row=row.name, phase="start")

    def record(i, row, m):
        results[i] = m
        doc["rows"] = [results[k].to_json() for k in sorted(results)]
        _write(json_path, doc)
        _progress(system=system, index=next(seq), total=len(rows), row=row.name,
                  phase="done", status=m.status, summary=_summary(m))

    runnable = []
    for i, row in enumerate(rows):
        missing = sorted(row.needs & lacking)
        if missing:
            record(i, row, _failed(row, SKIPPED, "unsupported: " + ", ".join(missing)))
        else:
            runnable.append((i, row))

    signal.signal(signal.SIGALRM, _on_alarm)
    # Fresh-process rows first, while no cluster of ours is running.
    for i, row in [x for x in runnable if x[1].fresh_process]:
        start(row)
        record(i, row, _run_row(mod, row, quick, timeout))

    shared = [x for x in runnable if not x[1].fresh_process]
    if shared:
        init_error = None
        try:
            _progress(system=system, index=len(results), total=len(rows),
                      row=f"starting {system} (init)", phase="start")
            t0 = time.perf_counter()
            _with_timeout(timeout, lambda: mod.init(num_cpus=num_cpus))
            doc["init_s"] = time.perf_counter() - t0
        except (Exception, RowTimeout) as e:
            init_error = f"init failed: {type(e).__name__}: {e}"[:300]
            doc["error"] = init_error
        for i, row in shared:
            if init_error:
                record(i, row, _failed(row, ERROR, init_error))
                continue
            start(row)
            record(i, row, _run_row(mod, row, quick, timeout))
        if not init_error:
            try:
                _with_timeout(60, mod.shutdown)
            except (Exception, RowTimeout) as e:
                doc["shutdown_error"] = f"{type(e).__name__}: {e}"[:300]
    doc["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    _write(json_path, doc)
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.system_runner",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    ap.add_argument("--filter", default=None, help="regex on row names")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repetition")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--row-timeout", type=int, default=None,
                    help="seconds per row (default 60 quick / 240 full)")
    ap.add_argument("--num-cpus", type=int, default=2)
    args = ap.parse_args(argv)
    doc = run_system(args.system, args.filter, args.quick, args.json,
                     args.row_timeout, args.num_cpus)
    if not args.json:
        _print_plain(doc)
    if "error" in doc:
        print(doc["error"], file=sys.stderr)
        return EXIT_NOT_INSTALLED if doc["error"].startswith("import") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

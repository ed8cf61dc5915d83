"""`python -m benchmarks`: run zray, then a peer, and print them side by side.

Each system runs in its own subprocess (benchmarks.system_runner), one after
the other so they never compete for the 2 cores.  `main(argv)` is the entry
point a `zray microbenchmark` command can call.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from typing import List, Optional

from . import floors, peers, table
from .registry import all_rows, select
from .system_runner import EXIT_NOT_INSTALLED, PROGRESS, REPO_ROOT

PEERS = ("ray", "dask", "pool", "none")


class _Progress:
    """One self-overwriting line on a terminal; plain lines in a log."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()

    def show(self, ev: dict):
        label = f"[{ev['system']} {ev['index']}/{ev['total']}] {ev['row']}"
        if ev.get("phase") == "done":
            label += f": {ev.get('summary', '')}"
            if self.tty and ev.get("status") == "ok":
                return self._line(label + " ...")
        else:
            label += " ..."
        if self.tty and ev.get("phase") != "done":
            return self._line(label)
        self._line(label, permanent=True)

    def _line(self, text, permanent=False):
        if self.tty:
            self.stream.write("\r\x1b[K" + text[:160] + ("\n" if permanent else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self):
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _kill_group(proc):
    # The runner leads its own session: this reaches it and the cluster
    # processes it started, and nothing else.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def run_side(system: str, python: str, args, progress: _Progress,
             pattern: Optional[str] = None) -> dict:
    """Runs one system's rows (``pattern``, else --filter) in a subprocess;
    returns its result document."""
    fd, path = tempfile.mkstemp(prefix=f"zray-bench-{system}-", suffix=".json")
    os.close(fd)
    cmd = [python, "-m", "benchmarks.system_runner", "--system", system,
           "--json", path]
    if args.quick:
        cmd.append("--quick")
    if pattern or args.filter:
        cmd += ["--filter", pattern or args.filter]
    if args.row_timeout:
        cmd += ["--row-timeout", str(args.row_timeout)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    tail = collections.deque(maxlen=30)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, text=True, bufsize=1,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    limit = args.timeout or (900 if args.quick else 1800)
    timer = threading.Timer(limit, _kill_group, [proc])
    timer.start()
    try:
        for line in proc.stdout:
            if line.startswith(PROGRESS):
                try:
                    progress.show(json.loads(line[len(PROGRESS):]))
                    continue
                except ValueError:
                    pass
            tail.append(line.rstrip("\n"))
            if args.verbose:
                progress.clear()
                sys.stderr.write(line)
        rc = proc.wait()
    except KeyboardInterrupt:
        _kill_group(proc)
        raise
    finally:
        timed_out = not timer.is_alive() and proc.returncode not in (0, None)
        timer.cancel()
    progress.clear()
    doc = _load(path)
    os.unlink(path)
    if rc == EXIT_NOT_INSTALLED:
        doc.setdefault("error", f"{system} not importable under {python}")
    elif rc != 0 and not doc.get("error"):
        why = f"timed out after {limit}s" if timed_out else f"exited rc={rc}"
        doc["error"] = f"runner {why}; last output: " + " | ".join(list(tail)[-5:])
    doc.setdefault("system", system)
    doc.setdefault("python", python)
    return doc


def _load(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"rows": []}


def _combine_loaded(paths: List[str]) -> dict:
    """Accepts files written by `--json` here or by system_runner --json
    (one system each); later files fill the zray / peer slots."""
    result = {"meta": {"against": "none", "notes": []}, "zray": None, "peer": None}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        if "rows" not in doc:          # a combined file from --json
            for key in ("zray", "peer", "pool", "memcpy"):
                if doc.get(key) is not None:
                    result[key] = doc[key]
            if doc.get("peer") is not None:
                result["meta"]["against"] = doc["meta"]["against"]
            result["meta"]["notes"] += doc["meta"].get("notes", [])
        elif doc.get("system") == "zray":
            result["zray"] = doc
        else:
            result["peer"] = doc
            result["meta"]["against"] = doc.get("system", "peer")
    return result


def _report(result: dict) -> str:
    order = [r.name for r in all_rows()]
    peer = result.get("peer")
    label = result["meta"]["against"] if result["meta"]["against"] != "none" else None
    lines = [table.render(order, result.get("zray"), peer, label,
                          floors=[("pool", result.get("pool")),
                                  ("memcpy", result.get("memcpy"))])]
    extra = table.notes("zray", result.get("zray")) + table.notes(label or "peer", peer)
    extra += result["meta"].get("notes", [])
    lines.append("")
    lines.append("Cells: median of the repetitions ±half the IQR (or of min..max "
                 "below 4 repetitions), in % of the median.")
    if extra:
        lines += [f"note: {n}" for n in extra]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the same microbenchmarks on zray and a peer "
                    "(real Ray by default) and print them side by side.")
    ap.add_argument("--against", choices=PEERS, default="ray",
                    help="peer system (default: ray; 'none' = zray only)")
    ap.add_argument("--json", metavar="FILE", help="also write all results here")
    ap.add_argument("--filter", metavar="PATTERN",
                    help="only rows whose name matches this regex")
    ap.add_argument("--quick", action="store_true",
                    help="smoke-test sizes: every row takes a fraction of a second")
    ap.add_argument("--peer-python", metavar="PATH",
                    help=f"interpreter for the peer (default: this one if it has "
                         f"the peer, else ${peers.ENV_VAR})")
    ap.add_argument("--skip-zray", action="store_true",
                    help="run only the peer (e.g. to record its figures)")
    ap.add_argument("--row-timeout", type=int, metavar="S",
                    help="seconds allowed per row (default 60 quick / 240 full)")
    ap.add_argument("--timeout", type=int, metavar="S",
                    help="seconds allowed per system (default 900 quick / 1800 full)")
    ap.add_argument("--load", metavar="FILE", nargs="+",
                    help="re-print the table from earlier --json files (this "
                         "command's or system_runner's); runs nothing")
    ap.add_argument("--no-floors", action="store_true",
                    help="skip the ProcessPoolExecutor and memcpy columns "
                         "(see benchmarks/floors.py)")
    ap.add_argument("--verbose", action="store_true",
                    help="pass the systems' own output through to stderr")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.load:
        print(_report(_combine_loaded(args.load)))
        return 0
    if not select(all_rows(), args.filter):
        print(f"no row matches --filter {args.filter!r}", file=sys.stderr)
        return 2
    progress = _Progress()
    meta = {"argv": list(sys.argv[1:] if argv is None else argv),
            "against": args.against, "quick": args.quick, "notes": []}
    result = {"meta": meta, "zray": None, "peer": None}
    if not args.skip_zray:
        result["zray"] = run_side("zray", sys.executable, args, progress)
    if args.against != "none":
        python, why = peers.resolve(args.against, args.peer_python)
        if python is None:
            meta["notes"].append(f"peer skipped: {why}")
            print(f"note: peer skipped: {why}", file=sys.stderr)
        else:
            meta["peer_python"] = python
            result["peer"] = run_side(args.against, python, args, progress)
    if not args.no_floors and not args.skip_zray and result["zray"] is not None:
        if args.against != "pool" and select(all_rows(), floors.pool_filter(args.filter)):
            result["pool"] = run_side("pool", sys.executable, args, progress,
                                      pattern=floors.pool_filter(args.filter))
        result["memcpy"] = floors.memcpy_doc(args.quick, args.filter)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(_report(result))
    zray = result["zray"]
    return 1 if zray is not None and zray.get("error") and not zray.get("rows") else 0

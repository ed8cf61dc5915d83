"""``zray stack``: the Python stacks of every zray process on this machine.

Finds the dump files processes registered (``stackdump.py``) under the temp
root, has each process write its stacks (one signal each, all at once),
and prints them, a worker's running task named at the top. What each
worker runs comes from its node (``tasks``: pid -> names), else from the
stack itself: the first frame outside zray that the worker's ``_call`` called.
"""
import glob
import os
import re
import time

import psutil

from .stackdump import STACK_SIGNAL

_FRAME = re.compile(r'^\s+File "(?P<file>.*)", line (?P<line>\d+) in (?P<func>.*)$')
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def registered_processes(root):
    """[(pid, role, path)] of live processes that registered under ``root``."""
    found = []
    for path in sorted(glob.glob(os.path.join(root, "s-*", "stacks", "*.*"))):
        pid_text, _, role = os.path.basename(path).partition(".")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        try:
            process = psutil.Process(pid)
            # A pid reused since the file was written belongs to a process
            # younger than the file: never signal that one.
            if process.create_time() > os.stat(path).st_mtime + 1.0:
                continue
            if process.uids().real != os.getuid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.Error, OSError):
            continue
        found.append((pid, role, path))
    return found


def dump_all(processes, timeout_s=3.0):
    """Signal every process, wait for its dump; return {pid: text or None}."""
    pending = {}
    for pid, _role, path in processes:
        try:
            os.truncate(path, 0)
            os.kill(pid, STACK_SIGNAL)
            pending[pid] = path
        except OSError:
            continue
    sizes, results = {}, {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        time.sleep(0.1)
        for pid, path in list(pending.items()):
            try:
                size = os.path.getsize(path)
            except OSError:
                pending.pop(pid)
                continue
            # The handler writes in one burst: two equal non-zero sizes in a row mean done.
            if size and sizes.get(pid) == size:
                with open(path, errors="replace") as f:
                    results[pid] = f.read()
                pending.pop(pid)
            sizes[pid] = size
    for pid in pending:
        results[pid] = None
    return results


def parse_threads(text):
    """A dump in faulthandler's format (stackdump.py writes it) -> [(thread header, [(file, line, func), ...])]."""
    threads = []
    for line in text.splitlines():
        if line.startswith(("Thread ", "Current thread ")):
            threads.append((line.rstrip(":").replace(" (most recent call first)", ""), []))
            continue
        match = _FRAME.match(line)
        if match and threads:
            threads[-1][1].append((match["file"], int(match["line"]), match["func"]))
    return threads


def running_function(threads):
    """The user function a worker's ``_call`` runs, from its stacks (innermost first)."""
    for _header, frames in threads:
        in_call = False
        for file, line, func in reversed(frames):
            inside_zray = os.path.abspath(file).startswith(_PACKAGE_DIR + os.sep)
            if inside_zray and func == "_call" and file.endswith(os.path.join("core", "worker.py")):
                in_call = True
            elif in_call and not inside_zray:
                return f"{func} ({file}:{line})"
    return None


def format_report(processes, dumps, tasks=None):
    """The text ``zray stack`` prints; ``tasks``: {pid: description} from nodes."""
    tasks = tasks or {}
    if not processes:
        return ("No zray processes found on this machine (none registered a stack dump under "
                "this temp directory): is a cluster running? (`zray status`; pass --temp-dir "
                "if it was started with one)")
    out = []
    order = {"kv": 0, "node": 1, "dashboard": 2, "driver": 3, "worker": 4}
    for pid, role, _path in sorted(processes, key=lambda p: (order.get(p[1], 9), p[0])):
        text = dumps.get(pid)
        threads = parse_threads(text) if text else []
        title = f"{role} pid {pid}"
        running = tasks.get(pid) or (running_function(threads) if role == "worker" else None)
        if running:
            title += f" -- running {running}"
        out.append("=" * 78)
        out.append(title)
        if text is None:
            out.append("  (no answer within the deadline: the process may be exiting or "
                       "have replaced the stack-dump signal handler)")
            continue
        for header, frames in threads:
            out.append(f"  {header}:")
            out += [f'    File "{file}", line {line} in {func}' for file, line, func in frames]
    return "\n".join(out)

"""Shared fixtures: a fresh zray per test (or per module), and a check that
nothing zray made is left behind afterwards."""
import os
import subprocess
import sys
import textwrap

import psutil
import pytest

# An illegal task state transition raises (in the tests' own NodeStates and in
# the nodes they start) instead of being logged: see zray/sched/task.py.
os.environ.setdefault("ZRAY_STRICT_STATE", "1")

import zray as ray  # noqa: E402
from zray.transport.socket_dir import socket_dir  # noqa: E402


def zray_leftovers(session_name=None):
    """zray processes (children of this test process) and shm files still there."""
    me = psutil.Process()
    procs = []
    for child in me.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if "zray." in cmd and child.status() != psutil.STATUS_ZOMBIE:
            procs.append((child.pid, cmd))
    prefix = f"zray-{session_name}-" if session_name else "zray-"
    files = [f for f in os.listdir("/dev/shm") if f.startswith(prefix)]
    return procs, files


def assert_no_leftovers(info=None, timeout_s=10.0):
    import time
    session_name = (info or {}).get("session_name")
    deadline = time.monotonic() + timeout_s
    while True:
        procs, files = zray_leftovers(session_name)
        session_dir = (info or {}).get("session_dir")
        dir_left = bool(session_dir and (os.path.exists(session_dir)
                                         or os.path.exists(socket_dir(session_dir))))
        if not procs and not files and not dir_left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: processes={procs} shm={files} "
                                 f"session_dir={session_dir if dir_left else None}")
        time.sleep(0.1)


@pytest.fixture
def ray_start():
    """A fresh 2-CPU zray for one test, checked for leftovers after."""
    info = ray.init(num_cpus=2)
    yield info
    ray.shutdown()
    assert_no_leftovers(info)


@pytest.fixture(scope="module")
def ray_shared():
    """One zray for a whole module of quick tests."""
    info = ray.init(num_cpus=2)
    yield info
    ray.shutdown()
    assert_no_leftovers(info)


def run_script(code, timeout=60, env=None):
    """Run a zray program in a fresh interpreter; return CompletedProcess."""
    full_env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full_env)

"""No orphans, however a process ends: a driver that started its own node
(``ray.init()``) or a ``zray start`` node, stopped by SIGTERM, SIGINT or
SIGKILL, to its pid or to its whole process group (what ``timeout``, a
terminal's Ctrl-C or a CI runner ending a job sends), leaves within seconds
no process, shared-memory segment, socket file or session directory.
"""
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

import zray as ray
from zray.session import remove_session_files
from zray.transport.socket_dir import socket_dir

from cluster_util import ROOT, Cluster, assert_all_gone, records, wait_for, zray

DRIVER = """
import json, os, sys, time
import numpy as np
import zray as ray

info = ray.init(num_cpus=2)


@ray.remote
class Holder:            # an actor: its worker listens on a socket file of its own
    def ping(self):
        return os.getpid()


@ray.remote
def sleeper():
    time.sleep(300)


holder = Holder.remote()
ray.get(holder.ping.remote())
big = ray.put(np.ones(2 * 10**5))        # 1.6 MB: a shared-memory segment
running = sleeper.remote()
print("INFO", json.dumps(info), flush=True)
time.sleep(300)
"""


def _alive(processes):
    """The pids of those still running (psutil.Process: a reused pid is not them)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process.pid)
        except psutil.Error:
            pass
    return alive


def _kill(processes):
    for process in processes:           # only what this test started
        try:
            process.kill()              # psutil refuses a pid reused since
        except psutil.Error:
            pass


def _leftovers(root, info, processes):
    """What is still there: processes, shm segments, anything under the temp
    root or in the session's socket directory (transport/socket_dir.py)."""
    shm = sorted(f for f in os.listdir("/dev/shm")
                 if f.startswith(f"zray-{info['session_name']}-"))
    files = sorted(os.path.join(d, name) for top in (root, socket_dir(info["session_dir"]))
                   for d, dirs, names in os.walk(top) for name in dirs + names)
    return {"processes": _alive(processes), "shm": shm, "files": files}


def _wait_nothing_left(root, info, processes, timeout_s=15.0):
    def nothing_left():
        return not any(_leftovers(root, info, processes).values())
    try:
        wait_for(nothing_left, timeout_s, "the driver's cluster to leave nothing behind")
    except AssertionError:
        raise AssertionError(f"left behind {timeout_s} s after: "
                             f"{_leftovers(root, info, processes)}") from None


def _start_driver(root):
    """A driver (its own process group, as a shell runs a command) whose
    node runs an actor, a task and holds an object; (Popen, info, its processes)."""
    env = dict(os.environ, ZRAY_TEMP_DIR=str(root),
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.pop("ZRAY_OWNER_PID", None)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE,
                              text=True, env=env, start_new_session=True)
    for line in driver.stdout:              # (workers' output comes here too)
        if line.startswith("INFO "):
            break
    else:
        raise AssertionError(f"the driver failed to start (exit code {driver.wait(30)})")
    info = json.loads(line[len("INFO "):])
    node = psutil.Process(info["node_pid"])
    # The prestarted workers, the actor's and the sleeper's: all started.
    wait_for(lambda: len(node.children()) >= 2, 30, "the node's workers")
    me = psutil.Process(driver.pid)
    return driver, info, [me] + me.children(recursive=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
@pytest.mark.parametrize("to", ["driver", "group"])
def test_a_stopped_driver_leaves_nothing(tmp_path, to, signum):
    root = tmp_path / "root"
    driver, info, processes = _start_driver(root)
    try:
        sockets = os.listdir(socket_dir(info["session_dir"]))
        assert len([f for f in sockets if f.endswith(".sock")]) >= 4, sockets
        if to == "group":
            os.killpg(driver.pid, signum)
        else:
            driver.send_signal(signum)
        driver.wait(30)
        _wait_nothing_left(root, info, processes)
    finally:
        _kill(processes)
        driver.stdout.close()
        # Failed: what SIGKILLed daemons could not remove goes all the same.
        psutil.wait_procs(processes, timeout=10)
        remove_session_files(info["session_dir"], info.get("plasma_dir") or "/dev/shm",
                             info["session_name"])


CTRL_C_DRIVER = """
import sys, time
import zray as ray

ray.init(num_cpus=1)


@ray.remote
def add_one(x):
    return x + 1


assert ray.get(add_one.remote(1)) == 2
print("ready", flush=True)
try:
    time.sleep(120)
except KeyboardInterrupt:
    print("interrupted", flush=True)
print("after", ray.get(add_one.remote(41), timeout=60), flush=True)
"""


def test_ctrl_c_in_the_drivers_terminal_leaves_its_cluster_running(tmp_path):
    """A terminal's Ctrl-C goes to its whole foreground group: a driver that
    catches it (a REPL, a notebook) goes on with its cluster intact."""
    env = dict(os.environ, ZRAY_TEMP_DIR=str(tmp_path / "root"),
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    env.pop("ZRAY_OWNER_PID", None)
    driver = subprocess.Popen([sys.executable, "-c", CTRL_C_DRIVER], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    try:
        assert driver.stdout.readline().strip() == "ready", driver.communicate()[1][-3000:]
        os.killpg(driver.pid, signal.SIGINT)
        out, err = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err[-3000:]
    assert out.split() == ["interrupted", "after", "42"]


# == nodes of `zray start` =====================================================
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_a_stopped_zray_start_node_leaves_nothing_after_zray_stop(tmp_path, signum):
    """Stopped by a signal, a node's workers and shared memory go at once
    (killed outright, its workers notice and remove it); `zray stop`, which
    finds the record, removes the rest (its session directory, the kv)."""
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start_head("--num-cpus", 1, "--include-dashboard", "false")
        cluster.wait_nodes(1)
        pids, sessions = cluster.snapshot()
        (node,) = [r for r in sessions if r["role"] == "node"]
        ray.init(address=cluster.address, redis_password=cluster.token)
        try:
            @ray.remote
            def pid():
                return os.getpid()
            # A worker that has said HELLO (one still starting when its node
            # dies gives up at its handshake's timeout instead).
            node_process = psutil.Process(node["pid"])
            workers = [psutil.Process(ray.get(pid.remote()))] + node_process.children()
            big = ray.put(b"x" * 2 * 10**6)
            assert ray.get(big)[:1] == b"x"
            segments = [f for f in os.listdir("/dev/shm")
                        if f.startswith(f"zray-{node['session_name']}-")]
            assert segments
            os.kill(node["pid"], signum)
            wait_for(lambda: not _alive([node_process] + workers), 15,
                     "the node and its workers to exit")
            # Its shared memory with them: a killed node's workers remove it.
            assert not [f for f in os.listdir("/dev/shm") if f in segments]
            if signum != signal.SIGKILL:    # and its socket file, stopped as asked
                assert not os.path.exists(os.path.join(socket_dir(node["session_dir"]),
                                                       "node.sock"))
        finally:
            ray.shutdown()
        zray("stop", "--temp-dir", cluster.root)
        assert_all_gone(pids, sessions)
        assert not records(cluster.root)
    finally:
        zray("stop", "--temp-dir", cluster.root, check=False)


def test_a_finished_workers_stack_dump_file_goes(ray_start):
    """A worker leaves by os._exit, its stack-dump file behind: the node that
    reaps it removes the file (they piled up for the session's life)."""
    @ray.remote(max_calls=1)        # its worker exits after this call
    def where():
        path = os.path.join(os.environ["ZRAY_SESSION_DIR"], "stacks", f"{os.getpid()}.worker")
        return os.getpid(), path, os.path.exists(path)

    pid, path, existed = ray.get(where.remote())
    assert existed
    wait_for(lambda: not psutil.pid_exists(pid) and not os.path.exists(path), 20,
             f"worker {pid} to exit and its {path} to go")

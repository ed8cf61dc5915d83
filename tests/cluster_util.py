"""Helpers for the multi-node tests: run the `zray` command line, wait for
nodes, and check that a stopped cluster left nothing behind.

Every cluster lives under its own --temp-dir (a pytest tmp_path), so tests
never see or touch a cluster a user started on this machine.
"""
import json
import os
import subprocess
import sys
import time

import psutil

from zray.transport.socket_dir import socket_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_for(root=None, extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    env.pop("ZRAY_TEMP_DIR", None)
    # `zray start` run with this stops its daemons when this test process
    # exits, however it ends (a killed pytest leaves no cluster behind).
    env["ZRAY_OWNER_PID"] = str(os.getpid())
    if root is not None:
        env["ZRAY_TEMP_DIR"] = str(root)
    env.update(extra or {})
    return env


def tcp_driver_env(extra=None):
    """The environment of a driver script that calls ``connect_over_tcp``."""
    return env_for(extra={"PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
                          **(extra or {})})


def connect_over_tcp():
    """In a driver script, before ``ray.init``: connect to the node over tcp,
    as a driver whose node's unix socket is not on its machine."""
    import zray.cluster as cluster
    find_cluster = cluster.find_cluster

    def find_over_tcp(address, password="", temp_dir=None):
        _, info = find_cluster(address, password, temp_dir)
        nodes = cluster.list_nodes(address, password, temp_dir)[2]
        return nodes[info["node_id"]]["tcp_address"], info
    cluster.find_cluster = find_over_tcp


def zray(*args, check=True, timeout=60, env=None):
    """Run `zray ARGS`; return the CompletedProcess (raise with its output if check)."""
    result = subprocess.run([sys.executable, "-m", "zray.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=timeout,
                            env=env or env_for())
    if check and result.returncode != 0:
        raise AssertionError(f"zray {' '.join(map(str, args))} exited with "
                             f"{result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def cluster_address(root):
    with open(os.path.join(root, "cluster.json")) as f:
        return json.load(f)["address"]


def cluster_token(root):
    """The token `zray start --head` made (or was given), as recorded for this machine."""
    with open(os.path.join(root, "cluster.json")) as f:
        return json.load(f)["token"]


def records(root):
    """The daemon records of `zray start` under root (see zray.session)."""
    directory = os.path.join(root, "procs")
    out = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                out.append(json.load(f))
    return out


def daemon_processes(root):
    """Recorded daemons still alive, and their worker processes."""
    found = []
    for record in records(root):
        try:
            process = psutil.Process(record["pid"])
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(process)
            found.extend(c for c in process.children(recursive=True)
                         if c.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            pass
    return found


def wait_for(predicate, timeout_s, what):
    """Poll ``predicate`` until true; fail naming ``what`` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def node_of(resource, timeout_s=20):
    """The live node with ``resource``, as the driver's node sees the cluster."""
    import zray as ray

    def find():
        for node in ray.nodes():
            if node["Alive"] and resource in node["Resources"]:
                return node["NodeID"]
        return None
    return wait_for(find, timeout_s, f"a live node with {resource}")


def here():
    """The id of the node the calling task runs on."""
    from zray.core import context
    return context.current().node_info["node_id"]


def live_nodes(address, password=""):
    from zray.cluster import list_nodes
    return list_nodes(address, password)[2]


def assert_all_gone(pids, sessions, timeout_s=10.0):
    """No process of ``pids`` alive, no session dir or shm file left."""
    def leftovers():
        procs = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    procs.append(pid)
            except psutil.Error:
                pass
        dirs = [d for s in sessions for d in {s["session_dir"], socket_dir(s["session_dir"])}
                if os.path.exists(d)]
        files = [f for f in os.listdir("/dev/shm")
                 if any(f.startswith(f"zray-{s['session_name']}-") for s in sessions)]
        return procs, dirs, files

    deadline = time.monotonic() + timeout_s
    while True:
        procs, dirs, files = leftovers()
        if not procs and not dirs and not files:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: processes={procs} session dirs={dirs} "
                                 f"shm files={files}")
        time.sleep(0.1)


class Cluster:
    """Daemons started with `zray start` under one temp root."""

    def __init__(self, root, password="", env=None):
        self.root = str(root)
        self.password = password
        self.env = env_for(extra=env)      # for the daemons `zray start` starts
        self.address = None
        self.token = password       # the cluster's: given, or made by `zray start --head`

    def _password_args(self):
        return ["--redis-password", self.password] if self.password else []

    def start_head(self, *args, port=0):
        zray("start", "--head", "--port", port, "--temp-dir", self.root, *self._password_args(),
             *args, env=self.env)
        self.address = cluster_address(self.root)
        self.token = cluster_token(self.root)
        return self.address

    def add_node(self, *args, root=None):
        zray("start", "--address", self.address, "--temp-dir", root or self.root,
             "--redis-password", self.token, *args, env=self.env)

    def wait_nodes(self, count, timeout_s=20.0):
        return wait_for(lambda: len(live_nodes(self.address, self.token)) == count,
                        timeout_s, f"{count} live nodes")

    def snapshot(self, *roots):
        """Pids (daemons and workers) and sessions, to check after a stop."""
        pids, sessions = set(), []
        for root in roots or (self.root,):
            pids.update(p.pid for p in daemon_processes(root))
            sessions += records(root)
        return pids, sessions

    def stop(self, *roots):
        pids, sessions = self.snapshot(*roots)
        for root in roots or (self.root,):
            save_logs(root)
            zray("stop", "--temp-dir", root, check=False)
        assert_all_gone(pids, sessions)


def save_logs(root):
    """Copy the daemons' logs to <root>/saved-logs before a stop deletes them
    (pytest keeps the last tmp dirs, so a failure can be looked into)."""
    import glob
    import shutil
    target = os.path.join(root, "saved-logs")
    for path in glob.glob(os.path.join(root, "s-*", "logs", "*.log")):
        session = path.split(os.sep)[-3]
        os.makedirs(os.path.join(target, session), exist_ok=True)
        shutil.copy(path, os.path.join(target, session))


def three_node_cluster(root, node_b_resources, node_c_resources, store_bytes):
    """A head {"head_only": 1} and nodes B and C with the given resources, one
    CPU each; a generator for module fixtures: yields the cluster, stops it."""
    cluster = Cluster(root)
    try:
        common = ("--num-cpus", 1, "--object-store-memory", store_bytes)
        cluster.start_head(*common, "--resources", '{"head_only": 1}')
        cluster.add_node(*common, "--resources", node_b_resources)
        cluster.add_node(*common, "--resources", node_c_resources)
        cluster.wait_nodes(3)
        yield cluster
    finally:
        cluster.stop()


def head_and_node_a(root, store_bytes):
    """A head (one CPU) and node A {"node_a": 10} under its own root
    (``cluster.node_a_root``); a generator for module fixtures."""
    cluster = Cluster(os.path.join(root, "head"))
    cluster.node_a_root = os.path.join(root, "a")
    try:
        cluster.start_head("--num-cpus", 1, "--object-store-memory", store_bytes)
        cluster.add_node("--num-cpus", 1, "--resources", '{"node_a": 10}',
                         "--object-store-memory", store_bytes, root=cluster.node_a_root)
        cluster.wait_nodes(2)
        yield cluster
    finally:
        cluster.stop(cluster.root, cluster.node_a_root)

"""Starting and stopping the daemons of one machine: kv service and node.

``ray.init()`` and ``zray start`` both come here. A session lives in its own
directory (sockets, logs, spilled objects); stopping removes it, and so does
the node when the process that started it disappears.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from .transport.sockets import wait_ready

START_TIMEOUT_S = 20.0


def default_temp_root():
    return os.path.join(tempfile.gettempdir(), f"zray-{os.getuid()}")


def new_session_dir(temp_dir=None):
    root = temp_dir or default_temp_root()
    os.makedirs(root, mode=0o700, exist_ok=True)
    name = os.urandom(4).hex()
    path = os.path.join(root, f"s-{name}")
    os.makedirs(os.path.join(path, "logs"))
    return name, path


def detect_gpus():
    """GPU ids from CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [i for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def default_object_store_memory():
    # As Ray: 30% of memory, at most 20 GB, and no more than /dev/shm holds.
    limit = int(psutil.virtual_memory().total * 0.3)
    try:
        stat = os.statvfs("/dev/shm")
        limit = min(limit, int(stat.f_bavail * stat.f_frsize * 0.8))
    except OSError:
        pass
    return min(limit, 20 * 1024 ** 3)


class LocalDaemons:
    """The kv service and node daemon processes of a session on this machine."""

    def __init__(self, session_name, session_dir, kv_process, node_process, info):
        self.session_name = session_name
        self.session_dir = session_dir
        self.kv_process = kv_process
        self.node_process = node_process
        self.info = info

    @property
    def node_address(self):
        return self.info["node_address"]

    def stop(self, timeout_s=5.0):
        for process in (self.node_process, self.kv_process):
            if process is None:
                continue
            _terminate(process, timeout_s)
        remove_session_files(self.session_dir, self.info.get("plasma_dir"), self.session_name)


def _terminate(process, timeout_s):
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def remove_session_files(session_dir, plasma_dir, session_name):
    if plasma_dir and os.path.isdir(plasma_dir):
        prefix = f"zray-{session_name}-"
        for name in os.listdir(plasma_dir):
            if name.startswith(prefix):
                try:
                    os.unlink(os.path.join(plasma_dir, name))
                except OSError:
                    pass
    shutil.rmtree(session_dir, ignore_errors=True)


def start_daemons(*, num_cpus, num_gpus, gpu_ids, resources, object_store_memory,
                  plasma_dir, temp_dir=None, password="", owner_pid=None, head=True,
                  kv_address=None, kv_pub_address=None, node_address=None,
                  max_workers=None, prestart_workers=None):
    """Start kv (when head) and a node; return once both said READY."""
    session_name, session_dir = new_session_dir(temp_dir)
    env = dict(os.environ)
    env["ZRAY_PASSWORD"] = password or ""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    kv_process = None
    processes = []
    try:
        if head:
            kv_address = kv_address or f"ipc://{session_dir}/kv.sock"
            kv_pub_address = kv_pub_address or f"ipc://{session_dir}/kv-pub.sock"
            kv_log = os.path.join(session_dir, "logs", "kv.log")
            command = [sys.executable, "-m", "zray.kv", "--address", kv_address,
                       "--pub-address", kv_pub_address]
            if owner_pid:
                command += ["--owner-pid", str(owner_pid)]
            kv_process = _spawn(command, kv_log, env)
            processes.append(kv_process)
        config = {
            "session_dir": session_dir, "session_name": session_name,
            "address": node_address or f"ipc://{session_dir}/node.sock",
            "num_cpus": num_cpus, "num_gpus": num_gpus, "gpu_ids": gpu_ids,
            "resources": resources or {}, "object_store_memory": object_store_memory,
            "plasma_dir": plasma_dir, "kv_address": kv_address, "kv_pub_address": kv_pub_address,
            "password": password or "", "owner_pid": owner_pid,
            "max_workers": max_workers or max(64, 8 * int(max(num_cpus, 1))),
            "prestart_workers": (prestart_workers if prestart_workers is not None
                                 else min(int(num_cpus), 4)),
            "remove_session_dir_on_orphan": True,
        }
        node_log = os.path.join(session_dir, "logs", "node.log")
        node_process = _spawn([sys.executable, "-m", "zray.sched", "--config", json.dumps(config)],
                              node_log, env)
        processes.append(node_process)
        kv_info = wait_ready(kv_process, START_TIMEOUT_S, "kv service", kv_log) if head else {}
        node_info = wait_ready(node_process, START_TIMEOUT_S, "node daemon", node_log)
    except BaseException:
        for process in processes:
            _terminate(process, 2.0)
        shutil.rmtree(session_dir, ignore_errors=True)
        raise
    info = {"session_name": session_name, "session_dir": session_dir,
            "kv_address": kv_info.get("address", kv_address),
            "kv_pub_address": kv_info.get("pub_address", kv_pub_address),
            "node_address": node_info["address"], "node_id": node_info["node_id"],
            "plasma_dir": plasma_dir, "kv_pid": kv_process.pid if kv_process else None,
            "node_pid": node_process.pid}
    return LocalDaemons(session_name, session_dir, kv_process, node_process, info)


def _spawn(command, log_path, env):
    log_file = open(log_path, "ab")
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log_file, env=env, close_fds=True,
                                start_new_session=False)
    finally:
        log_file.close()


def wait_gone(pids, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) for p in pids):
            return True
        time.sleep(0.05)
    return False

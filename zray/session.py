"""Starting and stopping the daemons of one machine: kv service and node.

``ray.init()`` and ``zray start`` both come here. A session lives in its own
directory (sockets, logs, spilled objects); stopping removes it, and so does
the node when the process that started it disappears.

Every daemon runs in its own session (process group): a signal meant for
the driver's terminal or group (Ctrl-C, ``timeout``, a CI runner ending a
job) must not kill one halfway, leaving its sockets and shared memory
behind. Those ``ray.init()`` starts have the driver as owner and stop, and
clean up, when it is gone however it ended (``OwnerWatch``).

Daemons started by ``zray start`` have no owner (unless ``--owner-pid``):
they outlive the command, and are recorded in
``<temp root>/procs/<pid>.json`` so that ``zray stop`` can find exactly them
(never by process name) and clean up after them.

The temp root must be ours before anything is made in it (``temp_root.py``).
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

from . import stackdump
from .dashboard import launch as dashboard
from .plasma.shm import unlink_session_files
from .temp_root import (SESSION_NAME, check_temp_root, is_own_session_dir, read_private_json,
                        write_private_json)
from .transport import auth
from .transport.socket_dir import make_socket_dir, remove_socket_dir, socket_dir
from .transport.sockets import wait_ready

START_TIMEOUT_S = 20.0


def default_temp_root():
    # ZRAY_TEMP_DIR lets tests and users keep whole clusters apart.
    return os.environ.get("ZRAY_TEMP_DIR") or os.path.join(tempfile.gettempdir(),
                                                           f"zray-{os.getuid()}")


def new_session_dir(temp_dir=None):
    root = check_temp_root(temp_dir or default_temp_root())
    while True:
        name = os.urandom(4).hex()
        path = os.path.join(root, f"s-{name}")
        os.mkdir(path, 0o700)
        try:
            make_socket_dir(path)      # only under a long root (transport/socket_dir.py)
        except FileExistsError:        # that short path is taken: another name
            os.rmdir(path)
            continue
        os.mkdir(os.path.join(path, "logs"), 0o700)
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

    def __init__(self, session_name, session_dir, kv_process, node_process, info, token,
                 dashboard_process=None):
        self.token = token          # the cluster's: kept out of info, which users print
        self.session_name = session_name
        self.session_dir = session_dir
        self.kv_process = kv_process
        self.node_process = node_process
        self.dashboard_process = dashboard_process
        self.info = info

    @property
    def node_address(self):
        return self.info["node_address"]

    def webui_url(self):
        """The dashboard's URL, waiting for it to start the first time (None if it failed)."""
        if self.info.get("webui_url") is None and self.dashboard_process is not None:
            if not self.dashboard_process.stdout.closed:
                self.info["webui_url"] = dashboard.wait_started(
                    self.dashboard_process, self.session_dir, _terminate)
        return self.info.get("webui_url")

    def stop(self, timeout_s=5.0):
        if self.dashboard_process is not None and self.dashboard_process.poll() is None:
            self.dashboard_process.terminate()      # it exits while the node stops
        for process in (self.node_process, self.kv_process, self.dashboard_process):
            if process is None:
                continue
            _terminate(process, timeout_s)
            if process.stdout is not None and not process.stdout.closed:
                process.stdout.close()
        remove_session_files(self.session_dir, self.info.get("plasma_dir"), self.session_name,
                             self.info.get("spill_dir"))


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


def remove_session_files(session_dir, plasma_dir, session_name, spill_dir=None):
    unlink_session_files((plasma_dir, spill_dir), session_name)
    if session_dir:
        shutil.rmtree(session_dir, ignore_errors=True)
        remove_socket_dir(session_dir)


def check_spill_dir(path):
    """``object_spilling_directory``, made absolute; created if missing."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"object_spilling_directory {path!r} cannot be created: {exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"object_spilling_directory {path!r} is not writable by this user; "
                         f"pick a directory you own")
    return path


def default_prestart(num_cpus):
    """Warm workers a node starts with: one per CPU it offers, but never more
    than the machine's cores (``num_cpus=64`` on a laptop must not spawn 64
    interpreters at init). The node keeps that many idle ones (soft limit)."""
    return max(0, min(int(num_cpus), os.cpu_count() or 1))


def start_daemons(*, num_cpus, num_gpus, gpu_ids, resources, object_store_memory,
                  plasma_dir, temp_dir=None, password="", owner_pid=None, head=True,
                  kv_address=None, kv_pub_address=None, node_address=None,
                  max_workers=None, prestart_workers=None, node_ip_address=None, kv_port=None,
                  spill_dir=None, include_dashboard=False, dashboard_host=None,
                  dashboard_port=None, wait_dashboard=True):
    """Start kv (when head) and a node; return once both said READY.

    With ``node_ip_address`` the daemons also listen on tcp there (the kv on
    ``kv_port``, 0 = any free port; the node on a free port) so other nodes
    and drivers can reach them. ``include_dashboard`` also
    starts the web dashboard next to the head's kv service (waited for
    unless ``wait_dashboard`` is False: then ``webui_url()`` waits).
    """
    session_name, session_dir = new_session_dir(temp_dir)
    # No cluster listens without a token: none given, a random one. It goes
    # to the daemons by environment, never argv (`ps` shows argv to all).
    token = password or auth.new_token()
    env = dict(os.environ)
    env[auth.TOKEN_ENV] = token
    env[stackdump.SESSION_ENV] = session_dir       # where `zray stack` finds every process
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    kv_process = dashboard_process = None
    sockets = socket_dir(session_dir)
    kv_info = {}
    processes = []
    try:
        if head and node_ip_address:
            kv_address = kv_address or f"tcp://{node_ip_address}:{kv_port or '*'}"
            kv_pub_address = kv_pub_address or f"tcp://{node_ip_address}:*"
        if head:
            kv_address = kv_address or f"ipc://{sockets}/kv.sock"
            kv_pub_address = kv_pub_address or f"ipc://{sockets}/kv-pub.sock"
            kv_log = os.path.join(session_dir, "logs", "kv.log")
            command = [sys.executable, "-m", "zray.kv", "--address", kv_address,
                       "--pub-address", kv_pub_address, "--journal", session_dir]
            if owner_pid:
                command += ["--owner-pid", str(owner_pid)]
            kv_process = _spawn(command, kv_log, env)
            processes.append(kv_process)
            kv_info = {}
            if "*" in kv_address + kv_pub_address:
                # The node needs the ports the kv service picked.
                kv_info = wait_ready(kv_process, START_TIMEOUT_S, "kv service", kv_log)
                kv_address, kv_pub_address = kv_info["address"], kv_info["pub_address"]
        config = {
            "session_dir": session_dir, "session_name": session_name,
            "address": node_address or f"ipc://{sockets}/node.sock",
            "num_cpus": num_cpus, "num_gpus": num_gpus, "gpu_ids": gpu_ids,
            "resources": resources or {}, "object_store_memory": object_store_memory,
            "plasma_dir": plasma_dir, "kv_address": kv_address, "kv_pub_address": kv_pub_address,
            "owner_pid": owner_pid,      # the password goes by environment, not argv
            "max_workers": max_workers or max(64, 8 * int(max(num_cpus, 1))),
            "prestart_workers": (prestart_workers if prestart_workers is not None
                                 else default_prestart(num_cpus)),
            "remove_session_dir_on_orphan": True,
            "tcp_address": f"tcp://{node_ip_address}:*" if node_ip_address else None,
            "head": head, "node_ip_address": node_ip_address,
            "spill_dir": spill_dir,      # None: <session_dir>/spill
        }
        if kv_process is not None:
            # The head node restarts the kv if it dies: same addresses (ports
            # as picked), same journal.
            restart = [a for a in command]
            restart[restart.index("--address") + 1] = kv_address
            restart[restart.index("--pub-address") + 1] = kv_pub_address
            config["kv_restart"] = {"command": restart, "pid": kv_process.pid, "log": kv_log}
        node_log = os.path.join(session_dir, "logs", "node.log")
        node_process = _spawn([sys.executable, "-m", "zray.sched", "--config", json.dumps(config)],
                              node_log, env)
        processes.append(node_process)
        if head and include_dashboard:
            dashboard_process = dashboard.spawn(_spawn, session_dir, kv_address,
                                                node_process.pid, env, dashboard_host,
                                                dashboard_port)
            processes.append(dashboard_process)
        if head and not kv_info:
            kv_info = wait_ready(kv_process, START_TIMEOUT_S, "kv service", kv_log)
        node_info = wait_ready(node_process, START_TIMEOUT_S, "node daemon", node_log)
        webui_url = None
        if dashboard_process is not None and wait_dashboard:
            webui_url = dashboard.wait_started(dashboard_process, session_dir, _terminate)
    except BaseException:
        for process in processes:
            _terminate(process, 2.0)
        shutil.rmtree(session_dir, ignore_errors=True)
        remove_socket_dir(session_dir)
        raise
    info = {"session_name": session_name, "session_dir": session_dir,
            "kv_address": kv_info.get("address", kv_address),
            "kv_pub_address": kv_info.get("pub_address", kv_pub_address),
            "node_address": node_info["address"], "node_id": node_info["node_id"],
            "node_tcp_address": node_info.get("tcp_address"),
            "plasma_dir": plasma_dir, "spill_dir": spill_dir, "kv_pid": kv_process.pid if kv_process else None,
            "node_pid": node_process.pid, "webui_url": webui_url}
    return LocalDaemons(session_name, session_dir, kv_process, node_process, info, token,
                        dashboard_process)


def _spawn(command, log_path, env):
    log_file = open(log_path, "ab")
    try:
        # Its own session: out of reach of signals sent to the caller's group.
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log_file, env=env, close_fds=True,
                                start_new_session=True)
    finally:
        log_file.close()


def wait_gone(pids, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


# == daemons recorded for `zray stop` ==========================================
_DAEMON_MODULES = ("zray.kv", "zray.sched", "zray.dashboard")


def procs_dir(root):
    return os.path.join(root, "procs")


def record_daemons(root, daemons):
    """Write one file per daemon process so `zray stop` can find it later."""
    check_temp_root(root)
    try:
        os.mkdir(procs_dir(root), 0o700)
    except FileExistsError:
        pass
    info = daemons.info
    for role, process in (("kv", daemons.kv_process), ("node", daemons.node_process),
                          ("dashboard", daemons.dashboard_process)):
        if process is None:
            continue
        try:
            created = psutil.Process(process.pid).create_time()
        except psutil.Error:
            continue
        record = {"pid": process.pid, "role": role, "create_time": created,
                  "session_dir": info["session_dir"], "session_name": info["session_name"],
                  "plasma_dir": info.get("plasma_dir"), "node_id": info.get("node_id")}
        write_private_json(os.path.join(procs_dir(root), f"{process.pid}.json"), record)


def recorded_daemons(root):
    """The records under ``root``, each with ``process``: a psutil.Process if
    that very process (same pid, start time and command) still runs, else None."""
    check_temp_root(root, create=False)
    directory = procs_dir(root)
    records = []
    if os.path.islink(directory) or not os.path.isdir(directory):
        return records
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        record = read_private_json(path)
        if not isinstance(record, dict):
            continue
        record["file"] = path
        record["process"] = _verified_process(record)
        records.append(record)
    return records


def _verified_process(record):
    # A pid can be reused: only a process started at the recorded time, of
    # this user, running a zray daemon, is ours to stop.
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["create_time"]) > 1.0:
            return None
        if process.uids().real != os.getuid():
            return None
        cmdline = process.cmdline()
        if not any(module in cmdline for module in _DAEMON_MODULES):
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.Error, KeyError, TypeError):
        return None


def stop_recorded(root, timeout_s=10.0):
    """Stop every daemon recorded under ``root`` and its workers; remove their
    files, sockets and shared memory. Returns the records of what was stopped."""
    records = recorded_daemons(root)
    alive = [r for r in records if r["process"] is not None]
    # Nodes first, while the kv can still hear them leave.
    alive.sort(key=lambda r: r["role"] == "kv")
    workers = []
    for record in alive:
        if record["role"] == "node":
            workers.extend(_worker_children(record["process"]))
    for role in ("node", "dashboard", "kv"):
        group = [r["process"] for r in alive if r["role"] == role]
        for process in group:
            _signal(process, signal.SIGTERM)
        _, still = psutil.wait_procs(group, timeout=timeout_s / 2)
        for process in still:
            _signal(process, signal.SIGKILL)
        psutil.wait_procs(still, timeout=timeout_s / 2)
    _, still = psutil.wait_procs(workers, timeout=2.0)
    for process in still:       # their node was killed before it could stop them
        _signal(process, signal.SIGKILL)
    psutil.wait_procs(still, timeout=2.0)
    for record in records:
        name = record.get("session_name")
        if isinstance(name, str) and SESSION_NAME.fullmatch(name):
            # Only a session directory verified as ours is deleted.
            own = is_own_session_dir(root, record.get("session_dir"), name)
            remove_session_files(record["session_dir"] if own else None,
                                 record.get("plasma_dir"), name, record.get("spill_dir"))
        try:
            os.unlink(record["file"])
        except OSError:
            pass
    return alive


def _worker_children(process):
    children = []
    try:
        for child in process.children(recursive=True):
            try:
                if "zray.core" in child.cmdline():
                    children.append(child)
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return children


def _signal(process, signum):
    try:
        process.send_signal(signum)
    except psutil.Error:
        pass

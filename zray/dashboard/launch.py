"""Starting the dashboard process next to a head's kv service (``session.py``)."""
import logging
import os
import sys

log = logging.getLogger("zray.dashboard")

START_TIMEOUT_S = 20.0


def spawn(spawn_process, session_dir, kv_address, node_pid, env, host=None, port=None):
    """Start ``python -m zray.dashboard``; return the process (READY not awaited).
    It lives as long as the head's node (which restarts a kv service that died)."""
    command = [sys.executable, "-m", "zray.dashboard", "--kv-address", kv_address,
               "--host", host or "127.0.0.1", "--port", str(port or 0)]
    if node_pid:
        command += ["--watch-pid", str(node_pid)]
    return spawn_process(command, log_path(session_dir), env)


def log_path(session_dir):
    return os.path.join(session_dir, "logs", "dashboard.log")


def wait_started(process, session_dir, terminate):
    """The dashboard's URL once it is READY; None (and a warning) if it failed:
    a cluster without its dashboard still works."""
    from ..transport.sockets import wait_ready
    try:
        return wait_ready(process, START_TIMEOUT_S, "dashboard", log_path(session_dir))["url"]
    except RuntimeError as exc:
        terminate(process, 2.0)
        log.warning("the dashboard did not start; the cluster runs without it. %s", exc)
        return None

"""Worker processes at the edge of the node: start, read output, reap, stop.

The node's state names each worker (``worker_pool.py``); this module starts
``python -m zray.core <node address> <worker id>`` for it. Each worker's
stdout and stderr come back through one pipe, so the node can write them to
``logs/worker-<pid>.log`` and forward them to drivers.
"""
import os
import signal
import subprocess
import sys
import time

from ..plasma import shm
from ..stackdump import remove_file_of as remove_stack_file
from ..transport import auth
from ..transport import protocol as P
from .worker_pool import log_file_path


class Process:
    __slots__ = ("worker_id", "popen", "log_file", "log_pending", "secret")

    def __init__(self, worker_id, popen, log_file, secret):
        self.worker_id = worker_id
        self.secret = secret         # proves, in its HELLO, that this node started it
        self.popen = popen
        self.log_file = log_file
        self.log_pending = b""

    @property
    def pid(self):
        return self.popen.pid


class WorkerProcesses:
    def __init__(self, node_address, session_dir, env_extra=None):
        self.node_address = node_address
        self.session_dir = session_dir
        self.env_extra = env_extra or {}
        self.by_id = {}              # worker_id -> Process
        self.by_fd = {}              # stdout fd -> Process

    def start(self, worker_id):
        env = dict(os.environ)
        env.update(self.env_extra)
        env["PYTHONUNBUFFERED"] = "1"
        # Its proof of being this worker: by environment, never argv (the id is guessable).
        secret = os.urandom(16).hex()
        env[auth.WORKER_SECRET_ENV] = secret
        # As Ray: one OpenMP thread per worker unless the user chose otherwise,
        # so N workers doing numpy do not start N x cores threads.
        env.setdefault("OMP_NUM_THREADS", "1")
        popen = subprocess.Popen(
            [sys.executable, "-m", "zray.core", self.node_address, worker_id.decode()],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, close_fds=True)
        os.set_blocking(popen.stdout.fileno(), False)
        log_path = log_file_path(os.path.join(self.session_dir, "logs"), popen.pid)
        process = Process(worker_id, popen, open(log_path, "ab", buffering=0), secret)
        self.by_id[worker_id] = process
        self.by_fd[popen.stdout.fileno()] = process
        return process

    def kill(self, worker_id):
        process = self.by_id.get(worker_id)
        if process is not None:
            _signal(process.popen, signal.SIGKILL)

    def read_output(self, fd):
        """Drain a worker's pipe; return (process, complete lines as text)."""
        process = self.by_fd.get(fd)
        if process is None:
            return None, ""
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                break
            chunks.append(chunk)
        data = process.log_pending + b"".join(chunks)
        if not data:
            return process, ""
        complete, _, rest = data.rpartition(b"\n")
        process.log_pending = rest
        if not complete:
            return process, ""
        complete += b"\n"
        process.log_file.write(complete)
        return process, complete.decode(errors="replace")

    def reap(self):
        """(worker_id, pid, exit code) of processes that have exited, forgotten here."""
        dead = []
        for process in list(self.by_id.values()):
            code = process.popen.poll()
            if code is not None:
                dead.append((process.worker_id, process.pid, code))
                self._forget(process)
        return dead

    def _forget(self, process):
        self.by_id.pop(process.worker_id, None)
        stdout = process.popen.stdout
        fd = stdout.fileno() if not stdout.closed else None
        if fd is not None:
            self.by_fd.pop(fd, None)
            # Whatever the worker printed last still goes to its log.
            tail = b""
            try:
                while True:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    tail += chunk
            except OSError:
                pass
            if process.log_pending or tail:
                process.log_file.write(process.log_pending + tail)
            stdout.close()
        process.log_file.close()
        remove_stack_file(self.session_dir, process.pid, "worker")
        # The socket it listened on for its lessee, if leased (libzmq leaves the file).
        shm.unlink_quietly(P.worker_socket_path(self.session_dir, process.worker_id))

    def stop_all(self, grace_s=1.0):
        """SIGTERM every worker, SIGKILL the ones still there after grace_s."""
        for process in self.by_id.values():
            _signal(process.popen, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in list(self.by_id.values()):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                process.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                _signal(process.popen, signal.SIGKILL)
                process.popen.wait()
            self._forget(process)


def _signal(process, sig):
    try:
        process.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass

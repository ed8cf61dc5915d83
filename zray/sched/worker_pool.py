"""Worker processes of one node: start on demand, track state, reap.

Workers are started as ``python -m zray.core``; their stdout and
stderr come to the node through one pipe per worker, so the node can write
them to ``logs/worker-<pid>.log`` and forward them to drivers.

Policy (the "illusion of an infinite pool", bounded):
- Workers start when tasks fit the free resources but find no idle worker;
  at most ``max_starting`` start at once (a Python start costs a core for
  a few hundred ms, so a burst of 1,000 tiny tasks is served by a few warm
  workers rather than by forking dozens).
- Never more than ``max_workers`` live processes (blocked, busy and idle
  together), so a flood of zero-CPU or nested tasks cannot fork the machine
  to death; above that, tasks wait for a worker to come free.
- Idle workers above ``soft_limit`` (the node's CPU count) exit after
  ``IDLE_TIMEOUT_S``, giving back the memory a burst made them take.
"""
import os
import signal
import subprocess
import sys
import time

from ..transport import auth

STARTING = "starting"
IDLE = "idle"
BUSY = "busy"
ACTOR = "actor"

IDLE_TIMEOUT_S = 10.0


class Worker:
    __slots__ = ("worker_id", "process", "state", "task", "blocked", "known_functions",
                 "calls", "log_file", "log_pending", "exiting", "actor_id", "started_at",
                 "idle_since", "held_task", "secret")

    def __init__(self, worker_id, process, log_file, secret=b""):
        self.worker_id = worker_id
        self.secret = secret         # proves, in its HELLO, that this node started it
        self.process = process
        self.state = STARTING
        self.task = None             # the task it runs (plain workers)
        self.blocked = False         # waiting in get/wait, CPU lent back
        self.known_functions = set()
        self.calls = {}              # function_id -> calls run (for max_calls)
        self.log_file = log_file
        self.log_pending = b""
        self.exiting = False
        self.actor_id = None
        self.started_at = time.monotonic()
        self.idle_since = None       # first seen idle by idle_to_stop
        self.held_task = None        # last task, GPUs kept until this process is gone

    @property
    def pid(self):
        return self.process.pid


class WorkerPool:
    def __init__(self, node_address, session_dir, max_workers, env_extra=None,
                 max_starting=2, soft_limit=2):
        self.node_address = node_address
        self.session_dir = session_dir
        self.max_workers = max_workers
        self.max_starting = max(1, max_starting)
        self.soft_limit = soft_limit
        self.env_extra = env_extra or {}
        self.workers = {}            # worker_id -> Worker
        self.by_fd = {}              # stdout fd -> Worker
        self.counter = 0

    def live_count(self):
        return len(self.workers)

    def starting_count(self):
        return sum(1 for w in self.workers.values() if w.state == STARTING)

    def can_start(self):
        return len(self.workers) < self.max_workers

    def how_many_to_start(self, want):
        """Workers to start for ``want`` tasks that fit but found no idle worker."""
        starting = self.starting_count()
        return max(0, min(want - starting, self.max_starting - starting,
                          self.max_workers - len(self.workers)))

    def all_blocked(self):
        """Every live worker waits in ray.get/wait (deadlock if at the cap)."""
        return bool(self.workers) and all(w.blocked for w in self.workers.values())

    def idle_to_stop(self, now, timeout_s=IDLE_TIMEOUT_S):
        """Idle workers above ``soft_limit`` that have been idle for timeout_s."""
        idle = []
        for worker in self.workers.values():
            if worker.state == IDLE and not worker.exiting:
                if worker.idle_since is None:
                    worker.idle_since = now
                idle.append(worker)
            else:
                worker.idle_since = None
        surplus = len(self.workers) - self.soft_limit
        if surplus <= 0:
            return []
        stale = sorted((w for w in idle if now - w.idle_since >= timeout_s),
                       key=lambda w: w.idle_since)
        return stale[:surplus]

    def start(self):
        self.counter += 1
        worker_id = b"w%d-%d" % (os.getpid(), self.counter)
        env = dict(os.environ)
        env.update(self.env_extra)
        env["PYTHONUNBUFFERED"] = "1"
        # Its proof of being this worker: by environment, never argv (the id is guessable).
        secret = os.urandom(16).hex()
        env[auth.WORKER_SECRET_ENV] = secret
        # As Ray: one OpenMP thread per worker unless the user chose otherwise,
        # so N workers doing numpy do not start N x cores threads.
        env.setdefault("OMP_NUM_THREADS", "1")
        process = subprocess.Popen(
            [sys.executable, "-m", "zray.core", self.node_address, worker_id.decode()],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, close_fds=True)
        os.set_blocking(process.stdout.fileno(), False)
        log_path = os.path.join(self.session_dir, "logs", f"worker-{process.pid}.log")
        worker = Worker(worker_id, process, open(log_path, "ab", buffering=0), secret)
        self.workers[worker_id] = worker
        self.by_fd[process.stdout.fileno()] = worker
        return worker

    def idle_worker(self):
        for worker in self.workers.values():
            if worker.state == IDLE and not worker.exiting:
                return worker
        return None

    def read_output(self, fd):
        """Drain a worker's pipe; return (worker, complete lines as text)."""
        worker = self.by_fd.get(fd)
        if worker is None:
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
        data = worker.log_pending + b"".join(chunks)
        if not data:
            return worker, ""
        complete, _, rest = data.rpartition(b"\n")
        worker.log_pending = rest
        if not complete:
            return worker, ""
        complete += b"\n"
        worker.log_file.write(complete)
        return worker, complete.decode(errors="replace")

    def reap(self):
        """Workers whose process has exited, removed from the pool."""
        dead = []
        for worker in list(self.workers.values()):
            code = worker.process.poll()
            if code is not None:
                dead.append((worker, code))
                self._forget(worker)
        return dead

    def _forget(self, worker):
        self.workers.pop(worker.worker_id, None)
        fd = worker.process.stdout.fileno() if not worker.process.stdout.closed else None
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
            if worker.log_pending or tail:
                worker.log_file.write(worker.log_pending + tail)
            worker.process.stdout.close()
        worker.log_file.close()

    def stop_all(self, grace_s=1.0):
        """SIGTERM every worker, SIGKILL the ones still there after grace_s."""
        for worker in self.workers.values():
            _signal(worker.process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for worker in list(self.workers.values()):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                worker.process.wait(remaining)
            except subprocess.TimeoutExpired:
                _signal(worker.process, signal.SIGKILL)
                worker.process.wait()
            self._forget(worker)


def _signal(process, sig):
    try:
        process.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def describe_exit(code):
    """'exit code 3' or 'signal SIGKILL (9)' from a Popen return code."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal"
        return f"signal {name} ({-code})"
    return f"exit code {code}"

"""The node's table of worker processes and its policy: no processes here.

``NodeState`` owns a ``WorkerPool``: one ``Worker`` record per process, with
its state, the task or actor it runs and what it already knows. Starting,
reading and reaping the processes is ``worker_processes.py``'s, at the edge:
the state decides *that* a worker starts (and names it), the node starts it.

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

STARTING = "starting"
IDLE = "idle"
BUSY = "busy"
ACTOR = "actor"

IDLE_TIMEOUT_S = 10.0


class Worker:
    __slots__ = ("worker_id", "pid", "state", "task", "blocked", "known_functions",
                 "exiting", "actor_id", "idle_since", "held_task", "address_of")

    def __init__(self, worker_id):
        self.worker_id = worker_id
        self.pid = None              # known once the process says HELLO
        self.state = STARTING
        self.task = None             # the task it runs (plain workers)
        self.blocked = False         # waiting in get/wait, CPU lent back
        self.known_functions = set()
        self.exiting = False         # told to leave (or leaving on its own)
        self.actor_id = None
        self.idle_since = None       # first seen idle by idle_to_stop
        self.held_task = None        # last task, GPUs kept until this process is gone
        self.address_of = None       # the actor whose tcp address it published (kv)


class WorkerPool:
    def __init__(self, max_workers, max_starting=2, soft_limit=2, name_prefix=b"w"):
        self.max_workers = max_workers
        self.max_starting = max(1, max_starting)
        self.soft_limit = soft_limit
        self.name_prefix = name_prefix
        self.workers = {}            # worker_id -> Worker
        self.counter = 0

    def new_worker(self):
        """A record for a process the node is about to start."""
        self.counter += 1
        worker = Worker(b"%s-%d" % (self.name_prefix, self.counter))
        self.workers[worker.worker_id] = worker
        return worker

    def remove(self, worker_id):
        return self.workers.pop(worker_id, None)

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

    def idle(self):
        return [w for w in self.workers.values() if w.state == IDLE and not w.exiting]

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


def describe_exit(code):
    """'exit code 3' or 'signal SIGKILL (9)' from a Popen return code."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "signal"
        return f"signal {name} ({-code})"
    return f"exit code {code}"


def log_file_path(logs_dir, pid):
    """Where a worker's output goes (``worker_processes.py`` writes it)."""
    return os.path.join(logs_dir, f"worker-{pid}.log")

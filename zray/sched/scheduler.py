"""Task bookkeeping and placement policy of one node, without sockets.

::

    submitted ──(arguments missing)──► waiting ──(all ready)──► ready queue
                                                                 │ fits + worker
                                                                 ▼
                        done / failed / retried ◄────────────── running

Ready tasks queue per resource shape, so a big task that does not fit yet
never holds up small ones behind it, and a dispatch pass costs one look per
shape, not one per task.
"""
from collections import OrderedDict, deque

WAITING = "waiting"
READY = "ready"
RUNNING = "running"
INFEASIBLE = "infeasible"


class Task:
    __slots__ = ("spec", "frames", "missing", "worker", "resource_ids", "retries_left",
                 "demand", "state", "warned")

    def __init__(self, spec, frames):
        self.spec = spec
        self.frames = frames
        self.missing = 0
        self.worker = None
        self.resource_ids = {}
        self.retries_left = spec.max_retries
        self.demand = spec.resources
        self.state = WAITING
        self.warned = False

    @property
    def shape(self):
        return tuple(sorted(self.demand.items()))


class Scheduler:
    def __init__(self, resources):
        self.resources = resources
        self.queues = OrderedDict()   # shape -> deque of ready tasks
        self.infeasible = []
        self.running = {}             # task_id -> Task

    def make_ready(self, task):
        if not self.resources.feasible(task.demand):
            task.state = INFEASIBLE
            self.infeasible.append(task)
            return
        task.state = READY
        queue = self.queues.get(task.shape)
        if queue is None:
            queue = self.queues[task.shape] = deque()
        queue.append(task)

    def requeue_front(self, task):
        task.state = READY
        self.queues.setdefault(task.shape, deque()).appendleft(task)

    def placements(self, idle_workers):
        """Pair ready tasks that fit now with idle workers; take their resources.

        ``idle_workers`` is a list the call consumes. Returns (pairs, want)
        where ``want`` counts tasks that fit but found no worker.
        """
        pairs, want = [], 0
        for shape, queue in list(self.queues.items()):
            while queue:
                task = queue[0]
                if not self.resources.fits(task.demand):
                    break
                if not idle_workers:
                    want += self._how_many_fit(task.demand, len(queue))
                    break
                queue.popleft()
                task.resource_ids = self.resources.acquire(task.demand)
                task.worker = idle_workers.pop()
                task.state = RUNNING
                self.running[task.spec.task_id] = task
                pairs.append(task)
            if not queue:
                del self.queues[shape]
        return pairs, want

    def _how_many_fit(self, demand, limit):
        count = limit
        for name, amount in demand.items():
            if amount:
                count = min(count, self.resources.available.get(name, 0) // amount)
        return max(count, 0)

    def finish(self, task_id):
        task = self.running.pop(task_id, None)
        if task is not None:
            self.resources.release(task.demand, task.resource_ids)
        return task

    def retry_infeasible(self):
        """Put back tasks that a change of resources made feasible."""
        still = []
        for task in self.infeasible:
            if self.resources.feasible(task.demand):
                self.make_ready(task)
            else:
                still.append(task)
        self.infeasible = still

    def queued_count(self):
        return sum(len(q) for q in self.queues.values())

"""Task bookkeeping and placement policy of one node, without sockets.

::

    submitted ──(arguments missing)──► waiting ──(all ready)──► ready queue
        │                                                        │ fits + idle worker
        └──(no node could ever run it)──► infeasible             ▼
                        done / failed / retried ◄────────────── running ⇄ blocked
                                                                (CPU lent back)

- Ready tasks queue per (nesting depth, resource shape), so a big task that
  does not fit yet never holds up small ones behind it, and a dispatch pass
  costs one look per queue, not one per task.
- Deeper tasks go first: a task submitted from inside a task that then
  blocks in ``ray.get`` gets the CPU that parent lent back, rather than
  another parent that would block too. This keeps nested fan-out from
  filling the worker pool with blocked parents (a deadlock once the pool is
  at its cap). Within a depth, the queue with the oldest head goes first.
- A head that does not fit is skipped while others backfill around it, but
  only ``skip_limit`` times: after that, the resources it is short of are
  reserved, so a 2-CPU task on a 2-CPU node is not starved by a stream of
  1-CPU tasks.
- The sum of the demands of running, non-blocked tasks never exceeds the
  node's totals (``NodeResources`` checks every grant).
"""
from collections import deque

from ..transport import protocol as P
from .resources import describe, from_fixed, subtract
from .task import FINAL, TaskState

WAITING, READY, RUNNING = TaskState.WAITING, TaskState.READY, TaskState.RUNNING
INFEASIBLE, DISCARDED = TaskState.INFEASIBLE, TaskState.DISCARDED

SKIP_LIMIT = 8


class Scheduler:
    def __init__(self, resources, skip_limit=SKIP_LIMIT):
        self.resources = resources
        self.skip_limit = skip_limit
        self.queues = {}              # (depth, shape) -> deque of ready tasks
        self.infeasible = []
        self.running = {}             # task_id -> Task
        self._seq = 0

    # -- events in ----------------------------------------------------------
    def make_ready(self, task, front=False):
        """The task's arguments exist: queue it (or park it as infeasible);
        ``front``: first in line, keeping its age (a restarting actor)."""
        if task.state is DISCARDED:       # e.g. its actor was killed meanwhile
            return
        task.blocked = False
        task.skipped = 0
        if not self.resources.feasible(task.demand):
            task.to(INFEASIBLE)
            self.infeasible.append(task)
            return
        if not front or not task.seq:
            self._seq += 1
            task.seq = self._seq
        task.to(READY)
        key = (task.depth, task.shape)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = deque()
        if front:
            queue.appendleft(task)
        else:
            queue.append(task)

    def requeue_front(self, task):
        """A running task's worker died and it will be retried: first in line."""
        task.to(READY)
        task.blocked = False
        self.queues.setdefault((task.depth, task.shape), deque()).appendleft(task)

    def move_to_back(self, task):
        """A queued task goes behind every other of its queue (a lease request
        of a client asked to give a lease back: sched/state/leases.py)."""
        queue = self.queues.get((task.depth, task.shape))
        if task.state is READY and queue is not None and task in queue:
            queue.remove(task)
            self._seq += 1
            task.seq = self._seq
            queue.append(task)

    def block(self, task):
        """The task waits in ray.get/wait: lend its CPU to other work."""
        if task.blocked or self.running.get(task.spec.task_id) is not task:
            return
        task.blocked = True
        if task.demand.get("CPU"):
            self.resources.release({"CPU": task.demand["CPU"]})

    def unblock(self, task):
        """The wait is over: take the CPU back (may overdraw for a moment)."""
        if not task.blocked:
            return
        task.blocked = False
        if task.demand.get("CPU"):
            self.resources.reclaim({"CPU": task.demand["CPU"]})

    def finish(self, task_id, keep_gpus=False):
        """The task is done (or its worker died): give back what it held.

        ``keep_gpus`` holds its GPU ids until ``release_gpus``: a worker that
        exits after the task (max_calls) frees GPU memory only when gone.
        """
        task = self.running.pop(task_id, None)
        if task is None:
            return None
        demand = task.demand
        if task.blocked:      # its CPU is already lent back
            task.blocked = False
            demand = {k: v for k, v in demand.items() if k != "CPU"}
        if keep_gpus and "GPU" in demand:
            demand = {k: v for k, v in demand.items() if k != "GPU"}
            self.resources.release(demand)
        else:
            self.resources.release(demand, task.resource_ids)
            task.resource_ids = {}
        return task

    def release_gpus(self, task):
        """Give back the GPUs ``finish(keep_gpus=True)`` held."""
        if task.resource_ids.get("GPU"):
            self.resources.release({"GPU": task.demand["GPU"]}, task.resource_ids)
        task.resource_ids = {}

    def keep_holding(self, task_id):
        """The task is over but its worker keeps what it holds (an actor's
        explicit resources): no longer running, nothing given back until
        ``release_held``."""
        task = self.running.pop(task_id, None)
        if task is not None:
            self.unblock(task)
        return task

    def release_held(self, task):
        """Give back what ``keep_holding`` left with the worker."""
        self.resources.release(task.demand, task.resource_ids)
        task.resource_ids = {}

    def discard(self, task):
        """Forget a task that must not run (queued, infeasible or still waiting).

        A running task is left alone: its worker is killed and ``finish``
        releases what it holds.
        """
        if task.state is RUNNING:
            return
        if task.state is READY:
            key = (task.depth, task.shape)
            queue = self.queues.get(key)
            if queue is not None and task in queue:
                queue.remove(task)
                if not queue:
                    del self.queues[key]
        elif task.state is INFEASIBLE and task in self.infeasible:
            self.infeasible.remove(task)
        if task.state not in FINAL:
            task.to(DISCARDED)

    def retry_infeasible(self):
        """Put back tasks that a change of resources made feasible."""
        still, self.infeasible = self.infeasible, []
        for task in still:
            self.make_ready(task)

    def take_infeasible(self, choose):
        """Remove the infeasible tasks ``choose(task)`` finds a place for
        (another node); return [(task, place)]."""
        taken, keep = [], []
        for task in self.infeasible:
            place = choose(task)
            if place is None:
                keep.append(task)
            else:
                taken.append((task, place))
        self.infeasible = keep
        return taken

    def take_surplus(self, choose, budget):
        """Remove queued tasks beyond what ``budget`` (free resources) fits,
        newest first, while ``choose(task)`` finds them a place; return
        [(task, place)]."""
        taken = []
        for key, queue in list(self.queues.items()):
            if not queue:
                continue
            excess = len(queue) - self._count_fitting(queue[0].demand, len(queue), budget)
            while excess > 0 and queue:
                place = choose(queue[-1])
                if place is None:
                    break
                taken.append((queue.pop(), place))
                excess -= 1
            if not queue:
                del self.queues[key]
        return taken

    # -- instructions out ---------------------------------------------------
    def placements(self, idle_workers):
        """Pair ready tasks that fit now with idle workers; take their resources.

        ``idle_workers`` is a list the call consumes. Returns (tasks placed,
        with ``task.worker`` set; ``want``: how many more tasks fit now but
        found no idle worker, so the pool knows how many to start).
        """
        pairs, want = [], 0
        reserved = None       # what a starved head lacks, kept free for it
        starved = None        # the first head that did not fit
        budget = None         # what is left to plan with once workers ran out
        resources = self.resources
        for key in sorted(self.queues, key=self._priority):
            queue = self.queues[key]
            while queue:
                task = queue[0]
                if budget is not None:
                    want += self._count_fitting(task.demand, len(queue), budget)
                    break
                if not resources.fits(task.demand, reserved):
                    if starved is None:
                        starved = task
                        short = resources.short_of(task.demand)
                        if task.skipped >= self.skip_limit:
                            # Keep free what it lacks, not all it asks for: a
                            # task waiting for a GPU must not idle a CPU too.
                            reserved = {n: task.demand[n] for n in short}
                    break
                if not idle_workers:
                    budget = dict(resources.available)
                    if reserved:
                        subtract(budget, reserved)
                    continue
                queue.popleft()
                task.resource_ids = resources.acquire(task.demand)
                task.worker = idle_workers.pop()
                task.to(RUNNING)
                self.running[task.spec.task_id] = task
                pairs.append(task)
                if starved is not None and not short.isdisjoint(task.demand):
                    starved.skipped += 1
            if not queue:
                del self.queues[key]
        return pairs, want

    def _priority(self, key):
        # Deepest first, then the queue whose head has waited longest.
        queue = self.queues[key]
        return -key[0], queue[0].seq if queue else 0

    def _count_fitting(self, demand, limit, budget):
        """How many of ``limit`` tasks of this demand fit in ``budget`` (taken from it)."""
        count = limit
        for name, amount in demand.items():
            if amount > 0:
                count = min(count, max(budget.get(name, 0), 0) // amount)
        subtract(budget, demand, count)
        return count

    # -- looking ------------------------------------------------------------
    def queued_count(self):
        return sum(len(q) for q in self.queues.values())

    def statistics(self):
        """Counts for `zray status` and tests."""
        return {"queued": self.queued_count(), "running": len(self.running),
                "blocked": sum(1 for t in self.running.values() if t.blocked),
                "infeasible": len(self.infeasible), "queues": len(self.queues)}


# == reporting infeasible tasks ==================================================
def infeasible_report(task, resources):
    """One infeasible task as `zray status` shows it."""
    missing = {name: {"asked": from_fixed(asked), "total": from_fixed(total)}
               for name, (asked, total) in sorted(resources.missing(task.demand).items())}
    return {"task_id": task.spec.task_id.hex(), "name": task.spec.name,
            "kind": "actor" if task.spec.kind == P.ACTOR_CREATE else "task",
            "demand": describe(task.demand), "missing": missing}


def infeasible_message(task, resources, cluster_totals):
    """The warning a driver prints: what is missing and what to do."""
    report = infeasible_report(task, resources)
    short = ", ".join(f"{name} {m['asked']} (the largest node has {m['total']})"
                      for name, m in report["missing"].items())
    return (f"{report['kind']} {task.spec.name} cannot be scheduled: it needs {short}. "
            f"Its full demand is {report['demand']}; the cluster has {cluster_totals}. It stays "
            f"queued until a node with those resources joins (shown as infeasible in "
            f"`zray status`); or lower its num_cpus/num_gpus/resources")

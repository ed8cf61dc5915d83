"""Worker leases: a client runs its plain tasks on workers it borrowed
(part of NodeState; the client's side is ``core/lease.py``).

::

    client ──LEASE(id, demand)──► node: a Task of kind LEASE, queued and placed like a task
    client ◄──LEASED(id, worker)── node: that worker is BUSY with the lease, its demand held
    client ──PUSH task──► worker ──REPLY──► client      (the node hears nothing of it)
    client ──RELEASE──► worker ──RETURN(id)──► node: the worker is idle again

- A lease is placed like a task of its demand: the same queues and order,
  the same resources, its CPU lent back while its worker blocks in
  ``ray.get``; the pool grows for it as for a task. So placement, fairness
  and the worker cap keep their meaning.
- The lessee gives a lease back through its worker, so the node hears
  RETURN after every DONE that worker sent for the lessee's tasks (one pipe,
  in order): a result is never taken for that of a later task.
- Others wait: when the first task of a queue here whose client holds no
  lease would fit if a lease were given back, that lease is recalled
  (RECALL) and its holder's own lease requests go to the back of the queue;
  the holder returns it once the tasks it pushed there are done.
- With peers, a lease that cannot be placed at once is refused (LEASED with
  no worker): the client sends those tasks through the node, which may
  spill them to another node.
- The leased worker dies: RECALL says why; the lessee resubmits what it had
  pushed there through the node, the one that was running marked
  ``attempted``, which ``attempted`` below retries by its max_retries or
  fails with WorkerCrashedError, as for a task the node ran.
- The lessee leaves: a leased worker not given back within
  ``ORPHAN_GRACE_S`` (a lessee gives back its idle leases as it closes, but
  the RETURN comes by another socket than its BYE) is killed like a worker
  running its tasks (``owners.py``): it may hold more of its tasks.
"""
import itertools
import logging
from collections import OrderedDict

from ...exceptions import WorkerCrashedError
from ...transport import protocol as P
from ..task import Task, TaskState
from . import commands as C

log = logging.getLogger("zray.state")

S = TaskState
LOST_WORKERS_KEPT = 1000      # recent deaths of leased workers, for the errors of their tasks
RECALL_SCAN = 64              # queued tasks looked at per queue for one that waits on leases
ORPHAN_GRACE_S = 1.0          # a gone lessee's leases may still come back this long


class LeaseTable:
    def __init__(self, state):
        self.state = state
        self.queued = {}          # lease id -> Task not placed yet
        self.held = {}            # lease id -> Task whose worker is lent out
        self.recalled = set()     # lease ids asked back
        self.lost_workers = OrderedDict()   # worker id -> why it died
        self.orphans = {}         # lease id -> wall time its worker is killed, lessee gone

    # -- a client asks ---------------------------------------------------------
    def request(self, client, lease_id, demand):
        state = self.state
        if lease_id in self.queued or lease_id in self.held:
            return
        refusal = self._refusal(client, demand)
        if refusal is not None:
            log.debug("lease refused: %s", refusal)
            self._refuse(client.identity, lease_id)
            return
        submitter = state.pool.workers.get(client.identity)
        depth = 0
        if submitter is not None and submitter.task is not None:
            depth = submitter.task.depth + 1      # as for a task submitted from a task
        spec = P.TaskSpec(lease_id, P.LEASE, b"", "lease", (), (), (), dict(demand), 0, 0, 0,
                          None, None, {}, client.identity)
        task = Task(spec, [], depth)
        self.queued[lease_id] = task
        state.scheduler.make_ready(task)
        state.needs_dispatch = True

    def _refusal(self, client, demand):
        if client.kind not in ("driver", "worker"):
            return f"a {client.kind} cannot lease workers"
        if any(amount < 0 for amount in demand.values()):
            return "a negative demand"
        if "GPU" in demand:
            return "GPU tasks go through the node (it assigns GPU ids)"
        if not self.state.resources.feasible(demand):
            return "this node can never fit that demand"
        return None

    def _refuse(self, identity, lease_id):
        if identity in self.state.clients:
            self.state.emit(C.TellClient(identity, P.LEASED, (lease_id, None)))

    # -- the node places one ---------------------------------------------------------
    def granted(self, task, worker):
        """The scheduler placed the lease on ``worker`` (its demand is taken)."""
        lease_id = task.spec.task_id
        self.queued.pop(lease_id, None)
        self.held[lease_id] = task
        worker.state = "busy"
        worker.task = task
        self.state.emit(C.TellClient(task.spec.owner, P.LEASED, (lease_id, worker.worker_id)))

    def refuse_queued(self):
        """With peers: leases that found no worker at once are refused, so their
        tasks go through the node, which may send them to a node with room."""
        for lease_id, task in list(self.queued.items()):
            del self.queued[lease_id]
            if task.state is S.READY:
                self.state.scheduler.discard(task)
                self._refuse(task.spec.owner, lease_id)

    def recall_for_waiting(self):
        """Ask back a lease whose return would let a task of a client holding
        none run here now; the lessee's queued requests go behind that task."""
        if self.recalled:
            return      # one at a time: its return lets the waiting task run
        state = self.state
        resources = state.resources
        holders = {lease.spec.owner for lease in self.held.values()}
        for queue in list(state.scheduler.queues.values()):
            waiting = next((task for task in itertools.islice(queue, RECALL_SCAN)
                            if task.spec.owner not in holders), None)
            if waiting is None or resources.fits(waiting.demand):
                continue        # none waits on a lease, or it waits for a worker
            for lease_id, lease in self.held.items():
                if (lease_id not in self.recalled
                        and _fits_with(waiting.demand, resources.available, lease.demand)):
                    self._recall(lease_id, lease.spec.owner)
                    break

    def _recall(self, lease_id, owner):
        self.recalled.add(lease_id)
        self.state.emit(C.TellClient(owner, P.RECALL, (lease_id, None)))
        for task in list(self.queued.values()):
            if task.spec.owner == owner:
                self.state.scheduler.move_to_back(task)

    # -- it ends ---------------------------------------------------------------------
    def returned(self, worker_id, lease_id):
        """The worker says its lessee gave it back: it is idle again."""
        state = self.state
        task = self.held.get(lease_id)
        worker = state.pool.workers.get(worker_id)
        if task is None or worker is None or worker.task is not task:
            log.warning("ignored the return of a lease %s that worker %r does not hold",
                        lease_id.hex()[:12], worker_id)
            return
        del self.held[lease_id]
        self.orphans.pop(lease_id, None)
        self._answered_recalls(task.spec.owner)
        state.scheduler.finish(lease_id)
        task.to(S.DONE)
        worker.task = None
        worker.blocked = False
        worker.state = "idle" if not worker.exiting else worker.state
        state.needs_dispatch = True

    def worker_died(self, worker, why):
        """A leased worker exited: tell its lessee, which resubmits its tasks."""
        task = worker.task
        lease_id = task.spec.task_id
        self.held.pop(lease_id, None)
        self._answered_recalls(task.spec.owner)
        self.lost_workers[worker.worker_id] = why
        while len(self.lost_workers) > LOST_WORKERS_KEPT:
            self.lost_workers.popitem(last=False)
        if self.state.scheduler.finish(lease_id) is not None:
            task.to(S.FAILED)
        if task.spec.owner in self.state.clients:
            self.state.emit(C.TellClient(task.spec.owner, P.RECALL, (lease_id, why)))

    def _answered_recalls(self, owner):
        """A lease of ``owner`` came back: that answers its recall, whichever
        of its leases was asked for (it gives back its least busy one)."""
        self.recalled = {lease_id for lease_id in self.recalled
                         if lease_id in self.held and self.held[lease_id].spec.owner != owner}

    def owner_gone(self, identity):
        """A worker that leased workers for its nested tasks is gone
        (drivers: ``owners.py``)."""
        for lease_id, task in list(self.queued.items()):
            if task.spec.owner == identity:
                del self.queued[lease_id]
                self.state.scheduler.discard(task)
        for task in list(self.held.values()):
            if task.spec.owner == identity:
                self.orphaned(task)

    def orphaned(self, task):
        """Its lessee is gone: its worker goes unless the lease comes back soon."""
        self.orphans.setdefault(task.spec.task_id, self.state.wall + ORPHAN_GRACE_S)

    def kill_orphans(self, wall):
        """Tick: kill the workers of gone lessees' leases not given back in time."""
        state = self.state
        for lease_id, deadline in list(self.orphans.items()):
            task = self.held.get(lease_id)
            if task is None:
                del self.orphans[lease_id]
                continue
            worker = task.worker
            if wall < deadline or worker is None:
                continue
            del self.orphans[lease_id]
            if worker.worker_id not in state.recycled:
                state.recycled.add(worker.worker_id)
                worker.exiting = True          # no new work, no retry
                state.emit(C.KillWorker(worker.worker_id))

    def forget(self, task):
        """A lease dropped with its owner (owners.py)."""
        self.queued.pop(task.spec.task_id, None)
        self.held.pop(task.spec.task_id, None)
        self.recalled.discard(task.spec.task_id)

    def attempted(self, task):
        """A task resubmitted by a lessee whose worker died running it: True if
        it may run again (a retry is used up), else it fails here."""
        worker_id = task.spec.options.get("attempted")
        why = self.lost_workers.get(worker_id, f"its worker {worker_id!r} died")
        if task.retries_left > 0:
            task.retries_left -= 1
            log.warning("%s; retrying %s (%d left)", why, task.spec.name, task.retries_left)
            return True
        max_retries = task.spec.max_retries
        self.state.fail_task(task, WorkerCrashedError(
            f"task {task.spec.name} did not finish: {why}"
            + (f", after {max_retries} retries" if max_retries else "")
            + ". Likely causes: the task called os._exit or sys.exit, ran out of memory "
              "(check `dmesg`), crashed in a C extension, or was killed."))
        return False


def _fits_with(demand, available, freed):
    return all(available.get(name, 0) + freed.get(name, 0) >= amount
               for name, amount in demand.items())

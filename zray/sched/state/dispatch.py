"""Placing work on a node's workers: the part of ``NodeState`` that runs
after every event that may have made room (``needs_dispatch``).

- The scheduler pairs ready tasks with idle workers; more workers start
  when tasks wait for one (at most ``pool.how_many_to_start``).
- With peers, what cannot run here soon is forwarded; leases waiting here
  are refused so their tasks may go elsewhere, and held ones recalled when
  tasks wait.
- Drivers are warned, once, of a pool blocked at its cap and of tasks no
  node can ever run.
"""
import logging

from ...transport import protocol as P
from ..scheduler import infeasible_message
from ..worker_pool import ACTOR, BUSY
from . import commands as C

log = logging.getLogger("zray.state")


class Dispatch:
    """Mixed into NodeState: needs ``pool``, ``scheduler``, ``resources``,
    ``objects``, ``functions``, ``leases``, ``forwarding``, ``clients``,
    ``emit`` and ``cluster_totals``."""

    def _dispatch(self):
        self.needs_dispatch = False
        pool = self.pool
        pairs, want = self.scheduler.placements(pool.idle())
        for task in pairs:
            task.worker.idle_since = None
            self._execute(task, task.worker)
        if want:
            for _ in range(pool.how_many_to_start(want)):
                self.emit(C.StartWorker(pool.new_worker().worker_id))
        if self.forwarding.peers:
            if self.leases.queued:
                self.leases.refuse_queued()     # their tasks may go to another node
            self.forwarding.spill()     # what cannot run here soon goes to another node
        if self.leases.held and self.scheduler.queues:
            self.leases.recall_for_waiting()
        if want and not pool.can_start():
            self._warn_pool_exhausted()
        if self.scheduler.infeasible:
            self._warn_infeasible()

    def _execute(self, task, worker):
        if task.spec.kind == P.LEASE:
            self.leases.granted(task, worker)
            return
        worker.state = ACTOR if task.spec.kind == P.ACTOR_CREATE else BUSY
        worker.task = task
        self.send_task(worker, task)

    def send_task(self, worker, task):
        spec = task.spec
        get = self.objects.get
        deps = [get(object_id) for object_id in spec.dep_ids]
        functions = {}
        if spec.function_id not in worker.known_functions:
            functions[spec.function_id] = self.functions.get(spec.function_id)
            worker.known_functions.add(spec.function_id)
        self.emit(C.Execute(worker.worker_id, task, deps, functions))

    def _warn_pool_exhausted(self):
        if self.warned_pool_exhausted or not self.pool.all_blocked():
            return
        self.warned_pool_exhausted = True
        self.emit(C.WarnDrivers(
            f"all {self.pool.max_workers} worker processes of this node (the max_workers "
            f"cap) are blocked in ray.get/ray.wait while tasks wait for a worker: this may "
            f"deadlock. Wait on fewer nested tasks at once (fan out, then get), or start the "
            f"node with a larger max_workers"))

    def _warn_infeasible(self):
        for task in self.scheduler.infeasible:
            if task.warned:
                continue
            task.warned = True
            message = infeasible_message(task, self.resources, self.cluster_totals())
            log.warning(message)
            if task.spec.owner in self.clients:
                self.emit(C.ReportError(task.spec.owner, task.spec.name, message, None))

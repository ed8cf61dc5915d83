"""Worker processes of a node: the part of ``NodeState`` that handles
their events (blocked in ``ray.get``, exited, more wanted) and stops them.

- A worker blocked in ``ray.get``/``ray.wait`` lends its CPU to other work
  until it is unblocked.
- A worker that exits, however it ends, is forgotten: a leased one's lease
  fails, an actor's actor dies or restarts, a task it ran is retried or
  fails with an error naming the exit and the worker's log.
"""
import logging

from ...exceptions import WorkerCrashedError
from ...transport import protocol as P
from ..task import TaskState
from ..worker_pool import describe_exit, log_file_path
from . import commands as C
from . import events as E
from .owners import recycled_worker_reaped

log = logging.getLogger("zray.state")

S = TaskState


class WorkerEvents:
    """Mixed into NodeState: needs ``pool``, ``scheduler``, ``clients``,
    ``actors``, ``leases``, ``recycled``, ``logs_dir``, ``emit``,
    ``needs_dispatch``, ``_drop_client`` and ``fail_task``."""

    def _on_blocked(self, ev):
        worker = self.pool.workers.get(ev.worker_id)
        if worker is None or worker.blocked:
            return
        worker.blocked = True
        if worker.task is not None:
            self.scheduler.block(worker.task)     # lends its CPU to other work
        self.needs_dispatch = True

    def _on_unblocked(self, ev):
        worker = self.pool.workers.get(ev.worker_id)
        if worker is None or not worker.blocked:
            return
        worker.blocked = False
        if worker.task is not None:
            # May overdraw for a moment: new work waits until the CPU is back.
            self.scheduler.unblock(worker.task)

    def _on_address_published(self, ev):
        """Only the worker of that actor (running its creation, or created)."""
        worker = self.pool.workers.get(ev.worker_id)
        creating = worker is not None and worker.task is not None and (
            worker.task.spec.kind == P.ACTOR_CREATE and worker.task.spec.actor_id == ev.actor_id)
        if worker is not None and (creating or worker.actor_id == ev.actor_id):
            worker.address_of = ev.actor_id
            self.emit(C.PublishActorAddress(ev.actor_id, ev.worker_id, ev.address))

    def _on_worker_exited(self, ev):
        worker = self.pool.remove(ev.worker_id)
        if worker is None:
            return
        if worker.address_of is not None:
            # Killed, crashed, exited, or its __init__ raised: that address is dead.
            self.emit(C.ForgetActorAddress(worker.address_of, worker.worker_id))
        pid = worker.pid or ev.pid
        if worker.held_task is not None:
            self.scheduler.release_gpus(worker.held_task)
            worker.held_task = None
        client = self.clients.get(worker.worker_id)
        if client is not None:
            self._drop_client(client)
        leased = worker.task is not None and worker.task.spec.kind == P.LEASE
        if leased and worker.worker_id not in self.recycled:
            self.needs_dispatch = True
            self.leases.worker_died(worker, (
                f"the worker process (pid {pid}) running it died with {describe_exit(ev.code)}; "
                f"its output is in {log_file_path(self.logs_dir, pid)}"))
            return
        if worker.actor_id is not None:
            self.actors.worker_died(worker, ev.code, pid)
        self.needs_dispatch = True
        if recycled_worker_reaped(self, worker):
            return
        task = worker.task
        if task is None or task.spec.task_id not in self.scheduler.running:
            return
        self.scheduler.finish(task.spec.task_id)
        how = describe_exit(ev.code)
        if task.spec.kind == P.ACTOR_CREATE:
            task.to(S.FAILED)
            self.actors.creation_crashed(task, f"its worker process (pid {pid}) died with "
                                               f"{how} while running __init__")
        elif task.retries_left > 0 and not worker.exiting:
            task.retries_left -= 1
            log.warning("worker pid %s running %s died (%s); retrying (%d left)",
                        pid, task.spec.name, how, task.retries_left)
            task.worker = None
            self.scheduler.requeue_front(task)
        else:
            self.fail_task(task, WorkerCrashedError(
                f"the worker process (pid {pid}) running task {task.spec.name} died "
                f"with {how} before the task finished"
                + (f", after {task.spec.max_retries} retries" if task.spec.max_retries else "")
                + ". Likely causes: the task called os._exit or sys.exit, ran out of memory "
                  "(check `dmesg`), crashed in a C extension, or was killed. Its output is "
                  f"in {log_file_path(self.logs_dir, pid)}."))

    def _on_workers_wanted(self, ev):
        for _ in range(min(ev.count, self.pool.max_workers - self.pool.live_count())):
            self.emit(C.StartWorker(self.pool.new_worker().worker_id))

    def stop_worker(self, worker):
        if not worker.exiting:
            worker.exiting = True
            self.emit(C.StopWorker(worker.worker_id))

    worker_handlers = {
        E.WorkerBlocked: _on_blocked, E.WorkerUnblocked: _on_unblocked,
        E.WorkerExited: _on_worker_exited, E.ActorAddressPublished: _on_address_published,
        E.WorkersWanted: _on_workers_wanted,
    }

"""A driver that goes takes its work with it (part of NodeState).

When a driver leaves (BYE, or its process is found dead):

- its queued, waiting and infeasible tasks are dropped (DISCARDED): an
  error is stored in their returns, in case another process holds one, but
  nobody is told and nothing lands in the error table;
- the workers running its tasks are killed (*recycled*): their resources
  come back when they are reaped, and the pool starts fresh workers as
  other work needs them;
- its non-detached actors are killed and their names freed; detached ones
  stay until ``ray.kill`` or the cluster stops.

Tasks and actors made from inside its tasks and actors are owned by their
workers, which are killed too: the same rule applies to them, repeated until
nothing more is found, and once more when each recycled worker is reaped
(for what it submitted before it died).
"""
from ...exceptions import TaskCancelledError
from ...serialization import serialize
from ...transport import protocol as P
from ..task import TaskState
from . import commands as C

S = TaskState


def stop_work_of(state, identity, who):
    """``identity`` left: stop everything it (and the workers it keeps busy) owns."""
    owners = _owners_from(state, identity)
    reason = f"its owner ({who}) exited"
    for actor in list(state.actors.by_id.values()):
        if actor.creation.spec.owner in owners and not actor.detached:
            state.actors.owner_gone(actor, reason)
    for task in list(state.scheduler.running.values()):
        worker = task.worker
        if task.spec.kind == P.LEASE and task.spec.owner in owners:
            state.leases.orphaned(task)    # killed unless given back at once
            continue
        if (task.spec.owner in owners and worker is not None and task.spec.kind == P.TASK
                and worker.worker_id not in state.recycled):
            state.recycled.add(worker.worker_id)
            worker.exiting = True          # no new task, no retry of this one
            state.emit(C.KillWorker(worker.worker_id))
    error = serialize(TaskCancelledError(
        f"the task was dropped before it finished: {reason}")).meta
    for task in _queued_tasks_of(state, owners):
        drop(state, task, error)


def drop(state, task, error_meta):
    """End a task nobody waits for: error in its returns, arguments let go."""
    if task.spec.kind == P.LEASE:
        state.leases.forget(task)
    if task.state is S.RUNNING:
        task.to(S.FAILED)
    elif task.spec.kind == P.ACTOR_METHOD:
        task.to(S.DISCARDED)
    else:
        state.scheduler.discard(task)      # out of its queue
    headers = [(oid, P.INLINE, 1, None, (), True) for oid in task.spec.return_ids]
    state.store_objects(headers, [error_meta] * len(headers))
    state.release_arguments(task)
    if task.spec.kind != P.LEASE:
        state.counts["ended"] += 1


def recycled_worker_reaped(state, worker):
    """A worker killed because its owner left is gone: end its task quietly
    and drop what it submitted after the first sweep. True if it was one."""
    if worker.worker_id not in state.recycled:
        return False
    state.recycled.discard(worker.worker_id)
    task = worker.task
    if task is not None and state.scheduler.finish(task.spec.task_id) is not None:
        drop(state, task, serialize(TaskCancelledError(
            "the task was stopped: its owner exited")).meta)
    stop_work_of(state, worker.worker_id, f"worker pid {worker.pid}")
    return True


def _owners_from(state, identity):
    """``identity`` and every worker busy with work it owns, transitively."""
    owners = {identity}
    while True:
        more = set()
        for task in state.scheduler.running.values():
            if task.spec.owner in owners and task.worker is not None:
                more.add(task.worker.worker_id)
        for actor in state.actors.by_id.values():
            if (actor.creation.spec.owner in owners and not actor.detached
                    and actor.worker is not None):
                more.add(actor.worker.worker_id)
        more -= owners
        if not more:
            return owners
        owners |= more


def _queued_tasks_of(state, owners):
    """Tasks of ``owners`` not running yet: scheduler queues, infeasible, waiting
    for arguments, and calls queued on actors that stay."""
    found = {}
    for queue in state.scheduler.queues.values():
        for task in queue:
            if task.spec.owner in owners:
                found[id(task)] = task
    for task in state.scheduler.infeasible:
        if task.spec.owner in owners:
            found[id(task)] = task
    for entry in state.objects.entries.values():
        for task, _when_ready in entry.waiting_tasks:
            if (task.spec.owner in owners and task.state is S.WAITING
                    and task.spec.kind != P.ACTOR_CREATE):
                found[id(task)] = task
    for actor in state.actors.by_id.values():
        for caller in owners & actor.queues.keys():
            for task in actor.queues.pop(caller):
                found[id(task)] = task
    return [task for task in found.values()
            if task.spec.kind != P.ACTOR_CREATE and task.state in (S.WAITING, S.READY,
                                                                   S.INFEASIBLE)]

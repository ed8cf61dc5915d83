"""What a node tells tools about itself: its workers, actors, running tasks,
biggest objects, and a worker's log tail (the dashboard and ``zray stack``).

Read-only views of the node's tables, built only when a tool asks; nothing
here runs on the task path. Work that skips the node (tasks on leased
workers, direct actor calls) comes from what its workers last reported
(``state/direct_work.py``): in a worker's ``running``, its ``queued`` and
``finished_tasks``/``finished_calls`` (pushed tasks, direct calls), and in
``running`` with ``direct`` true.
"""
import heapq
import os
import time

from ..transport import protocol as P

LOG_TAIL_MAX_BYTES = 256 * 1024


def node_view(node, top_objects=10):
    """One picklable dict: workers, actors, running tasks, biggest objects."""
    actors = node.actors.by_id
    direct_work = node.state.direct_work
    workers, direct_running = [], []
    for worker in node.pool.workers.values():
        actor = actors.get(worker.actor_id) if worker.actor_id is not None else None
        running = []
        if actor is not None:
            running = [task.spec.name for task in actor.inflight.values()]
        elif worker.task is not None and worker.task.spec.kind == P.TASK:
            running = [worker.task.spec.name]
        # Direct calls and pushed tasks, as the worker last said (the node sees none).
        report = direct_work.of(worker.worker_id)
        if report is not None:
            running += [name for _task_id, name in report.running]
            direct_running += [{"task_id": task_id.hex(), "name": name, "pid": worker.pid,
                                "blocked": worker.blocked, "direct": True}
                               for task_id, name in report.running]
        leased = worker.task is not None and worker.task.spec.kind == P.LEASE
        workers.append({"pid": worker.pid, "state": worker.state, "blocked": worker.blocked,
                        "actor": actor.class_name if actor is not None else None,
                        "running": running, "leased": leased,
                        "queued": report.queued if report is not None else 0,
                        "finished_tasks": report.finished_tasks if report is not None else 0,
                        "finished_calls": report.finished_calls if report is not None else 0})
    return {"node_id": node.node_id, "time": time.time(), "workers": workers,
            # An actor placed on another node is listed there, by its host.
            "actors": [_actor_row(actor, direct_work.of(actor.worker.worker_id)
                                  if actor.worker is not None else None)
                       for actor in actors.values() if actor.node is None],
            "running": [{"task_id": task_id.hex(), "name": task.spec.name,
                         "pid": task.worker.pid if task.worker is not None else None,
                         "blocked": task.blocked, "direct": False}
                        for task_id, task in node.scheduler.running.items()
                        if task.spec.kind == P.TASK] + direct_running,
            "direct": direct_work.statistics(),
            "biggest": _biggest_objects(node, top_objects)}


def _actor_row(actor, report):
    return {"actor_id": actor.actor_id.hex(), "class": actor.class_name, "state": actor.state,
            "pid": actor.worker.pid if actor.worker is not None else None,
            "name": actor.name, "restarts": actor.max_restarts - actor.restarts_left
            if actor.max_restarts != float("inf") else None,
            "max_restarts": actor.max_restarts if actor.max_restarts != float("inf") else -1,
            "death_reason": actor.death_reason,
            # Calls through the node and, as its worker said, direct ones.
            "queued": sum(len(queue) for queue in actor.queues.values())
            + (report.queued if report is not None else 0),
            "running": len(actor.inflight) + (len(report.running) if report is not None else 0),
            "finished_calls": report.finished_calls if report is not None else 0}


def _biggest_objects(node, count):
    biggest = heapq.nlargest(count, node.objects.entries.values(), key=lambda e: e.size)
    wanted = {entry.object_id for entry in biggest}
    holders = {}
    for client in node.state.clients.values():
        for object_id in client.held & wanted:
            holders.setdefault(object_id, []).append(f"{client.kind} pid {client.pid}")
    return node.objects.listing(holders, only=biggest)


def log_tail(node, pid, max_bytes=64 * 1024):
    """The last ``max_bytes`` of worker ``pid``'s log on this node ('' if none)."""
    pid = int(pid)
    max_bytes = max(0, min(int(max_bytes), LOG_TAIL_MAX_BYTES))
    path = os.path.join(node.session_dir, "logs", f"worker-{pid}.log")
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    if size > max_bytes:
        data = data.partition(b"\n")[2]     # start at a whole line
    return data.decode(errors="replace")

"""Tasks in a node: the part of ``NodeState`` that takes them in and
records their end.

- ``submit``: the submitter owns the results (subscribed, counted as its
  refs); arguments are counted until the task ends; actor calls go to the
  actor table, creations and plain tasks wait for their arguments here or
  go where their arguments are (``locations.py``).
- ``_on_task_done``: results stored (held for the caller of a direct call
  or a leased worker's lessee), the worker back to idle or leaving, the
  resources and arguments released.
- A failed task stores its error in every return, so a reader gets it.
"""
from ...plasma.store import READY as OBJECT_READY
from ...serialization import serialize
from ...transport import protocol as P
from ..task import Task, TaskState
from ..worker_pool import BUSY, IDLE
from . import commands as C
from . import events as E

S = TaskState


class TaskEvents:
    """Mixed into NodeState: needs ``clients``, ``pool``, ``scheduler``,
    ``objects``, ``actors``, ``leases``, ``locations``, ``counts``, ``emit``,
    ``needs_dispatch``, the object events (``objects.py``) and ``stop_worker``."""

    def _on_submit(self, ev):
        client = self.clients.get(ev.client)
        if client is None:
            return
        self.submit(client, ev.spec, ev.frames)

    def submit(self, client, spec, frames):
        spec = spec._replace(owner=client.identity)
        if spec.kind != P.ACTOR_CREATE:       # a creation ends with its actor, not here
            self.counts["submitted"] += 1
        objects = self.objects
        for object_id in spec.return_ids:
            entry = objects.expect(object_id)
            entry.add_subscriber(client.identity)
            self._hold(client, object_id)
        for object_id in spec.dep_ids:
            objects.add_ref(object_id)
            if objects.get(object_id).state != OBJECT_READY and self._freed_here(object_id):
                self._lost(object_id)       # the task fails with it instead of waiting
        for object_id in spec.contained_ids:
            objects.add_ref(object_id)
        # Tasks submitted from inside a task run before their parent's peers
        # (see scheduler.py): nested fan-out then needs few workers. Actors
        # hold no CPU while they wait, so their tasks queue with the driver's.
        submitter = self.pool.workers.get(client.identity)
        depth = 0
        if submitter is not None and submitter.task is not None:
            depth = submitter.task.depth + 1
        task = Task(spec, frames, depth)
        if spec.options.get("attempted") is not None and spec.kind == P.TASK:
            if not self.leases.attempted(task):     # its leased worker died running it
                return task
        if spec.kind == P.ACTOR_METHOD:
            self.actors.submit_method(task)
            return task
        if spec.kind == P.ACTOR_CREATE:
            self.actors.submit_creation(task)
        else:
            self.locations.wait_anywhere(task)     # runs here or where its arguments are
        self.needs_dispatch = True
        return task

    def wait_for_arguments(self, task, when_ready):
        """Call when_ready(task) once every argument object is here (pulling
        the ones known to be on other nodes)."""
        task.missing = 0
        objects = self.objects
        for object_id in task.spec.dep_ids:
            entry = objects.get(object_id)
            if entry is None or entry.state != OBJECT_READY:
                entry = objects.expect(object_id)
                entry.add_waiting_task(task, when_ready)
                task.missing += 1
                if object_id in self.locations.where:
                    self.locations.pull(object_id)
        if task.missing == 0:
            when_ready(task)

    def _on_task_done(self, ev):
        worker = self.pool.workers.get(ev.worker_id)
        if worker is not None and worker.task is not None and worker.task.spec.kind == P.LEASE:
            # A task its lessee pushed: results held for it, the lease goes on.
            holder = self.clients.get(ev.holder) if ev.holder is not None else None
            self.store_objects(ev.headers, ev.frames, holder=holder)
            if ev.error_text:
                self._report_failure(None, ev.task_id, ev.error_text, worker.pid)
            return
        holder = None
        if ev.holder is not None and worker is not None and worker.actor_id is not None:
            holder = self._direct_caller(ev.holder)    # results of a direct call, kept for it
        self.store_objects(ev.headers, ev.frames, holder=holder)
        if holder is not None and holder.kind == "peer" and len(ev.holder) > 17:
            # Held for a peer's client: that peer hears it from us too (HELD_FOR).
            self.emit(C.TellPeer(ev.holder[1:17].decode(), P.HELD_FOR,
                                 (ev.holder[17:], list(ev.headers))))
        pid = worker.pid if worker is not None else None
        if worker is not None and worker.actor_id is not None:
            task = self.actors.method_done(worker, ev.task_id, ev.exiting)
            if ev.error_text:
                self._report_failure(task, ev.task_id, ev.error_text, pid)
            return
        task = self.scheduler.running.get(ev.task_id)
        if ev.error_text:
            self._report_failure(task, ev.task_id, ev.error_text, pid)
        self.needs_dispatch = True
        if task is not None and task.spec.kind == P.ACTOR_CREATE and worker is not None:
            self.actors.created(task, worker, ev.error_text)
            return
        task = self._finish_task(ev.task_id, worker, exiting=ev.exiting)
        if task is not None:
            self.end(task, S.DONE)
        if worker is not None:
            worker.task = None
            if ev.exiting or worker.exiting:
                self.stop_worker(worker)   # DONE handled: it may go now (max_calls)
                worker.state = BUSY        # leaving; reaped when it exits
            else:
                worker.state = IDLE

    def _direct_caller(self, identity):
        """The client a direct call's results are held for: the caller, or
        ``p<node id><caller>``, the peer whose client called from another node
        (core/remote_endpoint.py; a peer's identity is p<node id> and a nonce)."""
        client = self.clients.get(identity)
        if client is None and len(identity) >= 17 and identity[:1] == b"p":
            peer = identity[:17]        # then the caller's identity there
            client = next((c for i, c in self.clients.items()
                           if c.kind == "peer" and i.startswith(peer)), None)
        return client

    def push_object(self, identity, object_id):
        """OBJECTS to a client, now, of an object already here."""
        entry = self.objects.get(object_id)
        if entry is not None and identity in self.clients:
            self.emit(C.PushObject(identity, entry))

    def end(self, task, state):
        """A task or actor call is over (DONE or FAILED); the transition table
        makes sure it happens once."""
        task.to(state)
        if task.spec.kind not in (P.ACTOR_CREATE, P.LEASE):
            self.counts["ended"] += 1

    def _finish_task(self, task_id, worker, exiting=False):
        task = self.scheduler.running.get(task_id)
        if task is None:
            return None
        if worker is not None:
            worker.blocked = False
        # A worker leaving after this task (max_calls) keeps its GPUs until it
        # is gone, so the next GPU task finds that GPU's memory freed.
        keep_gpus = exiting and worker is not None and bool(task.resource_ids.get("GPU"))
        self.scheduler.finish(task_id, keep_gpus=keep_gpus)
        if keep_gpus:
            worker.held_task = task
        self.release_arguments(task)
        return task

    def release_arguments(self, task):
        for object_id in task.spec.dep_ids:
            self.release_object(object_id)
        for object_id in task.spec.contained_ids:
            self.release_object(object_id)

    def fail_task(self, task, error):
        """Store ``error`` in every return of ``task``, tell its owner, let go of its args."""
        data = serialize(error)
        headers = [(oid, P.INLINE, 1, None, (), True) for oid in task.spec.return_ids]
        self.store_objects(headers, [data.meta] * len(headers))
        self._report_failure(task, task.spec.task_id, str(error), None)
        self.release_arguments(task)
        if task.state not in (S.DONE, S.FAILED, S.DISCARDED):
            self.end(task, S.FAILED)

    def _report_failure(self, task, task_id, text, pid):
        self.emit(C.RecordError(task_id, text, pid, task.spec.name if task is not None else None))
        if task is not None and task.spec.owner in self.clients:
            self.emit(C.ReportError(task.spec.owner, task.spec.name, text, task.spec.return_ids))

    # == looking (no changes) ================================================
    def may_finish(self, worker_id, task_id):
        """Whether a DONE of ``task_id`` from this client is believable: only the
        worker running a task finishes it (an actor's calls: its table checks)."""
        worker = self.pool.workers.get(worker_id)
        if worker is None:
            return False
        if worker.actor_id is not None:
            return True
        if worker.task is not None and worker.task.spec.kind == P.LEASE:
            return True                 # its lessee's tasks, pushed to it directly
        return worker.task is not None and worker.task.spec.task_id == task_id

    task_handlers = {E.TaskSubmitted: _on_submit, E.TaskDone: _on_task_done}

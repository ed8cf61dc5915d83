"""``NodeState``: everything one node knows, changed only by ``handle(event)``.

It owns the scheduler queues and resources, the object table (readiness,
reference counts; its events are in ``objects.py``), the workers' records,
the actor table and the view of peer nodes, and returns the commands the
node's loop carries out. No zmq, no processes, no clock: see the package
docstring.
"""
import logging

from ...exceptions import WorkerCrashedError
from ...plasma.store import READY as OBJECT_READY, ObjectTable
from ...serialization import serialize
from ...transport import protocol as P
from .. import resources as R
from ..scheduler import Scheduler, infeasible_message
from ..task import Task, TaskState
from ..worker_pool import ACTOR, BUSY, IDLE, WorkerPool, describe_exit, log_file_path
from . import commands as C
from . import events as E
from .actors import ActorTable
from .direct_work import DirectWork
from .forwarding import Forwarding
from .leases import LeaseTable
from .locations import Locations
from .objects import ObjectEvents
from .owners import recycled_worker_reaped, stop_work_of

log = logging.getLogger("zray.state")

S = TaskState


class Client:
    __slots__ = ("identity", "kind", "pid", "held", "told_by_caller", "told_by_peer")

    def __init__(self, identity, kind, pid):
        self.identity = identity
        self.kind = kind
        self.pid = pid
        self.held = set()     # object ids this process holds refs to
        # Results of its direct calls held on peers, heard of once so far:
        # from it (HELD_AT) or from the peer (HELD_FOR); the other says so again.
        self.told_by_caller = set()
        self.told_by_peer = set()


class NodeState(ObjectEvents):
    def __init__(self, totals, object_store_memory, spill_dir, max_workers, disk, *,
                 node_id="node", gpu_ids=None, max_starting=2, soft_limit=2,
                 worker_prefix=b"w", logs_dir="logs"):
        self.node_id = node_id
        self.resources = R.NodeResources(totals, gpu_ids)
        self.scheduler = Scheduler(self.resources)
        self.wall = 0.0                # time.time() of the last Tick
        # ``disk``: the object table's port to files (plasma/disk.py on a node).
        self.objects = ObjectTable(object_store_memory, spill_dir, disk,
                                   clock=lambda: self.wall)
        # A ref inside a freed object goes as a client's does: an actor whose
        # last handle was in it exits (else it lived on, unreachable).
        self.objects.release_inner = self.release_object
        self.pool = WorkerPool(max_workers, max_starting=max_starting, soft_limit=soft_limit,
                               name_prefix=worker_prefix)
        self.logs_dir = logs_dir
        self.actors = ActorTable(self)
        self.forwarding = Forwarding(self)
        self.leases = LeaseTable(self)      # workers lent to clients for their tasks
        self.direct_work = DirectWork()     # what clients run past the node, as they say
        self.locations = Locations(self)    # objects on other nodes, lineage
        self.clients = {}              # identity -> Client
        self.functions = {}            # function_id -> (name, blob, sys_path)
        self.serializers = []          # (blob, sys_path) in registration order
        self.recycled = set()          # workers killed because their task's owner left
        self.warned_pool_exhausted = False
        self.had_peers = False         # another node ever connected (see _freed_here)
        self.counts = {"submitted": 0, "ended": 0}
        self.out = []
        self.needs_dispatch = False

    # == the entry point =====================================================
    def handle(self, event):
        """Apply one event; return the commands the node must carry out, in order."""
        self.out = out = []
        self._handlers[type(event)](self, event)
        if self.objects.pins_to_drop:
            self.ask_to_drop_pins()
        if self.needs_dispatch:
            self._dispatch()
        return out

    def emit(self, command):
        self.out.append(command)

    # == clients =============================================================
    def _on_client_joined(self, ev):
        client = self.clients[ev.identity] = Client(ev.identity, ev.kind, ev.pid)
        if client.kind == "peer":
            self.had_peers = True
        if client.kind != "worker":
            return
        if self.serializers:     # a worker hears every registration before its first task
            self.emit(C.TellClient(ev.identity, P.SERIALIZERS, (list(self.serializers),)))
        worker = self.pool.workers.get(ev.identity)
        if worker is not None:
            worker.pid = ev.pid
            worker.state = IDLE
            self.needs_dispatch = True

    def _on_client_left(self, ev):
        client = self.clients.get(ev.identity)
        if client is not None:
            self._drop_client(client)

    def _drop_client(self, client):
        self.clients.pop(client.identity, None)
        self.direct_work.forget(client.identity)
        self.emit(C.ClientGone(client.identity))
        if client.kind == "driver":     # its work stops before its refs go
            stop_work_of(self, client.identity, f"driver pid {client.pid}")
        elif self.leases.held or self.leases.queued:
            self.leases.owner_gone(client.identity)
        self.objects.release_reservations_of(client.identity)
        self.objects.release_pins_of(client.identity)
        held, client.held = client.held, set()
        for object_id in held:
            self.release_object(object_id)

    def _on_function(self, ev):
        self.functions[ev.function_id] = ev.record

    def _on_serializer(self, ev):
        registration = (ev.blob, ev.sys_path)
        if registration in self.serializers:
            return           # heard it already (from another peer)
        self.serializers.append(registration)
        for client in self.clients.values():
            if client.kind == "worker":
                self.emit(C.TellClient(client.identity, P.SERIALIZERS, ([registration],)))
        if not ev.from_peer and self.forwarding.peers:
            # Every node hears a driver's registration once, from its node.
            self.emit(C.ShareSerializers(None, [registration]))

    # == tasks ===============================================================
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

    # == workers =============================================================
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

    def _on_tick(self, ev):
        self.wall = ev.wall
        for worker in self.pool.idle_to_stop(ev.now):
            self.stop_worker(worker)
        if self.leases.orphans:
            self.leases.kill_orphans(ev.wall)
        if self.locations.where or self.locations.lineage or self.locations.wanted:
            self.locations.sweep()
        self.objects.release_idle_pages()

    def _on_workers_wanted(self, ev):
        for _ in range(min(ev.count, self.pool.max_workers - self.pool.live_count())):
            self.emit(C.StartWorker(self.pool.new_worker().worker_id))

    def stop_worker(self, worker):
        if not worker.exiting:
            worker.exiting = True
            self.emit(C.StopWorker(worker.worker_id))

    # == placing work ========================================================
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

    # == looking (no changes) ================================================
    def cluster_totals(self):
        return self.forwarding.cluster_totals()

    def cluster_available(self):
        return self.forwarding.cluster_available()

    def local_available(self):
        return R.describe({k: max(v, 0) for k, v in self.resources.available.items() if v > 0})

    def holders(self):
        """object id -> names of the processes holding it (``zray memory``)."""
        holders = {}
        for client in self.clients.values():
            name = f"{client.kind} pid {client.pid}"
            for object_id in client.held:
                holders.setdefault(object_id, []).append(name)
        return holders

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

    def driver_pids(self):
        return {c.identity: c.pid for c in self.clients.values() if c.kind == "driver" and c.pid}

    _handlers = {
        **ObjectEvents.object_handlers,
        E.ClientJoined: _on_client_joined, E.ClientLeft: _on_client_left,
        E.FunctionRegistered: _on_function, E.SerializerRegistered: _on_serializer,
        E.TaskSubmitted: _on_submit, E.TaskDone: _on_task_done,
        E.WorkerBlocked: _on_blocked, E.WorkerUnblocked: _on_unblocked,
        E.WorkerExited: _on_worker_exited, E.Tick: _on_tick,
        E.ActorAddressPublished: _on_address_published,
        E.WorkersWanted: _on_workers_wanted,
        E.LeaseRequested: lambda self, ev: (
            ev.client in self.clients
            and self.leases.request(self.clients[ev.client], ev.lease_id, ev.demand)),
        E.LeaseReturned: lambda self, ev: self.leases.returned(ev.worker_id, ev.lease_id),
        E.WorkReported: lambda self, ev: ev.client in self.clients and self.direct_work.reported(
            *ev),
        E.KillActorRequested: lambda self, ev: self.actors.kill(ev.actor_id, ev.no_restart),
        E.ActorNameReserved: lambda self, ev: self.actors.reserve_name(ev.name, ev.actor_id),
        E.PeerSeen: lambda self, ev: self.forwarding.seen(ev.node_id, ev.info),
        E.PeerAnswered: lambda self, ev: self.forwarding.answered(ev.node_id, ev.refused),
        E.PeerGone: lambda self, ev: self.forwarding.gone(ev.node_id),
        E.TaskForwardedIn: lambda self, ev: self.forwarding.forwarded_in(ev),
        E.PeerObjectArrived: lambda self, ev: self.forwarding.arrived(ev.object_id),
        E.ObjectLocated: lambda self, ev: self.locations.located(ev.node_id, ev.header),
    }

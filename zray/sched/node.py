"""The node daemon: one per machine, one thread, one ROUTER.

::

    driver ──┐
    worker ──┤ DEALER ──► ROUTER ┌ NodeDaemon ─────────────────────────────┐
    worker ──┘                   │ Scheduler   tasks: waiting/ready/running│
                                 │ ObjectTable objects, refs, shm, spill   │
                                 │ WorkerPool  processes, pipes, reaping   │
                                 │ ActorTable  actors and their queues     │
                                 └─────────────── kv (errors, events) ─────┘

- Clients (drivers and workers) say HELLO; drivers own the tasks they submit
  and get their results pushed to them as soon as they exist.
- A task runs once its argument objects exist and the node's free
  resources fit it; workers start on demand.
- Worker output is read from pipes, logged and forwarded to drivers.
- Local clients come over ipc (the session directory, this user's only);
  peers and remote drivers over a second ROUTER on tcp, a CURVE server of
  the cluster token (``transport/auth.py``), so the ipc hot path pays
  nothing for encryption. A client is answered on the socket it came in on.
"""
import logging
import os
import signal
import time

import zmq

from ..exceptions import WorkerCrashedError
from ..serialization import serialize
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import OwnerWatch, RateLimitedLog, authorize
from ..plasma.control import ObjectStoreRequests
from ..plasma.store import READY as OBJECT_READY, ObjectTable
from . import admission
from . import resources as R
from .actors import ActorTable
from .node_requests import NodeRequests
from .scheduler import Scheduler, Task, infeasible_message
from .worker_pool import ACTOR, BUSY, IDLE, WorkerPool, describe_exit

log = logging.getLogger("zray.node")

TICK_S = 0.05
EVENT_FLUSH_S = 0.2
REAP_INTERVAL_S = 0.02


class Client:
    __slots__ = ("identity", "kind", "pid", "held")

    def __init__(self, identity, kind, pid):
        self.identity = identity
        self.kind = kind
        self.pid = pid
        self.held = set()     # object ids this process holds refs to


class NodeDaemon(NodeRequests):
    def __init__(self, config):
        self.config = config
        self.node_id = os.urandom(8).hex()
        self.session_dir = config["session_dir"]
        self.session_name = config["session_name"]
        # The token comes by environment (never argv) and leaves it at once.
        self.password = config.get("password") or os.environ.pop(auth.TOKEN_ENV, "")
        self.context = zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.RCVHWM, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.bind(config["address"])
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.tcp_address = None        # for peers and remote drivers (zray start)
        self.tcp_router = self.gatekeeper = None
        self.remote_clients = set()    # identities that came in on tcp_router
        if config.get("tcp_address"):
            self.gatekeeper = auth.start_gatekeeper(self.context, self.password)
            self.tcp_router = self.context.socket(zmq.ROUTER)
            self.tcp_router.setsockopt(zmq.LINGER, 0)
            self.tcp_router.setsockopt(zmq.ROUTER_MANDATORY, 0)
            self.tcp_router.setsockopt(zmq.SNDHWM, 0)
            auth.serve_securely(self.tcp_router, self.password)
            self.tcp_router.bind(config["tcp_address"])
            self.tcp_address = self.tcp_router.getsockopt_string(zmq.LAST_ENDPOINT)
        totals = R.totals_from_options(config["num_cpus"], config["num_gpus"],
                                       config.get("resources"))
        totals.update(R.memory_totals(config["object_store_memory"]))
        self.resources = R.NodeResources(totals, config.get("gpu_ids"))
        self.scheduler = Scheduler(self.resources)
        self.objects = ObjectTable(config["object_store_memory"],
                                   config.get("spill_dir")
                                   or os.path.join(self.session_dir, "spill"))
        self.store_requests = ObjectStoreRequests(self)
        cpus = max(1, -(-self.resources.totals.get("CPU", 0) // R.UNIT))
        # Start at most as many workers at once as there are cores (as Ray's
        # maximum_startup_concurrency); keep that many warm when idle.
        self.pool = WorkerPool(self.address, self.session_dir, config["max_workers"],
                               max_starting=config.get("max_starting_workers") or cpus,
                               soft_limit=max(cpus, config.get("prestart_workers") or 0),
                               env_extra={auth.TOKEN_ENV: self.password})
        self.actors = ActorTable(self)
        self.clients = {}
        self.functions = {}            # function_id -> (name, blob, sys_path)
        self.events = []
        self.kv = None
        if config.get("kv_address"):
            from ..kv.client import KvClient
            self.kv = KvClient(config["kv_address"], self.password, self.context)
        self.kv_supervisor = None      # the head restarts its kv service if it dies
        if config.get("kv_restart"):
            from ..kv.supervisor import KvSupervisor
            restart = config["kv_restart"]
            self.kv_supervisor = KvSupervisor(restart["command"], restart["pid"],
                                              restart["log"], self.password)
        self.watched = {}              # extra sockets polled by the loop -> callback
        # Spill copies run in a thread; the loop applies them when they finish.
        self.watched[self.objects.spill_done_fd] = self.objects.finish_spills
        self.peers = None              # other nodes of a multi-node cluster (peers.py)
        if self.tcp_address and self.kv is not None:
            from .peers import Peers
            self.peers = Peers(self)
        self.owner = OwnerWatch(config.get("owner_pid"))
        self.running = True
        self.orphaned = False
        self.pushes = {}               # client -> (headers, frames) to send as one OBJECTS
        self.next_reap = 0.0
        self.next_event_flush = time.monotonic() + EVENT_FLUSH_S
        self.next_client_check = time.monotonic() + 1.0
        self.warned_pool_exhausted = False
        self.complaints = RateLimitedLog(log)

    # == the loop ============================================================
    def serve_forever(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.tcp_router is not None:
            poller.register(self.tcp_router, zmq.POLLIN)
        registered_fds, registered_sockets = set(), set()
        for _ in range(self.config.get("prestart_workers", 0)):
            self.pool.start()
        self._publish_node_info()
        while self.running:
            for fd in set(self.pool.by_fd) - registered_fds:
                poller.register(fd, zmq.POLLIN)
                registered_fds.add(fd)
            for fd in registered_fds - set(self.pool.by_fd):
                poller.unregister(fd)
                registered_fds.discard(fd)
            if registered_sockets != self.watched.keys():
                for sock in registered_sockets - self.watched.keys():
                    poller.unregister(sock)
                for sock in self.watched.keys() - registered_sockets:
                    poller.register(sock, zmq.POLLIN)
                registered_sockets = set(self.watched)
            for sock, _ in poller.poll(int(TICK_S * 1000)):
                # Nothing that arrives may stop the loop: every step is guarded.
                try:
                    if sock is self.router or sock is self.tcp_router:
                        self._drain_router(sock)
                    elif sock in self.watched:
                        self.watched[sock]()
                    else:
                        self._forward_output(sock)
                except Exception as exc:
                    self.complaints.warn("loop", "error in the node loop: %r", exc)
                    log.debug("error in the node loop", exc_info=True)
            try:
                self._tick()
            except Exception as exc:
                self.complaints.warn("tick", "error in the node's timers: %r", exc)
                log.debug("error in the node's timers", exc_info=True)
        self._stop()

    def _drain_router(self, router):
        try:
            self._drain_batch(router)
        finally:
            self._flush_pushes()

    def _drain_batch(self, router):
        remote = router is self.tcp_router
        for _ in range(1000):      # bounded, so ticks still happen under load
            # Asking EVENTS is cheaper than the zmq.Again of an empty recv.
            if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            frames = router.recv_multipart()
            try:
                self._handle(frames, remote)
            except Exception as exc:      # one bad message must not take the node down
                self.complaints.warn("message", "error handling a message (%r): %r",
                                     frames[1][:20] if len(frames) > 1 else frames, exc)
                log.debug("error handling a message", exc_info=True)

    def _tick(self):
        now = time.monotonic()
        if now >= self.next_reap:
            # Rate-limited: under load the loop turns thousands of times a second.
            self.next_reap = now + REAP_INTERVAL_S
            for worker, code in self.pool.reap():
                self._on_worker_exit(worker, code)
        if self.events and now >= self.next_event_flush:
            if self.kv is not None:
                self.kv.tell("add_events", self.events)
            self.events = []
            self.next_event_flush = now + EVENT_FLUSH_S
        if self.peers is not None:
            self.peers.tick(now)
        if now >= self.next_client_check:
            self.next_client_check = now + 1.0
            self._drop_dead_clients()
            for worker in self.pool.idle_to_stop(now):
                worker.exiting = True
                self.send(worker.worker_id, P.EXIT)
        if self.owner.gone():
            log.info("the driver that started this node is gone; shutting down")
            self.orphaned = True
            self.running = False
        if self.kv_supervisor is not None and self.running:
            self.kv_supervisor.tick(now)
        self._flush_pushes()

    # == messages ============================================================
    def _handle(self, frames, remote=False):
        identity = frames[0]
        if (identity in self.remote_clients) != remote and identity in self.clients:
            return      # an identity taken on the other socket: not this client's
        msg_type, fields = P.unpack(frames[1])
        payload = frames[2:]
        client = self.clients.get(identity)
        if client is None:
            if msg_type == P.HELLO:
                if remote:
                    self.remote_clients.add(identity)
                try:
                    self._on_hello(identity, *fields)
                finally:
                    if identity not in self.clients:
                        self.remote_clients.discard(identity)
            return
        handler = self.handlers.get(msg_type)
        if handler is None:
            log.warning("unknown message %r from %r", msg_type, identity)
            return
        handler(self, client, fields, payload)

    def send(self, identity, msg_type, *fields, frames=()):
        if identity in self.pushes:
            self._flush_pushes_to(identity)     # keep the order the client sees
        self.socket_for(identity).send_multipart(
            [identity] + P.pack(msg_type, *fields) + list(frames))

    def socket_for(self, identity):
        """The ROUTER a client came in on: its replies go back there."""
        return self.tcp_router if identity in self.remote_clients else self.router

    def _push_object(self, identity, entry):
        """Queue an object for a client; objects leave in one OBJECTS message per
        client per pass of the loop, not one message each."""
        queued = self.pushes.get(identity)
        if queued is None:
            queued = self.pushes[identity] = ([], [])
        queued[0].append(entry.header())
        queued[1].extend(entry.frames)

    def _flush_pushes_to(self, identity):
        headers, frames = self.pushes.pop(identity)
        self.socket_for(identity).send_multipart(
            [identity] + P.pack(P.OBJECTS, headers) + frames)

    def _flush_pushes(self):
        for identity in list(self.pushes):
            self._flush_pushes_to(identity)

    def _on_hello(self, identity, kind, pid, password, version, sys_path, worker_secret):
        if not isinstance(password, str) or not authorize(self.password, password):
            self.send(identity, P.REFUSED, "wrong cluster password: connect with the "
                      "redis_password/--redis-password the cluster was started with")
            return
        if version != P.PROTOCOL_VERSION:
            self.send(identity, P.REFUSED, f"protocol version {version} does not match the "
                      f"node's {P.PROTOCOL_VERSION}: use the same zray version everywhere")
            return
        refusal = admission.hello_refusal(self.pool.workers.get(identity),
                                          identity in self.remote_clients, kind, worker_secret)
        if refusal is not None:
            self.complaints.warn("hello", "refused a client: %s", refusal)
            self.send(identity, P.REFUSED, refusal)
            return
        client = self.clients[identity] = Client(identity, kind, pid)
        self.send(identity, P.WELCOME, self._node_info())
        self.store_requests.client_joined(client)
        if kind == "worker":
            worker = self.pool.workers.get(identity)
            if worker is None:
                return
            worker.state = IDLE
            self._dispatch()

    def _node_info(self):
        return {"node_id": self.node_id, "address": self.address,
                "session_dir": self.session_dir, "session_name": self.session_name,
                "plasma_dir": self.config["plasma_dir"], "spill_dir": self.objects.spill_dir,
                "kv_address": self.config.get("kv_address"),
                "kv_pub_address": self.config.get("kv_pub_address"),
                "resources": R.describe(self.resources.totals),
                "hostname": os.uname().nodename}

    def _on_function(self, client, fields, _payload):
        function_id, name, blob, sys_path = fields
        refusal = admission.function_refusal(function_id, blob)
        if refusal is not None:
            self.complaints.warn("function", "ignored a function: %s", refusal)
            return
        self.functions[function_id] = (name, blob, sys_path)

    def _on_submit(self, client, fields, payload):
        (spec,) = fields
        spec = spec._replace(owner=client.identity)
        for object_id in spec.return_ids:
            entry = self.objects.expect(object_id)
            entry.subscribers.add(client.identity)
            self._hold(client, object_id)
        for object_id in spec.dep_ids + spec.contained_ids:
            self.objects.add_ref(object_id)
        # Tasks submitted from inside a task run before their parent's peers
        # (see scheduler.py): nested fan-out then needs few workers. Actors
        # hold no CPU while they wait, so their tasks queue with the driver's.
        submitter = self.pool.workers.get(client.identity)
        depth = 0
        if submitter is not None and submitter.task is not None:
            depth = submitter.task.depth + 1
        task = Task(spec, payload, depth)
        if spec.kind == P.ACTOR_METHOD:
            self.actors.submit_method(task)
            return
        if spec.kind == P.ACTOR_CREATE:
            self.actors.submit_creation(task)
        else:
            self._wait_for_arguments(task, self.scheduler.make_ready)
        self._dispatch()

    def _wait_for_arguments(self, task, when_ready):
        """Call when_ready(task) once every argument object exists."""
        task.missing = 0
        for object_id in task.spec.dep_ids:
            entry = self.objects.get(object_id)
            if entry is None or entry.state != OBJECT_READY:
                entry = self.objects.expect(object_id)
                entry.waiting_tasks.append((task, when_ready))
                task.missing += 1
        if task.missing == 0:
            when_ready(task)

    def _on_put(self, client, fields, payload):
        (entries,) = fields
        if self._refused_objects(entries, payload, "PUT"):
            return
        self._store_objects(entries, payload, holder=client)

    def _refused_objects(self, entries, payload, what):
        refusal = admission.object_entries_refusal(
            entries, len(payload), self.session_name,
            (self.config["plasma_dir"], self.objects.spill_dir))
        if refusal is not None:
            self.complaints.warn(what, "ignored a %s: %s", what, refusal)
        return refusal is not None

    def _store_objects(self, entries, payload, holder=None):
        offset = 0
        for header in entries:
            n_frames = header[2]
            frames = payload[offset:offset + n_frames]
            offset += n_frames
            if holder is not None:
                self.objects.expect(header[0])
                self._hold(holder, header[0])
            entry = self.objects.seal(header, frames)
            if entry is not None:
                self._on_object_ready(entry)

    def _on_object_ready(self, entry):
        for identity in entry.subscribers:
            if identity in self.clients:
                self._push_object(identity, entry)
        entry.subscribers = set()
        waiting, entry.waiting_tasks = entry.waiting_tasks, []
        for task, when_ready in waiting:
            task.missing -= 1
            if task.missing == 0:
                when_ready(task)
        if waiting:
            self._dispatch()

    def _on_subscribe(self, client, fields, _payload):
        (object_ids,) = fields
        ready_headers, frames = [], []
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is None:
                entry = self._lost(object_id)
            if entry.state == OBJECT_READY:
                ready_headers.append(entry.header())
                frames.extend(entry.frames)
            else:
                entry.subscribers.add(client.identity)
        if ready_headers:
            self.send(client.identity, P.OBJECTS, ready_headers, frames=frames)

    def _lost(self, object_id):
        from ..exceptions import ObjectLostError
        entry = self.objects.expect(object_id)
        error = ObjectLostError(f"object {object_id.hex()} no longer exists: every reference "
                                f"to it was dropped before it was read")
        data = serialize(error)
        entry.refcount = max(entry.refcount, 1)
        self.objects.seal((object_id, P.INLINE, 1, None, (), True), [data.meta])
        return entry

    def _on_add_ref(self, client, fields, _payload):
        for object_id in fields[0]:
            self._hold(client, object_id)

    def _on_remove_ref(self, client, fields, _payload):
        for object_id in fields[0]:
            if object_id in client.held:
                client.held.discard(object_id)
                self._release_object(object_id)

    def _hold(self, client, object_id):
        if object_id not in client.held:
            client.held.add(object_id)
            self.objects.add_ref(object_id)

    def _release_object(self, object_id):
        entry = self.objects.get(object_id)
        if entry is not None and entry.refcount == 1 and object_id in self.actors.by_id:
            self.actors.out_of_scope(object_id)
        self.objects.remove_ref(object_id)

    def _on_blocked(self, client, _fields, _payload):
        worker = self.pool.workers.get(client.identity)
        if worker is None or worker.blocked:
            return
        worker.blocked = True
        if worker.task is not None:
            self.scheduler.block(worker.task)     # lends its CPU to other work
        self._dispatch()

    def _on_unblocked(self, client, _fields, _payload):
        worker = self.pool.workers.get(client.identity)
        if worker is None or not worker.blocked:
            return
        worker.blocked = False
        if worker.task is not None:
            # May overdraw for a moment: new work waits until the CPU is back.
            self.scheduler.unblock(worker.task)

    def _on_done(self, client, fields, payload):
        task_id, entries, exiting, error_text, events = fields
        worker = self.pool.workers.get(client.identity)
        # Only the worker running a task finishes it (actors: their queue checks).
        if worker is None or (worker.actor_id is None and (
                worker.task is None or worker.task.spec.task_id != task_id)):
            self.complaints.warn("done", "ignored a DONE from a client not running that task")
            return
        if self._refused_objects(entries, payload, "DONE"):
            return
        self.events.extend(events)
        self._store_objects(entries, payload)
        if worker is not None and worker.actor_id is not None:
            task = self.actors.method_done(worker, task_id, exiting)
            if error_text:
                self._report_failure(task, task_id, error_text, client.pid)
            return
        task = self.scheduler.running.get(task_id)
        if error_text:
            self._report_failure(task, task_id, error_text, client.pid)
        if task is not None and task.spec.kind == P.ACTOR_CREATE and worker is not None:
            self.actors.created(task, worker, error_text)
            self._dispatch()
            return
        task = self._finish_task(task_id, worker, exiting=exiting)
        if worker is not None:
            worker.task = None
            if exiting or worker.exiting:
                if exiting and not worker.exiting:
                    self.send(worker.worker_id, P.EXIT)    # DONE handled: it may go now
                worker.exiting = True
                worker.state = BUSY      # leaving; reaped when it exits
            else:
                worker.state = IDLE
        self._dispatch()

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
        self._release_arguments(task)
        return task

    def _release_arguments(self, task):
        for object_id in task.spec.dep_ids + task.spec.contained_ids:
            self._release_object(object_id)

    def _report_failure(self, task, task_id, text, pid):
        self._record_error(task_id, text, pid)
        if task is not None and task.spec.owner in self.clients:
            self.send(task.spec.owner, P.TASK_ERROR, task.spec.name, text, task.spec.return_ids)

    def _record_error(self, task_id, text, pid):
        if self.kv is None:
            return
        key = f"err:{time.time():.6f}:{task_id.hex()}"
        self.kv.tell("put", key, {"type": "task", "message": text, "pid": pid,
                                  "node_id": self.node_id, "time": time.time()})

    def _on_events(self, client, fields, _payload):
        self.events.extend(fields[0])

    def _on_request(self, client, fields, _payload):
        request_id, op, args = fields
        handler = getattr(self, "request_" + op, None)
        if handler is None:
            handler = getattr(self.actors, "request_" + op, None)
        if handler is None:
            handler = getattr(self.store_requests, "request_" + op, None)
        try:
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            result = (True, handler(client, *args))
        except Exception as exc:
            result = (False, exc)
        if request_id:
            try:
                self.send(client.identity, P.RESPONSE, request_id, *result)
            except Exception:
                self.send(client.identity, P.RESPONSE, request_id, False, repr(result[1]))

    def _on_bye(self, client, _fields, _payload):
        self._drop_client(client)

    handlers = {
        P.FUNCTION: _on_function, P.SUBMIT: _on_submit, P.PUT: _on_put,
        P.SUBSCRIBE: _on_subscribe, P.ADD_REF: _on_add_ref, P.REMOVE_REF: _on_remove_ref,
        P.BLOCKED: _on_blocked, P.UNBLOCKED: _on_unblocked, P.DONE: _on_done,
        P.EVENTS: _on_events, P.REQUEST: _on_request, P.BYE: _on_bye,
        P.FORWARD: lambda self, client, fields, payload: self.peers.on_forward(client, fields, payload),
        P.PULL: lambda self, client, fields, _payload: self.peers.transfer.on_pull(client, fields),
    }

    # == placing work ========================================================
    def _dispatch(self):
        idle = [w for w in self.pool.workers.values() if w.state == IDLE and not w.exiting]
        pairs, want = self.scheduler.placements(idle)
        for task in pairs:
            task.worker.idle_since = None
            self._execute(task, task.worker)
        for _ in range(self.pool.how_many_to_start(want)):
            self.pool.start()
        if self.peers is not None:
            self.peers.spill()     # what cannot run here soon goes to another node
        if want and not self.pool.can_start():
            self._warn_pool_exhausted()
        self._warn_infeasible()

    def _warn_pool_exhausted(self):
        if self.warned_pool_exhausted or not self.pool.all_blocked():
            return
        self.warned_pool_exhausted = True
        self._warn_drivers(
            f"all {self.pool.max_workers} worker processes of this node (the max_workers "
            f"cap) are blocked in ray.get/ray.wait while tasks wait for a worker: this may "
            f"deadlock. Wait on fewer nested tasks at once (fan out, then get), or start the "
            f"node with a larger max_workers")

    def _warn_drivers(self, message):
        log.warning(message)
        for client in self.clients.values():
            if client.kind == "driver":
                self.send(client.identity, P.TASK_ERROR, "", message, None)

    def _warn_infeasible(self):
        for task in self.scheduler.infeasible:
            if task.warned:
                continue
            task.warned = True
            message = infeasible_message(task, self.resources,
                                         self.request_cluster_resources(None))
            log.warning(message)
            owner = task.spec.owner
            if owner in self.clients:
                self.send(owner, P.TASK_ERROR, task.spec.name, message, None)

    def _execute(self, task, worker):
        spec = task.spec
        worker.state = ACTOR if spec.kind == P.ACTOR_CREATE else BUSY
        worker.task = task
        self.send_task(worker, task)

    def send_task(self, worker, task):
        spec = task.spec
        dep_headers, dep_frames = [], []
        for object_id in spec.dep_ids:
            entry = self.objects.get(object_id)
            dep_headers.append(entry.header())
            dep_frames.extend(entry.frames)
        functions = {}
        if spec.function_id not in worker.known_functions:
            functions[spec.function_id] = self.functions.get(spec.function_id)
            worker.known_functions.add(spec.function_id)
        self.send(worker.worker_id, P.EXECUTE, spec, dep_headers, functions, task.resource_ids,
                  frames=list(task.frames) + dep_frames)

    def pool_kill(self, worker):
        try:
            worker.process.send_signal(signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    # == failures ============================================================
    def _on_worker_exit(self, worker, code):
        if worker.held_task is not None:
            self.scheduler.release_gpus(worker.held_task)
            worker.held_task = None
        client = self.clients.get(worker.worker_id)
        if client is not None:
            self._drop_client(client)
        if worker.actor_id is not None:
            self.actors.worker_died(worker, code)
        task = worker.task
        if (task is not None and task.spec.kind == P.ACTOR_CREATE
                and task.spec.task_id in self.scheduler.running):
            self.scheduler.finish(task.spec.task_id)
            actor = self.actors.by_id.get(task.spec.actor_id)
            if actor is not None:
                self.actors.creation_crashed(
                    actor, f"its worker process (pid {worker.pid}) died with "
                           f"{describe_exit(code)} while running __init__")
        elif task is not None and task.spec.task_id in self.scheduler.running:
            self.scheduler.finish(task.spec.task_id)
            how = describe_exit(code)
            if task.retries_left > 0 and not worker.exiting:
                task.retries_left -= 1
                log.warning("worker pid %d running %s died (%s); retrying (%d left)",
                            worker.pid, task.spec.name, how, task.retries_left)
                task.worker = None
                self.scheduler.requeue_front(task)
            else:
                self._fail_task(task, WorkerCrashedError(
                    f"the worker process (pid {worker.pid}) running task {task.spec.name} died "
                    f"with {how} before the task finished"
                    + (f", after {task.spec.max_retries} retries" if task.spec.max_retries else "")
                    + ". Likely causes: the task called os._exit or sys.exit, ran out of memory "
                      "(check `dmesg`), crashed in a C extension, or was killed. Its output is "
                      f"in {worker.log_file.name}."))
        self._dispatch()

    def _fail_task(self, task, error):
        data = serialize(error)
        headers = [(oid, P.INLINE, 1, None, (), True) for oid in task.spec.return_ids]
        self._store_objects(headers, [data.meta] * len(headers))
        self._report_failure(task, task.spec.task_id, str(error), None)
        self._release_arguments(task)

    def _drop_client(self, client):
        self.clients.pop(client.identity, None)
        self.remote_clients.discard(client.identity)
        self.store_requests.client_left(client)
        held, client.held = client.held, set()
        for object_id in held:
            self._release_object(object_id)

    def _drop_dead_clients(self):
        for client in list(self.clients.values()):
            if client.kind == "driver" and client.pid and not _pid_alive(client.pid):
                log.info("driver pid %d is gone; releasing its objects", client.pid)
                self._drop_client(client)

    def _forward_output(self, fd):
        worker, text = self.pool.read_output(fd)
        if not text or worker is None:
            return
        for client in self.clients.values():
            if client.kind in ("driver", "peer"):    # peers pass it on to their drivers
                self.send(client.identity, P.LOG, worker.pid, text)

    def _publish_node_info(self):
        if self.peers is not None:
            self.peers.heartbeat()
        elif self.kv is not None:
            self.kv.tell("put", f"node:{self.node_id}", self._node_info())

    # == stop ================================================================
    def _stop(self):
        for client in self.clients.values():
            if client.kind == "worker":
                try:
                    self.send(client.identity, P.EXIT)
                except zmq.ZMQError:
                    pass
        if self.peers is not None:
            self.peers.close()
        self.pool.stop_all(grace_s=0.5)
        self.objects.unlink_all()
        if self.kv is not None:
            try:
                self.kv.tell("delete", f"node:{self.node_id}")
            except Exception:
                pass
        if self.kv_supervisor is not None:
            self.kv_supervisor.stop()
        self.router.close(0)
        if self.tcp_router is not None:
            self.tcp_router.close(0)
            self.gatekeeper.stop()
        if self.orphaned and self.config.get("remove_session_dir_on_orphan"):
            from ..session import remove_session_files
            remove_session_files(self.session_dir, self.config["plasma_dir"], self.session_name,
                                 self.config.get("spill_dir"))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

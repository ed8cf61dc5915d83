"""The node daemon: one per machine, one thread, one ROUTER; I/O only.

::

    driver ──┐                                  ┌──────── NodeState (pure) ───────┐
    worker ──┤ DEALER ──► ROUTER ──decode──►event──► handle: tasks, objects, refs,│
    worker ──┘            pipes, reaped processes│  workers, actors, forwarding  │
                          timers (Tick)          └──────────┬─────────────────────┘
                                  ◄── carry out ── [commands]: EXECUTE, OBJECTS,
                                                   start/kill workers, FORWARD, ...

- The loop receives a message (or a worker's exit, or a timer), decodes it
  into an event (``state/events.py``), calls ``NodeState.handle`` and carries
  out the commands it returns (``state/commands.py``) with sockets, processes
  and files. Every decision lives in the state; see ``sched/state/``.
- Clients (drivers and workers) say HELLO; drivers own the tasks they submit
  and get their results pushed to them as soon as they exist.
- Objects pushed to one client leave as one OBJECTS message per loop pass.
- Worker output is read from pipes, logged and forwarded to drivers.
- Local clients come over ipc (the session directory, this user's only);
  peers and remote drivers over a second ROUTER on tcp, a CURVE server of
  the cluster token (``transport/auth.py``), so the ipc hot path pays
  nothing for encryption. A client is answered on the socket it came in on.
"""
import logging
import os
import pickle
import time

import psutil
import zmq

from ..plasma.disk import SpillDisk
from ..kv.records import ACTOR_NAME_PREFIX
from ..plasma.store import IN_MEMORY
from ..plasma.uploads import Uploads
from .store_requests import ObjectStoreRequests
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import (OwnerWatch, RateLimitedLog, authorize, bound_receiving,
                                 send_frames)
from . import admission
from . import resources as R
from .node_requests import NodeRequests
from .remote_clients import RemoteConnections
from .state import NodeState, commands as C, events as E
from .worker_processes import WorkerProcesses

log = logging.getLogger("zray.node")

TICK_S = 0.05
EVENT_FLUSH_S = 0.2
REAP_INTERVAL_S = 0.02
# A remote client (driver, peer) whose connection carried nothing, not even
# ZeroMQ's heartbeats, this long is cut off: as long as a pause that is not
# death (peers.NODE_TTL_S).
REMOTE_SILENCE_S = float(os.environ.get("ZRAY_NODE_TTL_S", 10.0))


class NodeDaemon(NodeRequests, ObjectStoreRequests):
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
        self.router.setsockopt(zmq.SNDHWM, 0)     # a ROUTER drops at its SNDHWM
        bound_receiving(self.router)               # (and why these bounds: sockets.py)
        self.router.bind(config["address"])
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.tcp_address = None        # for peers and remote drivers (zray start)
        self.tcp_router = self.gatekeeper = None
        self.remote_clients = set()    # identities that came in on tcp_router
        self.remote_connections = None
        if config.get("tcp_address"):
            self.gatekeeper = auth.start_gatekeeper(self.context, self.password)
            self.tcp_router = self.context.socket(zmq.ROUTER)
            self.tcp_router.setsockopt(zmq.LINGER, 0)
            self.tcp_router.setsockopt(zmq.ROUTER_MANDATORY, 0)
            self.tcp_router.setsockopt(zmq.SNDHWM, 0)
            self.remote_connections = RemoteConnections(self.tcp_router, REMOTE_SILENCE_S)
            auth.serve_securely(self.tcp_router, self.password)
            self.tcp_router.bind(config["tcp_address"])
            self.tcp_address = self.tcp_router.getsockopt_string(zmq.LAST_ENDPOINT)
        totals = R.totals_from_options(config["num_cpus"], config["num_gpus"],
                                       config.get("resources"))
        totals.update(R.memory_totals(config["object_store_memory"],
                                      psutil.virtual_memory().available))
        cpus = max(1, -(-totals.get("CPU", 0) // R.UNIT))
        # Start at most as many workers at once as there are cores (as Ray's
        # maximum_startup_concurrency); keep that many warm when idle.
        # Files of the object table (arena chunks, spill copies in a thread).
        self.disk = SpillDisk(config["plasma_dir"], self.session_name)
        self.uploads = Uploads(self)   # objects written for clients without our shared memory
        self.state = NodeState(
            totals, config["object_store_memory"],
            config.get("spill_dir") or os.path.join(self.session_dir, "spill"),
            config["max_workers"], self.disk, node_id=self.node_id,
            gpu_ids=config.get("gpu_ids"), max_starting=config.get("max_starting_workers") or cpus,
            soft_limit=max(cpus, config.get("prestart_workers") or 0),
            worker_prefix=b"w%d" % os.getpid(), logs_dir=os.path.join(self.session_dir, "logs"))
        self.processes = WorkerProcesses(self.address, self.session_dir,
                                         env_extra={auth.TOKEN_ENV: self.password})
        # The state's parts, by the names the request handlers read them.
        self.resources, self.scheduler = self.state.resources, self.state.scheduler
        self.objects, self.pool, self.actors = self.state.objects, self.state.pool, self.state.actors
        self.clients = self.state.clients
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
        if self.remote_connections is not None:
            self.watched[self.remote_connections.monitor] = self._on_remote_disconnect
        # Spill copies run in a thread; the loop hands the finished ones to the state.
        self.watched[self.disk.done_fd] = lambda: self.handle(
            E.SpillsFinished(self.disk.finished()))
        self.peers = None              # other nodes of a multi-node cluster (peers.py)
        if self.tcp_address and self.kv is not None:
            from .peers import Peers
            self.peers = Peers(self)
        self.owner = OwnerWatch(config.get("owner_pid"))
        self.running = True
        self.prestarted = False
        self.orphaned = False
        self.pushes = {}               # client -> (headers, frames) to send as one OBJECTS
        self.next_reap = 0.0
        self.next_event_flush = time.monotonic() + EVENT_FLUSH_S
        self.next_client_check = time.monotonic() + 1.0
        self.complaints = RateLimitedLog(log)

    def prestart_workers(self):
        """Spawn the configured warm workers (once): called before the node
        says READY, so their interpreters start while the driver connects."""
        if not self.prestarted:
            self.prestarted = True
            self.handle(E.WorkersWanted(self.config.get("prestart_workers", 0)))

    # == the loop ============================================================
    def serve_forever(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.tcp_router is not None:
            poller.register(self.tcp_router, zmq.POLLIN)
        registered_fds, registered_sockets = set(), set()
        self.handle(E.Tick(time.monotonic(), time.time()))
        self.prestart_workers()
        self._publish_node_info()
        while self.running:
            by_fd = self.processes.by_fd
            if registered_fds != by_fd.keys():
                for fd in by_fd.keys() - registered_fds:
                    poller.register(fd, zmq.POLLIN)
                for fd in registered_fds - by_fd.keys():
                    poller.unregister(fd)
                registered_fds = set(by_fd)
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

    def handle(self, event):
        """Give the state one event and carry out what it decides; return the
        commands (a request reads its answer there)."""
        commands = self.state.handle(event)
        for command in commands:
            self._do[type(command)](self, command)
        return commands

    def _drain_router(self, router):
        try:
            self._drain_batch(router)
        finally:
            self._flush_pushes()

    def _drain_batch(self, router):
        remote = router is self.tcp_router
        if remote:      # closed connections first: a new one may reuse a closed one's fd
            self._on_remote_disconnect()
        for _ in range(1000):      # bounded, so ticks still happen under load
            # Asking EVENTS is cheaper than the zmq.Again of an empty recv.
            if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            frames = self.remote_connections.recv() if remote else router.recv_multipart()
            try:
                self._receive(frames, remote)
            except Exception as exc:      # one bad message must not take the node down
                self.complaints.warn("message", "error handling a message (%r): %r",
                                     frames[1][:20] if len(frames) > 1 else frames, exc)
                log.debug("error handling a message", exc_info=True)

    def _on_remote_disconnect(self):
        """A driver or tool over tcp whose connection closed is gone (killed
        without a BYE, or silent for REMOTE_SILENCE_S): its work stops as a
        local driver's does. Peers are judged by ``Peers``."""
        for identity in self.remote_connections.closed():
            client = self.state.clients.get(identity)
            if client is not None and client.kind != "peer":
                log.info("the connection of remote %s %r closed; releasing its work",
                         client.kind, identity)
                self.handle(E.ClientLeft(identity))

    def _tick(self):
        now = time.monotonic()
        if now >= self.next_reap:
            # Rate-limited: under load the loop turns thousands of times a second.
            self.next_reap = now + REAP_INTERVAL_S
            for worker_id, pid, code in self.processes.reap():
                self.handle(E.WorkerExited(worker_id, pid, code))
        if self.events and now >= self.next_event_flush:
            if self.kv is not None:
                self.kv.tell("add_events", self.events)
            self.events = []
            self.next_event_flush = now + EVENT_FLUSH_S
        if self.peers is not None:
            self.peers.tick(now)
        if now >= self.next_client_check:
            self.next_client_check = now + 1.0
            for identity, pid in self.state.driver_pids().items():
                # A pid says something only on this machine: drivers of other
                # machines (tcp) leave by BYE.
                if identity not in self.remote_clients and not _pid_alive(pid):
                    log.info("driver pid %d is gone; releasing its objects", pid)
                    self.handle(E.ClientLeft(identity))
            self.handle(E.Tick(now, time.time()))
        if self.owner.gone():
            log.info("the driver that started this node is gone; shutting down")
            self.orphaned = True
            self.running = False
        if self.kv_supervisor is not None and self.running:
            self.kv_supervisor.tick(now)
        self._flush_pushes()

    # == messages in: decode into events =====================================
    def _receive(self, frames, remote=False):
        identity = frames[0]
        clients = self.state.clients
        if (identity in self.remote_clients) != remote and identity in clients:
            return      # an identity taken on the other socket: not this client's
        msg_type, fields = P.unpack(frames[1])
        if identity not in clients:
            if msg_type == P.HELLO:
                if remote:
                    self.remote_clients.add(identity)
                try:
                    self._on_hello(identity, *fields)
                finally:
                    if identity not in clients:
                        self.remote_clients.discard(identity)
            return
        if remote and self.peers is not None and self.peers.holding(identity):
            self.peers.hold(identity, msg_type, fields, frames[2:])    # keeps their order
            return
        decode = self._decoders.get(msg_type)
        if decode is None:
            self.complaints.warn("unknown", "unknown message %r from %r", msg_type, identity)
            return
        event = decode(self, identity, fields, frames[2:])
        if event is not None:       # self.handle, inlined: this is every message's path
            do = self._do
            for command in self.state.handle(event):
                do[type(command)](self, command)

    def replay(self, identity, msg_type, fields, payload):
        """A message held back (``Peers.hold``), handled now."""
        if identity in self.state.clients:
            decode = self._decoders.get(msg_type)
            event = decode(self, identity, fields, payload) if decode is not None else None
            if event is not None:
                self.handle(event)

    def _on_hello(self, identity, kind, pid, password, version, sys_path, worker_secret):
        if not isinstance(password, str) or not authorize(self.password, password):
            self.send(identity, P.REFUSED, "wrong cluster password: connect with the "
                      "redis_password/--redis-password the cluster was started with")
            return
        if version != P.PROTOCOL_VERSION:
            self.send(identity, P.REFUSED, f"protocol version {version} does not match the "
                      f"node's {P.PROTOCOL_VERSION}: use the same zray version everywhere")
            return
        refusal = admission.hello_refusal(self.processes.by_id.get(identity),
                                          identity in self.remote_clients, kind, worker_secret)
        if refusal is not None:
            self.complaints.warn("hello", "refused a client: %s", refusal)
            self.send(identity, P.REFUSED, refusal)
            return
        self.send(identity, P.WELCOME, self._node_info())
        self.handle(E.ClientJoined(identity, kind, pid))

    def _on_events(self, _identity, fields, _payload):
        self.events.extend(fields[0])

    def _on_done(self, identity, fields, payload):
        task_id, entries, exiting, error_text, events = fields[:5]
        holder = fields[5] if len(fields) > 5 else None    # an actor's direct caller
        # Only the worker running a task finishes it (actors: their queue checks).
        if not self.state.may_finish(identity, task_id):
            self.complaints.warn("done", "ignored a DONE from a client not running that task")
            return None
        if self._refused_objects(identity, entries, payload, "DONE"):
            return None
        self.events.extend(events)
        return E.TaskDone(identity, task_id, entries, payload, exiting, error_text, holder)

    def _on_put(self, identity, fields, payload):
        (entries,) = fields
        if self._refused_objects(identity, entries, payload, "PUT"):
            return None
        return E.ObjectsPut(identity, entries, payload)

    def _refused_objects(self, identity, entries, payload, what):
        refusal = admission.object_entries_refusal(
            entries, len(payload), self.session_name,
            (self.config["plasma_dir"], self.objects.spill_dir),
            lambda object_id: self.objects.reserved_location(object_id, identity))
        if refusal is not None:
            self.complaints.warn(what, "ignored a %s: %s", what, refusal)
        return refusal is not None

    def _on_function(self, identity, fields, _payload):
        function_id, name, blob, sys_path = fields
        refusal = admission.function_refusal(function_id, blob)
        if refusal is not None:
            self.complaints.warn("function", "ignored a function: %s", refusal)
            return None
        return E.FunctionRegistered(function_id, (name, blob, sys_path))

    def _on_request(self, identity, fields, _payload):
        request_id, op, arguments = fields
        try:
            arguments = P.check_op(P.NODE_OPS, op, arguments)
            result = (True, self._requests[op](self, self.state.clients[identity], *arguments))
        except Exception as exc:
            result = (False, exc)
        if request_id:
            self._respond(identity, request_id, *result)

    def _respond(self, identity, request_id, ok, value):
        """RESPONSE: an answer is plain data; an error goes as its text plus,
        in a payload frame, the pickled exception for the caller to raise."""
        if ok:
            try:
                return self.send(identity, P.RESPONSE, request_id, True, value)
            except Exception as exc:        # not plain data: a bug of that request
                ok, value = False, exc
        frames = []
        try:
            frames = [pickle.dumps(value, protocol=5)]
        except Exception:
            pass
        self.send(identity, P.RESPONSE, request_id, False, f"{type(value).__name__}: {value}",
                  frames=frames)

    def _on_forward(self, identity, fields, payload):
        spec, function, n_task_frames, inline = fields
        if function is not None and admission.function_refusal(spec.function_id,
                                                               function[1]) is not None:
            raise ValueError(f"node {identity[1:17]!r} forwarded a function whose id is not "
                             f"its hash")
        origin = self.peers.origin_of(identity) if self.peers is not None else None
        if origin is None and self.peers is not None and self.peers.hold(
                identity, P.FORWARD, fields, payload):
            return None        # until we hear of its node: we pull its arguments from there
        return E.TaskForwardedIn(identity, origin, spec, function, payload[:n_task_frames],
                                 inline, payload[n_task_frames:])

    def _on_pull(self, identity, fields, _payload):
        if self.peers is not None:
            self.peers.transfer.on_pull(identity, fields)
        else:       # never a silent drop: the puller would wait forever
            self.send(identity, P.CHUNK, fields[0], fields[1], fields[2], False,
                      "this node serves no pulls (it was started without a tcp address)",
                      frames=[b""])

    _decoders = {
        P.SUBMIT: lambda self, i, f, p: E.TaskSubmitted(i, f[0], p),
        P.DONE: _on_done,
        P.PUT: _on_put,
        P.SUBSCRIBE: lambda self, i, f, p: E.Subscribed(i, f[0]),
        P.ADD_REF: lambda self, i, f, p: E.RefsAdded(i, f[0]),
        P.HELD_AT: lambda self, i, f, p: E.HeldElsewhere(i, f[0], f[1]),
        P.REMOVE_REF: lambda self, i, f, p: E.RefsRemoved(i, f[0]),
        P.FUNCTION: _on_function,
        P.BLOCKED: lambda self, i, f, p: E.WorkerBlocked(i),
        P.UNBLOCKED: lambda self, i, f, p: E.WorkerUnblocked(i),
        P.BYE: lambda self, i, f, p: E.ClientLeft(i),
        P.EVENTS: _on_events, P.REQUEST: _on_request,
        P.FORWARD: _on_forward, P.PULL: _on_pull,
        P.WRITE: lambda self, i, f, p: self.uploads.on_write(i, f[0], f[1], p[0] if p else b""),
        P.LEASE_REQUEST: lambda self, i, f, p: E.LeaseRequested(i, f[0], f[1]),
        P.LEASE_RETURN: lambda self, i, f, p: E.LeaseReturned(i, f[0]),
    }

    # The handler of each declared op, found once here (a missing one fails at import).
    _requests = {op: getattr(NodeRequests, f"request_{op}", None)
                 or getattr(ObjectStoreRequests, f"request_{op}") for op in P.NODE_OPS}

    # == commands out ========================================================
    def send(self, identity, msg_type, *fields, frames=(), zero_copy=False):
        """Every message to a client goes through here, so queued pushes to it
        leave first and it sees messages in the order they were decided.
        ``zero_copy``: big frames are lent to zmq, not copied (chunks of files)."""
        if identity in self.pushes:
            self._flush_pushes_to(identity)     # keep the order the client sees
        message = [identity] + P.pack(msg_type, *fields) + list(frames)
        if zero_copy:
            send_frames(self.socket_for(identity), message)
        else:
            self.socket_for(identity).send_multipart(message)

    def socket_for(self, identity):
        """The ROUTER a client came in on: its replies go back there."""
        return self.tcp_router if identity in self.remote_clients else self.router

    def _execute(self, cmd):
        task = cmd.task
        headers, frames = [], list(task.frames)
        for entry in cmd.deps:
            headers.append(entry.header())
            frames.extend(entry.frames)
        self.send(cmd.worker_id, P.EXECUTE, task.spec, headers, cmd.functions,
                  task.resource_ids, frames=frames)

    def _push_object(self, cmd):
        """Queue an object for a client; objects leave in one OBJECTS message per
        client per pass of the loop, not one message each."""
        queued = self.pushes.get(cmd.identity)
        if queued is None:
            queued = self.pushes[cmd.identity] = ([], [])
        entry = cmd.entry
        queued[0].append(entry.header())
        queued[1].extend(entry.frames)

    def _flush_pushes_to(self, identity):
        headers, frames = self.pushes.pop(identity)
        self.socket_for(identity).send_multipart(
            [identity] + P.pack(P.OBJECTS, headers) + frames)

    def _flush_pushes(self):
        for identity in list(self.pushes):
            self._flush_pushes_to(identity)

    def _record_error(self, cmd):
        if self.kv is None:
            return
        key = f"err:{time.time():.6f}:{cmd.task_id.hex()}"
        self.kv.tell("put", key, {"type": "task", "message": cmd.text, "pid": cmd.pid,
                                  "name": cmd.name, "node_id": self.node_id, "time": time.time()})

    def _warn_drivers(self, cmd):
        log.warning(cmd.message)
        for client in self.state.clients.values():
            if client.kind == "driver":
                self.send(client.identity, P.TASK_ERROR, "", cmd.message, None)

    def _publish_actor_name(self, cmd):
        if self.kv is None:
            return
        key = f"{ACTOR_NAME_PREFIX}{cmd.name}"
        if cmd.record is None:
            self.kv.tell("delete", key)
        else:
            self.kv.tell("put", key, cmd.record)

    def _forget_remote(self, identity):
        self.remote_clients.discard(identity)
        if self.remote_connections is not None:
            self.remote_connections.forget(identity)

    def _start_worker(self, cmd):
        self.processes.start(cmd.worker_id)

    def _stop_worker(self, cmd):
        try:
            self.send(cmd.worker_id, P.EXIT)
        except zmq.ZMQError:
            pass

    _do = {
        C.Execute: _execute,
        C.PushObject: _push_object,
        C.TellClient: lambda self, c: self.send(c.identity, c.msg_type, *c.fields),
        C.ReportError: lambda self, c: self.send(c.identity, P.TASK_ERROR, c.name, c.text,
                                                 c.return_ids),
        C.RecordError: _record_error,
        C.WarnDrivers: _warn_drivers,
        C.StartWorker: _start_worker,
        C.StopWorker: _stop_worker,
        C.KillWorker: lambda self, c: self.processes.kill(c.worker_id),
        C.Reserved: lambda self, c: None,          # read by whoever asked
        C.Pinned: lambda self, c: None,
        C.ClientGone: lambda self, c: self._forget_remote(c.identity),
        C.ShareSerializers: lambda self, c: self.peers.share_serializers(c.node_id,
                                                                         c.registrations),
        C.Forward: lambda self, c: self.peers.forward(c),
        C.WantObjects: lambda self, c: self.peers.want(c.node_id, c.object_ids, c.held),
        C.ReleaseRemote: lambda self, c: self.peers.release_remote(c.node_id, c.object_ids),
        C.TellPeer: lambda self, c: self.peers.tell(c.node_id, c.msg_type, c.fields),
        C.PublishActorName: _publish_actor_name,
        C.DropPeerTransfers: lambda self, c: self.peers.drop_transfers(c.node_id,
                                                                       c.expected_again),
    }

    def reserve(self, owner, object_id, size, arena=False, spare=False):
        """Admit a large object: IN_MEMORY, ON_DISK or (``arena``) an arena
        location (raises ObjectStoreFullError); ``spare``: a block or None."""
        for command in self.handle(E.ReserveRequested(owner, object_id, size, arena, spare)):
            if isinstance(command, C.Reserved):
                return command.where
        return IN_MEMORY

    def pin(self, owner, object_id):
        """Where ``owner`` reads the object now (arena blocks stay until unpinned)."""
        for command in self.handle(E.PinRequested(owner, object_id)):
            if isinstance(command, C.Pinned):
                return command.location
        return None

    # == the rest of the edge ================================================
    def _node_info(self):
        return {"node_id": self.node_id, "address": self.address,
                "session_dir": self.session_dir, "session_name": self.session_name,
                "plasma_dir": self.config["plasma_dir"], "spill_dir": self.objects.spill_dir,
                "kv_address": self.config.get("kv_address"),
                "kv_pub_address": self.config.get("kv_pub_address"),
                "tcp_address": self.tcp_address,    # an actor's worker listens on this host too
                "resources": R.describe(self.resources.totals),
                "hostname": os.uname().nodename}

    def _forward_output(self, fd):
        process, text = self.processes.read_output(fd)
        if not text or process is None:
            return
        for client in self.state.clients.values():
            if client.kind in ("driver", "peer"):    # peers pass it on to their drivers
                self.send(client.identity, P.LOG, process.pid, text)

    def _publish_node_info(self):
        if self.peers is not None:
            self.peers.heartbeat()
        elif self.kv is not None:
            self.kv.tell("put", f"node:{self.node_id}", self._node_info())

    def _stop(self):
        for client in self.state.clients.values():
            if client.kind == "worker":
                self._stop_worker(C.StopWorker(client.identity))
        if self.peers is not None:
            self.peers.close()
        self.processes.stop_all(grace_s=0.5)
        self.disk.close()
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
            self.remote_connections.close()
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

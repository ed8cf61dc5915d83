"""Worker leases, the client's side: plain tasks pushed straight to workers
borrowed from the node, so a task crosses two processes, not three.

::

    client ──LEASE(id, demand)──► node          (the node's side: sched/state/leases.py)
    client ◄──LEASED(id, worker)──
    client ──PUSH(spec, code)──► worker ROUTER (ipc, worker_socket_path)
    client ◄──REPLY──────────── worker          results as for direct actor calls
    client ──RELEASE──► worker ──RETURN──► node  idle a while, or recalled

- Which tasks: plain tasks that return something, without max_calls or
  GPUs, whose arguments hold no ObjectRef nested inside a value, from a
  client on the node's machine (ipc). ObjectRef arguments are fine when
  each one's value is here or on its way here (core/lease_arguments.py).
  Every other task goes through the node as before (publishing its
  arguments first).
- Tasks wait here, per demand, for a leased worker; at most
  ``MAX_REQUESTS`` leases are asked for at once per demand. The node places
  a lease like a task of that demand (its queues, resources, pool).
- A worker runs one pushed task at a time; more are queued on it (up to
  ``PIPELINE``) only behind tasks pushed just now whose function has been
  quick. Should one of those run long after all, the worker sends back
  (BOUNCE) what waits behind it (``Worker.bounce_stuck``), and they go to
  another worker: a long task never holds up others for long.
- Results travel as those of direct actor calls, with the same tables
  (``DirectCalls``: results that live only here, publishing them when a ref
  is passed on, results held for us at the node). A ``Lease`` answers to
  ``DirectCalls._on_reply`` like a ``Channel``.
- A lease goes back when idle ``LINGER_S`` or when the node recalls it
  (others wait), once its tasks are done; it goes back through its worker,
  so the node hears of it after every DONE the worker sent for us.
- Its worker dies: the node says so (RECALL with why); the task it was
  running goes to the node marked ``attempted`` (retried by max_retries or
  failed with WorkerCrashedError), the ones queued behind it as new.
- Refused (with peers the node lends only what it has at once): the tasks
  waiting here go through the node, which may send them to another node,
  and for ``REFUSED_BACKOFF_S`` this demand asks for no lease: a task goes
  to a lease with room at once, or through the node.
"""
import os
import sys
import time
from collections import deque

import zmq

from ..serialization import registrations as custom_serializers
from ..transport import protocol as P
from ..transport.sockets import polled_messages
from ..transport.socket_dir import MAX_IPC_PATH
from .lease_arguments import ArgumentWaits

LINGER_S = 1.0
MAX_REQUESTS = 4
PIPELINE = 8
QUICK_TASK_S = 0.002
PIPELINE_AGE_S = 0.02       # queue behind a task only this soon after pushing it
REFUSED_BACKOFF_S = 1.0


class Lease:
    """One borrowed worker and the tasks pushed to it, in push order."""
    __slots__ = ("lease_id", "demand", "worker_id", "socket", "inflight", "held_back",
                 "actor_ref", "recalled", "idle_since", "slow_inflight")

    def __init__(self, lease_id, demand, worker_id, socket):
        self.lease_id = lease_id
        self.demand = demand
        self.worker_id = worker_id
        self.socket = socket
        # task_id -> (spec, frames, (pushed at, counted slow, keep)), as a
        # Channel's (spec, frames, keep) for DirectCalls._on_reply; keep: refs
        # to the task's arguments, alive until it is answered
        self.inflight = {}
        self.held_back = ()         # (as a Channel: nothing waits behind these)
        self.actor_ref = None
        self.recalled = False
        self.idle_since = None
        self.slow_inflight = 0      # of inflight, tasks not known to be quick

    def idle(self):
        return not self.inflight


class Demand:
    """Tasks of one resource demand waiting for a worker, and its leases."""
    __slots__ = ("resources", "queue", "requests", "leases", "refused_until")

    def __init__(self, resources):
        self.resources = resources
        self.queue = deque()        # (spec, frames, keep) not pushed yet
        self.requests = 0           # leases asked for, not answered
        self.leases = []
        self.refused_until = 0.0


class Leases(ArgumentWaits):
    def __init__(self, runtime):
        self.runtime = runtime
        self.direct = runtime.direct
        self.connection = connection = runtime.connection
        self.lock = self.direct.lock      # one lock for the results tables they share
        session_dir = runtime.node_info.get("session_dir")
        self.session_dir = session_dir
        self.enabled = bool(
            session_dir and runtime.node_address.startswith("ipc://")
            and len(P.worker_socket_path(session_dir, b"w")) <= MAX_IPC_PATH
            and os.environ.get("ZRAY_TASK_LEASES", "1") != "0")
        self.demands = {}           # resource shape -> Demand
        self.asked = {}             # lease id -> Demand, not answered yet
        self.leases = {}            # lease id -> Lease
        self.sockets = {}           # worker id -> DEALER, kept for its next lease
        self.by_socket = {}         # DEALER -> Lease now on it
        self.functions = {}         # function id -> Function record
        self.sent = {}              # worker id -> [function ids, custom serializers] it has
        self.quick = {}             # function id -> True if its last task was quick
        self.parked_on = {}         # object id -> [_Parked] tasks waiting for it here
        connection.handlers[P.LEASED] = self._on_leased
        connection.handlers[P.RECALL] = self._on_recall

    def waiting(self):
        """Tasks queued here for a leased worker (core/work_report.py)."""
        return sum(len(demand.queue) for demand in list(self.demands.values()))

    def eligible(self, spec, nested_refs):
        return (self.enabled and not nested_refs and spec.return_ids and not spec.max_calls
                and "GPU" not in spec.resources)

    # -- submitting (an API thread) ----------------------------------------------
    def submit(self, spec, frames, function):
        """Queue a task for a leased worker; push it now if one has room.
        False: it cannot go so (an argument is neither here nor coming here):
        the caller sends it through the node."""
        cache = self.runtime.objects
        keep = [self.runtime.hold_ref(i) for i in spec.dep_ids] if spec.dep_ids else ()
        with self.lock:
            if spec.dep_ids:
                pending = self.direct.pending
                missing = {i for i in spec.dep_ids if i not in cache.objects}
                if any(i not in pending for i in missing):
                    return False
            function_id = spec.function_id
            if function_id not in self.functions:
                self.functions[function_id] = function
            spec = spec._replace(owner=self.connection.identity)
            shape = tuple(sorted(spec.resources.items()))
            demand = self.demands.get(shape)
            if demand is None:
                demand = self.demands[shape] = Demand(spec.resources)
            if spec.dep_ids and missing:
                self._park(demand, spec, frames, keep, missing)
            else:
                self._queue(demand, spec, frames, keep, locked=False)
        return True

    def _queue(self, demand, spec, frames, keep, locked):
        pending = self.direct.pending
        now = time.monotonic()
        if now < demand.refused_until:
            # Refused lately (peers): what no lease can start now goes
            # through the node, which may send it to another node.
            lease = self._room_for(demand, spec, now) if not demand.queue else None
            if lease is None:
                self._to_node(spec, frames, locked)
            else:
                self._push(lease, spec, frames, keep, locked)
            return
        for object_id in spec.return_ids:
            pending[object_id] = demand      # not at the node (DirectCalls.not_at_node)
        demand.queue.append((spec, frames, keep))
        self._pump(demand, locked)

    # -- placing queued tasks ----------------------------------------------------
    def _pump(self, demand, locked):
        """Push queued tasks to leases with room; ask for more leases if some
        wait. ``locked``: a handler's, under sock_lock (messages are queued)."""
        queue = demand.queue
        now = time.monotonic()
        while queue:
            lease = self._room_for(demand, queue[0][0], now)
            if lease is None:
                break
            spec, frames, keep = queue.popleft()
            self._push(lease, spec, frames, keep, locked)
        if queue:
            send = self.connection.enqueue if locked else self.connection.send_message
            wanted = min(MAX_REQUESTS, len(queue)) - demand.requests
            for _ in range(wanted):
                lease_id = os.urandom(16)
                self.asked[lease_id] = demand
                demand.requests += 1
                send(P.LEASE_REQUEST, lease_id, demand.resources)

    def _room_for(self, demand, spec, now):
        best = None
        quick = self.quick.get(spec.function_id, False)
        for lease in demand.leases:
            if lease.recalled:
                continue
            n = len(lease.inflight)
            if n == 0:
                return lease
            if quick and not lease.slow_inflight and n < PIPELINE and (
                    best is None or n < len(best.inflight)):
                oldest = next(iter(lease.inflight.values()))
                if now - oldest[2][0] < PIPELINE_AGE_S:
                    best = lease
        return best

    def _push(self, lease, spec, frames, keep, locked=False):
        pending = self.direct.pending
        for object_id in spec.return_ids:
            pending[object_id] = lease
        slow = not self.quick.get(spec.function_id, False)
        lease.inflight[spec.task_id] = (spec, frames, (time.monotonic(), slow, keep))
        self.direct.by_task[spec.task_id] = lease
        lease.idle_since = None
        lease.slow_inflight += slow
        # ObjectRef arguments' values travel with the task (shared memory: the header).
        deps, dep_frames = self._argument_values(spec) if spec.dep_ids else ([], [])
        known = self.sent.get(lease.worker_id)
        if known is None:
            known = self.sent[lease.worker_id] = [set(), 0]
        functions = {}
        if spec.function_id not in known[0]:
            known[0].add(spec.function_id)
            functions[spec.function_id] = self.functions[spec.function_id]
        registrations = ()
        if len(custom_serializers) > known[1]:
            # Custom serializers made here reach it before the task (not only by the node).
            registrations = [(blob, list(sys.path)) for blob in custom_serializers[known[1]:]]
            known[1] = len(custom_serializers)
        message = P.pack(P.PUSH, spec, functions, registrations, deps) + frames + dep_frames
        if locked:
            self.connection.queue_on(lease.socket, message)
        else:
            self.connection.send_on(lease.socket, message)

    # -- the node answers (handlers, under sock_lock) --------------------------------
    def _on_leased(self, fields, _frames):
        lease_id, worker_id = fields
        with self.lock:
            demand = self.asked.pop(lease_id, None)
            if demand is None:
                return
            demand.requests -= 1
            if worker_id is None:
                # No worker free here at once and other nodes exist: the node
                # spreads what waits (and, for a while, what comes).
                demand.refused_until = time.monotonic() + REFUSED_BACKOFF_S
                while demand.queue:
                    spec, frames, _keep = demand.queue.popleft()
                    self._to_node(spec, frames, locked=True)
                return
            socket = self.sockets.get(worker_id)
            if socket is None:
                socket = self.sockets[worker_id] = self._connect(worker_id)
            else:
                self.connection.set_polled(socket, True)
            lease = Lease(lease_id, demand, worker_id, socket)
            self.leases[lease_id] = lease
            self.by_socket[socket] = lease
            demand.leases.append(lease)
            lease.idle_since = time.monotonic()
            if demand.queue:
                self._pump(demand, locked=True)

    def _connect(self, worker_id):
        socket = self.connection.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 1000)    # a RELEASE still leaves at shutdown
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.IDENTITY, self.connection.identity)
        # A worker binds its socket just after saying HELLO: a lease may come first.
        socket.setsockopt(zmq.RECONNECT_IVL, 5)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, 100)
        socket.connect("ipc://" + P.worker_socket_path(self.session_dir, worker_id))
        self.connection.add_socket(socket, self._on_readable, locked=True)
        return socket

    def _on_recall(self, fields, _frames):
        lease_id, lost = fields
        with self.lock:
            lease = self.leases.get(lease_id)
            if lease is None:
                return
            if lost is not None:
                self._lost(lease)
            else:
                # Any of our leases of that demand answers it: the least busy.
                lease = min((other for other in lease.demand.leases if not other.recalled),
                            key=lambda other: len(other.inflight), default=lease)
                lease.recalled = True
                if not lease.inflight:
                    self._release(lease)
            if lease.demand.queue:
                self._pump(lease.demand, locked=True)

    def _lost(self, lease):
        """Its worker died: what it ran goes to the node, the running one marked."""
        self._forget(lease)
        self.sockets.pop(lease.worker_id, None)
        self.sent.pop(lease.worker_id, None)
        self.connection.remove_socket(lease.socket, locked=True)
        calls = list(lease.inflight.values())
        lease.inflight.clear()
        for index, (spec, frames, _meta) in enumerate(calls):
            self.direct.by_task.pop(spec.task_id, None)
            if index == 0:
                spec = spec._replace(options={**spec.options, "attempted": lease.worker_id})
            self._to_node(spec, frames, locked=True)

    def _to_node(self, spec, frames, locked):
        """Send a task through the node after all (refused, or its worker died).
        The node must know its arguments first; our refs to them may go after."""
        send = self.connection.enqueue if locked else self.connection.send_message
        direct = self.direct
        if spec.dep_ids:
            direct.publish(spec.dep_ids)
        extra_refs = []
        dependents = []
        for object_id in spec.return_ids:
            direct.pending.pop(object_id, None)
            if object_id in direct.publish_on_arrival:
                # The node's SUBMIT holds it for us now: publish's extra ref goes after.
                direct.publish_on_arrival.discard(object_id)
                extra_refs.append(object_id)
            # Tasks waiting here for its results follow it through the node:
            # those results may stay on the node it runs on.
            dependents.extend(self._dependents_of(object_id))
        send(P.SUBMIT, spec, frames=frames)
        # A get or wait on its results now (that left them to come here by
        # themselves) asks for them: they may be made and kept on another node.
        cache = self.runtime.objects
        with cache.cond:
            watched = [i for i in spec.return_ids if i not in cache.requested and any(
                i in waiter.missing for waiter in cache.waiters)]
            cache.requested.update(watched)
        if watched:
            send(P.SUBSCRIBE, watched)
        for object_id in extra_refs:
            self.runtime.refs.drop(object_id)
        for parked in dependents:
            if parked.missing:
                self._unpark(parked)
                self._to_node(parked.spec, parked.frames, locked)
                parked.frames = parked.keep = None     # (its SUBMIT is queued: refs may go)

    # -- results (under sock_lock) ---------------------------------------------------
    def _on_readable(self, socket):
        for frames in polled_messages(socket):
            msg_type, fields = P.unpack(frames[0])
            if msg_type == P.BOUNCE:
                self._on_bounce(socket, fields[0])
                continue
            if msg_type != P.REPLY:
                continue
            task_id = fields[0]
            with self.lock:
                lease = self.by_socket.get(socket)
                call = lease.inflight.get(task_id) if lease is not None else None
                if call is None:
                    continue
                spec, _frames, (pushed, slow, _keep) = call
                now = time.monotonic()
                lease.slow_inflight -= slow
                self.quick[spec.function_id] = now - pushed < QUICK_TASK_S
                self.direct._on_reply(*fields, frames[1:])
                if not lease.inflight:
                    lease.idle_since = now
                    if lease.recalled:
                        self._release(lease)
                if lease.demand.queue:
                    self._pump(lease.demand, locked=True)

    def _on_bounce(self, socket, task_ids):
        """The worker's task ran long: the ones queued behind it come back."""
        with self.lock:
            lease = self.by_socket.get(socket)
            if lease is None:
                return
            demand = lease.demand
            running = next(iter(lease.inflight.values()), None)
            if running is not None:
                self.quick[running[0].function_id] = False   # queue nothing behind it again
            back = []
            for task_id in task_ids:
                call = lease.inflight.pop(task_id, None)
                if call is None:
                    continue
                spec, frames, (_pushed, slow, keep) = call
                lease.slow_inflight -= slow
                self.direct.by_task.pop(task_id, None)
                for object_id in spec.return_ids:
                    self.direct.pending[object_id] = demand
                back.append((spec, frames, keep))
            demand.queue.extendleft(reversed(back))
            self._pump(demand, locked=True)

    # -- giving back -----------------------------------------------------------------
    def _release(self, lease):
        self._forget(lease)
        self.connection.send_on(lease.socket, P.pack(P.RELEASE, lease.lease_id))
        # Nothing comes on it until its worker is leased again: out of the poll.
        self.connection.set_polled(lease.socket, False)

    def _forget(self, lease):
        self.leases.pop(lease.lease_id, None)
        if self.by_socket.get(lease.socket) is lease:
            del self.by_socket[lease.socket]
        if lease in lease.demand.leases:
            lease.demand.leases.remove(lease)

    def tick(self, now):
        """I/O thread: give back leases idle for LINGER_S."""
        if not self.leases:
            return
        with self.lock:
            for lease in list(self.leases.values()):
                if (not lease.inflight and lease.idle_since is not None
                        and now - lease.idle_since >= LINGER_S and not lease.demand.queue):
                    self._release(lease)

    def close(self):
        """Give every idle lease back (the node kills workers of a lessee that left)."""
        with self.lock:
            for lease in list(self.leases.values()):
                if not lease.inflight:
                    self._release(lease)


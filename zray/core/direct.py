"""Direct actor calls: the caller talks to the actor's worker, not the node.

::

    caller DEALER ──CALL (spec + args)──► actor worker ROUTER (ipc, actor_socket_path)
    caller DEALER ◄──REPLY (results)─────
                        node: hears of a call only when its results must outlive it

- A call goes direct when the caller's socket to the actor is connected,
  its arguments hold no ObjectRef, it returns something, and none of this
  caller's calls to the actor went through the node and are still unanswered
  (so each caller's calls stay in order). Every other call goes through the
  node as before; the caller switches back once those are answered.
- Results that are small, hold no ref and are no error come back in REPLY
  and live only in the caller's cache. If the caller passes such a ref on
  (a task argument, inside a put or a result) it first PUTs the value to
  the node, as if it had put it itself (``publish``).
- Other results (big, holding refs, errors, exit_actor) go to the node in
  the worker's DONE with ``holder`` = the caller, and REPLY says so; the
  caller then asks the node for them (ADD_REF + SUBSCRIBE) and keeps a ref
  until they arrive, so its release can never overtake the DONE.
- The actor's worker dies with calls in flight (the socket monitor says
  disconnected): the caller resubmits them, in order, through the node
  marked ``attempted`` with the worker they went to (its PONG named it
  when the socket connected); the node's actor table retries them while
  max_task_retries allow, or fails them with RayActorError, as it does for
  calls in flight through it. A restarted actor listens on the same path, so
  the socket reconnects by itself.
- The caller holds a ref to the actor while calls are in flight, so the
  actor cannot be told to exit (last handle gone) before they are answered.
- Only between a caller and an actor both on the caller's node and made
  from it (ipc, in the node's session directory); any other actor is
  reached through the nodes.
"""
import logging
import threading

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..transport import protocol as P
from ..transport.sockets import bound_receiving
from ..transport.wire_types import ProtocolError
from .connection import EVENTS, POLLIN
from .object_cache import INLINE_MAX_BYTES

MAX_CHANNELS = 16           # direct sockets per process; more actors go through the node
MAX_IPC_PATH = 100          # a unix socket path longer than ~107 bytes cannot be bound


class Channel:
    """This process's socket to one actor, and its calls in flight on it."""
    __slots__ = ("actor_id", "socket", "monitor", "connected", "inflight", "node_calls",
                 "node_only", "actor_ref", "held_back", "epoch", "worker_id")

    def __init__(self, actor_id, socket=None, monitor=None):
        self.actor_id = actor_id
        self.socket = socket
        self.monitor = monitor
        self.connected = False
        self.inflight = {}          # task_id -> (spec, frames), in send order
        self.node_calls = 0         # calls sent through the node, not answered yet
        self.node_only = socket is None   # no direct path to this actor
        self.actor_ref = None       # held while calls are in flight
        # Calls for the node made while direct ones are in flight: sent once
        # those are answered, so the node's cannot overtake them at the actor.
        self.held_back = []
        self.epoch = 0              # +1 at each fail-over: older sends are dropped
        self.worker_id = None       # the actor's worker at the other end (its PONG)

    def usable(self):
        return self.connected and not self.node_calls and not self.node_only


class DirectCalls:
    """The caller's side (every process may call actors)."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.connection = runtime.connection
        self.cache = runtime.objects
        self.identity = self.connection.identity
        self.session_dir = runtime.node_info.get("session_dir")
        try:
            self.node_id = bytes.fromhex(runtime.node_info.get("node_id", ""))
        except ValueError:
            self.node_id = b""
        self.lock = threading.RLock()
        self.channels = {}          # actor_id -> Channel
        self.by_monitor = {}        # monitor socket -> Channel
        self.pending = {}           # return id of a call in flight direct -> Channel
        self.publish_on_arrival = set()   # of those, ids passed on meanwhile

    def not_at_node(self):
        """Return ids of calls the node has not heard of: in flight direct, or
        held back behind them (a get must not ask the node for those)."""
        if not self.pending and not any(c.held_back for c in self.channels.values()):
            return ()
        with self.lock:
            unsent = set(self.pending)
            for channel in self.channels.values():
                for spec, _frames, _keep in channel.held_back:
                    unsent.update(spec.return_ids)
            return unsent

    # -- sending ------------------------------------------------------------
    def send(self, spec, frames, eligible, make_ref):
        """Send an actor call, direct if it can go so, else through the node."""
        channel = self.channels.get(spec.actor_id) or self._open(spec.actor_id)
        with self.lock:
            if eligible and channel.usable() and not channel.held_back:
                spec = spec._replace(owner=self.identity)
                if not channel.inflight:
                    channel.actor_ref = make_ref(spec.actor_id)
                channel.inflight[spec.task_id] = (spec, frames)
                for object_id in spec.return_ids:
                    self.pending[object_id] = channel
                epoch = channel.epoch
                self.connection.send_on(channel.socket, P.pack(P.CALL, spec) + frames,
                                        lambda: channel.epoch == epoch)
                return
            if channel.inflight:
                # Its argument refs are kept until it is sent: the node must not
                # free them meanwhile.
                keep = [make_ref(i) for i in spec.dep_ids + spec.contained_ids]
                channel.held_back.append((spec, frames, keep))
                return
            self._through_node(channel, spec, frames, self.connection.send_message)

    def _through_node(self, channel, spec, frames, send):
        if not spec.return_ids:
            channel.node_only = True      # no answer to wait for: order unknowable
        else:
            channel.node_calls += 1
            # Hold the first return until it arrives (the node pushes only
            # what we hold), so this channel learns the call was answered.
            first = spec.return_ids[0]
            self.runtime.refs.add(first, False)
            self.cache.on_arrival[first] = lambda object_id, ch=channel: self._node_call_done(
                ch, object_id)
        send(P.SUBMIT, spec, frames=frames)

    def _node_call_done(self, channel, object_id):
        with self.lock:
            channel.node_calls -= 1
        self.runtime.refs.drop(object_id)

    def _open(self, actor_id):
        path = P.actor_socket_path(self.session_dir, actor_id) if self.session_dir else None
        # Only actors made from this node (their ids begin with its id): its
        # actor table then holds the record that judges calls resubmitted
        # after a death. One on another node has no socket here anyway.
        home_here = bool(self.node_id) and actor_id[:len(self.node_id)] == self.node_id
        if (path is None or not home_here or len(path) > MAX_IPC_PATH
                or len(self.channels) >= MAX_CHANNELS):
            channel = Channel(actor_id)
        else:
            socket = self.connection.context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, 0)
            socket.setsockopt(zmq.RCVHWM, 0)
            # Only to a connected actor: a call queued for a dead one must
            # never reach its restarted successor (it is resubmitted instead).
            socket.setsockopt(zmq.IMMEDIATE, 1)
            socket.setsockopt(zmq.RECONNECT_IVL, 50)
            socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
            socket.setsockopt(zmq.IDENTITY, self.identity)
            monitor = socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            socket.connect("ipc://" + path)
            channel = Channel(actor_id, socket, monitor)
        with self.lock:
            existing = self.channels.get(actor_id)
            if existing is not None:     # another thread opened it first
                if channel.socket is not None:
                    channel.socket.disable_monitor()
                    channel.monitor.close(0)
                    channel.socket.close(0)
                return existing
            self.channels[actor_id] = channel
        if channel.socket is not None:
            self.by_monitor[channel.monitor] = channel
            self.connection.add_socket(channel.socket, self._on_readable)
            self.connection.add_socket(channel.monitor, self._on_monitor)
        return channel

    # -- passing refs on ----------------------------------------------------
    def publish(self, object_ids):
        """The node must know these objects before a message naming them."""
        cache = self.cache
        if not cache.local_only and not self.pending:
            return
        with self.lock:
            for object_id in object_ids:
                if object_id in cache.local_only:
                    with cache.cond:
                        entry = cache.objects.get(object_id)
                        cache.local_only.discard(object_id)
                    if entry is not None:
                        self.connection.send_message(P.PUT, [entry[0]], frames=entry[1])
                elif object_id in self.pending and object_id not in self.publish_on_arrival:
                    # Still on its way: the node holds a place for it now and
                    # gets the value on arrival. Our ref stays until then.
                    self.publish_on_arrival.add(object_id)
                    self.runtime.refs.add(object_id, False)
                    self.connection.send_message(P.ADD_REF, [object_id])

    # -- replies, connection events (under sock_lock) --------------------------
    def _on_readable(self, socket):
        while socket.getsockopt(EVENTS) & POLLIN:
            frames = socket.recv_multipart()
            msg_type, fields = P.unpack(frames[0])
            if msg_type == P.REPLY:
                self._on_reply(*fields, frames[1:])
            elif msg_type == P.PONG:
                self._on_pong(socket, fields[0])

    def _on_pong(self, socket, worker_id):
        """Connected, and to this worker: calls may go direct now."""
        with self.lock:
            for channel in self.channels.values():
                if channel.socket is socket:
                    channel.worker_id = worker_id
                    channel.connected = True

    def _on_reply(self, task_id, entries, error, payload):
        enqueue = self.connection.enqueue
        cache = self.cache
        with self.lock:
            channel = self.pending.get(task_id + b"\x00\x00\x00\x00")
            call = channel.inflight.pop(task_id, None) if channel is not None else None
            if call is None:
                return                       # resubmitted through the node already
            spec = call[0]
            for object_id in spec.return_ids:
                self.pending.pop(object_id, None)
            if entries is not None:
                offset = 0
                with cache.cond:
                    for header in entries:
                        object_id, n = header[0], header[2]
                        part = payload[offset:offset + n]
                        offset += n
                        cache.owned_pending.discard(object_id)
                        if object_id in self.publish_on_arrival:
                            self.publish_on_arrival.discard(object_id)
                            enqueue(P.PUT, [header], frames=part)
                            self.runtime.refs.drop(object_id)
                        elif self.runtime.refs.holds(object_id):
                            cache.local_only.add(object_id)
                        if self.runtime.refs.holds(object_id):
                            cache.objects[object_id] = (header, part)
                    cache.cond.notify_all()
            else:
                self._from_node(spec, error)
            if not channel.inflight:
                self._release_held_back(channel)
                channel.actor_ref = None

    def _release_held_back(self, channel):
        held, channel.held_back = channel.held_back, []
        for spec, frames, _keep in held:
            self._through_node(channel, spec, frames, self.connection.enqueue)
        # Refs in `held` drop after the SUBMITs are queued, so the node sees them first.

    def _from_node(self, spec, error):
        """The results went to the node with us as holder: ask for them, and
        keep a ref until they are here (our release must follow its DONE)."""
        refs = self.runtime.refs
        for object_id in spec.return_ids:
            if object_id in self.publish_on_arrival:
                self.publish_on_arrival.discard(object_id)   # publish's ref serves
            else:
                refs.add(object_id, False)
            self.cache.on_arrival[object_id] = refs.drop
        if spec.return_ids:
            self.connection.enqueue(P.ADD_REF, list(spec.return_ids))
            self.connection.enqueue(P.SUBSCRIBE, list(spec.return_ids))
        if error is not None:
            name, text = error
            self.runtime._on_task_error((name, text, spec.return_ids), ())

    def _on_monitor(self, monitor):
        channel = self.by_monitor.get(monitor)
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if channel is None:
                continue
            if event == zmq.EVENT_CONNECTED:
                # Usable once the worker says who it is: a call resubmitted
                # after its death names it, so the node can tell a death it has
                # not seen yet from one it has already restarted the actor after.
                epoch = channel.epoch
                self.connection.send_on(channel.socket, P.pack(P.PING),
                                        lambda: channel.epoch == epoch)
            elif event == zmq.EVENT_DISCONNECTED:
                self._fail_over(channel)

    def _fail_over(self, channel):
        """The actor's worker went: its calls in flight go through the node,
        in order, marked as possibly run (its retry rules decide)."""
        with self.lock:
            channel.connected = False
            channel.epoch += 1      # a call not sent yet must not reach a restarted actor
            attempted_on = channel.worker_id
            channel.worker_id = None
            calls = list(channel.inflight.values())
            channel.inflight.clear()
            for spec, frames in calls:
                for object_id in spec.return_ids:
                    self.pending.pop(object_id, None)
                    if object_id in self.publish_on_arrival:
                        # The node's SUBMIT holds it for us now: our extra ref goes after.
                        self.publish_on_arrival.discard(object_id)
                        self.runtime.refs.drop(object_id)
                retry = spec._replace(options={**spec.options, "attempted": attempted_on})
                self._through_node(channel, retry, frames, self.connection.enqueue)
            self._release_held_back(channel)
            channel.actor_ref = None


class ActorEndpoint:
    """The actor worker's side: a ROUTER where callers send CALLs."""

    def __init__(self, runtime, actor_id):
        self.runtime = runtime
        session_dir = runtime.node_info.get("session_dir")
        path = P.actor_socket_path(session_dir, actor_id) if session_dir else None
        if path is None or len(path) > MAX_IPC_PATH:
            raise ValueError(f"no direct socket for this actor: path {path!r} too long")
        socket = runtime.connection.context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 500)      # the last replies still go out at exit
        socket.setsockopt(zmq.SNDHWM, 0)
        bound_receiving(socket)     # as the node's sockets: back-pressure, never drops
        socket.bind("ipc://" + path)
        self.socket = socket
        self.warned = False
        runtime.connection.add_socket(socket, self._on_readable)

    def _on_readable(self, socket):
        tasks = self.runtime.tasks
        while socket.getsockopt(EVENTS) & POLLIN:
            frames = socket.recv_multipart()
            try:
                msg_type, fields = P.unpack(frames[1])
            except (IndexError, ProtocolError) as error:
                # Only this user's processes reach this socket, but a bad
                # message must not stop the actor: drop it, say so once.
                if not self.warned:
                    self.warned = True
                    logging.getLogger("zray.direct").warning(
                        "dropped a malformed direct call: %s", error)
                continue
            if msg_type == P.CALL:
                spec = fields[0]
                tasks.append(((spec, (), {}, None, frames[0]), frames[2:]))
            elif msg_type == P.PING:
                self.runtime.connection.send_on(
                    socket, [frames[0]] + P.pack(P.PONG, self.runtime.connection.identity))

    def reply(self, spec, route, entries, payload, exiting, error_text):
        """Results straight to the caller if they can live there alone; else
        to the node, held for the caller, and a REPLY saying so."""
        simple = not exiting and error_text is None and all(
            header[1] == P.INLINE and not header[4] and not header[5] for header in entries)
        if simple and sum(len(f) for f in payload) < INLINE_MAX_BYTES:
            self.runtime.connection.send_on(
                self.socket, [route] + P.pack(P.REPLY, spec.task_id, entries, None) + payload)
            return
        self.runtime.send_message(P.DONE, spec.task_id, entries, exiting, error_text,
                                  self.runtime.take_events(), spec.owner, frames=payload)
        error = (spec.name, error_text) if error_text else None
        self.runtime.connection.send_on(
            self.socket, [route] + P.pack(P.REPLY, spec.task_id, None, error))

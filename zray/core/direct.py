"""Direct actor calls: the caller talks to the actor's worker, not the node.

::

    caller DEALER ──CALL (spec + args + deps' values)──► actor worker ROUTER
    caller DEALER ◄──REPLY (results)─────────────────   (ipc, actor_socket_path)
                        node: hears of a call only when its results must outlive it

- A call goes direct when the caller's socket to the actor is connected and
  none of this caller's calls to the actor went through the node and are
  still unanswered (so each caller's calls stay in order). Every other call
  goes through the node as before; the caller switches back once those are
  answered. A call without returns sent through the node (nothing answers
  it) keeps later ones on the node until one sent after it is answered.
- ObjectRef arguments: the caller waits until their values are here (asking
  the node for them, or for its own direct results to come back), then sends
  them in the CALL as the node's EXECUTE would (an object in shared memory:
  its header; the worker reads or pins it by id). A call waiting so holds
  back this caller's later calls to the actor only. The caller keeps every
  argument (and each ref inside one) alive until the call is answered; the
  node hears of them only if the call goes through it. A call whose
  arguments hold refs is answered through the node (DONE with ``holder``),
  so the node sees the actor borrow them before the caller lets go; one
  without returns whose arguments hold refs goes through the node.
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
  reached through the nodes. At most MAX_CHANNELS sockets per process: past
  that, the least recently used one idle for IDLE_CLOSE_S closes (its actor's
  next call opens it again); with none idle, calls go through the node.
"""
import itertools
import threading
import time
from collections import deque

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..transport import protocol as P
from .connection import EVENTS, POLLIN

MAX_CHANNELS = 64           # direct sockets per process; past it, idle ones close (LRU)
IDLE_CLOSE_S = 1.0          # a socket unused this long may close to make room
MAX_IPC_PATH = 100          # a unix socket path longer than ~107 bytes cannot be bound


class Channel:
    """This process's socket to one actor, and its calls in flight on it."""
    __slots__ = ("actor_id", "socket", "monitor", "connected", "inflight", "waiting",
                 "node_calls", "node_only", "silent_sent", "silent_answered", "actor_ref",
                 "held_back", "epoch", "worker_id", "pings", "last_used", "retry_at",
                 "closed")

    def __init__(self, actor_id, socket=None, monitor=None):
        self.actor_id = actor_id
        self.socket = socket
        self.monitor = monitor
        self.connected = False
        self.inflight = {}          # task_id -> (spec, frames, keep), in send order
        # Calls to send direct once the arguments of the first are here (its
        # dependencies: the caller waits for them, as the node would).
        self.waiting = deque()      # (spec, frames, keep)
        self.node_calls = 0         # calls sent through the node, not answered yet
        self.node_only = socket is None   # no direct path to this actor
        # Calls without returns sent through the node (nothing says when they
        # ran): later ones go through the node too until one sent after them
        # is answered, since the node sends each caller's calls in order.
        self.silent_sent = 0
        self.silent_answered = 0
        self.actor_ref = None       # held while calls are in flight
        # Calls for the node made while direct ones are in flight or waiting:
        # sent once those are answered, so they cannot overtake them.
        self.held_back = []         # (spec, frames, keep)
        self.epoch = 0              # +1 at each fail-over: older sends are dropped
        self.worker_id = None       # the actor's worker at the other end (its PONG)
        self.pings = 0              # PINGs sent: only the PONG to the latest counts
        self.last_used = 0.0        # when a call last went on it (the LRU closes first)
        self.retry_at = None        # no socket for want of room: try again from then
        self.closed = False         # replaced (its socket closed to make room): look again

    def usable(self):
        return (self.connected and not self.node_calls and not self.node_only
                and self.silent_answered == self.silent_sent)

    def idle(self):
        return not (self.inflight or self.waiting)

    def quiet(self):
        """Nothing outstanding: a fresh channel could take its place."""
        return (not (self.inflight or self.waiting or self.held_back or self.node_calls)
                and self.silent_answered == self.silent_sent)


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
        self.sockets = 0            # channels with a socket (at most MAX_CHANNELS)
        self.by_monitor = {}        # monitor socket -> Channel
        self.by_task = {}           # task id of a call in flight direct -> Channel
        self.pending = {}           # return id of a call in flight direct -> Channel
        self.publish_on_arrival = set()   # of those, ids passed on meanwhile

    def not_at_node(self, object_ids):
        """Those of ``object_ids`` the node has not heard of: results of calls
        (or leased tasks) in flight direct, waiting, or held back (a get must
        not ask the node for those). Costs len(object_ids), not what is pending."""
        if not self.pending and not any(c.held_back or c.waiting
                                        for c in self.channels.values()):
            return ()
        with self.lock:
            pending = self.pending
            unsent = {i for i in object_ids if i in pending}
            for channel in self.channels.values():
                for spec, _frames, _keep in itertools.chain(channel.held_back, channel.waiting):
                    unsent.update(spec.return_ids)
            return unsent

    # -- sending ------------------------------------------------------------
    def send(self, spec, frames):
        """Send an actor call, direct if it can go so, else through the node.
        Its arguments stay alive here until it is answered; the node hears of
        them only if the call goes through it (``_through_node``)."""
        args = spec.dep_ids + spec.contained_ids
        # Without returns nothing says when it ran: one whose arguments hold
        # refs could let the caller drop them before the actor borrowed them.
        eligible = bool(spec.return_ids) or not args
        keep = [self.runtime.hold_ref(i) for i in args] if args else ()
        while True:
            channel = self._channel(spec.actor_id)
            with self.lock:
                if not channel.closed:
                    channel.last_used = time.monotonic()
                    self._send_on(channel, spec, frames, keep, eligible)
                    return

    def _send_on(self, channel, spec, frames, keep, eligible):
        """Direct (now, or once its arguments are here), held back behind
        direct ones, or through the node. Under lock."""
        if eligible and channel.usable() and not channel.held_back:
            if channel.waiting or not self._arguments_here(spec):
                channel.waiting.append((spec, frames, keep))
                self._fetch_arguments(channel, spec)
            else:
                self._send_direct(channel, spec, frames, keep)
            return
        if not channel.idle():
            channel.held_back.append((spec, frames, keep))
            return
        self._through_node(channel, spec, frames, self.connection.send_message)

    def _arguments_here(self, spec):
        objects = self.cache.objects
        return all(i in objects for i in spec.dep_ids)

    def _fetch_arguments(self, channel, spec):
        """Have the arguments of a waiting call come here; the channel moves on
        as each arrives. Results of our calls not sent to the node come by
        themselves (or are pushed as ours once sent there); others are asked
        of the node."""
        cache = self.cache
        ask = []
        unsent = None
        for object_id in spec.dep_ids:
            if object_id in cache.objects:
                continue
            cache.call_on_arrival(object_id, lambda _id, ch=channel: self._advance(ch))
            if object_id not in cache.requested:
                if unsent is None:
                    unsent = self.not_at_node(spec.dep_ids)
                if object_id not in unsent:
                    ask.append(object_id)
        if ask:
            with cache.cond:
                cache.requested.update(ask)
            self.connection.send_message(P.SUBSCRIBE, ask)
        self._advance(channel)      # one may have come before we asked

    def _advance(self, channel):
        """Send the waiting calls whose arguments are here, in order."""
        with self.lock:
            while channel.waiting and channel.usable():
                spec, frames, keep = channel.waiting[0]
                if not self._arguments_here(spec):
                    return
                channel.waiting.popleft()
                self._send_direct(channel, spec, frames, keep)
            if channel.idle():
                self._release_held_back(channel)

    def _send_direct(self, channel, spec, frames, keep):
        spec = spec._replace(owner=self.identity)
        deps, dep_frames = [], []
        if spec.dep_ids:
            # Their values travel with the call, as the node's EXECUTE carries
            # them (an object in shared memory: its header only).
            objects = self.cache.objects
            with self.cache.cond:
                for object_id in spec.dep_ids:
                    header, payload = objects[object_id]
                    deps.append(header)
                    dep_frames.extend(payload)
        if channel.idle():
            channel.actor_ref = self.runtime.hold_ref(spec.actor_id)
        channel.inflight[spec.task_id] = (spec, frames, keep)
        self.by_task[spec.task_id] = channel
        for object_id in spec.return_ids:
            self.pending[object_id] = channel
        epoch = channel.epoch
        self.connection.send_on(channel.socket, P.pack(P.CALL, spec, deps) + frames + dep_frames,
                                lambda: channel.epoch == epoch)

    def _through_node(self, channel, spec, frames, send):
        # The node must know every object the call names before its SUBMIT.
        if spec.dep_ids:
            self.publish(spec.dep_ids)
        if not spec.return_ids:
            channel.silent_sent += 1
        else:
            channel.node_calls += 1
            # Hold the first return until it arrives (the node pushes only
            # what we hold), so this channel learns the call was answered.
            first = spec.return_ids[0]
            self.runtime.refs.add(first, False)
            silent = channel.silent_sent
            self.cache.call_on_arrival(first, lambda object_id, ch=channel: self._node_call_done(
                ch, object_id, silent))
        send(P.SUBMIT, spec, frames=frames)

    def _node_call_done(self, channel, object_id, silent_before):
        with self.lock:
            channel.node_calls -= 1
            channel.silent_answered = max(channel.silent_answered, silent_before)
        self.runtime.refs.drop(object_id)

    def _channel(self, actor_id):
        """The channel to this actor, opened on first use. One left without a
        socket for want of room tries again now and then, when quiet."""
        channel = self.channels.get(actor_id)
        if channel is not None and (channel.retry_at is None
                                    or time.monotonic() < channel.retry_at):
            return channel
        return self._open(actor_id, channel)

    def _open(self, actor_id, old):
        path = P.actor_socket_path(self.session_dir, actor_id) if self.session_dir else None
        # Only actors made from this node (their ids begin with its id): its
        # actor table then holds the record that judges calls resubmitted
        # after a death. One on another node has no socket here anyway.
        home_here = bool(self.node_id) and actor_id[:len(self.node_id)] == self.node_id
        reachable = path is not None and home_here and len(path) <= MAX_IPC_PATH
        possible = reachable
        victims = ()
        with self.lock:
            existing = self.channels.get(actor_id)
            if existing is not old:      # another thread opened it first
                return existing
            if old is not None and not old.quiet():
                old.retry_at = time.monotonic() + IDLE_CLOSE_S
                return old
            if possible:
                possible, victims = self._room()
            if not possible:
                channel = Channel(actor_id)
                if reachable:
                    channel.retry_at = time.monotonic() + IDLE_CLOSE_S
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
                self.by_monitor[monitor] = channel
                self.sockets += 1
            self.channels[actor_id] = channel
            if old is not None:
                old.closed = True
        for victim in victims:
            self.connection.remove_socket(victim.monitor)
            self.connection.remove_socket(victim.socket)
        if channel.socket is not None:
            self.connection.add_socket(channel.socket, self._on_readable)
            self.connection.add_socket(channel.monitor, self._on_monitor)
        return channel

    def _room(self):
        """(room for one more socket, the channels closed to make it): the
        least recently used of those quiet for IDLE_CLOSE_S. Under lock."""
        excess = self.sockets + 1 - MAX_CHANNELS
        if excess <= 0:
            return True, ()
        cutoff = time.monotonic() - IDLE_CLOSE_S
        idle = [c for c in self.channels.values()
                if c.socket is not None and c.last_used < cutoff and c.quiet()]
        if len(idle) < excess:
            return False, ()
        victims = sorted(idle, key=lambda c: c.last_used)[:excess]
        for victim in victims:
            victim.closed = True
            victim.epoch += 1           # its PING, if still queued, is not sent
            del self.channels[victim.actor_id]
            self.by_monitor.pop(victim.monitor, None)
        self.sockets -= len(victims)
        return True, victims

    # -- ray.kill from this process ---------------------------------------
    def suspend(self, actor_id):
        """Calls go through the node until the worker answers a PING again:
        one killed (the node's SIGKILL lands before it answers the kill)
        never does, and its restarted successor does once connected."""
        channel = self.channels.get(actor_id)
        if channel is not None:
            with self.lock:
                channel.connected = False
                channel.pings += 1          # a PONG on its way now does not count

    def resume(self, actor_id):
        """After the kill: a worker still connected (not killed after all)
        answers; a PING that cannot leave at once is dropped (the socket
        reconnects to a restarted actor, and PINGs it then)."""
        channel = self.channels.get(actor_id)
        if channel is not None and channel.socket is not None:
            self._ping(channel, wait=False)

    def _ping(self, channel, wait=True):
        with self.lock:
            channel.pings += 1
            epoch = channel.epoch
            self.connection.send_on(channel.socket, P.pack(P.PING, channel.pings),
                                    lambda: channel.epoch == epoch, wait)

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
                self._on_pong(socket, *fields)

    def _on_pong(self, socket, worker_id, nonce):
        """Connected, and to this worker: calls may go direct now (unless a
        later PING is unanswered: this may be a worker killed since)."""
        with self.lock:
            for channel in self.channels.values():
                if channel.socket is socket and nonce == channel.pings:
                    channel.worker_id = worker_id
                    channel.connected = True

    def _on_reply(self, task_id, entries, error, events, payload):
        enqueue = self.connection.enqueue
        cache = self.cache
        if events:
            self.runtime.events.extend(events)     # sent on with ours (timeline)
        with self.lock:
            channel = self.by_task.pop(task_id, None)
            call = channel.inflight.pop(task_id, None) if channel is not None else None
            if call is None:
                return                       # resubmitted through the node already
            spec, _frames, keep = call
            for object_id in spec.return_ids:
                self.pending.pop(object_id, None)
            if entries is not None:
                offset = 0
                with cache.cond:
                    for header in entries:
                        object_id, n = header[0], header[2]
                        part = payload[offset:offset + n]
                        offset += n
                        if object_id in self.publish_on_arrival:
                            self.publish_on_arrival.discard(object_id)
                            enqueue(P.PUT, [header], frames=part)
                            self.runtime.refs.drop(object_id)
                        elif self.runtime.refs.holds(object_id):
                            cache.local_only.add(object_id)
                        if self.runtime.refs.holds(object_id):
                            cache.objects[object_id] = (header, part)
                            if cache.waiters:
                                cache.tell_waiters(object_id)
                    cache.cond.notify_all()
                if cache.on_arrival:
                    cache.arrived(spec.return_ids)   # calls waiting for these as arguments
            else:
                self._from_node(spec, error, keep)
            if channel.idle():
                self._release_held_back(channel)
                channel.actor_ref = None

    def _release_held_back(self, channel):
        held, channel.held_back = channel.held_back, []
        for spec, frames, _keep in held:
            self._through_node(channel, spec, frames, self.connection.enqueue)
        # Refs in `held` drop after the SUBMITs are queued, so the node sees them first.

    def _from_node(self, spec, error, keep):
        """The results went to the node with us as holder: ask for them, and
        keep a ref until they are here (our release must follow its DONE).
        The arguments too: the actor may have borrowed refs they hold, and the
        node hears of that before the DONE, on the same socket."""
        refs = self.runtime.refs
        for object_id in spec.return_ids:
            if object_id in self.publish_on_arrival:
                self.publish_on_arrival.discard(object_id)   # publish's ref serves
            else:
                refs.add(object_id, False)
            self.cache.call_on_arrival(object_id, refs.drop)
        if spec.return_ids:
            self.cache.call_on_arrival(spec.return_ids[0], lambda _id, keep=keep: None)
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
                self._ping(channel)
            elif event == zmq.EVENT_DISCONNECTED:
                # Replies the worker sent before it went are answers: read
                # them first (a poll may name the monitor before the socket).
                self._on_readable(channel.socket)
                self._fail_over(channel)

    def _fail_over(self, channel):
        """The actor's worker went: its calls in flight go through the node,
        in order, marked as possibly run (its retry rules decide); the ones
        waiting for their arguments follow, as new calls."""
        with self.lock:
            channel.connected = False
            channel.epoch += 1      # a call not sent yet must not reach a restarted actor
            attempted_on = channel.worker_id
            channel.worker_id = None
            calls = list(channel.inflight.values())
            channel.inflight.clear()
            for spec, frames, _keep in calls:
                self.by_task.pop(spec.task_id, None)
                for object_id in spec.return_ids:
                    self.pending.pop(object_id, None)
                    if object_id in self.publish_on_arrival:
                        # The node's SUBMIT holds it for us now: our extra ref goes after.
                        self.publish_on_arrival.discard(object_id)
                        self.runtime.refs.drop(object_id)
                retry = spec._replace(options={**spec.options, "attempted": attempted_on})
                self._through_node(channel, retry, frames, self.connection.enqueue)
            waiting, channel.waiting = list(channel.waiting), deque()
            for spec, frames, _keep in waiting:
                self._through_node(channel, spec, frames, self.connection.enqueue)
            self._release_held_back(channel)
            channel.actor_ref = None

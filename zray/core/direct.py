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
- Sockets: ipc to an actor made from the caller's node; authenticated tcp
  to one made on another node, or from a process whose node is on another
  machine (direct_sockets.py, the worker's side remote_endpoint.py). Over
  tcp a call goes direct only if its arguments are inline values here and
  hold no ref (else through the node, in order as above); results that
  cannot come back inline stay on the actor's node, held for the caller's
  node, which pulls them (HELD, direct_replies.py). A resubmitted call goes
  through the caller's node to the actor's home, which judges it.
"""
import itertools
import threading
import time

from ..transport import auth
from ..transport import protocol as P
from .direct_replies import DirectReplies
from .direct_sockets import DirectSockets

class DirectCalls(DirectSockets, DirectReplies):
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
        self.hold_watcher = None    # the thread looking up starting actors' addresses
        # Actors on other nodes over tcp: a process in a cluster (its node
        # listens on tcp), or whose node is on another machine.
        self.over_tcp = auth.is_tcp(runtime.node_address)
        self.looks_remote = self.over_tcp or auth.is_tcp(runtime.node_info.get("tcp_address"))

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
        if channel.remote and eligible:
            eligible = self._inline_here(spec)
        if eligible and not channel.held_back and (channel.usable()
                                                    or self._holding(channel, spec)):
            if channel.waiting or not channel.usable() or not self._arguments_here(spec):
                channel.waiting.append((spec, frames, keep))
                self._fetch_arguments(channel, spec)
            else:
                self._send_direct(channel, spec, frames, keep)
            return
        if not channel.idle():
            channel.held_back.append((spec, frames, keep))
            return
        self._through_node(channel, spec, frames, self.connection.send_message)

    def _holding(self, channel, spec):
        """Calls to a fresh actor on another node wait here while its address
        is looked up (direct from the first call), if they could go over tcp."""
        return (channel.hold_until is not None and time.monotonic() < channel.hold_until
                and self._inline_here(spec))

    def _inline_here(self, spec):
        """Can the call go to another machine: arguments here, inline values
        holding no ref (an object in shared memory is on this machine)."""
        if spec.contained_ids:
            return False
        objects = self.cache.objects
        for object_id in spec.dep_ids:
            entry = objects.get(object_id)
            if entry is None or entry[0][1] != P.INLINE or entry[0][4]:
                return False
        return True

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
        head = (P.pack(P.REMOTE_CALL, spec, deps, self.node_id.hex()) if channel.remote
                else P.pack(P.CALL, spec, deps))
        self.connection.send_on(channel.socket, head + frames + dep_frames,
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

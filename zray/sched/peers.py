"""Node to node: who else is in the cluster, and sending work to them.

::

    node A                                                              node B
    Peers ── DEALER (identity p<A id><nonce>) ── HELLO, FORWARD, ──────► ROUTER
             ADD_REF/SUBSCRIBE/REMOVE_REF, PULL                          (NodeDaemon)
          ◄──────────────────── WELCOME, OBJECTS, CHUNK, TERR, LOG ──────
    Peers ── SUB "node:" on the kv change feed ◄── every node's heartbeat

- Membership: every node puts ``node:<id>`` (totals, free resources, queue
  length, tcp address) every HEARTBEAT_S with a ttl of NODE_TTL_S. The kv
  service deletes an entry that is not refreshed, and every node sees the
  delete on the feed: that is how a silent node (a machine gone) is noticed.
  A killed node is noticed sooner: our link to it drops and does not come
  back within PEER_LOST_S, and we delete its record for everyone. A node
  that sees its own record deleted exits (death is death: its work runs
  elsewhere now). Nothing here waits for the kv.
- Spillback: a task no local resources could ever run, or one queued beyond
  what this node has free, is FORWARDed to a peer whose last heartbeat
  (minus what was sent to it since) says it has room. One hop only: a
  forwarded task is never forwarded again, so work cannot ping-pong.
- The executing node treats the forwarding node as the client that
  submitted the task: results come back to it as OBJECTS. Small ones are
  inline and sealed here; big ones stay on the executing node, which holds
  them for us, and we only note where they are (``ObjectLocated``): they
  are pulled in chunks (``plasma/transfer.py``) when something here needs
  them, and released there when our entry is freed
  (``sched/state/locations.py``). Arguments travel the other way: inline
  ones inside FORWARD, shared-memory ones pulled by the executing node from
  the node the FORWARD names (this one, or where the object was made).
- A peer that leaves: tasks forwarded to it go back in the queue here (one
  retry used; failed with an error when none are left) and are placed
  again; its holds on our objects are dropped.

This module is I/O at the edge: sockets, the kv feed, grace timers. What it
hears becomes events (``PeerSeen``, ``PeerGone``, ``TaskForwardedIn``...);
which task goes where, and what a peer's death means for our tasks, is
decided in ``sched/state/forwarding.py``.
"""
import logging
import os
import time
from collections import OrderedDict

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..kv.client import subscribe
from ..kv.records import ACTOR_DIRECT_PREFIX, valid_node_record
from ..plasma.transfer import Transfers
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import send_frames
from .held_messages import HeldMessages
from ..transport.wire_types import decode
from .state import events as E

log = logging.getLogger("zray.peers")

HEARTBEAT_S = 0.5
# A node whose heartbeat the kv has not had for this long is gone. It is a
# deadline a busy or paused node still meets (nothing that can block runs in
# a node's loop): a stall shorter than this loses nothing and runs nothing
# twice. A killed node is noticed sooner, by its connections (PEER_LOST_S).
NODE_TTL_S = float(os.environ.get("ZRAY_NODE_TTL_S", 10.0))
# Our connection to a peer dropped and did not come back this long: its
# process is gone (a paused one keeps its connections), so it is gone.
PEER_LOST_S = 1.0
# Holds of a gone node on our objects and the results we owe it are kept
# this long (a node declared gone exits when it hears of it, so this is
# only a margin for messages still on their way).
DROP_GRACE_S = 30.0
# Our own heartbeat comes back on the feed; when it has not for this long the
# kv service (the head) is gone, and a node without a head shuts down rather
# than run on forever with nobody to stop it.
KV_LOST_S = float(os.environ.get("ZRAY_KV_LOST_S", 60.0))


class Link:
    """Our connection (a DEALER) to another node, and its monitor."""
    __slots__ = ("node_id", "socket", "info", "monitor", "dropped_at")

    def __init__(self, node_id, socket, info, monitor):
        self.node_id = node_id
        self.socket = socket
        self.info = info          # its last heartbeat
        self.monitor = monitor    # connection events of socket
        self.dropped_at = None    # when the connection dropped, while it is down

    def close(self):
        self.socket.disable_monitor()
        self.monitor.close(0)
        self.socket.close(0)

    def send(self, msg_type, *fields, frames=()):
        send_frames(self.socket, P.pack(msg_type, *fields) + list(frames))


class Peers:
    def __init__(self, node):
        self.node = node
        self.links = {}                 # node_id -> Link
        self.gone = OrderedDict()       # node_id -> last info (ray.nodes() shows them dead)
        self.transfer = Transfers(node)
        self.next_heartbeat = 0.0
        self.to_drop = {}               # node_id -> when its inbound clients go
        self.held = HeldMessages(NODE_TTL_S)    # from peers not heard of yet
        self.last_echo = time.monotonic()   # our heartbeat last seen on the feed
        # Subscribe first, then read the table: no join falls in between.
        self.sub = subscribe(node.config["kv_pub_address"], ["node:"], node.password,
                             node.context)
        node.watched[self.sub] = self._on_feed
        for key, info in node.kv.scan("node:").items():
            self._on_record(key, info)

    # == membership ===========================================================
    def heartbeat(self):
        node = self.node
        info = node._node_info()
        info.update(tcp_address=node.tcp_address, head=bool(node.config.get("head")),
                    pid=os.getpid(), available=node._local_available(),
                    queued=node.scheduler.queued_count(),
                    running=len(node.scheduler.running), time=time.time())
        node.kv.tell("put_ttl", f"node:{node.node_id}", info, NODE_TTL_S)

    def tick(self, now):
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + HEARTBEAT_S
            self.heartbeat()
            self.transfer.tick(now)
            for node_id in [n for n, when in self.to_drop.items() if when <= now]:
                del self.to_drop[node_id]
                self._drop_inbound(node_id)
            for link in [k for k in self.links.values()
                         if k.dropped_at is not None and now - k.dropped_at >= PEER_LOST_S]:
                log.warning("the connection to node %s dropped %.1f s ago and did not come "
                            "back: its process is gone", link.node_id, now - link.dropped_at)
                # Said for everyone (the kv would only notice after NODE_TTL_S).
                self.node.kv.tell("delete", f"node:{link.node_id}")
                self._on_node_gone(link.node_id)
            for identity in self.held.overdue(now):
                self._release_held(identity)
            if now - self.last_echo > KV_LOST_S and self.node.running:
                log.error("no word from the kv service at %s for %.0f s (ZRAY_KV_LOST_S): the "
                          "head is gone for good; this node shuts down",
                          self.node.config["kv_address"], KV_LOST_S)
                self.node.orphaned = True       # so it also removes its files
                self.node.running = False

    def _drop_inbound(self, node_id):
        """Forget what a gone node held here and the results we owed it."""
        prefix = b"p" + node_id.encode()
        for identity in [i for i in self.node.clients if i.startswith(prefix)]:
            self.node.handle(E.ClientLeft(identity))

    def _on_feed(self):
        for _ in range(1000):
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                key, _sequence, value = frames
                self._on_record(key.decode(), decode(value))
            except Exception as exc:    # any kv client can write any value there
                self.node.complaints.warn("feed", "ignored a bad node record on the kv "
                                          "feed: %r", exc)

    def _on_record(self, key, info):
        """A ``node:`` record from the kv (None: deleted); malformed ones are ignored."""
        node_id = key[len("node:"):]
        if node_id == self.node.node_id:
            self.last_echo = time.monotonic()
            if info is None and self.node.running:
                # Death is death: the others have placed our work elsewhere, so
                # going on would run it twice.
                log.error("this node was declared dead (no heartbeat for %.0f s, or its "
                          "peers lost their connections to it); it shuts down so that "
                          "nothing it runs runs twice", NODE_TTL_S)
                self.node.orphaned = True       # so it also removes its files
                self.node.running = False
        elif info is None:
            self._on_node_gone(node_id)
        elif valid_node_record(node_id, info):
            self._on_node(node_id, info)
        else:
            self.node.complaints.warn("record", "ignored a malformed record for node %r",
                                      node_id[:40])

    def _on_node(self, node_id, info):
        if node_id == self.node.node_id or not info.get("tcp_address"):
            return
        self.to_drop.pop(node_id, None)     # back in time: keep what it holds here
        link = self.links.get(node_id)
        if link is None:
            self._connect(node_id, info)
        else:
            link.info = info
        self.node.handle(E.PeerSeen(node_id, info))
        for identity in self.held.of_node(node_id):
            self._release_held(identity)

    def _connect(self, node_id, info):
        sock = self.node.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # A nonce: after a reconnect the old identity may still be taken.
        sock.setsockopt(zmq.IDENTITY, b"p" + self.node.node_id.encode() + os.urandom(4))
        # Its death shows as a dropped connection that does not come back.
        monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        auth.connect(sock, info["tcp_address"], self.node.password)
        link = self.links[node_id] = Link(node_id, sock, info, monitor)
        link.send(P.HELLO, "peer", os.getpid(), self.node.password, P.PROTOCOL_VERSION, [], None)
        self.gone.pop(node_id, None)
        self.node.watched[sock] = lambda: self._on_peer_socket(link)
        self.node.watched[monitor] = lambda: self._on_link_event(link)
        return link

    def _on_link_event(self, link):
        while True:
            try:
                event = recv_monitor_message(link.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED:
                link.dropped_at = link.dropped_at or time.monotonic()
            elif event == zmq.EVENT_CONNECTED:
                link.dropped_at = None

    def origin_of(self, identity):
        """The node id behind an inbound peer client, once we have a link to it."""
        node_id = identity[1:17].decode()
        return node_id if node_id in self.links else None

    # == peers we have not heard of yet (held_messages.py) ====================
    def hold(self, identity, msg_type, fields, payload):
        return self.held.hold(identity, msg_type, fields, payload, time.monotonic())

    def holding(self, identity):
        return identity in self.held

    def _release_held(self, identity):
        known = self.origin_of(identity) is not None
        if not known:
            log.warning("node %s sent work but never appeared on the kv feed; running it "
                        "without pulling its arguments from there", identity[1:17])
        for msg_type, fields, payload in self.held.release(identity, known):
            self.node.replay(identity, msg_type, fields, payload)

    def _on_node_gone(self, node_id):
        link = self.links.pop(node_id, None)
        if link is None:
            return
        log.warning("node %s (%s) left the cluster", node_id, link.info.get("tcp_address"))
        self.gone[node_id] = link.info
        while len(self.gone) > 100:
            self.gone.popitem(last=False)
        self.node.watched.pop(link.socket, None)
        self.node.watched.pop(link.monitor, None)
        link.close()
        self.to_drop[node_id] = time.monotonic() + DROP_GRACE_S
        if self.node.config.get("head") and self.node.kv is not None:
            # Its actors' tcp addresses (core/remote_endpoint.py) lead nowhere now.
            self.node.kv.tell("delete_where", ACTOR_DIRECT_PREFIX, "node_id", node_id)
        self.node.handle(E.PeerGone(node_id))

    # == commands from the state ==============================================
    def forward(self, cmd):
        link = self.links.get(cmd.node_id)
        if link is None:
            log.warning("no connection to node %s to forward %s to", cmd.node_id, cmd.spec.name)
            return
        headers, dep_frames = [], []
        for entry in cmd.inline:
            headers.append(entry.header())
            dep_frames.extend(entry.frames)
        link.send(P.FORWARD, cmd.spec, cmd.function, len(cmd.task_frames), headers,
                  frames=list(cmd.task_frames) + dep_frames)

    def want(self, node_id, object_ids, held=False):
        link = self.links.get(node_id)
        if link is not None:
            self.transfer.want(object_ids, link, held)

    def release_remote(self, node_id, object_ids):
        self.transfer.forget(object_ids)
        link = self.links.get(node_id)
        if link is not None:
            link.send(P.REMOVE_REF, object_ids)

    def tell(self, node_id, msg_type, fields):
        link = self.links.get(node_id)
        if link is not None:
            link.send(msg_type, *fields)

    def share_serializers(self, node_id, registrations):
        """Custom serializers to one peer (or all), as its own
        ``register_serializer`` requests (id 0: no answer)."""
        links = self.links.values() if node_id is None else [self.links.get(node_id)]
        for link in links:
            if link is not None:
                for blob, sys_path in registrations:
                    link.send(P.REQUEST, 0, "register_serializer", (blob, sys_path))

    def drop_transfers(self, node_id, expected_again):
        self.transfer.peer_gone(node_id, expected_again)

    # == messages from peers (on our DEALERs) =================================
    def _on_peer_socket(self, link):
        for _ in range(1000):
            try:
                frames = link.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg_type = None
            try:
                msg_type, fields = P.unpack(frames[0].bytes)
                handler = self._peer_handlers.get(msg_type)
                if handler is not None:
                    handler(self, link, fields, frames[1:])
            except Exception:   # one bad message must not take the node down
                self.node.complaints.warn("peer", "error handling %r from node %s",
                                          msg_type, link.node_id)
                log.debug("error handling a peer's message", exc_info=True)

    def _on_welcome(self, link, fields, _frames):
        self.node.handle(E.PeerAnswered(link.node_id, None))

    def _on_refused(self, link, fields, _frames):
        log.error("node %s refused this node: %s", link.node_id, fields[0])
        self.node.handle(E.PeerAnswered(link.node_id, fields[0]))

    def _on_objects(self, link, fields, frames):
        (entries,) = fields
        node, objects, transfer = self.node, self.node.objects, self.transfer
        offset, release = 0, []
        for header in entries:
            object_id, kind, count = header[0], header[1], header[2]
            part = [f.bytes for f in frames[offset:offset + count]]
            offset += count
            asked = transfer.requested.pop(object_id, None) is not None
            if asked and objects.get(object_id) is None:
                # Wanted inside an object still coming.
                node.handle(E.ObjectsExpected([object_id]))
            if object_id in transfer.pulls:
                continue        # already coming; its pull lets go of it when done
            locate = object_id in transfer.locating
            transfer.locating.discard(object_id)
            if kind == P.SHM and (locate or not asked):
                # A result of a task we forwarded, or a ref found in an object
                # we got: it stays there, held for us; we note where.
                node.handle(E.ObjectLocated(link.node_id, header))
                continue
            # The id of an actor it hosts for us: our hold keeps it alive there.
            keep = node.state.actors.routing.keeps_hold(object_id, link.node_id)
            if objects.get(object_id) is None or objects.is_ready(object_id):
                if not keep:
                    release.append(object_id)
                node.handle(E.PeerObjectArrived(object_id))
                continue
            # Refs inside it must be held before we let go of it there.
            inner = [i for i in header[4] if not objects.is_ready(i)]
            if inner:
                transfer.want(inner, link, locate=True)
            if kind == P.INLINE:
                node.handle(E.ObjectsSealed([header], part))
                if not keep:
                    release.append(object_id)
                node.handle(E.PeerObjectArrived(object_id))
            else:
                transfer.start(link, header)
        if release:
            transfer.let_go(link, release)

    def _on_chunk(self, link, fields, frames):
        self.transfer.on_chunk(link, fields, frames)

    def _on_task_error(self, link, fields, _frames):
        name, message, return_ids = fields
        if not return_ids:
            log.warning("node %s: %s", link.node_id, message)
            return
        owner = self.node.state.forwarding.owner_of(return_ids[0])
        if owner in self.node.clients:
            self.node.send(owner, P.TASK_ERROR, name, message, return_ids)

    def _on_log(self, link, fields, _frames):
        for client in self.node.clients.values():
            if client.kind == "driver":
                self.node.send(client.identity, P.LOG, *fields)

    def _ignore(self, link, fields, _frames):
        pass

    _peer_handlers = {P.WELCOME: _on_welcome, P.REFUSED: _on_refused, P.OBJECTS: _on_objects,
                      P.CHUNK: _on_chunk, P.TASK_ERROR: _on_task_error, P.LOG: _on_log,
                      P.RESPONSE: _ignore}

    # == looking ==============================================================
    def nodes(self, local_info):
        local_info.update(tcp_address=self.node.tcp_address,
                          head=bool(self.node.config.get("head")))
        rows = [local_info]
        rows += [dict(link.info, alive=True) for link in self.links.values()]
        rows += [dict(info, alive=False) for info in self.gone.values()]
        return rows

    def statistics(self):
        return {**self.node.state.forwarding.statistics(),
                "pulls": len(self.transfer.pulls), **self.transfer.stats}

    def close(self):
        try:    # said, not told: a told delete can die with the process
            self.node.kv.call("delete", f"node:{self.node.node_id}", timeout_s=1.0)
        except Exception:
            pass
        self.transfer.close()
        for link in self.links.values():
            self.node.watched.pop(link.socket, None)
            self.node.watched.pop(link.monitor, None)
            link.close()
        self.node.watched.pop(self.sub, None)
        self.sub.close(0)

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
  delete on the feed: that is how a killed node is noticed. Nothing here
  asks the kv on the hot path.
- Spillback: a task no local resources could ever run, or one queued beyond
  what this node has free, is FORWARDed to a peer whose last heartbeat
  (minus what was sent to it since) says it has room. One hop only: a
  forwarded task is never forwarded again, so work cannot ping-pong.
- The executing node treats the forwarding node as the client that
  submitted the task: results come back to it as OBJECTS, small ones inline,
  big ones pulled in chunks (``plasma/transfer.py``), and are sealed here;
  so the driver that owns them sees exactly the protocol of a local task.
  Arguments travel the other way the same way: inline ones inside FORWARD,
  shared-memory ones pulled by the executing node from this one.
- A peer that leaves: tasks forwarded to it go back in the queue here (one
  retry used; failed with an error when none are left) and are placed
  again; its holds on our objects are dropped.
"""
import logging
import os
import pickle
import time
from collections import OrderedDict

import zmq

from ..exceptions import WorkerCrashedError
from ..kv.client import subscribe
from ..kv.records import valid_node_record
from ..plasma.transfer import Transfers
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import send_frames
from . import admission
from . import resources as R

log = logging.getLogger("zray.peers")

HEARTBEAT_S = 0.5
NODE_TTL_S = 4.0          # a node silent this long is gone (seconds)
# A node starved of CPU can miss its heartbeats and be declared gone while
# it still runs. Its holds on our objects and the results we owe it are
# kept this long, so such a node picks up where it was if it comes back.
DROP_GRACE_S = 30.0
# Our own heartbeat comes back on the feed; when it has not for this long the
# kv service (the head) is gone, and a node without a head shuts down rather
# than run on forever with nobody to stop it.
KV_LOST_S = float(os.environ.get("ZRAY_KV_LOST_S", 60.0))
ORIGIN = "_origin_node"   # in a forwarded TaskSpec's options: where it came from


class Peer:
    """Another node, as this node last heard of it, and our connection to it."""
    __slots__ = ("node_id", "info", "totals", "available", "queued", "sent", "socket",
                 "functions", "forwarded", "refused")

    def __init__(self, node_id, socket):
        self.node_id = node_id
        self.socket = socket
        self.info = {}
        self.totals = {}          # fixed point, from the heartbeat
        self.available = {}
        self.queued = 0
        self.sent = {}            # demand forwarded to it since its last heartbeat
        self.functions = set()    # function ids it has been sent
        self.forwarded = set()    # ids of our tasks it runs
        self.refused = None       # its reason, if it refused our HELLO

    def update(self, info):
        self.info = info
        self.totals = {k: R.to_fixed(v) for k, v in info.get("resources", {}).items()}
        self.available = {k: R.to_fixed(v) for k, v in info.get("available", {}).items()}
        self.queued = info.get("queued", 0)
        self.sent = {}

    def feasible(self, demand):
        return all(self.totals.get(name, 0) >= amount for name, amount in demand.items())

    def room(self, name):
        # An idle peer may also queue about one round of work per resource,
        # so forwarded tasks are waiting there when a worker frees up.
        slack = self.totals.get(name, 0) if self.queued == 0 else 0
        return self.available.get(name, 0) + slack - self.sent.get(name, 0)

    def has_room(self, demand):
        return all(self.room(name) >= amount for name, amount in demand.items())

    def send(self, msg_type, *fields, frames=()):
        send_frames(self.socket, P.pack(msg_type, *fields) + list(frames))


class _Forwarded:
    __slots__ = ("task", "peer", "waiting")

    def __init__(self, task, peer):
        self.task = task
        self.peer = peer
        self.waiting = set(task.spec.return_ids)   # results not back yet


class Peers:
    def __init__(self, node):
        self.node = node
        self.peers = {}                 # node_id -> Peer
        self.gone = OrderedDict()       # node_id -> last info (ray.nodes() shows them dead)
        self.forwarded = {}             # task_id -> _Forwarded
        self.result_of = {}             # return object id -> task_id, for forwarded tasks
        self.finished_owners = OrderedDict()   # task_id -> owner, for late TASK_ERRORs
        self.transfer = Transfers(node, self._arrived)
        self.next_heartbeat = 0.0
        self.to_drop = {}               # node_id -> when its inbound clients go
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
            if now - self.last_echo > KV_LOST_S and self.node.running:
                log.error("no word from the kv service at %s for %.0f s: the head is gone; "
                          "this node shuts down", self.node.config["kv_address"], KV_LOST_S)
                self.node.orphaned = True       # so it also removes its files
                self.node.running = False

    def _drop_inbound(self, node_id):
        """Forget what a gone node held here and the results we owed it."""
        prefix = b"p" + node_id.encode()
        for client in [c for i, c in self.node.clients.items() if i.startswith(prefix)]:
            self.node._drop_client(client)

    def _on_feed(self):
        for _ in range(1000):
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                key, _sequence, value = frames
                self._on_record(key.decode(), pickle.loads(value))
            except Exception as exc:    # any kv client can write any value there
                self.node.complaints.warn("feed", "ignored a bad node record on the kv "
                                          "feed: %r", exc)

    def _on_record(self, key, info):
        """A ``node:`` record from the kv (None: deleted); malformed ones are ignored."""
        node_id = key[len("node:"):]
        if node_id == self.node.node_id:
            self.last_echo = time.monotonic()
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
        peer = self.peers.get(node_id)
        self.to_drop.pop(node_id, None)     # back in time: keep what it holds here
        if peer is None:
            peer = self._connect(node_id, info)
            peer.update(info)
            log.info("node %s joined at %s with %s", node_id, info["tcp_address"],
                     info.get("resources"))
            self.node._dispatch()       # work waiting for its resources can go now
            return
        peer.update(info)
        self.spill()

    def _connect(self, node_id, info):
        sock = self.node.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # A nonce: after a reconnect the old identity may still be taken.
        sock.setsockopt(zmq.IDENTITY, b"p" + self.node.node_id.encode() + os.urandom(4))
        auth.connect(sock, info["tcp_address"], self.node.password)
        peer = Peer(node_id, sock)
        peer.send(P.HELLO, "peer", os.getpid(), self.node.password, P.PROTOCOL_VERSION, [], None)
        self.node.store_requests.peer_connected(peer)
        self.peers[node_id] = peer
        self.gone.pop(node_id, None)
        self.node.watched[sock] = lambda: self._on_peer_socket(peer)
        return peer

    def _peer_of_client(self, client):
        """Our connection to the node behind an inbound peer client."""
        node_id = client.identity[1:17].decode()
        peer = self.peers.get(node_id)
        if peer is None:        # it heard of us before we heard of it: look it up
            info = self.node.kv.get(f"node:{node_id}")
            if info:
                self._on_record(f"node:{node_id}", info)
                peer = self.peers.get(node_id)
        return peer

    def _on_node_gone(self, node_id):
        peer = self.peers.pop(node_id, None)
        if peer is None:
            return
        node = self.node
        log.warning("node %s (%s) left the cluster", node_id, peer.info.get("tcp_address"))
        self.gone[node_id] = peer.info
        while len(self.gone) > 100:
            self.gone.popitem(last=False)
        node.watched.pop(peer.socket, None)
        peer.socket.close(0)
        self.to_drop[node_id] = time.monotonic() + DROP_GRACE_S
        again = set()
        for task_id in list(peer.forwarded):
            item = self.forwarded.pop(task_id)
            task = item.task
            for object_id in task.spec.return_ids:
                self.result_of.pop(object_id, None)
            if task.retries_left != 0:
                if task.retries_left > 0:
                    task.retries_left -= 1
                again.update(task.spec.return_ids)
                log.warning("task %s was running on node %s: placing it again", task.spec.name,
                            node_id)
                node.scheduler.make_ready(task)
            else:
                node._fail_task(task, WorkerCrashedError(
                    f"task {task.spec.name} was running on node {node_id} "
                    f"({peer.info.get('tcp_address')}), which left the cluster, and it has no "
                    f"retries left (max_retries={task.spec.max_retries}); pass max_retries to "
                    f"have it run again elsewhere"))
        self.transfer.peer_gone(peer, again)
        node._dispatch()

    # == messages from peers (on our DEALERs) =================================
    def _on_peer_socket(self, peer):
        for _ in range(1000):
            try:
                frames = peer.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg_type = None
            try:
                msg_type, fields = P.unpack(frames[0].bytes)
                handler = self._peer_handlers.get(msg_type)
                if handler is not None:
                    handler(self, peer, fields, frames[1:])
            except Exception:   # one bad message must not take the node down
                log.exception("error handling %r from node %s", msg_type, peer.node_id)

    def _on_welcome(self, peer, fields, _frames):
        peer.refused = None

    def _on_refused(self, peer, fields, _frames):
        peer.refused = fields[0]
        log.error("node %s refused this node: %s", peer.node_id, fields[0])

    def _on_objects(self, peer, fields, frames):
        (entries,) = fields
        objects = self.node.objects
        offset, release = 0, []
        for header in entries:
            object_id, kind, count = header[0], header[1], header[2]
            part = [f.bytes for f in frames[offset:offset + count]]
            offset += count
            asked = self.transfer.requested.pop(object_id, None) is not None
            entry = objects.get(object_id)
            if entry is None and asked:
                entry = objects.expect(object_id)   # wanted inside an object still coming
            if object_id in self.transfer.pulls:
                continue        # already coming; its pull lets go of it when done
            if entry is None or objects.is_ready(object_id):
                release.append(object_id)
                self._arrived(object_id)
                continue
            # Refs inside it must be fetched before we let go of it there.
            inner = [i for i in header[4] if not objects.is_ready(i)]
            if inner:
                self.transfer.want(inner, peer)
            if kind == P.INLINE:
                self.node._store_objects([header], part)
                release.append(object_id)
                self._arrived(object_id)
            else:
                self.transfer.start(peer, header)
        if release:
            peer.send(P.REMOVE_REF, release)

    def _on_chunk(self, peer, fields, frames):
        self.transfer.on_chunk(peer, fields, frames)

    def _on_task_error(self, peer, fields, _frames):
        name, message, return_ids = fields
        if not return_ids:
            log.warning("node %s: %s", peer.node_id, message)
            return
        task_id = self.result_of.get(return_ids[0])
        item = self.forwarded.get(task_id)
        owner = item.task.spec.owner if item else self.finished_owners.get(return_ids[0])
        if owner in self.node.clients:
            self.node.send(owner, P.TASK_ERROR, name, message, return_ids)

    def _on_log(self, peer, fields, _frames):
        for client in self.node.clients.values():
            if client.kind == "driver":
                self.node.send(client.identity, P.LOG, *fields)

    def _ignore(self, peer, fields, _frames):
        pass

    _peer_handlers = {P.WELCOME: _on_welcome, P.REFUSED: _on_refused, P.OBJECTS: _on_objects,
                      P.CHUNK: _on_chunk, P.TASK_ERROR: _on_task_error, P.LOG: _on_log,
                      P.RESPONSE: _ignore}

    def _arrived(self, object_id):
        """An object is here (or was not wanted): maybe a forwarded task is done."""
        task_id = self.result_of.pop(object_id, None)
        item = self.forwarded.get(task_id) if task_id is not None else None
        if item is None:
            return
        item.waiting.discard(object_id)
        if item.waiting:
            return
        del self.forwarded[task_id]
        task, peer = item.task, item.peer
        peer.forwarded.discard(task_id)
        for name, amount in task.demand.items():
            peer.sent[name] = peer.sent.get(name, 0) - amount
        if task.spec.return_ids:
            self.finished_owners[task.spec.return_ids[0]] = task.spec.owner
            while len(self.finished_owners) > 4096:
                self.finished_owners.popitem(last=False)
        self.node._release_arguments(task)
        self.spill()

    # == forwarding ===========================================================
    def spill(self):
        """Forward what this node cannot run (now or ever) to peers that can."""
        if not self.peers:
            return
        scheduler = self.node.scheduler
        if scheduler.infeasible:
            keep = []
            for task in scheduler.infeasible:
                peer = self._choose(task, anywhere=True) if _movable(task) else None
                if peer is None:
                    keep.append(task)
                else:
                    self.forward(task, peer)
            scheduler.infeasible = keep
        if not scheduler.queues:
            return
        budget = dict(self.node.resources.available)
        for key, queue in list(scheduler.queues.items()):
            if not queue:
                continue
            excess = len(queue) - _take_fitting(budget, queue[0].demand, len(queue))
            while excess > 0 and queue and _movable(queue[-1]):
                peer = self._choose(queue[-1])
                if peer is None:
                    break
                self.forward(queue.pop(), peer)
                excess -= 1
            if not queue:
                del scheduler.queues[key]

    def _choose(self, task, anywhere=False):
        """The peer with the most room for the task; any that could run it if ``anywhere``."""
        best, best_score = None, None
        for peer in self.peers.values():
            if peer.refused is not None or not peer.feasible(task.demand):
                continue
            room = peer.has_room(task.demand)
            if not room and not anywhere:
                continue
            score = (room, min((peer.room(n) for n in task.demand), default=0))
            if best_score is None or score > best_score:
                best, best_score = peer, score
        return best

    def forward(self, task, peer):
        node, spec = self.node, task.spec
        function = None
        if spec.function_id not in peer.functions:
            function = node.functions.get(spec.function_id)
            peer.functions.add(spec.function_id)
        inline, dep_frames = [], []
        for object_id in spec.dep_ids:
            entry = node.objects.get(object_id)
            if entry is not None and entry.kind == P.INLINE and node.objects.is_ready(object_id):
                inline.append(entry.header())
                dep_frames.extend(entry.frames)
        sent = spec._replace(options={**spec.options, ORIGIN: node.node_id}, owner=None)
        peer.send(P.FORWARD, sent, function, len(task.frames), inline,
                  frames=list(task.frames) + dep_frames)
        task.state = "forwarded"
        self.forwarded[spec.task_id] = _Forwarded(task, peer)
        for object_id in spec.return_ids:
            self.result_of[object_id] = spec.task_id
        peer.forwarded.add(spec.task_id)
        for name, amount in task.demand.items():
            peer.sent[name] = peer.sent.get(name, 0) + amount

    def on_forward(self, client, fields, payload):
        """A peer sends us one of its tasks: run it as if that peer submitted it."""
        spec, function, n_task_frames, inline = fields
        node = self.node
        origin = self._peer_of_client(client)
        if function is not None:
            if admission.function_refusal(spec.function_id, function[1]) is not None:
                raise ValueError(f"node {client.identity[1:17]!r} forwarded a function whose "
                                 f"id is not its hash")
            node.functions[spec.function_id] = function
        task_frames, dep_frames = payload[:n_task_frames], payload[n_task_frames:]
        offset = 0
        for header in inline:
            frames = dep_frames[offset:offset + header[2]]
            offset += header[2]
            if not node.objects.is_ready(header[0]):
                node.objects.expect(header[0])
                node._store_objects([header], frames)
        node._on_submit(client, (spec,), task_frames)
        missing = [i for i in spec.dep_ids + spec.contained_ids if not node.objects.is_ready(i)]
        if missing and origin is not None:
            self.transfer.want(missing, origin)

    # == looking ==============================================================
    def cluster_totals(self):
        totals = dict(self.node.resources.totals)
        for peer in self.peers.values():
            for name, amount in peer.totals.items():
                totals[name] = totals.get(name, 0) + amount
        return R.describe(totals)

    def cluster_available(self):
        free = {k: v for k, v in self.node.resources.available.items() if v > 0}
        for peer in self.peers.values():
            for name, amount in peer.available.items():
                if amount > 0:
                    free[name] = free.get(name, 0) + amount
        return R.describe(free)

    def nodes(self, local_info):
        local_info.update(tcp_address=self.node.tcp_address,
                          head=bool(self.node.config.get("head")))
        rows = [local_info]
        rows += [dict(peer.info, alive=True) for peer in self.peers.values()]
        rows += [dict(info, alive=False) for info in self.gone.values()]
        return rows

    def statistics(self):
        return {"peers": len(self.peers), "forwarded_running": len(self.forwarded),
                "pulls": len(self.transfer.pulls), **self.transfer.stats}

    def close(self):
        try:    # said, not told: a told delete can die with the process
            self.node.kv.call("delete", f"node:{self.node.node_id}", timeout_s=1.0)
        except Exception:
            pass
        self.transfer.close()
        for peer in self.peers.values():
            self.node.watched.pop(peer.socket, None)
            peer.socket.close(0)
        self.node.watched.pop(self.sub, None)
        self.sub.close(0)


def _movable(task):
    # Plain tasks only: actors live where they were made; and one hop only.
    return task.spec.kind == P.TASK and ORIGIN not in task.spec.options


def _take_fitting(budget, demand, limit):
    """How many of ``limit`` tasks of ``demand`` fit in ``budget``; take them from it."""
    count = limit
    for name, amount in demand.items():
        if amount > 0:
            count = min(count, max(budget.get(name, 0), 0) // amount)
    for name, amount in demand.items():
        budget[name] = budget.get(name, 0) - amount * count
    return count

"""Which tasks go to other nodes, and what became of them (part of NodeState).

- Each peer is known by its last heartbeat (totals, free resources, queue
  length) minus what was sent to it since.
- Spillback: a task no local resources could ever run, or one queued beyond
  what this node has free, is forwarded to the peer with the most room. One
  hop only: a forwarded task is never forwarded again, so work cannot
  ping-pong. An actor's creation is placed the same way; its calls follow
  it (``actor_routing.py``).
- A forwarded task is done when all its results are here, or known to be
  on the peer (large ones stay where they are made: ``locations.py``), or
  unwanted. A peer that leaves: its forwarded tasks are placed again (one
  retry used; failed with WorkerCrashedError when none are left), once
  their arguments exist (some may be remade from lineage first).
- Sockets, the kv feed and byte transfers are ``sched/peers.py`` and
  ``plasma/transfer.py``, at the edge; they turn what they hear into events.
"""
import logging
from collections import OrderedDict

from ...exceptions import WorkerCrashedError
from ...transport import protocol as P
from .. import resources as R
from ..task import TaskState
from . import commands as C

log = logging.getLogger("zray.forwarding")

S = TaskState
ORIGIN = "_origin_node"   # in a forwarded TaskSpec's options: where it came from
CALLER = "_caller"        # in a forwarded actor call's: (node id, client) that made it
LOCATIONS = "_arg_nodes"  # in a forwarded task's: {argument id: node with a copy} (not ORIGIN)


class PeerView:
    """Another node, as this node last heard of it."""
    __slots__ = ("node_id", "info", "totals", "available", "queued", "sent", "functions",
                 "forwarded", "refused")

    def __init__(self, node_id):
        self.node_id = node_id
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


class _Forwarded:
    __slots__ = ("task", "node_id", "waiting")

    def __init__(self, task, node_id):
        self.task = task
        self.node_id = node_id
        self.waiting = set(task.spec.return_ids)   # results not back yet


class Forwarding:
    def __init__(self, state):
        self.state = state                  # the NodeState this is part of
        self.peers = {}                     # node_id -> PeerView
        self.forwarded = {}                 # task_id -> _Forwarded
        self.result_of = {}                 # return object id -> task_id, for forwarded tasks
        self.finished_owners = OrderedDict()  # first return id -> owner, for late TASK_ERRORs

    # == membership ===========================================================
    def seen(self, node_id, info):
        peer = self.peers.get(node_id)
        if peer is None:
            peer = self.peers[node_id] = PeerView(node_id)
            log.info("node %s joined at %s with %s", node_id, info.get("tcp_address"),
                     info.get("resources"))
            self.state.needs_dispatch = True    # work waiting for its resources can go now
            if self.state.serializers:          # it hears every registration we know
                self.state.emit(C.ShareSerializers(node_id, list(self.state.serializers)))
        peer.update(info)
        self.spill()

    def answered(self, node_id, refused):
        peer = self.peers.get(node_id)
        if peer is not None:
            peer.refused = refused

    def gone(self, node_id):
        peer = self.peers.pop(node_id, None)
        if peer is None:
            return
        state = self.state
        # Lost results first (remade or failed), so tasks placed again below
        # wait for arguments that went with the node.
        rerun = {i for task_id in peer.forwarded
                 for i in self.forwarded[task_id].task.spec.return_ids}
        again, repull = state.locations.node_gone(node_id, peer.info.get("tcp_address"), rerun)
        for task_id in list(peer.forwarded):
            item = self.forwarded.pop(task_id)
            task = item.task
            for object_id in task.spec.return_ids:
                self.result_of.pop(object_id, None)
            if task.spec.kind != P.TASK:
                continue        # actor creations and calls: the actor table's (below)
            if task.retries_left != 0:
                if task.retries_left > 0:
                    task.retries_left -= 1
                again.update(task.spec.return_ids)
                log.warning("task %s was running on node %s: placing it again", task.spec.name,
                            node_id)
                task.to(S.WAITING)
                state.locations.wait_anywhere(task)
            else:
                state.fail_task(task, WorkerCrashedError(
                    f"task {task.spec.name} was running on node {node_id} "
                    f"({peer.info.get('tcp_address')}), which left the cluster, and it has no "
                    f"retries left (max_retries={task.spec.max_retries}); pass max_retries to "
                    f"have it run again elsewhere"))
        again |= state.actors.routing.node_gone(node_id, peer.info.get("tcp_address"))
        state.emit(C.DropPeerTransfers(node_id, again))
        for object_id in repull:
            state.locations.pull(object_id)
        state.needs_dispatch = True

    # == forwarding ===========================================================
    def spill(self):
        """Forward what this node cannot run (now or ever) to peers that can."""
        if not self.peers:
            return
        scheduler = self.state.scheduler
        if scheduler.infeasible:
            for task, peer in scheduler.take_infeasible(
                    lambda t: self._choose(t, anywhere=True) if _movable(t) else None):
                self.forward(task, peer)
        if scheduler.queues:
            budget = dict(self.state.resources.available)
            for task, peer in scheduler.take_surplus(
                    lambda t: self._choose(t) if _movable(t) else None, budget):
                self.forward(task, peer)

    def holder_for(self, task, bytes_by_node):
        """The peer holding most of the task's argument bytes, if it can run it
        (and has room for it, unless no local resources could ever run it)."""
        if not _movable(task):
            return None
        anywhere = not self.state.resources.feasible(task.demand)
        for node_id in sorted(bytes_by_node, key=bytes_by_node.get, reverse=True):
            peer = self.peers.get(node_id)
            if (peer is not None and peer.refused is None and peer.feasible(task.demand)
                    and (anywhere or peer.has_room(task.demand))):
                return peer
        return None

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

    def forward(self, task, peer, track=True):
        """Send ``task`` to ``peer``; ``track``: wait for its results (all but
        actor calls that return nothing)."""
        state, spec = self.state, task.spec
        function = None
        if spec.function_id not in peer.functions:
            function = state.functions.get(spec.function_id)
            peer.functions.add(spec.function_id)
        inline = []
        for object_id in spec.dep_ids:
            entry = state.objects.get(object_id)
            if entry is not None and entry.kind == P.INLINE and state.objects.is_ready(object_id):
                inline.append(entry)
        options = {**spec.options, ORIGIN: state.node_id}
        if spec.kind == P.ACTOR_METHOD and CALLER not in options:
            options[CALLER] = (state.node_id, spec.owner)
        elif spec.kind == P.ACTOR_CREATE:
            options.update(state.actors.routing.creation_options(spec))
        elsewhere = {}
        for object_id in spec.dep_ids + spec.contained_ids:
            node_id = state.locations.node_of(object_id)
            if node_id is not None and not state.objects.is_ready(object_id):
                elsewhere[object_id] = node_id
        if elsewhere:
            options[LOCATIONS] = elsewhere
        sent = spec._replace(options=options, owner=None)
        state.emit(C.Forward(peer.node_id, sent, function, inline, task.frames))
        task.to(S.FORWARDED)
        if not track:
            return
        self.forwarded[spec.task_id] = _Forwarded(task, peer.node_id)
        for object_id in spec.return_ids:
            self.result_of[object_id] = spec.task_id
        peer.forwarded.add(spec.task_id)
        for name, amount in task.demand.items():
            peer.sent[name] = peer.sent.get(name, 0) + amount
        if spec.kind == P.ACTOR_CREATE:
            state.actors.routing.placed_on(task, peer.node_id)

    def arrived(self, object_id):
        """A result of a forwarded task is here (or was not wanted): maybe it is done."""
        task_id = self.result_of.pop(object_id, None)
        item = self.forwarded.get(task_id) if task_id is not None else None
        if item is None:
            return
        item.waiting.discard(object_id)
        if item.waiting:
            return
        del self.forwarded[task_id]
        task = item.task
        peer = self.peers.get(item.node_id)
        if peer is not None:
            peer.forwarded.discard(task_id)
            for name, amount in task.demand.items():
                peer.sent[name] = peer.sent.get(name, 0) - amount
        if task.spec.return_ids:
            self.finished_owners[task.spec.return_ids[0]] = task.spec.owner
            while len(self.finished_owners) > 4096:
                self.finished_owners.popitem(last=False)
        kind = task.spec.kind
        if kind == P.ACTOR_METHOD:
            self.state.actors.routing.call_done(task)
        elif kind == P.ACTOR_CREATE:
            self.state.end(task, S.DONE)    # its arguments stay: a restart needs them
        else:
            self.state.end(task, S.DONE)
            self.state.locations.finished(task)     # lineage, or its arguments let go
        self.spill()

    def forwarded_in(self, ev):
        """A peer sends us one of its tasks: run it as if that peer submitted it."""
        state, spec = self.state, ev.spec
        client = state.clients.get(ev.client)
        if client is None:
            return
        if ev.function is not None:
            state.functions[spec.function_id] = ev.function
        offset = 0
        for header in ev.inline_headers:
            frames = ev.inline_frames[offset:offset + header[2]]
            offset += header[2]
            if not state.objects.is_ready(header[0]):
                state.objects.expect(header[0])
                state.store_objects([header], frames)
        state.submit(client, spec, ev.task_frames)
        missing = [i for i in spec.dep_ids + spec.contained_ids if not state.objects.is_ready(i)]
        if missing and ev.origin is not None:
            # From the node that holds each one, when we know it; else its owner.
            elsewhere = spec.options.get(LOCATIONS) or {}
            by_node = {}
            for object_id in missing:
                node_id = elsewhere.get(object_id)
                if node_id not in self.peers:
                    node_id = ev.origin
                by_node.setdefault(node_id, []).append(object_id)
            for node_id, object_ids in by_node.items():
                state.emit(C.WantObjects(node_id, object_ids))

    # == looking ==============================================================
    def owner_of(self, return_id):
        """The client that owns the task a result of which this is (forwarded tasks)."""
        item = self.forwarded.get(self.result_of.get(return_id))
        return item.task.spec.owner if item else self.finished_owners.get(return_id)

    def cluster_totals(self):
        totals = dict(self.state.resources.totals)
        for peer in self.peers.values():
            for name, amount in peer.totals.items():
                totals[name] = totals.get(name, 0) + amount
        return R.describe(totals)

    def cluster_available(self):
        free = {k: v for k, v in self.state.resources.available.items() if v > 0}
        for peer in self.peers.values():
            for name, amount in peer.available.items():
                if amount > 0:
                    free[name] = free.get(name, 0) + amount
        return R.describe(free)

    def statistics(self):
        return {"peers": len(self.peers), "forwarded_running": len(self.forwarded),
                **self.state.locations.statistics()}


def _movable(task):
    # Tasks and actor creations (calls follow their actor); one hop only.
    return task.spec.kind not in (P.ACTOR_METHOD, P.LEASE) and ORIGIN not in task.spec.options

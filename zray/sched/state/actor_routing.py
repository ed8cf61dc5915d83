"""Actors on other nodes: placing them, routing calls, a node's death (part of
the actor table).

::

    caller's node ──call──► home node ──call──► host node (runs the actor)
                  ◄─result──          ◄─result──

- An actor's id begins with the id of its *home*: the node its creation was
  submitted to, which places it and always knows where it lives. A node
  that gets a call for an actor it does not know sends it to the home,
  through a *proxy* record (calls queued and in flight, no instance).
- The creation is placed like a task: when nothing here fits (or this node
  is full), it is forwarded to a peer that fits, and the actor lives there
  (``actor.node``); its calls follow it in order.
- Order: each hop forwards a caller's calls in that caller's order over one
  link, and every node queues forwarded calls by their first caller
  (``CALLER``: node id and client), so callers on different nodes never
  wait for each other's arguments.
- The home keeps the host's reference to the actor id (the result of the
  creation is not let go when it arrives); it lets go, or asks for a kill,
  when the actor ends here: the host's instance lives as long as the
  handles of the home. Likewise a node that receives a handle from the
  actor's home keeps a reference there until its own last one goes.
- A host that leaves: calls in flight fail with RayActorError naming the
  node (or run again, first in line, within ``max_task_retries``); with
  restarts left the creation is placed again on any node that fits, and
  queued and later calls go there. A home that leaves: its proxies fail.
- Names: the home publishes a named actor in the kv (``actor_name:<name>``),
  where ``ray.get_actor`` on any node finds it; it is removed when the name
  is freed.
"""
import logging
from collections import deque

from ...transport import protocol as P
from ..task import TaskState
from . import actor_record as A
from . import commands as C
from .forwarding import CALLER, ORIGIN

log = logging.getLogger("zray.actors")

S = TaskState
HOME_ID_BYTES = 8                 # a node id is 16 hex digits


def home_of(actor_id):
    """The id of the node an actor was created from (its first bytes)."""
    return actor_id[:HOME_ID_BYTES].hex()


def caller_of(spec):
    """Whose call order a call keeps: its first caller, on whichever node."""
    return spec.options.get(CALLER) or spec.owner


class ActorRouting:
    def __init__(self, table):
        self.table = table            # the ActorTable this is part of
        self.state = table.state

    # -- placing ------------------------------------------------------------
    def placed_on(self, creation, node_id):
        """The creation was forwarded to ``node_id``: the actor lives there now."""
        table = self.table
        actor = table.by_id.get(creation.spec.actor_id)
        if actor is None or actor.creation is not creation or actor.state not in (
                A.PENDING, A.RESTARTING):
            return
        actor.node = node_id
        actor.state = A.ALIVE         # as far as routing goes: its calls may leave
        table._pump(actor)

    def creation_options(self, spec):
        """What a forwarded creation says differently: the restarts left now
        (its host restarts it after a crash of its worker within those)."""
        actor = self.table.by_id.get(spec.actor_id)
        return {"max_restarts": actor.restarts_left} if actor is not None else {}

    def keeps_hold(self, object_id, node_id):
        """Whether our reference to ``object_id`` on ``node_id``, where it comes
        from, stays: the id of an actor of ours it hosts (let go when the actor
        ends here), or of an actor homed there whose handle came to us (let go
        when our last reference to it goes: ``borrowed_freed``)."""
        actor = self.table.by_id.get(object_id)
        if actor is not None:
            return actor.node == node_id and actor.state != A.DEAD
        return home_of(object_id) == node_id

    def borrowed_freed(self, object_id):
        """Our last reference to ``object_id`` went: if it is the id of an actor
        homed on a peer, our hold there goes too (a peer ignores a release of
        what it does not hold for us)."""
        home = home_of(object_id)
        if home != self.state.node_id and home in self.state.forwarding.peers:
            self.state.emit(C.TellPeer(home, P.REMOVE_REF, ([object_id],)))

    def let_go(self, actor):
        """The actor ended here: its host may let its instance go."""
        if actor.creation.state is S.DONE and actor.node in self.state.forwarding.peers:
            self.state.emit(C.TellPeer(actor.node, P.REMOVE_REF, ([actor.actor_id],)))

    # -- calls ----------------------------------------------------------------
    def proxy_for(self, task):
        """A stand-in for an actor homed on a peer; None when there is no route
        (a call that came from a peer is never sent back out)."""
        spec, table = task.spec, self.table
        proxy = table.proxies.get(spec.actor_id)
        if proxy is not None:
            return proxy
        home = home_of(spec.actor_id)
        if ORIGIN in spec.options or home == self.state.node_id or \
                home not in self.state.forwarding.peers:
            return None
        proxy = table.proxies[spec.actor_id] = A.Actor(None, spec.actor_id,
                                                     spec.name.rsplit(".", 1)[0])
        proxy.node = home
        proxy.state = A.ALIVE
        return proxy

    def forward_call(self, actor, task):
        forwarding = self.state.forwarding
        peer = forwarding.peers.get(actor.node)
        if peer is None:
            self.table._fail(task, actor, f"its node {actor.node} is not reachable")
            return
        tracked = bool(task.spec.return_ids)
        forwarding.forward(task, peer, track=tracked)
        if tracked:
            actor.inflight[task.spec.task_id] = task
        else:       # nothing comes back to tell us it ran
            self.state.release_arguments(task)
            self.state.end(task, S.DONE)

    def call_done(self, task):
        """Every result of a forwarded call is here."""
        if task.state is not S.FORWARDED:
            return
        self.state.release_arguments(task)
        self.state.end(task, S.DONE)
        table = self.table
        actor = table.lookup(task.spec.actor_id)
        if actor is None:
            return
        actor.inflight.pop(task.spec.task_id, None)
        if actor.proxy:
            if not actor.inflight and not actor.queues:
                table.proxies.pop(actor.actor_id, None)
        elif actor.unreferenced:
            table._exit_if_unreferenced(actor)

    # -- kills ----------------------------------------------------------------
    def kill_there(self, actor, no_restart):
        if actor.node in self.state.forwarding.peers:
            self.state.emit(C.TellPeer(actor.node, P.REQUEST,
                                       (0, "kill_actor", (actor.actor_id, no_restart))))

    def kill_elsewhere(self, actor_id, no_restart):
        """ray.kill of an actor homed on a peer: its home sees to it."""
        home = home_of(actor_id)
        if home != self.state.node_id and home in self.state.forwarding.peers:
            self.state.emit(C.TellPeer(home, P.REQUEST, (0, "kill_actor", (actor_id, no_restart))))

    # -- a node left ------------------------------------------------------------
    def node_gone(self, node_id, address):
        """``node_id`` left: its actors' calls in flight fail or run again, its
        actors restart elsewhere or die, proxies homed there die. Returns the
        object ids that will be made again."""
        table = self.table
        where = f"node {node_id}" + (f" ({address})" if address else "")
        again = set()
        for actor in [a for a in list(table.by_id.values()) + list(table.proxies.values())
                      if a.node == node_id]:
            if actor.proxy:
                reason = (f"its home {where}, where it was created, left the cluster, and "
                          f"the actor with it")
                self._fail_inflight(actor, reason, restarting=False)
                table.proxies.pop(actor.actor_id, None)
                table._die(actor, reason)
                continue
            reason = f"its {where} left the cluster (killed, or unreachable)"
            if actor.state == A.DEAD:
                self._fail_inflight(actor, actor.death_reason, restarting=False)
                continue
            actor.node = None
            restart = actor.restarts_left > 0 and not actor.unreferenced
            if not restart:
                self._fail_inflight(actor, reason, restarting=False)
                if actor.creation.state is S.FORWARDED:
                    actor.creation.to(S.FAILED)     # it will not come back
                table._die(actor, reason)
                table._forget_if_done(actor)
                continue
            retry = self._fail_inflight(actor, reason, restarting=True)
            for task in reversed(retry):     # first in their callers' queues, in order
                actor.queues.setdefault(caller_of(task.spec), deque()).appendleft(task)
                again.update(task.spec.return_ids)
            again.update(actor.creation.spec.return_ids)
            log.warning("actor %s lived on %s, which left the cluster; creating it again "
                        "(%s restarts left)", actor.class_name, where, actor.restarts_left - 1)
            table._restart(actor)
        return again

    def _fail_inflight(self, actor, reason, restarting):
        """End the calls ``actor`` had in flight on a node that left; return the
        ones to run again (restarting, with retries left), in order."""
        retry = []
        for task in actor.inflight.values():
            if task.state is not S.FORWARDED:
                continue
            if restarting and task.retries_left > 0:
                task.retries_left -= 1
                task.to(S.READY)
                retry.append(task)
            else:
                self.table._fail(task, actor, reason, running=True, restarting=restarting)
        actor.inflight.clear()
        return retry

    # -- looking ----------------------------------------------------------------
    def is_home(self, actor):
        """Created here (not a creation a peer placed on this node)."""
        return actor.creation is not None and ORIGIN not in actor.creation.spec.options

    def unknown_actor_message(self, spec):
        home = home_of(spec.actor_id)
        where = ""
        if home != self.state.node_id and ORIGIN not in spec.options:
            where = (f"; it was created on node {home}, which is not in the cluster (it left, "
                     f"and its actors with it)")
        where = where or "; it may have exited after its last handle was dropped"
        return (f"{spec.name} was called on an actor this node does not know "
                f"(id {spec.actor_id.hex()[:12]}){where}")

    def location(self, actor_id):
        """Where an actor lives, for callers that reach it directly: ``(node_id,
        worker_id)``, worker_id None when it is not on this node; None when
        this node does not know the actor or it is dead."""
        actor = self.table.by_id.get(actor_id)
        if actor is None or actor.state == A.DEAD:
            return None
        if actor.node is not None:
            return actor.node, None
        return self.state.node_id, actor.worker.worker_id if actor.worker is not None else None

"""Clients of a node (drivers, workers, peers): the part of ``NodeState``
that handles their arrival and departure and the code they register.

- A client that leaves (BYE, its process or connection gone) lets go of
  everything it held: a driver's work stops first, then its leases,
  reservations, pins and object refs go.
- Functions and custom serializers registered by drivers are kept for the
  workers: a worker hears every serializer before its first task.
"""
from ...transport import protocol as P
from ..worker_pool import IDLE
from . import commands as C
from . import events as E
from .owners import stop_work_of


class Client:
    __slots__ = ("identity", "kind", "pid", "held", "told_by_caller", "told_by_peer")

    def __init__(self, identity, kind, pid):
        self.identity = identity
        self.kind = kind
        self.pid = pid
        self.held = set()     # object ids this process holds refs to
        # Results of its direct calls held on peers, heard of once so far:
        # from it (HELD_AT) or from the peer (HELD_FOR); the other says so again.
        self.told_by_caller = set()
        self.told_by_peer = set()


class ClientEvents:
    """Mixed into NodeState: needs ``clients``, ``pool``, ``leases``,
    ``direct_work``, ``objects``, ``forwarding``, ``functions``,
    ``serializers``, ``emit`` and ``release_object``."""

    def _on_client_joined(self, ev):
        client = self.clients[ev.identity] = Client(ev.identity, ev.kind, ev.pid)
        if client.kind == "peer":
            self.had_peers = True
        if client.kind != "worker":
            return
        if self.serializers:     # a worker hears every registration before its first task
            self.emit(C.TellClient(ev.identity, P.SERIALIZERS, (list(self.serializers),)))
        worker = self.pool.workers.get(ev.identity)
        if worker is not None:
            worker.pid = ev.pid
            worker.state = IDLE
            self.needs_dispatch = True

    def _on_client_left(self, ev):
        client = self.clients.get(ev.identity)
        if client is not None:
            self._drop_client(client)

    def _drop_client(self, client):
        self.clients.pop(client.identity, None)
        self.direct_work.forget(client.identity)
        self.emit(C.ClientGone(client.identity))
        if client.kind == "driver":     # its work stops before its refs go
            stop_work_of(self, client.identity, f"driver pid {client.pid}")
        elif self.leases.held or self.leases.queued:
            self.leases.owner_gone(client.identity)
        self.objects.release_reservations_of(client.identity)
        self.objects.release_pins_of(client.identity)
        held, client.held = client.held, set()
        for object_id in held:
            self.release_object(object_id)

    def _on_function(self, ev):
        self.functions[ev.function_id] = ev.record

    def _on_serializer(self, ev):
        registration = (ev.blob, ev.sys_path)
        if registration in self.serializers:
            return           # heard it already (from another peer)
        self.serializers.append(registration)
        for client in self.clients.values():
            if client.kind == "worker":
                self.emit(C.TellClient(client.identity, P.SERIALIZERS, ([registration],)))
        if not ev.from_peer and self.forwarding.peers:
            # Every node hears a driver's registration once, from its node.
            self.emit(C.ShareSerializers(None, [registration]))

    # == looking (no changes) ================================================
    def holders(self):
        """object id -> names of the processes holding it (``zray memory``)."""
        holders = {}
        for client in self.clients.values():
            name = f"{client.kind} pid {client.pid}"
            for object_id in client.held:
                holders.setdefault(object_id, []).append(name)
        return holders

    def driver_pids(self):
        return {c.identity: c.pid for c in self.clients.values() if c.kind == "driver" and c.pid}

    client_handlers = {
        E.ClientJoined: _on_client_joined, E.ClientLeft: _on_client_left,
        E.FunctionRegistered: _on_function, E.SerializerRegistered: _on_serializer,
    }

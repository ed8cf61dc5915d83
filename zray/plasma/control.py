"""The node's answers to control-plane requests about objects.

::

    client ── REQUEST("reserve", id, size) ──► node ── ObjectStoreRequests ──► ObjectTable
           ◄─ RESPONSE(ok) / ObjectStoreFullError ─┘

The node looks up ``request_<op>`` here after its own methods. Ops:

- ``reserve`` / ``unreserve``: admit a large object before it is written
  (spilling to make room; the answer says memory or disk), or give the room
  back when the write failed.
- ``store_stats``: the table's counters (bytes in memory, spilled, created).
- ``memory``: one row per object with who holds it (``zray memory``).
- ``register_serializer``: a driver's ``register_custom_serializer``; kept
  and pushed to every worker (now and when it connects) and to every other
  node (now and when it joins), never unpickled here, so user code never
  runs in the node.
"""
from ..transport import protocol as P


class ObjectStoreRequests:
    def __init__(self, node):
        self.node = node
        self.serializers = []       # (blob, sys_path) in registration order

    def request_reserve(self, client, object_id, size):
        return self.node.objects.reserve(object_id, size, owner=client.identity)

    def request_unreserve(self, _client, object_id):
        self.node.objects.release_reservation(object_id)
        return True

    def request_store_stats(self, _client):
        stats = self.node.objects.stats()
        stats["plasma_dir"] = self.node.config["plasma_dir"]
        return stats

    def request_memory(self, _client):
        holders = {}
        for client in self.node.clients.values():
            name = f"{client.kind} pid {client.pid}"
            for object_id in client.held:
                holders.setdefault(object_id, []).append(name)
        return self.node.objects.listing(holders)

    def request_register_serializer(self, client, blob, sys_path):
        if (blob, sys_path) in self.serializers:
            return True          # heard it already (from another peer)
        self.serializers.append((blob, sys_path))
        for other in self.node.clients.values():
            if other.kind == "worker":
                self.node.send(other.identity, P.SERIALIZERS, [(blob, sys_path)])
        peers = getattr(self.node, "peers", None)
        if client.kind != "peer" and peers is not None:
            # Every node hears a driver's registration once, from its node.
            for peer in peers.peers.values():
                tell_peer(peer, [(blob, sys_path)])
        return True

    def client_joined(self, client):
        """A worker hears every registration before its first task."""
        if client.kind == "worker" and self.serializers:
            self.node.send(client.identity, P.SERIALIZERS, list(self.serializers))

    def peer_connected(self, peer):
        """A node we just connected to hears every registration we know."""
        tell_peer(peer, self.serializers)

    def client_left(self, client):
        self.node.objects.release_reservations_of(client.identity)


def tell_peer(peer, registrations):
    """Registrations to another node, as its own ``register_serializer``
    requests (id 0: no answer); it pushes them to its workers."""
    for blob, sys_path in registrations:
        peer.send(P.REQUEST, 0, "register_serializer", (blob, sys_path))

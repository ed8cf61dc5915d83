"""The node's answers to control-plane requests about objects.

::

    client ── REQUEST("reserve", id, size) ──► node ── ReserveRequested ──► NodeState
           ◄─ RESPONSE(ok) / ObjectStoreFullError ─┘

A mixin of the node daemon (``request_<op>`` methods); the ones that change
the store go through ``handle(event)``. Ops:

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
from .state import events as E


class ObjectStoreRequests:
    def request_reserve(self, client, object_id, size):
        return self.reserve(client.identity, object_id, size)

    def request_unreserve(self, _client, object_id):
        self.handle(E.ReservationReleased(object_id))
        return True

    def request_store_stats(self, _client):
        stats = self.objects.stats()
        stats["plasma_dir"] = self.config["plasma_dir"]
        return stats

    def request_memory(self, _client):
        return self.objects.listing(self.state.holders())

    def request_register_serializer(self, client, blob, sys_path):
        self.handle(E.SerializerRegistered(blob, sys_path, client.kind == "peer"))
        return True

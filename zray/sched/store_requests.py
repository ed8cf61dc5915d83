"""The node's answers to control-plane requests about objects.

::

    client ── REQUEST("reserve", id, size) ──► node ── ReserveRequested ──► NodeState
           ◄─ RESPONSE(ok) / ObjectStoreFullError ─┘

A mixin of the node daemon (``request_<op>`` methods); the ones that change
the store go through ``handle(event)``. Ops:

- ``reserve`` / ``unreserve``: admit a large object before it is written
  (spilling to make room; the answer says memory, disk or an arena block),
  or give the room back when the write failed. With ``spare``: a block
  for a client's next put, only if it fits without spilling (else None).
- ``pin`` / ``unpin``: a process maps an arena object (the answer says
  where it is now; its block is not reused until unpinned, or the process
  leaves), and is done with it. ``pin_use``: it keeps the pins but no value
  views these blocks (idle: they may be spilled, then DROP_PINS asks for
  the pins), or views them again.
- ``probe_memory``: does a file a client made in the plasma directory show
  here? (a client on tcp shares the node's shared memory only if so; one
  that does not sends large objects by value: ``uploaded``, ``plasma/uploads.py``).
- ``uploaded``: the WRITEs of an object sent by value went well (its
  location to seal it at, once done), or why not.
- ``objects_exist``: which of these ids are ready here or on another node
  (``ray.wait(fetch_local=False)``: nothing is pulled here).
- ``store_stats``: the table's counters (bytes in memory, spilled, created).
- ``memory``: one row per object with who holds it (``zray memory``).
- ``register_serializer``: a driver's ``register_custom_serializer``; kept
  and pushed to every worker (now and when it connects) and to every other
  node (now and when it joins), never unpickled here, so user code never
  runs in the node.
"""
import os

from .state import events as E


class ObjectStoreRequests:
    def request_reserve(self, client, object_id, size, arena=False, spare=False):
        # A client on tcp asks for a block only if it shares our shared memory
        # (its probe file showed here) or sends the bytes for us to write.
        return self.reserve(client.identity, object_id, size, arena is True, spare is True)

    def request_probe_memory(self, _client, name):
        if not name.startswith(f"zray-{self.session_name}-probe-") or "/" in name:
            raise ValueError(f"{name!r} is not a probe file of this session")
        return os.path.exists(os.path.join(self.config["plasma_dir"], name))

    def request_uploaded(self, client, object_id, done):
        return self.uploads.uploaded(client.identity, object_id, done)

    def request_unreserve(self, _client, object_id):
        self.handle(E.ReservationReleased(object_id))
        return True

    def request_pin(self, client, object_id):
        return self.pin(client.identity, object_id)

    def request_pin_use(self, client, used_ids, idle_ids):
        self.handle(E.PinsUsed(client.identity, list(used_ids), list(idle_ids)))
        return True

    def request_unpin(self, client, object_ids):
        self.handle(E.Unpinned(client.identity, list(object_ids)))
        return True

    def request_objects_exist(self, _client, object_ids):
        exists = self.state.locations.exists
        return [object_id for object_id in object_ids if exists(object_id)]

    def request_store_stats(self, _client):
        stats = self.objects.stats()
        stats["plasma_dir"] = self.config["plasma_dir"]
        return stats

    def request_memory(self, _client):
        return self.objects.listing(self.state.holders())

    def request_register_serializer(self, client, blob, sys_path):
        self.handle(E.SerializerRegistered(blob, sys_path, client.kind == "peer"))
        return True

"""Objects and references: the part of ``NodeState`` that handles object events.

- An object lives while its count is above zero: each client holding refs
  counts once, each pending task taking it as an argument once, each
  stored object containing it once (``plasma/store.py``).
- Sealing an object pushes it to the clients subscribed to it and wakes the
  tasks waiting for it (the next dispatch places them).
- An object nobody can ever make again (its last ref dropped before it was
  read, or lost with a peer) is replaced by an ObjectLostError, so a reader
  gets an error, never a hang.
"""
from ...exceptions import ObjectLostError
from ...plasma.store import READY as OBJECT_READY
from ...serialization import serialize
from ...transport import protocol as P
from . import commands as C
from . import events as E


class ObjectEvents:
    """Mixed into NodeState: needs ``objects``, ``clients``, ``actors``,
    ``forwarding``, ``locations``, ``emit`` and ``needs_dispatch``."""

    def _on_put(self, ev):
        client = self.clients.get(ev.client)
        if client is not None:
            self.store_objects(ev.headers, ev.frames, holder=client)

    def _on_sealed(self, ev):
        self.store_objects(ev.headers, ev.frames)

    def _on_expected(self, ev):
        for object_id in ev.object_ids:
            self.objects.expect(object_id)

    def store_objects(self, headers, frames, holder=None):
        offset = 0
        objects = self.objects
        for header in headers:
            n_frames = header[2]
            part = frames[offset:offset + n_frames]
            offset += n_frames
            if holder is not None:
                objects.expect(header[0])
                self._hold(holder, header[0])
            entry = objects.seal(header, part)
            if entry is not None:
                self._on_object_ready(entry)

    def _on_object_ready(self, entry):
        if entry.subscribers:
            for identity in entry.subscribers:
                if identity in self.clients:
                    self.emit(C.PushObject(identity, entry))
            entry.subscribers = ()
        if self.forwarding.result_of:
            self.forwarding.arrived(entry.object_id)
        if entry.waiting_tasks:
            waiting, entry.waiting_tasks = entry.waiting_tasks, ()
            for task, when_ready in waiting:
                task.missing -= 1
                if task.missing == 0:
                    when_ready(task)
            self.needs_dispatch = True

    def _on_lost(self, ev):
        entry = self.objects.get(ev.object_id)
        if entry is None or entry.state == OBJECT_READY:
            return
        error = ObjectLostError(f"object {ev.object_id.hex()} is lost: {ev.why}. Objects live "
                                f"on the node that made them until they are copied; if that "
                                f"node left, recreate the object (rerun the task that made it)")
        self.store_objects([(ev.object_id, P.INLINE, 1, None, (), True)],
                           [serialize(error).meta])

    def _on_subscribe(self, ev):
        client = self.clients.get(ev.client)
        if client is None:
            return
        for object_id in ev.object_ids:
            entry = self.objects.get(object_id)
            if entry is None and client.kind == "peer" and not self.objects.was_freed(object_id):
                # The result of a direct call from that peer's client, held for
                # the peer: the caller heard of it (HELD) before the worker's
                # DONE reached us (core/remote_endpoint.py). It is coming.
                entry = self.objects.expect(object_id)
            elif entry is None or (entry.state != OBJECT_READY and self._freed_here(object_id)):
                entry = self._lost(object_id)
            if entry.state == OBJECT_READY:
                self.emit(C.PushObject(client.identity, entry))
            else:
                entry.add_subscriber(client.identity)
                if self.forwarding.peers:
                    self.locations.asked(object_id)    # on another node: fetch it

    def _freed_here(self, object_id):
        # Only a node that never had peers knows every copy: in a cluster, an
        # object freed here may still live on the node that made it.
        alone = not (self.had_peers or self.forwarding.peers)
        return alone and self.objects.was_freed(object_id)

    def _lost(self, object_id):
        entry = self.objects.expect(object_id)
        error = ObjectLostError(f"object {object_id.hex()} no longer exists: every reference "
                                f"to it was dropped before it was read")
        entry.refcount = max(entry.refcount, 1)
        self.objects.seal((object_id, P.INLINE, 1, None, (), True), [serialize(error).meta])
        return entry

    def _on_add_ref(self, ev):
        client = self.clients.get(ev.client)
        if client is not None:
            for object_id in ev.object_ids:
                self._hold(client, object_id)

    def _on_held_elsewhere(self, ev):
        """A direct call from our client to an actor on a peer left results
        there, held for us: hold them for the client, and note where they are
        (pulled when wanted, released there when freed here), as the large
        result of a task we forwarded. Said by the caller (HELD_AT) and by the
        peer (HELD_FOR: the caller may have died before, or resubmitted the
        call): the first holds them, the second is a no-op."""
        self._held_on_peer(self.clients.get(ev.client), ev.node_id, ev.headers, True)

    def _on_held_for(self, ev):
        self._held_on_peer(self.clients.get(ev.caller), ev.node_id, ev.headers, False)

    def _held_on_peer(self, client, node_id, headers, by_caller):
        gone = node_id not in self.forwarding.peers
        if client is not None:
            first, other = ((client.told_by_caller, client.told_by_peer) if by_caller
                            else (client.told_by_peer, client.told_by_caller))
        for header in headers:
            object_id = header[0]
            if client is None:
                # Its caller left: nobody here will ask for it (unless held here anyway).
                if not gone and self.objects.get(object_id) is None:
                    self.emit(C.ReleaseRemote(node_id, [object_id]))
                continue
            if object_id in other:
                other.discard(object_id)        # held when the other said so
                continue
            first.add(object_id)
            self.objects.expect(object_id)
            self._hold(client, object_id)
            if gone:
                self._on_lost(E.ObjectLost(object_id, f"it was made on node {node_id}, "
                                                      f"which left the cluster"))
            else:
                self.locations.located(node_id, header)

    def _on_remove_ref(self, ev):
        client = self.clients.get(ev.client)
        if client is None:
            return
        held = client.held
        for object_id in ev.object_ids:
            if object_id in held:
                held.discard(object_id)
                self.release_object(object_id)

    def _hold(self, client, object_id):
        if object_id not in client.held:
            client.held.add(object_id)
            self.objects.add_ref(object_id)

    def release_object(self, object_id):
        entry = self.objects.get(object_id)
        if entry is not None and entry.refcount == 1:
            if object_id in self.actors.by_id:
                self.actors.out_of_scope(object_id)
            elif self.forwarding.peers:
                self.actors.routing.borrowed_freed(object_id)
        self.objects.remove_ref(object_id)
        locations = self.locations
        if ((locations.where or locations.lineage) and object_id not in self.objects.entries
                and (object_id in locations.where or object_id in locations.lineage)):
            locations.freed(object_id)

    def _on_reserve(self, ev):
        where = self.objects.reserve(ev.object_id, ev.size, owner=ev.owner, arena=ev.arena,
                                     spare=ev.spare)
        self.emit(C.Reserved(ev.object_id, where))

    def _on_pin(self, ev):
        self.emit(C.Pinned(ev.object_id, self.objects.pin(ev.object_id, ev.owner)))

    def _on_unpinned(self, ev):
        for object_id in ev.object_ids:
            self.objects.unpin(object_id, ev.owner)

    def _on_pins_used(self, ev):
        self.objects.pin_use(ev.owner, ev.used_ids, ev.idle_ids)

    def ask_to_drop_pins(self):
        """DROP_PINS to the clients pinning blocks the table retired."""
        asks, self.objects.pins_to_drop = self.objects.pins_to_drop, {}
        for owner, object_ids in asks.items():
            if owner in self.clients:       # (not the node's own transfers)
                self.emit(C.TellClient(owner, P.DROP_PINS, (object_ids,)))

    def _on_spills_finished(self, ev):
        self.objects.finish_spills(ev.results)

    def _on_unreserve(self, ev):
        self.objects.release_reservation(ev.object_id)

    object_handlers = {
        E.ObjectsPut: _on_put, E.ObjectsSealed: _on_sealed, E.ObjectsExpected: _on_expected,
        E.ObjectLost: _on_lost, E.Subscribed: _on_subscribe,
        E.RefsAdded: _on_add_ref, E.RefsRemoved: _on_remove_ref,
        E.HeldElsewhere: _on_held_elsewhere, E.HeldFor: _on_held_for,
        E.ReserveRequested: _on_reserve, E.ReservationReleased: _on_unreserve,
        E.SpillsFinished: _on_spills_finished,
        E.PinRequested: _on_pin, E.Unpinned: _on_unpinned, E.PinsUsed: _on_pins_used,
    }

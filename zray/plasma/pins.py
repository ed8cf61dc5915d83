"""Arena blocks of the object table: when one may be reused.

A block goes back to the arena only when nothing can read it any more: its
object is freed (or spilled), no process has it mapped (``pin`` until
``unpin``; a client's pins go with it) and the spiller is not copying it.
A free block keeps its pages until it has stayed free a while; then
``release_idle_pages`` (on the node's tick) gives them back to the OS.

A process keeps its pin while it holds a ref, so its next get needs no
round trip, and says when no value of its views the block (``pin_use``:
idle) or one does again. An object whose pins are all idle may be spilled;
its block is then retired and its pinners asked to let go (``pins_to_drop``,
sent by the node as DROP_PINS); one pinned in use stays in memory.
Mixed into ``store.ObjectTable``: needs ``entries``, ``is_ready``, ``arena``, ``pins``,
``idle_pins``, ``pins_to_drop``, ``retired``, ``free_after_copy`` and ``disk``.
"""
import logging

from ..transport.protocol import SHM

log = logging.getLogger("zray.store")


def is_arena(location):
    """True for an arena location ``(chunk path, size, offset)``."""
    return location is not None and len(location) == 3


class ArenaBlocks:
    def _arena_block(self, object_id, size):
        """An arena location for a new object, pages allocated; None if no room."""
        block = self.arena.allocate(size)
        if block is None:
            return None
        chunk = self.arena.by_path[block[0]]
        # Pages only where the block has none (a reused block usually has
        # them all: no syscall then).
        missing = chunk.take_holes(block[1], block[1] + size)
        try:
            for start, end in missing:
                self.disk.allocate_pages(block[0], start, end - start)
        except OSError as exc:
            chunk.put_holes(missing)     # a partial fallocate leaves pages: punched when idle
            self.arena.free(block[0], block[1], size, self.disk.now())
            self.arena.failure = f"the arena's pages could not be allocated: {exc}"
            return None
        return (block[0], size, block[1])

    def release_idle_pages(self):
        """Give back to the OS the pages of arena ranges free for a while
        (on the node's tick, about once a second)."""
        for path, start, end in self.arena.idle_ranges(self.disk.now()):
            try:
                released = self.disk.release_pages(path, start, end - start)
            except OSError as exc:       # the pages stay; the node goes on
                log.warning("the free pages of %s could not be released: %s", path, exc)
                continue
            if released:
                self.arena.released(path, start, end)

    def _free_block(self, object_id, location, being_copied=False):
        """Give an arena block back, once nothing reads it any more."""
        if being_copied:
            self.free_after_copy[object_id] = location     # the spiller still reads it
        elif object_id in self.pins:
            self.retired[object_id] = location             # a process still views it
            for owner in self.pins[object_id]:
                self.pins_to_drop.setdefault(owner, []).append(object_id)
        else:
            self.arena.free(location[0], location[2], location[1], self.disk.now())

    # -- pins: a process maps an arena object ---------------------------------
    def pin(self, object_id, owner):
        """Where ``owner`` may read the object now: its arena location (the
        block is then kept until ``unpin``) or its file; None if not here."""
        entry = self.entries.get(object_id)
        if not self.is_ready(object_id) or entry.kind != SHM:
            return None
        if is_arena(entry.location):
            owners = self.pins.setdefault(object_id, {})
            owners[owner] = owners.get(owner, 0) + 1
            self._mark_used(object_id, owner)
        return entry.location

    def pin_use(self, owner, used_ids, idle_ids):
        """``owner`` views these blocks again / no longer (it keeps the pins)."""
        for object_id in used_ids:
            self._mark_used(object_id, owner)
        for object_id in idle_ids:
            if owner in self.pins.get(object_id, ()):
                self.idle_pins.setdefault(object_id, set()).add(owner)

    def _mark_used(self, object_id, owner):
        idle = self.idle_pins.get(object_id)
        if idle is not None:
            idle.discard(owner)
            if not idle:
                del self.idle_pins[object_id]

    def in_use(self, object_id):
        """True if a process may be reading the object's block now (a pin
        not said to be idle)."""
        owners = self.pins.get(object_id)
        return owners is not None and not owners.keys() <= self.idle_pins.get(object_id, set())

    def unpin(self, object_id, owner, count=1):
        owners = self.pins.get(object_id)
        if owners is None or owner not in owners:
            return
        owners[owner] -= count
        if owners[owner] <= 0:
            del owners[owner]
            self._mark_used(object_id, owner)
        if not owners:
            del self.pins[object_id]
            location = self.retired.pop(object_id, None)
            if location is not None:
                self.arena.free(location[0], location[2], location[1], self.disk.now())

    def release_pins_of(self, owner):
        """A client left: whatever it mapped it no longer views."""
        for object_id in [i for i, owners in self.pins.items() if owner in owners]:
            self.unpin(object_id, owner, self.pins[object_id][owner])


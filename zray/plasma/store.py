"""The node's object table: what exists, where, and who still needs it.

A plain state machine, no sockets: the node daemon feeds it events
(created, sealed, ref added/dropped) and acts on what it returns (objects to
push to subscribers, tasks whose arguments are now ready).

Reference counting: an object lives while its count is above zero. Each
client process that holds ``ObjectRef``s to it counts once; each pending
task that takes it as an argument counts once; each stored object that
contains a ref to it counts once. At zero the object is forgotten and its
shared-memory file unlinked (readers that still map it keep their view).

Capacity: shared-memory objects are summed; past ``capacity_bytes`` the
oldest are moved to the spill directory, from where readers map them the
same way.
"""
import logging
import os
import shutil
import time
from collections import OrderedDict

from ..transport.protocol import INLINE, SHM

log = logging.getLogger("zray.store")

PENDING = 0
READY = 1


class ObjectEntry:
    __slots__ = ("object_id", "state", "kind", "frames", "location", "contained",
                 "is_error", "refcount", "subscribers", "waiting_tasks", "size", "spilled",
                 "created_at")

    def __init__(self, object_id):
        self.object_id = object_id
        self.state = PENDING
        self.kind = INLINE
        self.frames = ()          # INLINE: [pickle, *buffers] as bytes
        self.location = None      # SHM: (path, size)
        self.contained = ()
        self.is_error = False
        self.refcount = 0
        self.subscribers = set()  # client ids to push the value to when ready
        self.waiting_tasks = []   # tasks blocked on this object
        self.size = 0
        self.spilled = False
        self.created_at = time.time()

    def header(self):
        n_frames = len(self.frames) if self.kind == INLINE else 0
        return (self.object_id, self.kind, n_frames, self.location, self.contained, self.is_error)


class ObjectTable:
    def __init__(self, capacity_bytes, spill_dir):
        self.entries = {}
        self.capacity_bytes = capacity_bytes
        self.spill_dir = spill_dir
        self.shm_bytes = 0
        self.spilled_bytes = 0
        self.in_memory = OrderedDict()   # shm objects, oldest first, for spilling

    # -- lifecycle ----------------------------------------------------------
    def expect(self, object_id):
        """A task will produce this object; create its entry if new."""
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry(object_id)
        return entry

    def seal(self, header, frames):
        """Store a finished value. Returns the entry, or None if nobody wants it."""
        object_id, kind, _, location, contained, is_error = header
        entry = self.entries.get(object_id)
        if entry is None or entry.state == READY:
            # Every ref was dropped before it was made (or a retried task
            # made it twice): nobody can ask for it, so let it go.
            if kind == SHM:
                _unlink(location[0])
            return None
        entry.state = READY
        entry.kind = kind
        entry.frames = frames
        entry.location = location
        entry.is_error = is_error
        entry.contained = tuple(contained)
        for inner in entry.contained:
            self.add_ref(inner)
        if kind == SHM:
            entry.size = location[1]
            self.shm_bytes += entry.size
            self.in_memory[object_id] = entry
            self._spill_if_over_capacity()
        else:
            entry.size = sum(len(f) for f in frames)
        return entry

    def add_ref(self, object_id, count=1):
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry(object_id)
            log.debug("ref to unknown object %s", object_id.hex())
        entry.refcount += count

    def remove_ref(self, object_id, count=1):
        entry = self.entries.get(object_id)
        if entry is None:
            return
        entry.refcount -= count
        if entry.refcount <= 0:
            self._free(entry)

    def _free(self, entry):
        del self.entries[entry.object_id]
        if entry.kind == SHM and entry.state == READY:
            self.in_memory.pop(entry.object_id, None)
            if entry.spilled:
                self.spilled_bytes -= entry.size
            else:
                self.shm_bytes -= entry.size
            _unlink(entry.location[0])
        for inner in entry.contained:
            self.remove_ref(inner)

    def get(self, object_id):
        return self.entries.get(object_id)

    def is_ready(self, object_id):
        entry = self.entries.get(object_id)
        return entry is not None and entry.state == READY

    # -- capacity -----------------------------------------------------------
    def _spill_if_over_capacity(self):
        while self.shm_bytes > self.capacity_bytes and self.in_memory:
            _, victim = self.in_memory.popitem(last=False)
            self._spill(victim)

    def _spill(self, entry):
        path, size = entry.location
        target = os.path.join(self.spill_dir, os.path.basename(path))
        try:
            os.makedirs(self.spill_dir, exist_ok=True)
            shutil.move(path, target)
        except OSError as exc:
            log.error("could not spill %s (%d bytes) to %s: %s", path, size, self.spill_dir, exc)
            return
        entry.location = (target, size)
        entry.spilled = True
        self.shm_bytes -= size
        self.spilled_bytes += size

    def stats(self):
        return {"objects": len(self.entries), "shm_bytes": self.shm_bytes,
                "spilled_bytes": self.spilled_bytes, "capacity_bytes": self.capacity_bytes}

    def listing(self):
        rows = []
        for entry in self.entries.values():
            where = "pending" if entry.state == PENDING else (
                "spilled" if entry.spilled else ("shm" if entry.kind == SHM else "inline"))
            rows.append({"object_id": entry.object_id.hex(), "size": entry.size,
                         "where": where, "refcount": entry.refcount, "error": entry.is_error})
        return rows

    def unlink_all(self):
        for entry in list(self.entries.values()):
            if entry.kind == SHM and entry.state == READY:
                _unlink(entry.location[0])
        self.entries.clear()


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass

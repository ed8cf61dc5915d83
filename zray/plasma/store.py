"""The node's object table: what exists, where, and who still needs it.

A plain state machine, no sockets: the node daemon feeds it events
(reserved, sealed, ref added/dropped) and acts on what it returns (objects to
push to subscribers, tasks whose arguments are now ready).

Reference counting: an object lives while its count is above zero. Each
client process that holds ``ObjectRef``s to it counts once; each pending
task that takes it as an argument counts once; each stored object that
contains a ref to it counts once. At zero the object is forgotten and its
file unlinked (readers that still map it keep their view). So there is
nothing to "evict": an unreferenced object is already gone.

Capacity: shared-memory bytes are summed against ``capacity_bytes``. A
writer of a large object first *reserves* its size; to make room the oldest
sealed objects are copied to the spill directory by a background thread
(``spiller``, started through the ``disk`` port) while readers go on mapping
the shared-memory file; the loop applies each finished copy (``finish_spills``,
an event when the port's ``done_fd`` is readable) and unlinks the original. Bytes being spilled count as free, so
shared memory may run over by the copies in flight. An object that cannot be
given room in memory (larger than the store, or everything else is reserved)
is written straight to the spill directory instead (fallback allocation, as
Ray): ``reserve`` says where. Only when the disk cannot take it either does
the reservation fail with ``ObjectStoreFullError`` naming the sizes and
paths. Small objects are admitted without asking and accounted when sealed,
so the store may also run over by the small objects in flight.
"""
import logging
import os
from collections import OrderedDict

from ..exceptions import ObjectStoreFullError
from ..transport.protocol import INLINE, SHM
from .arena import Arena
from .pins import ArenaBlocks, is_arena
from .table_report import PENDING, TableReport

log = logging.getLogger("zray.store")

READY = 1

# Where a reserved object is to be written (``reserve``'s answer).
IN_MEMORY = "memory"
ON_DISK = "disk"

SPILL_RETRY_S = 1.0       # after a failed copy, write to disk rather than retry at once


# How many freed ids are remembered, to fail late readers instead of hanging.
FREED_REMEMBERED = 20_000

class ObjectEntry:
    __slots__ = ("object_id", "state", "kind", "frames", "location", "contained",
                 "is_error", "refcount", "subscribers", "waiting_tasks", "size", "spilled",
                 "created_at")

    def __init__(self, object_id, created_at):
        self.object_id = object_id
        self.state = PENDING
        self.kind = INLINE
        self.frames = ()          # INLINE: [pickle, *buffers] as bytes
        self.location = None      # SHM: (path, size) of its file (in the spill dir once
                                  # spilled), or (chunk path, size, offset) in the arena
        self.contained = ()
        self.is_error = False
        self.refcount = 0
        # Tuples, not sets: a million pending results, each with one
        # subscriber (its driver) and no waiting task, cost 48 bytes, not 270.
        self.subscribers = ()     # client ids to push the value to when ready
        self.waiting_tasks = ()   # tasks blocked on this object
        self.size = 0
        self.spilled = False
        self.created_at = created_at  # wall-clock seconds, for `zray memory`

    def add_subscriber(self, identity):
        if identity not in self.subscribers:
            self.subscribers += (identity,)

    def add_waiting_task(self, task, when_ready):
        if not self.waiting_tasks:
            self.waiting_tasks = []
        self.waiting_tasks.append((task, when_ready))

    def header(self):
        n_frames = len(self.frames) if self.kind == INLINE else 0
        return (self.object_id, self.kind, n_frames, self.location, self.contained, self.is_error)


class ObjectTable(ArenaBlocks, TableReport):
    def __init__(self, capacity_bytes, spill_dir, disk, clock=lambda: 0.0):
        # The table decides, ``disk`` acts (``disk.SpillDisk`` on a node, a fake
        # in unit tests); ``clock`` gives the wall time stamped on new entries.
        self.disk = disk
        self.clock = clock
        # fn(object_id): lets go of the ref a freed object held to one inside
        # it, as a client's release does (the node's: an actor whose last
        # handle was inside it must hear so, or it never exits).
        self.release_inner = self.remove_ref
        self.entries = {}
        self.capacity_bytes = capacity_bytes
        self.spill_dir = spill_dir
        self.shm_bytes = 0              # sealed objects in shared memory
        self.reserved_bytes = 0         # admitted, being written
        self.reserved = {}              # object_id -> (size, owner, where, arena location)
        self.reservations = 0           # reserve requests answered (spares apart)
        self.spares_granted = 0         # blocks reserved ahead of a client's next put
        self.spilled_bytes = 0
        self.spilled_objects = 0
        self.inline_bytes = 0
        self.created_objects = 0        # shared-memory objects ever sealed
        self.created_bytes = 0
        self.spill_failure = None       # last reason spilling failed, for status
        self.spill_failed_at = -SPILL_RETRY_S
        self.over_capacity = None       # why sealed small objects could not be made room for
        self.in_memory = OrderedDict()  # shm objects, oldest first, for spilling
        self.spilling = {}              # object_id -> entry whose copy is in flight
        self.spilling_bytes = 0
        self.disk_reserved_bytes = 0    # admitted straight to the spill directory
        self.freed = OrderedDict()      # ids of objects freed after they were made, newest last
        # Large objects written by clients go into the arena's blocks; a block
        # is reused only once no process views it: clients pin what they map.
        self.arena = Arena(capacity_bytes, disk.make_chunk)
        self.pins = {}                  # object_id -> {owner: count} of arena objects mapped
        self.idle_pins = {}             # object_id -> owners keeping a pin no value uses
        self.pins_to_drop = {}          # owner -> ids whose blocks were retired: ask for them
        self.retired = {}               # object_id -> arena location freed while pinned
        self.free_after_copy = {}       # object_id -> arena location freed while being spilled

    # -- lifecycle ----------------------------------------------------------
    def expect(self, object_id):
        """A task will produce this object; create its entry if new."""
        self.freed.pop(object_id, None)
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry(object_id, self.clock())
        return entry

    def reserve(self, object_id, size, owner=None, arena=False, spare=False):
        """Admit an object of ``size`` bytes before it is written; return where
        to write it: IN_MEMORY (a file in the plasma directory), ON_DISK (spill
        directory) or, if ``arena`` and a block is free, its arena location
        ``(chunk path, size, offset)``. ``spare``: reserved ahead of a put
        that may never come, so only an arena block that fits as things are
        (nothing spilled for it), else None.

        Starts spilling the oldest objects to make room in memory; falls back
        to the disk when memory cannot hold it; raises ObjectStoreFullError
        (with sizes and paths) when neither can.
        """
        self.release_reservation(object_id)      # a retried writer reserves again
        if spare:
            return self._reserve_spare(object_id, size, owner)
        self.reservations += 1
        if size > self.capacity_bytes:
            why_not_memory = (f"it is larger than the whole object store "
                              f"({format_bytes(self.capacity_bytes)})")
        else:
            why_not_memory = self._make_room(size)
            if why_not_memory is None:
                location = self._arena_block(object_id, size) if arena else None
                self.reserved[object_id] = (size, owner, IN_MEMORY, location)
                self.reserved_bytes += size
                return IN_MEMORY if location is None else location
        why_not_disk = self._disk_problem(size)
        if why_not_disk is not None:
            raise ObjectStoreFullError(
                f"the object store cannot take an object of {format_bytes(size)}: "
                f"{format_bytes(self.shm_bytes)} of its {format_bytes(self.capacity_bytes)} "
                f"hold {len(self.in_memory)} objects that are still referenced "
                f"({format_bytes(self.reserved_bytes)} more is being written, "
                f"{format_bytes(self.spilled_bytes)} already spilled to disk). It fits "
                f"neither in memory ({why_not_memory}) nor on disk ({why_not_disk}). "
                f"Drop ObjectRefs you no longer need, free disk space under {self.spill_dir} "
                f"(or pick another object_spilling_directory), or start zray with a larger "
                f"object_store_memory")
        log.info("object %s (%s) goes straight to %s: %s", object_id.hex(),
                 format_bytes(size), self.spill_dir, why_not_memory)
        self.reserved[object_id] = (size, owner, ON_DISK, None)
        self.disk_reserved_bytes += size
        return ON_DISK

    def _reserve_spare(self, object_id, size, owner):
        if (self.shm_bytes - self.spilling_bytes + self.reserved_bytes + size
                > self.capacity_bytes):
            return None
        location = self._arena_block(object_id, size)
        if location is not None:
            self.reserved[object_id] = (size, owner, IN_MEMORY, location)
            self.reserved_bytes += size
            self.spares_granted += 1
        return location

    def reserved_location(self, object_id, owner):
        """The arena block ``owner`` reserved for ``object_id``, or None."""
        reservation = self.reserved.get(object_id)
        if reservation is None or reservation[1] != owner:
            return None
        return reservation[3]

    def release_reservation(self, object_id):
        """Give back what was reserved for an object that will not be sealed."""
        reservation = self._take_reservation(object_id)
        if reservation is not None and reservation[3] is not None:
            self._free_block(object_id, reservation[3])

    def _take_reservation(self, object_id):
        reservation = self.reserved.pop(object_id, None)
        if reservation is not None:
            if reservation[2] == ON_DISK:
                self.disk_reserved_bytes -= reservation[0]
            else:
                self.reserved_bytes -= reservation[0]
        return reservation

    def release_reservations_of(self, owner):
        """A writer left before sealing: give back what it reserved."""
        for object_id in [i for i, r in self.reserved.items() if r[1] == owner]:
            self.release_reservation(object_id)

    def seal(self, header, frames):
        """Store a finished value. Returns the entry, or None if nobody wants it."""
        object_id, kind, _, location, contained, is_error = header
        reservation = self._take_reservation(object_id)
        if reservation is not None and reservation[3] is not None and reservation[3] != location:
            self._free_block(object_id, reservation[3])      # reserved, then written elsewhere
        entry = self.entries.get(object_id)
        if entry is None or entry.state == READY:
            # Every ref was dropped before it was made (or a retried task
            # made it twice): nobody can ask for it, so let it go. Never
            # unlink the file a live entry of the same id points to.
            if kind == SHM and is_arena(location):
                if not (entry is not None and entry.location == location):
                    self._free_block(object_id, location)
            elif kind == SHM and not (entry is not None and entry.kind == SHM
                                      and entry.location[0] == location[0]):
                self.disk.unlink(location[0])
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
            self.created_objects += 1
            self.created_bytes += entry.size
        if kind == SHM and self._on_disk(location[0]):
            entry.spilled = True             # written straight to disk (fallback)
            self.spilled_bytes += entry.size
            self.spilled_objects += 1
        elif kind == SHM:
            self.shm_bytes += entry.size
            self.in_memory[object_id] = entry
            reason = self._make_room(0)   # unreserved (small) objects are accounted here
            if reason is not None and reason != self.over_capacity:
                log.error("object store over capacity and %s", reason)
            self.over_capacity = reason
        else:
            entry.size = sum(len(f) for f in frames)
            self.inline_bytes += entry.size
        return entry

    def add_ref(self, object_id, count=1):
        entry = self.entries.get(object_id)
        if entry is None:
            entry = self.entries[object_id] = ObjectEntry(object_id, self.clock())
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
        if entry.state == READY:
            self.freed[entry.object_id] = None
            if len(self.freed) > FREED_REMEMBERED:
                self.freed.popitem(last=False)
            if entry.kind == SHM:
                self.in_memory.pop(entry.object_id, None)
                spilling = self.spilling.pop(entry.object_id, None) is not None
                if spilling:
                    self.spilling_bytes -= entry.size    # its copy is unlinked when done
                if entry.spilled:
                    self.spilled_bytes -= entry.size
                    self.spilled_objects -= 1
                else:
                    self.shm_bytes -= entry.size
                if is_arena(entry.location):
                    self._free_block(entry.object_id, entry.location, spilling)
                else:
                    self.disk.unlink(entry.location[0])
            else:
                self.inline_bytes -= entry.size
        for inner in entry.contained:
            self.release_inner(inner)

    def get(self, object_id):
        return self.entries.get(object_id)

    def was_freed(self, object_id):
        """True if the object existed here and every reference was dropped:
        a ref that shows up later (pickled outside zray) can never resolve."""
        return object_id in self.freed

    def is_ready(self, object_id):
        entry = self.entries.get(object_id)
        return entry is not None and entry.state == READY

    # -- capacity -----------------------------------------------------------
    def _make_room(self, size):
        """Start spilling oldest-first until ``size`` more bytes fit; None, or why not."""
        while (self.shm_bytes - self.spilling_bytes + self.reserved_bytes + size
               > self.capacity_bytes):
            if not self.in_memory:
                return ("nothing is left to spill (the rest is reserved by objects "
                        "being written)")
            if self.disk.now() - self.spill_failed_at < SPILL_RETRY_S:
                return self.spill_failure
            victim = next((e for e in self.in_memory.values() if not self.in_use(e.object_id)),
                          None)
            if victim is None:
                return "every object in memory is being read by a process (pinned)"
            problem = self._disk_problem(victim.size)
            if problem is not None:
                self._spill_failed(f"spilling the oldest object ({format_bytes(victim.size)}) "
                                   f"to {self.spill_dir} failed: {problem}")
                return self.spill_failure
            del self.in_memory[victim.object_id]
            self.spilling[victim.object_id] = victim
            self.spilling_bytes += victim.size
            self.disk.start_copy(victim.object_id, victim.location, self.spill_dir)
        return None

    def _disk_problem(self, size):
        """Why the spill directory cannot take ``size`` more bytes now, or None."""
        try:
            free = self.disk.free_bytes(self.spill_dir)
        except OSError as exc:
            return f"the spill directory {self.spill_dir} cannot be used ({exc})"
        needed = size + self.disk_reserved_bytes + self.spilling_bytes
        if free < needed:
            return (f"{self.spill_dir} has {format_bytes(free)} free and "
                    f"{format_bytes(needed)} would go there")
        return None

    def _on_disk(self, path):
        return os.path.dirname(path) == self.spill_dir

    def _spill_failed(self, reason):
        if reason != self.spill_failure:
            log.error("%s", reason)
        self.spill_failure = reason
        self.spill_failed_at = self.disk.now()

    def finish_spills(self, results=None, wait=False):
        """Apply finished copies ``[(object_id, path, target, error)]`` (on a
        node they come as an event; without, read them from the disk port,
        all in flight if ``wait``)."""
        if results is None:
            results = self.disk.finished(wait)
        for object_id, path, target, error in results:
            entry = self.spilling.pop(object_id, None)
            if entry is None or entry.location[0] != path:
                if target is not None:
                    self.disk.unlink(target)      # freed while it was being copied
                location = self.free_after_copy.pop(object_id, None)
                if location is not None:
                    self._free_block(object_id, location)
                continue
            self.spilling_bytes -= entry.size
            if error is None and self.in_use(object_id):
                # Mapped by a process while it was copied: it stays in memory.
                self.disk.unlink(target)
                self.in_memory[object_id] = entry
                continue
            if error is not None:
                self._spill_failed(f"spilling object {object_id.hex()} "
                                   f"({format_bytes(entry.size)}) to {self.spill_dir} failed: "
                                   f"{error}; it stays in memory")
                self.in_memory[object_id] = entry
                self.in_memory.move_to_end(object_id, last=False)
                continue
            if is_arena(entry.location):
                self._free_block(object_id, entry.location)
            else:
                self.disk.unlink(path)    # readers that mapped it keep their view
            entry.location = (target, entry.size)
            entry.spilled = True
            self.shm_bytes -= entry.size
            self.spilled_bytes += entry.size
            self.spilled_objects += 1
            self.spill_failure, self.spill_failed_at = None, -SPILL_RETRY_S
            log.info("spilled object %s (%s) to %s", object_id.hex(),
                     format_bytes(entry.size), target)

    def unlink_all(self):
        for entry in list(self.entries.values()):
            if entry.kind == SHM and entry.state == READY and not is_arena(entry.location):
                self.disk.unlink(entry.location[0])
        for path in self.arena.paths():
            self.disk.unlink(path)
        self.entries.clear()


def format_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"

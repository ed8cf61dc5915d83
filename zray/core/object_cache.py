"""The objects this process has received, and the one way to decode them.

An entry is ``(header, frames)`` as the node sent it: inline frames, or the
location of a shared-memory file (mapped on first read, and kept mapped
while any value still views it). An object is kept while a local
``ObjectRef`` to it lives (``holds``); the ref counter ``forget``s it after.
"""
import weakref

from ..exceptions import RayTaskError
from ..object_ref import counting_refs_once
from ..plasma import client as object_store
from ..serialization import deserialize
from ..transport import protocol as P

# header fields
ID, KIND, N_FRAMES, LOCATION, CONTAINED, IS_ERROR = range(6)


class ObjectCache:
    def __init__(self, cond, holds, spill_dir, arena=None, request=None, lock=None):
        self.cond = cond            # the connection's: notified as objects arrive
        self.lock = cond if lock is None else lock   # cond's lock (a cheaper ``with``)
        self.holds = holds          # fn(object_id) -> True while a local ref lives
        self.spill_dir = spill_dir
        self.arena = arena          # plasma.client.ArenaViews: the node's arena mapped here
        self.request = request      # the connection's request (to pin arena objects)
        self.by_value = None        # plasma.by_value.ByValue: no shared memory with the node
        self.objects = {}           # object_id -> (header, frames)
        self.mapped = weakref.WeakValueDictionary()   # object_id -> mmap, while values use it
        self.waiters = []           # _Waiter of each get/wait in progress
        self.requested = set()      # ids we asked the node for
        self.local_only = set()     # direct-call results the node has never seen
        self.on_arrival = {}        # object_id -> [fn(object_id)], each once, as it arrives

    def on_objects(self, fields, frames):
        """OBJECTS from the node: results we own, or objects we asked for."""
        (entries,) = fields
        offset = 0
        with self.cond:
            for header in entries:
                object_id, n = header[ID], header[N_FRAMES]
                self.requested.discard(object_id)
                if self.holds(object_id):
                    self.objects[object_id] = (header, frames[offset:offset + n])
                    if self.waiters:
                        self.tell_waiters(object_id)
                offset += n
            self.cond.notify_all()
        if self.on_arrival:         # outside cond: the callbacks take other locks
            self.arrived([header[ID] for header in entries])

    def call_on_arrival(self, object_id, callback):
        """``callback(object_id)`` once, when the object comes (from the node,
        or in a direct call's reply). One already here may never call it:
        check ``objects`` after asking."""
        self.on_arrival.setdefault(object_id, []).append(callback)

    def arrived(self, object_ids):
        """Run the callbacks of these ids (outside cond)."""
        for object_id in object_ids:
            for callback in self.on_arrival.pop(object_id, ()):
                callback(object_id)

    def add(self, object_id, header, frames):
        with self.lock:
            self.objects[object_id] = (header, frames)
            if self.waiters:
                self.tell_waiters(object_id)

    # -- waiting (under cond) --------------------------------------------------------
    def watch(self, object_ids):
        """A get/wait starts: a _Waiter of the ids not here yet, told of each
        arrival, so a wait on n objects costs O(n) in all, not per check."""
        waiter = _Waiter({i for i in object_ids if i not in self.objects})
        if waiter.missing:
            self.waiters.append(waiter)
        return waiter

    def unwatch(self, waiter):
        if waiter in self.waiters:
            self.waiters.remove(waiter)

    def tell_waiters(self, object_id):
        """Put in ``objects`` just now (callers hold cond and checked ``waiters``)."""
        for waiter in self.waiters:
            if object_id in waiter.missing:
                waiter.missing.discard(object_id)
                waiter.arrived.append(object_id)

    def forget(self, object_ids):
        """No local ref left; True if one of them was in shared memory."""
        in_shared_memory = False
        kept = self.arena.kept if self.arena is not None else {}
        with self.lock:
            for object_id in object_ids:
                entry = self.objects.pop(object_id, None)
                self.local_only.discard(object_id)
                if entry is None or entry[0][KIND] != P.INLINE:
                    # Only shared-memory objects are mapped (a weak dict's pop is dear).
                    self.mapped.pop(object_id, None)
                    kept.pop(object_id, None)   # unpinned once no value views it
                    in_shared_memory = entry is not None or in_shared_memory
        return in_shared_memory

    def on_drop_pins(self, fields, _frames):
        """DROP_PINS from the node: it wants these blocks back (spilled or freed)."""
        (object_ids,) = fields
        if self.arena is not None:
            self.arena.drop_pins(object_ids)

    def decode(self, header, frames):
        """The value of an object; raises it if it is an error (a task's error
        as an instance of its cause, as Ray does)."""
        if header[KIND] == P.INLINE:
            value = counting_refs_once(deserialize, frames[0], frames[1:])
            is_error = header[IS_ERROR]
        else:
            meta, buffers, is_error = object_store.read(self, header[ID], header[LOCATION])
            value = counting_refs_once(deserialize, meta, buffers)
        if is_error:
            raise value.as_instanceof_cause() if isinstance(value, RayTaskError) else value
        return value


class _Waiter:
    __slots__ = ("missing", "arrived")

    def __init__(self, missing):
        self.missing = missing      # ids not here yet
        self.arrived = []           # ids that came since the waiter last looked


# Below this an object travels inside messages; above, in a shared-memory file.
INLINE_MAX_BYTES = 100 * 1024

"""How many ``ObjectRef``s this process holds to each object, and what the
node must hear about it.

The node hears ADD_REF when a borrowed ref first appears here and
REMOVE_REF when the last local one dies. ``drop`` is called from
``ObjectRef.__del__`` in any thread, so it only appends to a deque; the
counting happens in ``flush``, which the connection calls before each
message it sends, so the node sees ref changes in program order. Releases
are batched (one REMOVE_REF per many dropped refs), except that an object in
shared memory is released at once.
"""
import threading
import time
from collections import deque

from ..transport import protocol as P

RELEASE_DELAY_S = 0.02
RELEASE_BATCH = 512


class RefCounter:
    def __init__(self, forget):
        self.forget = forget        # fn(released ids) -> True if one was in shared memory
        self.lock = threading.Lock()
        self.local_refs = {}        # object_id -> live ObjectRefs in this process
        self.borrowed = []          # ids to announce with ADD_REF
        self.drops = deque()        # ids of dead ObjectRefs, counted down by flush
        self.unpins = deque()       # ids of arena objects no value here views any more
        self.pin_uses = deque()     # (id, in use) of arena blocks kept pinned here
        self.pending_release = set()  # ids to send in the next batched REMOVE_REF
        self.release_due = 0.0

    def holds(self, object_id):
        return object_id in self.local_refs

    def add(self, object_id, borrowed):
        with self.lock:
            count = self.local_refs.get(object_id, 0)
            self.local_refs[object_id] = count + 1
            if borrowed and count == 0:
                if object_id in self.pending_release:
                    self.pending_release.discard(object_id)   # the node still counts us
                else:
                    self.borrowed.append(object_id)

    def add_many(self, object_ids, borrowed):
        with self.lock:
            local_refs = self.local_refs
            for object_id in object_ids:
                count = local_refs.get(object_id, 0)
                local_refs[object_id] = count + 1
                if borrowed and count == 0:
                    if object_id in self.pending_release:
                        self.pending_release.discard(object_id)
                    else:
                        self.borrowed.append(object_id)

    def drop(self, object_id):
        self.drops.append(object_id)     # atomic; safe from __del__ in any thread

    def due(self):
        """Anything for ``flush`` to do (read without the lock: a change made
        by this thread is seen; one made by another now goes with the next)."""
        return bool(self.drops or self.borrowed or self.unpins or self.pin_uses or (
            self.pending_release and time.monotonic() >= self.release_due))

    def flush(self, enqueue):
        """Count down dropped refs; ``enqueue`` ADD_REF / REMOVE_REF as due."""
        with self.lock:
            if self.borrowed:
                enqueue(P.ADD_REF, self.borrowed)
                self.borrowed = []
            if self.drops:
                self._count_drops()
            # After the drops (they let go of pins kept for their refs), before
            # REMOVE_REF: a block nothing views is unpinned before it is freed.
            if self.unpins or self.pin_uses:
                self._send_pin_changes(enqueue)
            self._release_if_due(enqueue)

    def _count_drops(self):
        released = []
        drops = self.drops
        while drops:
            object_id = drops.popleft()
            count = self.local_refs.get(object_id, 0) - 1
            if count > 0:
                self.local_refs[object_id] = count
            else:
                self.local_refs.pop(object_id, None)
                released.append(object_id)
        if released:
            urgent = self.forget(released)
            if not self.pending_release:
                self.release_due = time.monotonic() + RELEASE_DELAY_S
            self.pending_release.update(released)
            if urgent or len(self.pending_release) >= RELEASE_BATCH:
                self.release_due = 0.0

    def _send_pin_changes(self, enqueue):
        uses, unpins = self.pin_uses, self.unpins
        if uses:
            in_use = {}             # the last change of each wins
            for _ in range(len(uses)):
                object_id, used = uses.popleft()
                in_use[object_id] = used
            enqueue(P.REQUEST, 0, "pin_use", ([i for i, used in in_use.items() if used],
                                              [i for i, used in in_use.items() if not used]))
        if unpins:
            enqueue(P.REQUEST, 0, "unpin", ([unpins.popleft() for _ in range(len(unpins))],))

    def _release_if_due(self, enqueue):
        if self.pending_release and time.monotonic() >= self.release_due:
            enqueue(P.REMOVE_REF, list(self.pending_release))
            self.pending_release = set()

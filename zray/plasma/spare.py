"""A block reserved ahead for a process's next put of the same size.

A large put is a reserve round trip to the node, one copy, and the PUT
message. The round trip is a third of a put of a few MB, and a process
that puts once usually puts again with the same size (a loop). So after
each large put the process asks the node, without waiting, for a block of
that size under the id its next put will take; the node grants it only if
it fits without spilling anything. The next put of that size takes that
id (``new_put_id``) and writes into the block at once (``claim``); another
size, or none within ``SPARE_IDLE_S``, and the block goes back. A process
putting in a loop so keeps two blocks of that size, not one; only puts up
to ``SPARE_MAX_BYTES`` get a spare.

::

    put #1: reserve ──► node ──► block A;  copy;  PUT #1;  REQ reserve(next id, spare) ─►
    put #2 (same size): id = next id; answer there: block B; copy; PUT #2; REQ ... ─►
"""
import os
import threading
import time

from ..transport import protocol as P

SPARE_IDLE_S = 1.0
# Above this the copy takes ten times the round trip: a spare would save
# little and hold that much more memory for a while.
SPARE_MAX_BYTES = 16 << 20


def fresh_put_id():
    return os.urandom(16) + b"\xff\xff\xff\xff"


class SpareBlock:
    def __init__(self):
        self.lock = threading.Lock()
        self.object_id = None         # the id the spare is asked for under (the next put's)
        self.request_id = None        # its reserve request (the answer says where, or None)
        self.size = 0
        self.asked_at = 0.0
        self.claimed = {}             # put id -> request id: taken by a put under way
        self.puts = set()             # large put ids under way: ask for a spare after each
        self.abandoned = set()        # request ids whose answers nobody waits for

    def new_put_id(self, size):
        """The id of a put of ``size`` bytes: the spare's if it has that size."""
        with self.lock:
            if self.object_id is not None and self.size == size:
                object_id = self.object_id
                self.claimed[object_id] = self.request_id
                self.object_id = self.request_id = None
            else:
                object_id = fresh_put_id()
            self.puts.add(object_id)
        return object_id

    def claim(self, runtime, object_id, size):
        """The arena block reserved ahead for this put, or None (reserve as usual:
        under the same id, the node gives back what the spare held)."""
        with self.lock:
            request_id = self.claimed.pop(object_id, None)
        if request_id is None:
            return None
        replies = runtime.connection.replies
        if not runtime.wait_until(lambda: request_id in replies, time.monotonic() + 30.0):
            return None
        with runtime.cond:
            ok, location = replies.pop(request_id)
        if not ok or not isinstance(location, (list, tuple)) or len(location) != 3:
            return None
        location = tuple(location)
        return location if location[1] == size else None

    def after_write(self, runtime, object_id, size):
        """A write is done: if it was a put, ask for a block for the next one."""
        with self.lock:
            if object_id not in self.puts:
                return
            self.puts.discard(object_id)
            old = self._take_unclaimed()
            request_id = next(runtime.connection.request_ids)
            self.object_id, self.request_id = fresh_put_id(), request_id
            self.size, self.asked_at = size, time.monotonic()
            next_id = self.object_id
        self._give_back(runtime, old)
        runtime.send_message(P.REQUEST, request_id, "reserve", (next_id, size, True, True))

    def forget(self, object_id):
        """A put that never got to writing (small, or failed)."""
        with self.lock:
            self.puts.discard(object_id)
            request_id = self.claimed.pop(object_id, None)
            if request_id is not None:
                self.abandoned.add(request_id)

    def expire(self, runtime, now):
        """On the process's tick: give back a spare unused for SPARE_IDLE_S."""
        with self.lock:
            old = None
            if self.object_id is not None and now - self.asked_at >= SPARE_IDLE_S:
                old = self._take_unclaimed()
            abandoned = self.abandoned
        self._give_back(runtime, old)
        if abandoned:
            with runtime.cond:
                for request_id in list(abandoned):
                    if runtime.connection.replies.pop(request_id, None) is not None:
                        abandoned.discard(request_id)

    def _take_unclaimed(self):
        old = (self.object_id, self.request_id) if self.object_id is not None else None
        self.object_id = self.request_id = None
        return old

    def _give_back(self, runtime, old):
        if old is None:
            return
        object_id, request_id = old
        with self.lock:
            self.abandoned.add(request_id)
        runtime.send_message(P.REQUEST, 0, "unreserve", (object_id,))

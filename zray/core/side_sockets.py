"""Direct sockets (to actors' and leased workers' endpoints) polled along
with the node's, by whoever holds the socket turn (``socket_turns.py``).

- ``add_socket`` / ``remove_socket``: a socket joins or leaves the poll;
  ``on_readable(socket)`` reads it, under ``sock_lock`` like everything
  that touches a socket.
- ``send_on`` from any thread: the message waits in ``side_outbox`` until
  the holder sends it; a socket not connected yet holds back only its own
  messages, never another socket's.
- ``set_polled``: a socket that expects nothing is left out of the poll
  (each polled socket costs every blocking poll system calls), or read
  only now and then (``lazily``).
"""
from collections import deque

import zmq

from ..transport.sockets import EVENTS, NOBLOCK, POLLIN, send_frames
from .ctrl_c import Critical

LAZY_READ_S = 0.02      # sockets out of the poll but read now and then (set_polled)


class SideSockets:
    """Mixed into ``Connection``: needs ``poller``, ``_pump_or_wake`` and
    ``_socket_turn`` (``socket_turns.py``)."""

    def _init_side_sockets(self):
        self.side_sockets = {}      # socket -> fn(socket): direct sockets read by the holder
        self.side_outbox = deque()  # (socket, frames, still_wanted, wait): see send_on
        self.poll_changes = deque()   # (side socket, polled, lazily): see set_polled
        self.lazy_sockets = set()   # side sockets out of the poll, read every LAZY_READ_S
        self.next_lazy_read = 0.0

    def send_on(self, socket, frames, still_wanted=None, wait=True):
        """Send on a direct socket (see ``add_socket``), from any thread. A
        message that cannot leave yet (no completed connection) waits, unless
        ``still_wanted()`` says it is no longer wanted by then, or ``wait`` is
        False (then it is dropped). Messages on other sockets go past it."""
        with Critical(self):
            self.side_outbox.append((socket, frames, still_wanted, wait))
            self._pump_or_wake()

    def queue_on(self, socket, frames):
        """``send_on`` for code that holds sock_lock (a handler): queued, sent
        as the holder's pump ends (trying to pump would only wake it)."""
        self.side_outbox.append((socket, frames, None, True))

    def add_socket(self, socket, on_readable, locked=False):
        """Poll ``socket`` with the node's; ``on_readable(socket)`` reads it
        (under sock_lock, like everything that touches a socket).
        ``locked``: the caller holds sock_lock (a handler)."""
        if not locked:
            with self._socket_turn():
                return self.add_socket(socket, on_readable, locked=True)
        self.side_sockets[socket] = on_readable
        self.poller.register(socket, zmq.POLLIN)

    def set_polled(self, socket, polled, lazily=False):
        """Poll an added socket or not, from the next pump on (from any
        thread, any lock held). A socket that expects nothing (an idle lease's)
        costs each blocking poll four system calls in libzmq; what comes
        meanwhile waits in it and is seen once it is polled again.
        ``lazily``: out of the poll, but read every LAZY_READ_S by whoever
        pumps (news that may wait that long: a connected channel's monitor)."""
        self.poll_changes.append((socket, polled, lazily))

    def _apply_poll_changes(self):
        changes = self.poll_changes
        lazy = self.lazy_sockets
        while changes:
            socket, polled, lazily = changes.popleft()
            if socket not in self.side_sockets:
                continue                # removed meanwhile
            if polled:
                lazy.discard(socket)
                self.poller.register(socket, zmq.POLLIN)
                continue
            try:
                self.poller.unregister(socket)
            except KeyError:
                pass
            if lazily:
                lazy.add(socket)
            else:
                lazy.discard(socket)

    def _read_lazy_sockets(self):
        """The lazily read sockets with something waiting (see set_polled)."""
        for socket in list(self.lazy_sockets):
            on_readable = self.side_sockets.get(socket)
            if on_readable is None:
                self.lazy_sockets.discard(socket)
            elif socket.getsockopt(EVENTS) & POLLIN:
                on_readable(socket)

    def remove_socket(self, socket, locked=False):
        if not locked:
            with self._socket_turn():
                return self.remove_socket(socket, locked=True)
        if self.side_sockets.pop(socket, None) is not None:
            self.lazy_sockets.discard(socket)
            try:
                self.poller.unregister(socket)
            except KeyError:
                pass            # out of the poll (set_polled)
        socket.close(0)

    def _flush_side_outbox(self, side):
        """Send what ``send_on`` queued, in order per socket (needs sock_lock)."""
        kept, stuck = [], set()
        for _ in range(len(side)):      # (others may append meanwhile: next flush)
            entry = side.popleft()
            socket, frames, still_wanted, wait = entry
            if socket in stuck:
                kept.append(entry)      # behind its socket's first: order per socket
                continue
            if still_wanted is not None and not still_wanted():
                continue
            try:
                send_frames(socket, frames, NOBLOCK)
            except zmq.Again:
                # Not connected (yet, or any more): never block the socket
                # owner, nor the other sockets' messages (a call to a dead
                # actor must not hold up a task pushed to a live worker).
                # Tried again on the next pump (the monitor decides), unless
                # it was to leave at once or not at all (``wait`` False).
                if wait:
                    stuck.add(socket)
                    kept.append(entry)
            except zmq.ZMQError:
                pass        # closed meanwhile
        if kept:
            side.extendleft(reversed(kept))

    def _close_side_sockets(self):
        for side in list(self.side_sockets):
            side.close(linger=200)      # an actor's last replies still reach their callers
        self.side_sockets.clear()

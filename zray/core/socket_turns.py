"""Whose turn it is to drive the node socket: the calling thread during an
API call, the I/O thread otherwise.

::

    API thread (get, wait, request) ── sock_lock ──► _pump_now: flush, poll, dispatch
    other threads ── outbox + wake pipe ──► whoever holds sock_lock flushes
    I/O thread ── parks while an API call is active (plus API_GRACE_S) ──► _pump

- Whoever holds ``sock_lock`` may touch the socket. A thread inside an API
  call takes it and polls the socket itself, so a synchronous call costs no
  thread hand-off; the I/O thread polls only while no API call is active
  (plus a short grace, so a tight loop of calls keeps the socket to itself).
  Other threads append to the outbox and wake the holder.
- Reference changes (``refs``) are flushed before every message, so the
  node sees them in program order.
- Messages in are dispatched by type to ``handlers``; nothing here knows
  what an object or a task is.
"""
import contextlib
import logging
import os
import threading
import time
from collections import deque

import zmq

from ..exceptions import RaySystemError
from ..transport import protocol as P
from ..transport.sockets import EVENTS, POLLIN, polled_messages, receive_frames, send_frames
from .ctrl_c import Critical
from .side_sockets import LAZY_READ_S

log = logging.getLogger("zray.runtime")

IO_TICK_MS = 100
API_GRACE_S = 0.005
TICK_S = 0.5


class SocketTurns:
    """Mixed into ``Connection``: needs ``socket``, ``refs``, ``handlers``,
    the side sockets (``side_sockets.py``) and the node watch (``node_watch.py``)."""

    def _init_socket_turns(self):
        self.on_tick = None         # fn(now), every TICK_S from the I/O thread
        self.on_last_flush = None   # fn(), under sock_lock as the I/O thread stops
        self.on_parent_gone = None  # fn(), the last act once the parent is gone (watch_parent)
        self.outbox = deque()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.wake_pending = False
        # Shared with the tables fed by handlers. ``lock`` is cond's own lock,
        # for plain sections (a Condition's ``with`` costs two Python calls).
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.cond_waiters = 0       # threads in cond.wait (only wait_until waits on it)
        self.sock_lock = threading.Lock()
        self.api_mutex = threading.Lock()   # api_lock's own lock (a cheaper ``with``)
        self.api_lock = threading.Condition(self.api_mutex)
        self.api_active = 0
        self.last_api_end = 0.0
        self.io_polling = False     # the I/O thread sits in a long poll holding sock_lock
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self.wake_r, zmq.POLLIN)
        self.closing = False

    # == sending from any thread ==============================================
    def _pump_or_wake(self):
        """Send what is queued now if the socket is free; else the holder
        flushes the queues when its poll returns."""
        if self.sock_lock.acquire(blocking=False):
            try:
                self._flush_now()
            finally:
                self.sock_lock.release()
        else:
            self._wake()

    def _flush_now(self):
        """Send what is queued (needs sock_lock). Nothing is read: what came
        waits for the next poll, which sees it."""
        refs = self.refs
        if refs.due():
            refs.flush(self.enqueue)
        self._flush_outbox()

    @contextlib.contextmanager
    def _socket_turn(self):
        """sock_lock for another thread than the I/O thread: counted as an API
        call, so the I/O thread, woken from its poll, parks instead of taking
        the lock straight back (a lock is not fair: that wait took a whole
        IO_TICK_MS, 0.1 s per actor's socket at creation)."""
        with self.api_mutex:
            self.api_active += 1
        try:
            self._wake()
            with self.sock_lock:
                yield
        finally:
            with self.api_mutex:
                self.api_active -= 1
                self.last_api_end = time.monotonic()

    def _wake(self):
        if not self.wake_pending:
            self.wake_pending = True
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass

    # == pumping ==============================================================
    def _pump(self, timeout_ms):
        """Flush, wait up to timeout_ms for input, dispatch it. Needs sock_lock."""
        if threading.get_ident() != self.main_ident:
            return self._pump_now(timeout_ms)
        with Critical(self):
            self._pump_now(timeout_ms)

    def pump_with(self, fds, timeout_ms, must_not_block):
        """One pump by a thread that is neither in an API call nor the I/O
        thread (an async actor's event loop, core/actor_loop.py): taken as an
        API call takes the socket, with ``fds`` ((fd, POLLIN/POLLOUT) pairs)
        in the same poll; it does not block if ``must_not_block()`` once the
        socket is ours (a pump of the I/O thread may have just brought work).
        Returns the poll's (item, events), ``fds``' among them."""
        with self.api_mutex:
            self.api_active += 1
        if self.io_polling:
            self._wake()        # the I/O thread is in a long poll: make it let go
        try:
            with self.sock_lock:
                if timeout_ms and must_not_block():
                    timeout_ms = 0
                # Others wake a holder that waits: a thread in get, a send.
                self.io_polling = True
                try:
                    ready = self._pump_now(timeout_ms, fds)
                finally:
                    self.io_polling = False
        finally:
            with self.api_mutex:
                self.api_active -= 1
                self.last_api_end = time.monotonic()
        if self.cond_waiters:
            with self.lock:
                self.cond.notify_all()
        return ready

    def _pump_now(self, timeout_ms, fds=None):
        if self.poll_changes:
            self._apply_poll_changes()
        refs = self.refs
        if refs.due():
            refs.flush(self.enqueue)
        if self.outbox or self.side_outbox:
            self._flush_outbox()
        # Direct sockets are read only when a poll says so (zmq_poll reports
        # what is already queued, so nothing waits past the next poll): a
        # process with calls to many actors must not test every socket per pump.
        if fds is not None:
            ready = zmq.zmq_poll(self.poller.sockets + fds, timeout_ms)
        else:
            ready = self.poller.poll(timeout_ms) if timeout_ms else None
        drain = self.wake_pending
        if ready and not drain:
            # A wake written after the flag was last cleared (the writer sets
            # it, then writes; we may clear it in between): left in the pipe,
            # every poll would return at once, a busy loop until the next wake.
            wake_r = self.wake_r
            for item in ready:
                if item[0] == wake_r:
                    drain = True
                    break
        if drain:
            try:
                os.read(self.wake_r, 65536)
            except BlockingIOError:
                pass
            # Cleared after the read: a wake whose byte the read took leaves
            # the flag set, and every later wake skipped its write until the
            # next pump (a reply from an async actor's loop thread waited for
            # the poll's 50 ms timeout). A writer that sees the flag still set
            # appended its message before: this pump's last flush sends it.
            self.wake_pending = False
        self._receive_all(ready)
        if self.lazy_sockets:
            now = time.monotonic()
            if now >= self.next_lazy_read:
                self.next_lazy_read = now + LAZY_READ_S
                self._read_lazy_sockets()
        if refs.due():
            refs.flush(self.enqueue)
        if self.outbox or self.side_outbox:
            self._flush_outbox()
        return ready

    def wait_until(self, predicate, deadline=None):
        """Block until predicate() (checked under cond) holds; False on deadline."""
        with self.api_mutex:
            self.api_active += 1
        if self.io_polling:
            self._wake()        # the I/O thread is in a long poll: make it let go
        try:
            lock = self.lock
            while True:
                with lock:
                    if predicate():
                        return True
                    if self.closing:
                        raise RaySystemError("zray shut down while this call was waiting")
                now = time.monotonic()
                remaining = None if deadline is None else deadline - now
                if remaining is not None and remaining <= 0:
                    return False
                if now >= self.next_node_check:
                    self.next_node_check = now + 1.0
                    self._check_node_alive()
                slice_ms = 50 if remaining is None else max(1, min(50, int(remaining * 1000)))
                with Critical(self):    # SIGINT must not leave the lock taken
                    pumped = self.sock_lock.acquire(timeout=0.002)
                    if pumped:
                        try:
                            self._pump_now(slice_ms)
                        finally:
                            self.sock_lock.release()
                if pumped:
                    if self.cond_waiters:
                        with lock:
                            self.cond.notify_all()
                else:
                    if self.io_polling:
                        self._wake()
                    with lock:
                        if not predicate():
                            self.cond_waiters += 1
                            try:
                                self.cond.wait(0.002)
                            finally:
                                self.cond_waiters -= 1
        finally:
            with self.api_mutex:
                # No notify: the parked I/O thread resumes by itself after the
                # grace period, and waking it on every call costs more than it saves.
                self.api_active -= 1
                self.last_api_end = time.monotonic()

    # == the I/O thread =======================================================
    def _io_loop(self):
        next_tick = time.monotonic() + TICK_S
        try:
            while not self.closing:
                with self.api_lock:
                    idle_for = time.monotonic() - self.last_api_end
                    if self.api_active or idle_for < API_GRACE_S:
                        self.api_lock.wait(0.1 if self.api_active else API_GRACE_S - idle_for)
                        parked = True
                    else:
                        parked = False
                if not parked:
                    with self.sock_lock:
                        self.io_polling = True
                        try:
                            self._pump(IO_TICK_MS)
                        finally:
                            self.io_polling = False
                    if self.cond_waiters:
                        with self.cond:
                            self.cond.notify_all()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK_S
                    if self.on_tick is not None:
                        self.on_tick(now)
                    if self.watch is not None and self.watch.gone():
                        self._leave_orphaned()
                if self.monitor is not None and not self.node_lost:
                    self._watch_connection(now)
            with self.sock_lock:
                if self.on_last_flush is not None:
                    self.on_last_flush()
                self._pump(0)
        except zmq.ContextTerminated:
            pass
        except Exception:
            log.exception("zray I/O thread failed")

    def _leave_orphaned(self):
        """The process that started this one is gone: exit now, after its
        ``on_parent_gone`` (a worker's node killed outright)."""
        try:
            if self.on_parent_gone is not None:
                self.on_parent_gone()
        except Exception:       # noqa: BLE001 - leaving anyway
            log.debug("on_parent_gone failed", exc_info=True)
        finally:
            os._exit(1)

    # == moving messages (needs sock_lock) ====================================
    def _flush_outbox(self):
        outbox = self.outbox
        while outbox:
            send_frames(self.socket, outbox.popleft())
        side = self.side_outbox
        if side:
            self._flush_side_outbox(side)

    def _receive_all(self, ready=None):
        """Read the node's socket, and the direct sockets in ``ready`` (a
        poll's result; None: no poll was made, only the node's is read)."""
        socket = self.socket
        handlers = self.handlers
        if ready is None:
            while socket.getsockopt(EVENTS) & POLLIN:
                self._dispatch(handlers, receive_frames(socket))
            return
        for item in ready:
            if item[0] is socket:   # (a poll asked every socket's EVENTS just now)
                for frames in polled_messages(socket):
                    self._dispatch(handlers, frames)
                break
        side_sockets = self.side_sockets
        for side, _event in ready:
            on_readable = side_sockets.get(side)
            if on_readable is not None:
                on_readable(side)

    @staticmethod
    def _dispatch(handlers, frames):
        msg_type, fields = P.unpack(frames[0])
        handler = handlers.get(msg_type)
        if handler is not None:
            handler(fields, frames[1:])

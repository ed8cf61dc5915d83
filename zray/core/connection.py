"""One process's socket to its node, and the threads that share it.

::

    API threads ──outbox + wake pipe──► I/O thread ──DEALER──► node ROUTER
    API threads ◄──Condition────────── I/O thread ◄──────────
                                        (objects, replies, tasks, logs)

- Whoever holds ``sock_lock`` may touch the socket. A thread inside an API
  call (get, wait, request, next_task) takes it and polls the socket itself,
  so a synchronous call costs no thread hand-off; the I/O thread polls only
  while no API call is active (plus a short grace, so a tight loop of calls
  keeps the socket to itself). Other threads append to the outbox and wake
  the holder.
- Messages in are dispatched by type to ``handlers`` (set by the owner, the
  ``Runtime``); nothing here knows what an object or a task is.
- Reference changes (``refs``, a ``RefCounter``) are flushed before every
  message, so the node sees them in program order.
- A driver watches its connection (ZeroMQ heartbeats and a socket monitor,
  read by the I/O thread): once the node has been unreachable for
  NODE_LOST_GRACE_S, waiting calls and new submissions raise instead of
  waiting forever. Nothing is added to the hot path but one flag test.
- A driver's Ctrl-C never lands halfway through moving a message between
  the socket and the tables (a result received but not recorded, a request
  dequeued but not sent): while the main thread is in such a section, SIGINT
  is held and delivered right after it (``critical``).
"""
import contextlib
import itertools
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..exceptions import RaySystemError
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import (EVENTS, NOBLOCK, POLLIN, REMOTE_SILENCE_S, OwnerWatch,
                                 polled_messages, receive_frames, send_frames)

log = logging.getLogger("zray.runtime")

IO_TICK_MS = 100
API_GRACE_S = 0.005
LAZY_READ_S = 0.02      # sockets out of the poll but read now and then (set_polled)
TICK_S = 0.5
# A driver's node is gone when its connection has been down this long (a
# killed process closes its sockets at once; a dead machine misses heartbeats).
NODE_LOST_GRACE_S = 2.0
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class Connection:
    def __init__(self, node_address, kind, refs, identity=None, password="",
                 connect_timeout_s=10.0, watch_parent=False, worker_secret=None):
        self.kind = kind
        self.refs = refs                     # flushed before every message
        self.worker_secret = worker_secret   # workers: proof that their node started them
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.identity = identity or b"d" + os.urandom(7)
        self.socket.setsockopt(zmq.IDENTITY, self.identity)
        self.monitor = None         # drivers: connection events, read by the I/O thread
        if kind == "driver":
            self.socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            # The node closes our connection after this much silence (its
            # socket pings nobody: see sched/remote_clients.py).
            self.socket.setsockopt(zmq.HEARTBEAT_TTL, int(REMOTE_SILENCE_S * 1000))
            self.monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED
                                                          | zmq.EVENT_DISCONNECTED
                                                          | auth.HANDSHAKE_EVENTS)
        self.disconnected_at = None
        self.node_lost = None       # why the node is unreachable, once it is
        try:    # over tcp a wrong token fails here, in seconds, not in a silent wait
            auth.connect(self.socket, node_address, password,
                         check_s=min(connect_timeout_s, auth.HANDSHAKE_TIMEOUT_S),
                         monitor=self.monitor)
        except BaseException:
            if self.monitor is not None:
                self.socket.disable_monitor()
                self.monitor.close(0)
            self.socket.close(0)
            self.context.term()
            raise
        self.node_address = node_address
        self.node_info = self._handshake(password, connect_timeout_s)

        self.handlers = {P.RESPONSE: self._on_response}   # msg_type -> fn(fields, frames)
        self.side_sockets = {}      # socket -> fn(socket): direct sockets read by the holder
        self.side_outbox = deque()  # (socket, frames, still_wanted, wait): see send_on
        self.poll_changes = deque()   # (side socket, polled, lazily): see set_polled
        self.lazy_sockets = set()   # side sockets out of the poll, read every LAZY_READ_S
        self.next_lazy_read = 0.0
        self.on_tick = None         # fn(now), every TICK_S from the I/O thread
        self.on_last_flush = None   # fn(), under sock_lock as the I/O thread stops
        self.outbox = deque()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.wake_pending = False
        # Shared with the tables fed by handlers. ``lock`` is cond's own lock,
        # for plain sections (a Condition's ``with`` costs two Python calls).
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.cond_waiters = 0       # threads in cond.wait (only wait_until waits on it)
        self.replies = {}
        self.request_ids = itertools.count(1)
        self.sock_lock = threading.Lock()
        self.api_mutex = threading.Lock()   # api_lock's own lock (a cheaper ``with``)
        self.api_lock = threading.Condition(self.api_mutex)
        self.api_active = 0
        self.last_api_end = 0.0
        self.io_polling = False     # the I/O thread sits in a long poll holding sock_lock
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self.wake_r, zmq.POLLIN)
        self.watch = OwnerWatch(os.getppid()) if watch_parent else None
        self.closing = False
        self.node_alive = None      # set by whoever started the node: () -> bool
        self.next_node_check = 0.0
        self.main_ident = threading.main_thread().ident
        self.main_critical = 0      # depth of the main thread's critical sections
        self.sigint_held = None     # the frame of a SIGINT held until they end
        self.previous_sigint = None
        if kind == "driver" and threading.get_ident() == self.main_ident:
            self.previous_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)
        self.io_thread = threading.Thread(target=self._io_loop, name="zray-io", daemon=True)

    def start(self):
        """Start the I/O thread, once the owner has set its handlers."""
        self.io_thread.start()

    # == start-up =============================================================
    def _handshake(self, password, timeout_s):
        self.socket.send_multipart(P.pack(P.HELLO, self.kind, os.getpid(), password,
                                          P.PROTOCOL_VERSION, list(sys.path),
                                          self.worker_secret))
        if not self.socket.poll(int(timeout_s * 1000)):
            self.socket.close(0)
            self.context.term()
            raise ConnectionError(f"no zray node answered at {self.node_address} within "
                                  f"{timeout_s:.0f} s; is the cluster running? (`zray status`)")
        msg_type, fields = P.unpack(self.socket.recv_multipart()[0])
        if msg_type == P.REFUSED:
            self.socket.close(0)
            self.context.term()
            raise ConnectionRefusedError(f"the zray node at {self.node_address} refused this "
                                         f"process: {fields[0]}")
        return fields[0]

    # == sending ==============================================================
    def send(self, frames):
        if self.node_lost:
            raise RaySystemError(self.node_lost)
        with _Critical(self):
            refs = self.refs
            if refs.drops or refs.borrowed:
                # Ref changes made before this message go out before it (program
                # order): a put after `del ref` finds the room already freed.
                refs.flush(self.enqueue)
            self.outbox.append(frames)
            self._pump_or_wake()

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

    def send_message(self, msg_type, *fields, frames=()):
        self.send(P.pack(msg_type, *fields) + list(frames))

    def enqueue(self, msg_type, *fields, frames=()):
        """Queue without trying to send: for code that already holds sock_lock."""
        self.outbox.append(P.pack(msg_type, *fields) + list(frames))

    def send_on(self, socket, frames, still_wanted=None, wait=True):
        """Send on a direct socket (see ``add_socket``), from any thread. A
        message that cannot leave yet (no completed connection) waits, unless
        ``still_wanted()`` says it is no longer wanted by then, or ``wait`` is
        False (then it is dropped). Messages on other sockets go past it."""
        with _Critical(self):
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

    # == Ctrl-C ===============================================================
    def _on_sigint(self, signum, frame):
        if self.main_critical:
            self.sigint_held = frame or True
        else:
            self._deliver_sigint(frame)

    def _deliver_sigint(self, frame):
        previous = self.previous_sigint
        if callable(previous):
            previous(signal.SIGINT, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def critical(self):
        """``with connection.critical():`` a section SIGINT must not split."""
        return _Critical(self)

    # == pumping ==============================================================
    def _pump(self, timeout_ms):
        """Flush, wait up to timeout_ms for input, dispatch it. Needs sock_lock."""
        if threading.get_ident() != self.main_ident:
            return self._pump_now(timeout_ms)
        with _Critical(self):
            self._pump_now(timeout_ms)

    def _pump_now(self, timeout_ms):
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
                with _Critical(self):   # SIGINT must not leave the lock taken
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

    def _check_node_alive(self):
        """Never wait forever on a node that is gone."""
        if self.node_lost:
            raise RaySystemError(self.node_lost)
        if self.node_alive is not None and not self.node_alive():
            raise RaySystemError(
                f"the zray node daemon at {self.node_address} has died, so this call can never "
                f"finish; its log is in {self.node_info.get('session_dir')}/logs/node.log")

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
                        os._exit(1)
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

    def _watch_connection(self, now):
        """I/O thread: note connection drops; past the grace, the node is lost."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_DISCONNECTED:
                self.disconnected_at = self.disconnected_at or now
            elif event == zmq.EVENT_CONNECTED:
                self.disconnected_at = None
        if self.disconnected_at is not None and now - self.disconnected_at >= NODE_LOST_GRACE_S:
            self.node_lost = (
                f"lost the connection to the zray node at {self.node_address} "
                f"{now - self.disconnected_at:.1f} s ago and it did not come back: the node "
                f"died (or its machine is unreachable), so this call can never finish. Its "
                f"log is in {self.node_info.get('session_dir')}/logs/node.log on that "
                f"machine; `zray status` shows the cluster")
            with self.cond:
                self.cond.notify_all()

    def _flush_outbox(self):
        outbox = self.outbox
        while outbox:
            send_frames(self.socket, outbox.popleft())
        side = self.side_outbox
        if not side:
            return
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

    # == requests =============================================================
    def _on_response(self, fields, frames):
        request_id, ok, value = fields
        if not ok and frames:
            try:    # from our node: the exception to raise in the caller
                value = pickle.loads(frames[0])
            except Exception:
                pass
        with self.cond:
            self.replies[request_id] = (ok, value)
            self.cond.notify_all()

    def request(self, op, *args, timeout_s=30.0):
        """Ask the node; its answer, or the exception it sent back."""
        request_id = next(self.request_ids)
        self.send_message(P.REQUEST, request_id, op, args)
        replies = self.replies
        if not self.wait_until(lambda: request_id in replies, time.monotonic() + timeout_s):
            raise RaySystemError(f"the node did not answer {op!r} within {timeout_s:.0f} s")
        with self.cond:
            ok, value = self.replies.pop(request_id)
        if not ok:
            if isinstance(value, BaseException):
                raise value
            raise RaySystemError(str(value))
        return value

    # == stop =================================================================
    def _restore_sigint(self):
        if self.previous_sigint is None:
            return
        try:
            if signal.getsignal(signal.SIGINT) == self._on_sigint:   # nobody replaced ours
                signal.signal(signal.SIGINT, self.previous_sigint)
        except ValueError:
            pass                    # not the main thread: it goes with the process
        self.previous_sigint = None

    def close(self):
        """Say BYE, stop the I/O thread, close the socket (idempotent)."""
        if self.closing:
            return
        try:
            self.send_message(P.BYE)
        except RaySystemError:
            pass                    # the node is gone: nobody to say goodbye to
        self.closing = True
        with self.api_lock:
            self.api_lock.notify_all()
        self._wake()
        if self.io_thread.is_alive():
            self.io_thread.join(timeout=2.0)
        with self.cond:
            self.cond.notify_all()
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(0)
        for side in list(self.side_sockets):
            side.close(linger=200)      # an actor's last replies still reach their callers
        self.side_sockets.clear()
        self._restore_sigint()
        # A short linger: a worker's last DONE must reach the node even as it exits.
        self.socket.close(linger=500)
        self.context.term()
        os.close(self.wake_r)
        os.close(self.wake_w)


class _Critical:
    """Holds SIGINT while the main thread is inside; delivers it on the way out."""
    __slots__ = ("connection", "main")

    def __init__(self, connection):
        self.connection = connection
        self.main = threading.get_ident() == connection.main_ident

    def __enter__(self):
        if self.main:
            self.connection.main_critical += 1

    def __exit__(self, *_exc):
        if self.main:
            connection = self.connection
            connection.main_critical -= 1
            if not connection.main_critical and connection.sigint_held is not None:
                frame, connection.sigint_held = connection.sigint_held, None
                connection._deliver_sigint(None if frame is True else frame)

"""One process's connection to its node: drivers and workers alike.

::

    API threads ──outbox + wake pipe──► I/O thread ──DEALER──► node ROUTER
    API threads ◄──Condition────────── I/O thread ◄──────────
                                        (objects, replies, tasks, logs)

- The I/O thread owns the socket; every other thread only appends to the
  outbox and waits on a Condition, so API calls are thread-safe.
- Objects arrive pushed (results of tasks this process submitted) or on
  request (SUBSCRIBE); they are kept while a local ``ObjectRef`` lives.
- Reference counts are per process: the node hears ADD_REF when a borrowed
  ref first appears here and REMOVE_REF when the last local one dies, in
  order with everything else this process sends.
- A driver watches its connection (ZeroMQ heartbeats and a socket monitor,
  read by the I/O thread): once the node has been unreachable for
  NODE_LOST_GRACE_S, waiting calls and new submissions raise instead of
  waiting forever. Nothing is added to the hot path but one flag test.
- A driver's Ctrl-C never lands halfway through moving a message between
  the socket and the tables (a result received but not recorded, a request
  dequeued but not sent): while the main thread is in such a section, SIGINT
  is held and delivered right after it (``_critical``).
"""
import itertools
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..exceptions import GetTimeoutError, RaySystemError, RayTaskError
from ..plasma import client as object_store
from ..serialization import deserialize, install_shipped_registrations, ship_registrations
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import OwnerWatch, send_frames

log = logging.getLogger("zray.runtime")

IO_TICK_MS = 100
RELEASE_DELAY_S = 0.02
RELEASE_BATCH = 512
API_GRACE_S = 0.005
EVENT_FLUSH_S = 0.5
ERROR_PRINT_DELAY_S = 0.5
# A driver's node is gone when its connection has been down this long (a
# killed process closes its sockets at once; a dead machine misses heartbeats).
NODE_LOST_GRACE_S = 2.0
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class Runtime:
    def __init__(self, node_address, kind, identity=None, password="", log_to_driver=True,
                 connect_timeout_s=10.0, watch_parent=False, worker_secret=None):
        self.kind = kind
        self.worker_secret = worker_secret   # workers: proof that their node started them
        self.pid = os.getpid()
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
        self.session_name = self.node_info["session_name"]
        self.plasma_dir = self.node_info["plasma_dir"]
        self.spill_dir = self.node_info.get("spill_dir")
        self.log_to_driver = log_to_driver
        self.password = password
        self.kv = None              # a KvClient, made by the API on first use

        self.outbox = deque()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.wake_pending = False
        self.cond = threading.Condition()
        self.objects = {}           # object_id -> (header, frames)
        self.mapped = weakref.WeakValueDictionary()   # object_id -> mmap, while values use it
        self.owned_pending = set()  # results of our tasks not yet pushed to us
        self.requested = set()      # ids we asked the node for
        self.replies = {}
        self.request_ids = itertools.count(1)
        self.ref_lock = threading.Lock()
        self.local_refs = {}        # object_id -> live ObjectRefs in this process
        self.borrowed = []          # ids to announce with ADD_REF
        self.drops = deque()        # ids of dead ObjectRefs, counted down by the I/O thread
        self.pending_release = set()  # ids to send in the next batched REMOVE_REF
        self.release_due = 0.0
        self.registered_functions = set()
        self.events = []
        self.pending_errors = {}    # object_id -> print deadline, for unretrieved errors
        self.raised_errors = set()  # errors ray.get already raised: never print those
        self.tasks = deque()        # workers: (fields, frames), or None to exit
        self.sock_lock = threading.Lock()
        self.api_lock = threading.Condition()
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
        self.io_thread.start()
        ship_registrations(self)    # custom serializers registered before init

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

    # == socket ownership ======================================================
    # Whoever holds sock_lock may touch the socket. A thread inside an API
    # call (get, wait, request, next_task) takes it and polls the socket
    # itself, so a synchronous call costs no thread hand-off; the I/O thread
    # only polls while no API call is active (plus a short grace period, so a
    # tight loop of calls keeps the socket to itself).
    def send(self, frames):
        if self.node_lost:
            raise RaySystemError(self.node_lost)
        with _Critical(self):
            if self.drops or self.borrowed:
                # Ref changes made before this message go out before it (program
                # order): a put after `del ref` finds the room already freed.
                self._flush_refs()
            self.outbox.append(frames)
            if self.sock_lock.acquire(blocking=False):
                try:
                    self._pump_now(0)
                finally:
                    self.sock_lock.release()
            else:
                self._wake()    # the holder flushes the outbox when its poll returns

    def send_message(self, msg_type, *fields, frames=()):
        self.send(P.pack(msg_type, *fields) + list(frames))

    def _enqueue(self, msg_type, *fields, frames=()):
        """Queue without trying to send: for code that already holds sock_lock."""
        self.outbox.append(P.pack(msg_type, *fields) + list(frames))

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

    def _critical(self):
        """``with self._critical():`` a section SIGINT must not split."""
        return _Critical(self)

    def _pump(self, timeout_ms):
        """Flush, wait up to timeout_ms for input, dispatch it. Needs sock_lock."""
        if threading.get_ident() != self.main_ident:
            return self._pump_now(timeout_ms)
        with _Critical(self):
            self._pump_now(timeout_ms)

    def _pump_now(self, timeout_ms):
        self._flush_refs()
        self._flush_outbox()
        if timeout_ms:
            self.poller.poll(timeout_ms)
        if self.wake_pending:
            self.wake_pending = False
            try:
                os.read(self.wake_r, 65536)
            except BlockingIOError:
                pass
        self._receive_all()
        self._flush_refs()
        self._flush_outbox()

    def wait_until(self, predicate, deadline=None):
        """Block until predicate() (checked under cond) holds; False on deadline."""
        with self.api_lock:
            self.api_active += 1
        if self.io_polling:
            self._wake()        # the I/O thread is in a long poll: make it let go
        try:
            while True:
                with self.cond:
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
                    with self.cond:
                        self.cond.notify_all()
                else:
                    if self.io_polling:
                        self._wake()
                    with self.cond:
                        if not predicate():
                            self.cond.wait(0.002)
        finally:
            with self.api_lock:
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

    def next_task(self):
        """Workers: the next (fields, frames) to run, or None to exit."""
        self.wait_until(lambda: self.tasks)
        return self.tasks.popleft()

    # == the I/O thread =======================================================
    def _io_loop(self):
        next_flush = time.monotonic() + EVENT_FLUSH_S
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
                    with self.cond:
                        self.cond.notify_all()
                now = time.monotonic()
                if now >= next_flush:
                    next_flush = now + EVENT_FLUSH_S
                    self._flush_events_now()
                    self._print_unretrieved_errors(now)
                    if self.watch is not None and self.watch.gone():
                        os._exit(1)
                if self.monitor is not None and not self.node_lost:
                    self._watch_connection(now)
            with self.sock_lock:
                self._flush_events_now_locked()
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

    def _receive_all(self):
        socket = self.socket
        # Asking EVENTS is cheaper than the zmq.Again exception of an empty recv.
        while socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = socket.recv_multipart()
            msg_type, fields = P.unpack(frames[0])
            handler = self._handlers.get(msg_type)
            if handler is not None:
                handler(self, fields, frames[1:])

    def _on_objects(self, fields, frames):
        (entries,) = fields
        offset = 0
        with self.cond:
            for header in entries:
                object_id, n = header[0], header[2]
                self.owned_pending.discard(object_id)
                self.requested.discard(object_id)
                if object_id in self.local_refs:
                    self.objects[object_id] = (header, frames[offset:offset + n])
                offset += n
            self.cond.notify_all()

    def _on_execute(self, fields, frames):
        self.tasks.append((fields, frames))

    def _on_exit(self, _fields, _frames):
        self.tasks.append(None)

    def _on_response(self, fields, _frames):
        request_id, ok, value = fields
        with self.cond:
            self.replies[request_id] = (ok, value)
            self.cond.notify_all()

    def _on_log(self, fields, _frames):
        pid, text = fields
        if not self.log_to_driver:
            return
        prefix = f"(pid={pid}) "
        sys.stdout.write("".join(prefix + line + "\n" for line in text.splitlines()))
        sys.stdout.flush()

    def _on_task_error(self, fields, _frames):
        name, message, return_ids = fields
        if not return_ids:
            print(f"zray warning: {message}", file=sys.stderr, flush=True)
            return
        # Printed a moment later unless ray.get has raised it by then.
        with self.cond:
            if return_ids[0] in self.raised_errors:
                return
            self.pending_errors[return_ids[0]] = (time.monotonic() + ERROR_PRINT_DELAY_S,
                                                  name, message)

    def _on_serializers(self, fields, _frames):
        install_shipped_registrations(fields[0])

    _handlers = {P.OBJECTS: _on_objects, P.EXECUTE: _on_execute, P.EXIT: _on_exit,
                 P.RESPONSE: _on_response, P.LOG: _on_log, P.TASK_ERROR: _on_task_error,
                 P.SERIALIZERS: _on_serializers}

    def _print_unretrieved_errors(self, now):
        with self.cond:
            due = [(oid, item) for oid, item in self.pending_errors.items() if item[0] <= now]
            for object_id, _ in due:
                del self.pending_errors[object_id]
        for _, (_, name, message) in due:
            print(f"zray: task {name} failed (not yet retrieved with ray.get):\n{message}",
                  file=sys.stderr, flush=True)

    # == reference counting ===================================================
    def add_local_ref(self, object_id, borrowed):
        with self.ref_lock:
            count = self.local_refs.get(object_id, 0)
            self.local_refs[object_id] = count + 1
            if borrowed and count == 0:
                if object_id in self.pending_release:
                    self.pending_release.discard(object_id)   # the node still counts us
                else:
                    self.borrowed.append(object_id)

    def drop_local_ref(self, object_id):
        self.drops.append(object_id)     # atomic; safe from __del__ in any thread

    def _flush_refs(self):
        with self.ref_lock:
            if self.borrowed:
                self._enqueue(P.ADD_REF, self.borrowed)
                self.borrowed = []
            if not self.drops:
                self._release_if_due()
                return
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
                urgent = False
                with self.cond:
                    for object_id in released:
                        entry = self.objects.pop(object_id, None)
                        self.mapped.pop(object_id, None)
                        if entry is not None and entry[0][1] != P.INLINE:
                            urgent = True
                if not self.pending_release:
                    self.release_due = time.monotonic() + RELEASE_DELAY_S
                self.pending_release.update(released)
                if urgent or len(self.pending_release) >= RELEASE_BATCH:
                    self.release_due = 0.0
            self._release_if_due()

    def _release_if_due(self, force=False):
        """Send REMOVE_REF in batches: one message per many dropped refs, except
        that big (shared-memory) objects are released at once. Needs ref_lock."""
        if self.pending_release and (force or time.monotonic() >= self.release_due):
            self._enqueue(P.REMOVE_REF, list(self.pending_release))
            self.pending_release = set()

    # == objects ==============================================================
    def put_serialized(self, object_id, data, is_error=False):
        """Store a serialized value as a new object held by this process."""
        header, frames = self.store_serialized(object_id, data, is_error)
        with self.cond:
            self.objects[object_id] = (header, frames)
        self.send_message(P.PUT, [header], frames=frames)

    def store_serialized(self, object_id, data, is_error=False):
        """Inline frames for small values, a shared-memory file for big ones."""
        if data.nbytes < INLINE_MAX_BYTES:
            frames = [data.meta] + [bytes(b) for b in data.buffers]
            return (object_id, P.INLINE, len(frames), None, data.contained, is_error), frames
        return object_store.write(self, object_id, data, is_error), []

    def expect_results(self, object_ids):
        with self.cond:
            self.owned_pending.update(object_ids)

    def wait_objects(self, object_ids, num_returns, timeout_s, in_task=False,
                     stop_on_error=False):
        """Block until ``num_returns`` of the ids are here (or, with
        ``stop_on_error``, one of them is an error); return the ready set."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        object_ids = list(dict.fromkeys(object_ids))
        with self.cond:
            ready = {i for i in object_ids if i in self.objects}
            if len(ready) >= num_returns or (
                    stop_on_error and any(self.objects[i][0][5] for i in ready)):
                return ready
        with self._critical():      # asked for means SUBSCRIBE sent: never one alone
            with self.cond:
                ask = [i for i in object_ids if i not in ready and i not in self.owned_pending
                       and i not in self.requested]
                self.requested.update(ask)
            if ask:
                self.send_message(P.SUBSCRIBE, ask)
        blocked = in_task
        if blocked:
            self.send_message(P.BLOCKED)
        objects = self.objects
        missing = [i for i in object_ids if i not in objects]
        needed = num_returns - (len(object_ids) - len(missing))

        def enough():
            # Drop arrivals from `missing` as we go: each check costs what is
            # still missing, not the whole list.
            nonlocal missing
            arrived = [i for i in missing if i in objects]
            if arrived:
                missing = [i for i in missing if i not in objects]
                # header[5] is is_error: ray.get raises as soon as one failed.
                if stop_on_error and any(objects[i][0][5] for i in arrived):
                    return True
            return len(object_ids) - len(missing) >= num_returns
        try:
            if needed > 0:
                self.wait_until(enough, deadline)
            with self.cond:
                return {i for i in object_ids if i in objects}
        finally:
            if blocked:
                self.send_message(P.UNBLOCKED)

    def get_values(self, object_ids, timeout_s=None, in_task=False):
        ready = self.wait_objects(object_ids, len(set(object_ids)), timeout_s, in_task,
                                  stop_on_error=True)
        if len(ready) < len(set(object_ids)):
            self._raise_first_error(object_ids, ready)
            missing = [i.hex() for i in object_ids if i not in ready]
            raise GetTimeoutError(f"ray.get timed out after {timeout_s} s; {len(missing)} of "
                                  f"{len(object_ids)} objects not ready (first: {missing[0]})")
        values = []
        for object_id in object_ids:
            with self.cond:
                entry = self.objects.get(object_id)
                self.pending_errors.pop(object_id, None)
            value = self._decode(object_id, entry)
            if isinstance(value, _Raise):
                with self.cond:
                    if len(self.raised_errors) > 10000:
                        self.raised_errors.clear()
                    self.raised_errors.add(object_id)
                raise value.error
            values.append(value)
        return values

    def _raise_first_error(self, object_ids, ready):
        """Raise the error of the first failed object among ``ready``, if any."""
        for object_id in object_ids:
            if object_id not in ready:
                continue
            with self.cond:
                entry = self.objects.get(object_id)
            if entry is not None and entry[0][5]:
                self.get_values([object_id])

    def _decode(self, object_id, entry):
        header, frames = entry
        if header[1] == P.INLINE:
            value = deserialize(frames[0], frames[1:])
            is_error = header[5]
        else:
            meta, buffers, is_error = object_store.read(self.mapped, object_id, header[3],
                                                        self.spill_dir)
            value = deserialize(meta, buffers)
        if is_error:
            if isinstance(value, RayTaskError):
                return _Raise(value.as_instanceof_cause())
            return _Raise(value)
        return value

    # == control plane ========================================================
    def request(self, op, *args, timeout_s=30.0):
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

    def register_function(self, function_id, name, blob):
        if function_id in self.registered_functions:
            return
        self.registered_functions.add(function_id)
        self.send_message(P.FUNCTION, function_id, name, blob, list(sys.path))

    def record_event(self, event):
        self.events.append(event)

    def take_events(self):
        events, self.events = self.events, []
        return events

    def _flush_events_now(self):
        events = self.take_events()
        if events:
            self.send_message(P.EVENTS, events)

    def _flush_events_now_locked(self):
        events = self.take_events()
        if events:
            self._enqueue(P.EVENTS, events)

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
        self.io_thread.join(timeout=2.0)
        if self.kv is not None:
            self.kv.close()
        with self.cond:
            self.cond.notify_all()
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(0)
        self._restore_sigint()
        # A short linger: a worker's last DONE must reach the node even as it exits.
        self.socket.close(linger=500)
        self.context.term()
        os.close(self.wake_r)
        os.close(self.wake_w)


class _Critical:
    """Holds SIGINT while the main thread is inside; delivers it on the way out."""
    __slots__ = ("runtime", "main")

    def __init__(self, runtime):
        self.runtime = runtime
        self.main = threading.get_ident() == runtime.main_ident

    def __enter__(self):
        if self.main:
            self.runtime.main_critical += 1

    def __exit__(self, *_exc):
        if self.main:
            runtime = self.runtime
            runtime.main_critical -= 1
            if not runtime.main_critical and runtime.sigint_held is not None:
                frame, runtime.sigint_held = runtime.sigint_held, None
                runtime._deliver_sigint(None if frame is True else frame)


class _Raise:
    """A decoded error value: get_values raises it."""
    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


INLINE_MAX_BYTES = 100 * 1024

"""One process's socket to its node, and the threads that share it.

::

    API threads ──outbox + wake pipe──► I/O thread ──DEALER──► node ROUTER
    API threads ◄──Condition────────── I/O thread ◄──────────
                                        (objects, replies, tasks, logs)

``Connection`` is the socket, the handshake, sending, requests and closing;
its other jobs each have a module, mixed in:

- ``socket_turns.py``: whose turn it is to touch the socket (the calling
  thread during an API call, the I/O thread otherwise); pumping, waiting.
- ``side_sockets.py``: direct sockets to actors and leased workers, polled
  with the node's.
- ``node_watch.py``: a driver notices its node is gone and raises instead
  of waiting forever.
- ``ctrl_c.py``: a driver's Ctrl-C never lands halfway through moving a
  message between the socket and the tables.

Messages in are dispatched by type to ``handlers`` (set by the owner, the
``Runtime``); nothing here knows what an object or a task is.
"""
import itertools
import os
import pickle
import sys
import threading
import time

import zmq

from ..exceptions import RaySystemError
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import OwnerWatch
from .ctrl_c import Critical, CtrlC
from .node_watch import NodeWatch
from .side_sockets import SideSockets
from .socket_turns import SocketTurns


class Connection(SocketTurns, SideSockets, NodeWatch, CtrlC):
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
        self._init_node_watch(kind)
        try:    # over tcp a wrong token fails here, in seconds, not in a silent wait
            auth.connect(self.socket, node_address, password,
                         check_s=min(connect_timeout_s, auth.HANDSHAKE_TIMEOUT_S),
                         monitor=self.monitor)
        except BaseException:
            self._close_monitor()
            self.socket.close(0)
            self.context.term()
            raise
        self.node_address = node_address
        self.node_info = self._handshake(password, connect_timeout_s)

        self.handlers = {P.RESPONSE: self._on_response}   # msg_type -> fn(fields, frames)
        self._init_side_sockets()
        self._init_socket_turns()
        self.replies = {}
        self.request_ids = itertools.count(1)
        self.watch = OwnerWatch(os.getppid()) if watch_parent else None
        self._init_ctrl_c(kind)
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
        with Critical(self):
            refs = self.refs
            if refs.drops or refs.borrowed:
                # Ref changes made before this message go out before it (program
                # order): a put after `del ref` finds the room already freed.
                refs.flush(self.enqueue)
            self.outbox.append(frames)
            self._pump_or_wake()

    def send_message(self, msg_type, *fields, frames=()):
        self.send(P.pack(msg_type, *fields) + list(frames))

    def enqueue(self, msg_type, *fields, frames=()):
        """Queue without trying to send: for code that already holds sock_lock."""
        self.outbox.append(P.pack(msg_type, *fields) + list(frames))

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
        self._close_monitor()
        self._close_side_sockets()
        self._restore_sigint()
        # A short linger: a worker's last DONE must reach the node even as it exits.
        self.socket.close(linger=500)
        self.context.term()
        os.close(self.wake_r)
        os.close(self.wake_w)

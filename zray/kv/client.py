"""Client of the kv service: blocking calls for the control plane.

Not for the hot path: a call is one round trip. ``tell`` sends without
waiting (its reply is dropped when the next call reads), for batched writes
such as timeline events.
"""
import itertools
import threading

import zmq

from ..exceptions import RaySystemError
from ..transport import auth
from ..transport import protocol as P
from ..transport.wire_types import decode


class KvClient:
    def __init__(self, address, password="", context=None):
        self.address = address
        self.password = password
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:    # a wrong token is an error now, not a call that never returns
            auth.connect(self.socket, address, password, check_s=auth.HANDSHAKE_TIMEOUT_S)
        except BaseException:
            self.socket.close(0)
            raise
        self.lock = threading.Lock()
        self.ids = itertools.count(1)

    def call(self, op, *args, timeout_s=10.0):
        with self.lock:
            request_id = next(self.ids)
            self.socket.send_multipart(P.pack(P.KV_REQUEST, request_id, op, args, self.password))
            while True:
                if not self.socket.poll(int(timeout_s * 1000)):
                    raise RaySystemError(
                        f"the kv service at {self.address} did not answer {op!r} within "
                        f"{timeout_s:.0f} s; is the cluster still running? (`zray status`)")
                _, (reply_id, ok, value) = P.unpack(self.socket.recv_multipart()[0])
                if reply_id != request_id:
                    continue        # the reply to an earlier `tell`
                if not ok:
                    raise RaySystemError(f"kv {op} failed: {value}")
                return value

    def tell(self, op, *args):
        with self.lock:
            # Replies to earlier tells are not wanted: drop them so they do
            # not pile up in a client that never calls.
            while self.socket.poll(0):
                self.socket.recv_multipart()
            try:
                # Never block the caller (a node's loop) on a kv service that
                # is gone: past the high-water mark, a tell is dropped.
                self.socket.send_multipart(P.pack(P.KV_REQUEST, 0, op, args, self.password),
                                           zmq.NOBLOCK)
            except zmq.Again:
                pass

    def get(self, key, default=None):
        return self.call("get", key, default)

    def put(self, key, value):
        return self.call("put", key, value)

    def delete(self, key):
        return self.call("delete", key)

    def scan(self, prefix):
        return self.call("scan", prefix)

    def close(self):
        with self.lock:
            self.socket.close(0)


def subscribe(pub_address, prefixes, token, context=None):
    """A SUB socket on the kv change feed, filtered by key prefixes."""
    context = context or zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    for prefix in prefixes:
        sub.setsockopt(zmq.SUBSCRIBE, prefix.encode())
    auth.connect(sub, pub_address, token)
    return sub


def read_change(sub):
    key, sequence, value = sub.recv_multipart()
    return key.decode(), int(sequence), decode(value)

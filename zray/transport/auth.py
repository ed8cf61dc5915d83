"""Who may talk to a zray cluster: one secret, the cluster token.

::

    driver / node / tool                               kv service, node daemon
    DEALER, SUB ── CURVE client key(token) ──tcp──► ROUTER, PUB: CURVE server key(token)
                                                     ZAP: only the client key(token) passes

- Every TCP socket a daemon binds is a CURVE server; the server and client
  key pairs are derived from the token, so whoever holds the token holds
  both and nobody else completes a handshake: no byte of an outsider reaches
  a decoder, and all traffic is encrypted.
- The ZAP handler (a thread of ``zmq.auth``, idle between handshakes)
  accepts only the client key derived from the token.
- ipc sockets carry no CURVE (it would cost the hot path): they live in the
  session directory, under a temp root only this user can enter
  (``temp_root.check_temp_root``).
- A client that holds a wrong token never completes the handshake; zmq
  would retry forever, so ``connect`` watches the handshake and raises a
  clear error within a few seconds instead.
"""
import hashlib
import hmac
import secrets
import time

import zmq
from zmq.utils import z85

from .sockets import MAX_FRAME_BYTES, bound_receiving

TOKEN_ENV = "ZRAY_CLUSTER_TOKEN"      # how daemons and workers get it: never argv
WORKER_SECRET_ENV = "ZRAY_WORKER_SECRET"   # a worker's proof that its node started it
HANDSHAKE_TIMEOUT_S = 4.0


def new_token():
    return secrets.token_urlsafe(24)


def _key_pair(token, label):
    seed = hmac.new(token.encode(), b"zray curve " + label, hashlib.sha256).digest()
    secret = z85.encode(seed)
    return zmq.curve_public(secret), secret


def is_tcp(address):
    return isinstance(address, str) and address.startswith("tcp://")


def serve_securely(socket, token):
    """Make ``socket`` (before bind) a CURVE server for the cluster ``token``,
    bounded in what a peer can make it hold."""
    if not token:
        raise ValueError("a zray daemon never listens on tcp without a cluster token")
    public, secret = _key_pair(token, b"server")
    socket.curve_server = True
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    if socket.type != zmq.PUB:
        bound_receiving(socket)
    else:
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)


class _OnlyTheCluster:
    def __init__(self, token):
        self.client_key = _key_pair(token, b"client")[0]

    def callback(self, _domain, key):
        return hmac.compare_digest(key, self.client_key)


def start_gatekeeper(context, token):
    """The ZAP handler of this process: accepts the token's client key only.
    Returns it; ``stop()`` it when the sockets are closed."""
    from zmq.auth.thread import ThreadAuthenticator
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve_callback("*", credentials_provider=_OnlyTheCluster(token))
    return authenticator


class NeedsToken(ConnectionRefusedError):
    """The cluster was reached (or would be) but the token is missing or wrong."""


def missing_token_error(address):
    return NeedsToken(
        f"the zray cluster at {address} needs its token: pass redis_password=... to "
        f"ray.init (--redis-password=... on the command line) with the token `zray start "
        f"--head` printed, or run on the head machine with address='auto'")


def wrong_token_error(address):
    return NeedsToken(
        f"the zray cluster at {address} refused this connection: wrong password (cluster "
        f"token). Pass the token `zray start --head` printed as redis_password=... "
        f"(--redis-password=...), or run on the head machine with address='auto'")


HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def connect(socket, address, token, check_s=None, monitor=None):
    """Connect ``socket``; over tcp as a CURVE client of ``token``. With
    ``check_s``, wait that long for the handshake and raise a clear error
    when it fails (wrong token) or nothing answers. A socket has one monitor:
    pass it if the caller keeps one (it must report HANDSHAKE_EVENTS)."""
    if not is_tcp(address):
        socket.connect(address)
        return
    if not token:
        raise missing_token_error(address.split("://", 1)[1])
    server_public, _ = _key_pair(token, b"server")
    public, secret = _key_pair(token, b"client")
    socket.curve_serverkey = server_public
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    if check_s is None:
        socket.connect(address)
        return
    if monitor is not None:
        socket.connect(address)
        _wait_handshake(monitor, address.split("://", 1)[1], check_s)
        return
    monitor = socket.get_monitor_socket(zmq.EVENT_CONNECTED | HANDSHAKE_EVENTS)
    try:
        socket.connect(address)
        _wait_handshake(monitor, address.split("://", 1)[1], check_s)
    finally:
        socket.disable_monitor()
        monitor.close(0)


def _wait_handshake(monitor, where, timeout_s):
    from zmq.utils.monitor import recv_monitor_message
    deadline = time.monotonic() + timeout_s
    connected = False
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0 or not monitor.poll(left_ms):
            break
        event = recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return
        if event == zmq.EVENT_CONNECTED:
            connected = True
        elif event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_AUTH):
            raise wrong_token_error(where)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            raise ConnectionError(f"what listens at {where} does not speak zray's secured "
                                  f"protocol: is it a zray cluster of this version?")
    if connected:
        raise ConnectionError(f"{where} accepted a connection but completed no handshake "
                              f"within {timeout_s:.0f} s: is it a zray cluster?")
    raise ConnectionError(f"nothing answered at {where} within {timeout_s:.0f} s: is the "
                          f"cluster running there? (`zray status`)")

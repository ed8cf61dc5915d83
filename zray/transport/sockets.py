"""Small helpers every zray process shares: start-up handshake, owner
watching and password checks.

Children say READY on stdout (one JSON line) and the parent waits for it with
a deadline: a child that dies or hangs during start-up is reported with its
log, never waited on forever.
"""
import hmac
import json
import os
import select
import sys
import time

import zmq

READY_PREFIX = "ZRAY_READY "
ZERO_COPY_MIN_BYTES = 64 * 1024

# What a listening socket (ipc or tcp ROUTER) holds for each peer. A frame
# bigger than MAX_FRAME_BYTES closes that peer's connection: zray's own
# frames are at most a 4 MiB transfer chunk, ~100 KiB of inline object or
# arguments, or a function blob (checked against this bound where it is
# made). At RCVHWM queued messages zmq stops reading that peer's connection
# (back-pressure: inbound messages are never dropped) until the loop drains
# some; zray's DEALERs have no send limit, so a burst (5,000 submits) waits
# in the sender's own memory, not in the daemon's. Outbound, a ROUTER at its
# SNDHWM would drop messages: daemons keep SNDHWM 0 (unbounded).
MAX_FRAME_BYTES = 256 << 20
MAX_QUEUED = 10_000
# A remote client whose connection carries nothing, not even its ZeroMQ
# heartbeats, this long is cut off by its node (the TTL its pings carry): as
# long as a pause that is not death (peers.NODE_TTL_S).
REMOTE_SILENCE_S = float(os.environ.get("ZRAY_NODE_TTL_S", 10.0))


def bound_receiving(socket):
    """Bound what a listening socket holds per peer (before bind)."""
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    socket.setsockopt(zmq.RCVHWM, MAX_QUEUED)


_SNDMORE = int(zmq.SNDMORE)     # plain ints: an enum's ``|`` is a Python call
NOBLOCK = int(zmq.NOBLOCK)
# Plain ints: `int & zmq.POLLIN` would build an enum member on every test.
EVENTS, POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def polled_messages(socket):
    """Each message waiting at ``socket`` (a poll just said one is), as its
    frames. The first is read without asking EVENTS (each ask is two system
    calls in libzmq): one ask per message instead of two when they come one
    at a time. Asking EVENTS is cheaper than the zmq.Again of an empty recv."""
    try:
        frames = receive_frames(socket, NOBLOCK)
    except zmq.Again:
        return
    yield frames
    while socket.getsockopt(EVENTS) & POLLIN:
        yield receive_frames(socket)


def receive_frames(socket, flags=0):
    """``recv_multipart``, the frames as bytes, without its RCVMORE asks:
    each getsockopt builds a SocketOption enum (two Python calls per frame);
    a Frame's ``more`` is a plain attribute."""
    frame = socket.recv(flags, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = socket.recv(flags, copy=False)
        frames.append(frame.bytes)
    return frames


def send_frames(socket, frames, flags=0):
    """Send a multipart message, zero-copy only for big frames: for small ones
    pyzmq's copy is cheaper than tracking a borrowed buffer. With NOBLOCK,
    zmq.Again means nothing left (only a message's first frame can block)."""
    last = len(frames) - 1
    more = flags | _SNDMORE
    for index, frame in enumerate(frames):
        size = len(frame) if type(frame) is bytes else memoryview(frame).nbytes
        socket.send(frame, more if index < last else flags, copy=size < ZERO_COPY_MIN_BYTES)


class RateLimitedLog:
    """Warnings about bad input, at most one per kind every ``interval_s``
    (with a count of those not shown): a flood of junk must not fill the disk."""

    def __init__(self, logger, interval_s=10.0):
        self.logger = logger
        self.interval_s = interval_s
        self.last = {}          # kind -> (time shown, suppressed since)

    def warn(self, kind, message, *args):
        now = time.monotonic()
        shown, suppressed = self.last.get(kind, (None, 0))
        if shown is not None and now - shown < self.interval_s:
            self.last[kind] = (shown, suppressed + 1)
            return
        if suppressed:
            message += f" (and {suppressed} more like it since)"
        self.logger.warning(message, *args)
        self.last[kind] = (now, 0)


def authorize(expected, given):
    return hmac.compare_digest((expected or "").encode(), (given or "").encode())


def announce_ready(info):
    """Tell the parent we are up, then send stdout to the log (stderr)."""
    sys.stdout.write(READY_PREFIX + json.dumps(info) + "\n")
    sys.stdout.flush()
    os.dup2(2, 1)


def wait_ready(process, timeout_s, what, log_path=None):
    """Read the child's READY line; raise RuntimeError with its log if not."""
    deadline = time.monotonic() + timeout_s
    buffered = b""
    fd = process.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffered += chunk
        for line in buffered.decode(errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                process.stdout.close()
                return json.loads(line[len(READY_PREFIX):])
    process.stdout.close()
    code = process.poll()
    tail = _tail(log_path)
    state = f"exited with code {code}" if code is not None else f"did not start within {timeout_s:.0f} s"
    raise RuntimeError(f"zray {what} {state}.\n{tail}")


def _tail(path, lines=30):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        text = f.readlines()[-lines:]
    return f"Last lines of {path}:\n" + "".join(text)


class OwnerWatch:
    """Notice, cheaply, that the process we serve has gone away."""

    def __init__(self, pid, interval_s=0.5):
        self.pid = pid
        self.parent_at_start = os.getppid()
        self.owner_is_parent = pid == self.parent_at_start
        self.interval_s = interval_s
        self.next_check = 0.0

    def gone(self):
        if not self.pid:
            return False
        now = time.monotonic()
        if now < self.next_check:
            return False
        self.next_check = now + self.interval_s
        return self.gone_now()

    def gone_now(self):
        """``gone()`` without its rate limit (a daemon about to stop asks once)."""
        if not self.pid:
            return False
        if self.owner_is_parent and os.getppid() != self.parent_at_start:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:
            import psutil
            return psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE
        except Exception:
            return True


def unlink_ipc(address):
    """Remove the file of an ipc address we bound: libzmq leaves it at close."""
    if address and address.startswith("ipc://"):
        try:
            os.unlink(address[len("ipc://"):])
        except OSError:
            pass

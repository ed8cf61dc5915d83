"""A process's objects when it does not share its node's shared memory.

A driver on another machine (connected over tcp) cannot map the node's
files or arena, nor write them. Whether it shares them is found once at
connect (``shares_node_memory``: a file it makes in the node's plasma
directory, and the node is asked whether it sees it). If not, large objects
go by value over the connection, in chunks:

- read: PULL ``(id, offset, length)`` with at most ``WINDOW`` outstanding,
  answered by CHUNK frames (served by ``transfer.Transfers.on_pull``, as
  for another node; lz4 where it pays), copied into an anonymous mapping
  that values then view read-only;
- write: reserve, WRITE ``(id, offset)`` + bytes for the node to write into
  the block it reserved (``uploads.py``), ``uploaded`` every
  ``WRITE_WINDOW`` chunks (so at most that much is queued) and at the end,
  then the PUT names the block as usual.
"""
import mmap
import os

import lz4.block

from ..exceptions import ObjectLostError, ObjectStoreFullError
from ..transport import protocol as P
from . import shm
from .transfer import CHUNK_BYTES, WINDOW

WRITE_CHUNK_BYTES = 8 << 20
WRITE_WINDOW = 8             # chunks sent before waiting for the node to take them


def shares_node_memory(connection, node_info):
    """True if this process sees the node's plasma directory as the node does."""
    if connection.node_address.startswith("ipc://"):
        return True                  # a unix socket: the same machine
    name = f"zray-{node_info['session_name']}-probe-{os.urandom(8).hex()}"
    path = os.path.join(node_info["plasma_dir"], name)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return False                 # no such directory here, or not ours to write
    try:
        return connection.request("probe_memory", name) is True
    finally:
        shm.unlink_quietly(path)


class _Pull:
    __slots__ = ("mapping", "size", "next_offset", "received", "error")

    def __init__(self, size):
        self.mapping = mmap.mmap(-1, max(size, 1))
        self.size = size
        self.next_offset = 0
        self.received = 0
        self.error = None


class ByValue:
    def __init__(self, connection, compress):
        self.connection = connection
        self.compress = compress     # ask for lz4 (another machine: the wire is slower)
        self.pulls = {}              # object_id -> _Pull in progress

    # == read =================================================================
    def read(self, object_id, size):
        """The object's bytes (a read-only, weak-referenceable buffer)."""
        connection = self.connection
        with connection.cond:
            pull = self.pulls.get(object_id)
            first = pull is None
            if first:
                pull = self.pulls[object_id] = _Pull(size)
        if first:
            for _ in range(WINDOW):
                self._ask_next(object_id, pull, connection.send_message)
        connection.wait_until(lambda: pull.error is not None or pull.received >= pull.size)
        with connection.cond:
            if self.pulls.get(object_id) is pull:
                del self.pulls[object_id]
        if pull.error is not None:
            raise ObjectLostError(f"object {object_id.hex()} could not be read from its node: "
                                  f"{pull.error}")
        return _read_only(pull.mapping)

    def _ask_next(self, object_id, pull, send):
        with self.connection.cond:
            if pull.next_offset >= pull.size or pull.error is not None:
                return
            offset = pull.next_offset
            length = min(CHUNK_BYTES, pull.size - offset)
            pull.next_offset += length
        send(P.PULL, object_id, offset, length, self.compress)

    def on_chunk(self, fields, frames):
        """CHUNK from the node (the I/O path, holding the socket)."""
        object_id, offset, length, compressed, error = fields
        pull = self.pulls.get(object_id)
        if pull is None:
            return
        if error is None:
            try:
                data = frames[0]
                if compressed:
                    data = lz4.block.decompress(data, uncompressed_size=length)
                if len(data) != length or offset + length > pull.size:
                    raise ValueError(f"a chunk of {len(data)} bytes for {length} at {offset}")
                pull.mapping[offset:offset + length] = data
            except Exception as exc:            # a bad chunk fails this read, not the thread
                error = f"{type(exc).__name__}: {exc}"
        with self.connection.cond:
            if error is not None:
                pull.error = error
            else:
                pull.received += length
            self.connection.cond.notify_all()
        self._ask_next(object_id, pull, self.connection.enqueue)

    # == write ================================================================
    def write(self, runtime, object_id, data, is_error):
        """Send a large object for the node to store; its header for PUT."""
        parts, size = shm.parts(data.meta, data.buffers, is_error)
        runtime.request("reserve", object_id, size, True)    # raises ObjectStoreFullError
        try:
            sent = 0
            for offset, part in parts:
                view = memoryview(part).cast("B")
                for start in range(0, view.nbytes, WRITE_CHUNK_BYTES):
                    runtime.send_message(P.WRITE, object_id, offset + start,
                                         frames=[view[start:start + WRITE_CHUNK_BYTES]])
                    sent += 1
                    if sent % WRITE_WINDOW == 0:
                        runtime.request("uploaded", object_id, False)
            location = runtime.request("uploaded", object_id, True)
        except ObjectStoreFullError:
            runtime.send_message(P.REQUEST, 0, "unreserve", (object_id,))
            raise
        return (object_id, P.SHM, 0, tuple(location), data.contained, is_error)


def _read_only(mapping):
    try:
        import numpy
    except ImportError:
        return mapping               # writable, but nobody else sees it
    view = numpy.frombuffer(mapping, dtype=numpy.uint8)
    view.flags.writeable = False
    return view

"""Moving objects between nodes: chunked pulls over the peers' sockets.

::

    puller (needs X)                                            holder of X
      ADD_REF [X], SUBSCRIBE [X] ─────────────────────────────► (holds X for us)
      ◄──────────────────────────── OBJECTS: X inline, or X's shm header (size)
      PULL (X, offset, length)  × WINDOW ─────────────────────► mmap X's file
      ◄──────────────────────────── CHUNK (X, offset, ...) + bytes (lz4 or raw)
      ... file whole: seal X in the local table, REMOVE_REF [X] ─►

- Both ends are node daemons; the sockets are the puller's DEALER to the
  holder's ROUTER (``sched/peers.py`` owns them). This module only moves
  bytes and keeps the bookkeeping of transfers in flight (open files,
  byte ranges). What changes the node's object table reaches it as events
  through ``node.handle`` (reserve, sealed, lost); replies to a puller go
  through ``node.send``, in order with everything else sent to it.
- The puller asks for CHUNK_BYTES at a time with at most WINDOW requests
  outstanding: the holder's loop never stalls on one big object, and the two
  sides overlap reading, sending and writing.
- lz4 where it pays: between machines, the puller asks for compression and
  the holder compresses the first chunk of an object, keeping on only if it
  shrank below COMPRESS_RATIO (zeros, text, sparse arrays); incompressible
  data goes raw after one trial. Between nodes of one machine the "wire" is
  a memory copy that lz4 cannot beat, so it is not asked for there.
  ``ZRAY_TRANSFER_LZ4=on|off`` (in the pulling node's environment) overrides.
- An object file is copied byte for byte into the puller's own
  shared-memory file, so local readers map it like any other object.
- An object in the holder's arena is pinned while it is served (its block
  is not reused, even if the object is spilled meanwhile) and for
  UNPIN_DELAY_S after its last chunk, while zmq may still send from it.
- A pull of an object we already hold there (a result of a task we
  forwarded, kept where it was made: ``sched/state/locations.py``) takes no
  ref and drops none: our hold outlives the copy, until the state lets go.
"""
import logging
import mmap
import os
import time

import lz4.block

from ..sched.state import events as E
from ..transport import protocol as P
from . import shm
from .store import ON_DISK

log = logging.getLogger("zray.transfer")

CHUNK_BYTES = 4 << 20
WINDOW = 4
COMPRESS_RATIO = 0.5
SERVE_IDLE_S = 30.0
UNPIN_DELAY_S = 5.0
PIN_OWNER = b"transfer"       # who pins arena objects being served to other nodes


class _Pull:
    __slots__ = ("peer", "header", "path", "fd", "size", "next_offset", "received")

    def __init__(self, peer, header, path, fd):
        self.peer = peer
        self.header = header          # the holder's header: size, contained ids, is_error
        self.path = path              # our file
        self.fd = fd
        self.size = header[3][1]
        self.next_offset = 0          # next byte range to ask for
        self.received = 0


class _Served:
    __slots__ = ("mapping", "size", "compress", "last_used", "pinned")

    def __init__(self, mapping, size, pinned):
        self.mapping = mapping
        self.size = size
        self.compress = None          # undecided until the first chunk
        self.last_used = time.monotonic()
        self.pinned = pinned          # an arena block: unpin when done


class Transfers:
    def __init__(self, node):
        self.node = node
        self.pulls = {}               # object_id -> _Pull (bytes on the way)
        self.requested = {}           # object_id -> peer (asked for, header not here yet)
        self.served = {}              # object_id -> _Served (files we are sending)
        self.unpin_due = {}           # object_id -> when to unpin its arena block
        self.held = set()             # pulled under a hold we keep (no ADD_REF/REMOVE_REF)
        self.locating = set()         # asked for where it is and a hold, not its bytes
        mode = os.environ.get("ZRAY_TRANSFER_LZ4", "auto").lower()
        self.compression = mode if mode in ("auto", "on", "off") else "auto"
        self.stats = {"pulled_objects": 0, "pulled_bytes": 0, "sent_bytes": 0,
                      "sent_wire_bytes": 0}

    # == puller ===============================================================
    def want(self, object_ids, peer, held=False, locate=False):
        """Ask ``peer`` for these objects (once each); they arrive as OBJECTS.
        ``held``: we hold them there already. ``locate``: take a hold there
        and learn where they are; the bytes stay (small ones come inline)."""
        ask = [oid for oid in object_ids if oid not in self.requested and oid not in self.pulls]
        if not ask:
            return
        for object_id in ask:
            self.requested[object_id] = peer
        if locate:
            self.locating.update(ask)
        if held:
            self.held.update(ask)
        else:
            # The hold first, in order on the same socket: the holder cannot
            # free the object between answering and our first PULL.
            peer.send(P.ADD_REF, ask)
        peer.send(P.SUBSCRIBE, ask)

    def let_go(self, peer, object_ids):
        """Drop the refs a pull took on ``peer`` (none for held ones)."""
        release = [oid for oid in object_ids if oid not in self.held]
        self.held.difference_update(object_ids)
        if release:
            peer.send(P.REMOVE_REF, release)

    def forget(self, object_ids):
        """The state let go of its holds on these: no pull of them is wanted."""
        for object_id in object_ids:
            if object_id in self.held:
                self.held.discard(object_id)
                self.requested.pop(object_id, None)
            self.locating.discard(object_id)

    def start(self, peer, header):
        """Begin copying the shm object ``header`` describes; False if already copying."""
        object_id = header[0]
        self.requested.pop(object_id, None)
        if object_id in self.pulls:
            return False
        size = header[3][1]
        path = os.path.join(self.node.config["plasma_dir"],
                            shm.object_file_name(self.node.session_name, object_id))
        try:
            # Makes room by spilling, or says to write to disk, or raises.
            if self.node.reserve(None, object_id, size) == ON_DISK:
                path = os.path.join(self.node.objects.spill_dir, os.path.basename(path))
            try:
                os.unlink(path)              # a copy a dead transfer left behind
            except FileNotFoundError:
                pass
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, size)
            except OSError:
                os.close(fd)
                raise
        except Exception as exc:
            self._release_reservation(object_id)
            self._give_up(peer, object_id, f"it could not be copied to this node: {exc}")
            return True
        pull = self.pulls[object_id] = _Pull(peer, header, path, fd)
        for _ in range(WINDOW):
            self._request_next(pull)
        return True

    def _request_next(self, pull):
        if pull.next_offset >= pull.size:
            return
        length = min(CHUNK_BYTES, pull.size - pull.next_offset)
        pull.peer.send(P.PULL, pull.header[0], pull.next_offset, length, self._lz4_for(pull.peer))
        pull.next_offset += length

    def _lz4_for(self, peer):
        if self.compression == "auto":
            return peer.info.get("hostname") != os.uname().nodename
        return self.compression == "on"

    def on_chunk(self, peer, fields, frames):
        object_id, offset, length, compressed, error = fields
        pull = self.pulls.get(object_id)
        if pull is None or pull.peer is not peer:
            return                    # cancelled meanwhile
        if error:
            self._cancel(pull)
            self._give_up(peer, object_id, f"its holder could not send it: {error}")
            return
        data = frames[0].buffer if hasattr(frames[0], "buffer") else frames[0]
        try:
            if compressed:
                data = lz4.block.decompress(data, uncompressed_size=length)
            _pwrite_all(pull.fd, data, offset)
        except Exception as exc:
            self._cancel(pull)
            self._give_up(peer, object_id, f"writing its copy failed: {exc}")
            return
        pull.received += length
        self._request_next(pull)
        if pull.received >= pull.size:
            self._finish(pull)

    def _finish(self, pull):
        object_id = pull.header[0]
        del self.pulls[object_id]
        os.close(pull.fd)
        self.stats["pulled_objects"] += 1
        self.stats["pulled_bytes"] += pull.size
        header = (object_id, P.SHM, 0, (pull.path, pull.size), pull.header[4], pull.header[5])
        self.node.handle(E.ObjectsSealed([header], []))   # wakes waiters, pushes to owners
        self.let_go(pull.peer, [object_id])
        self.node.handle(E.PeerObjectArrived(object_id))

    def _cancel(self, pull):
        self.pulls.pop(pull.header[0], None)
        try:
            os.close(pull.fd)
        except OSError:
            pass
        _unlink(pull.path)
        self._release_reservation(pull.header[0])

    def _release_reservation(self, object_id):
        self.node.handle(E.ReservationReleased(object_id))

    def _give_up(self, peer, object_id, why):
        self._lose(object_id, why)
        self.let_go(peer, [object_id])
        self.node.handle(E.PeerObjectArrived(object_id))

    def _lose(self, object_id, why):
        """An ObjectLostError in place of an object that cannot come."""
        self.node.handle(E.ObjectLost(object_id, why))

    def peer_gone(self, node_id, expected_again=()):
        """Node ``node_id`` left: drop its transfers; what will not be remade is lost."""
        for object_id, pull in list(self.pulls.items()):
            if pull.peer.node_id == node_id:
                self._cancel(pull)
                self.held.discard(object_id)
                if object_id not in expected_again:
                    self._lose(object_id, f"node {node_id} left the cluster mid-transfer")
        for object_id, holder in list(self.requested.items()):
            if holder.node_id == node_id:
                del self.requested[object_id]
                self.held.discard(object_id)
                self.locating.discard(object_id)
                if object_id not in expected_again:
                    self._lose(object_id, f"node {node_id} that held it left the cluster")

    # == holder ===============================================================
    def on_pull(self, identity, fields):
        object_id, offset, length, lz4_wanted = fields
        served = self.served.get(object_id)
        if served is None:
            served, error = self._open(object_id)
            if served is None:
                self._reply(identity, object_id, offset, length, False, error, b"")
                return
        served.last_used = time.monotonic()
        view = memoryview(served.mapping)[offset:offset + length]
        data, compressed = view, False
        if lz4_wanted and served.compress is None:
            packed = lz4.block.compress(view, store_size=False)
            served.compress = len(packed) < COMPRESS_RATIO * length
            if served.compress:
                data, compressed = packed, True
        if lz4_wanted and served.compress and not compressed:
            packed = lz4.block.compress(view, store_size=False)
            if len(packed) < length:
                data, compressed = packed, True
        self.stats["sent_bytes"] += length
        self.stats["sent_wire_bytes"] += len(data)
        self._reply(identity, object_id, offset, length, compressed, None, data)
        if offset + length >= served.size:
            # The puller asks in order: this was its last chunk. The mapping
            # itself goes when zmq lets go of the views on it.
            self._done_serving(object_id)

    def _open(self, object_id):
        entry = self.node.objects.get(object_id)
        if entry is None or not self.node.objects.is_ready(object_id) or entry.kind != P.SHM:
            return None, "the object is no longer in this node's store"
        path, size = entry.location[:2]
        pinned = len(entry.location) == 3
        if pinned:
            location = entry.location
            if self.unpin_due.pop(object_id, None) is None:     # else: still pinned
                location = self.node.pin(PIN_OWNER, object_id)
        try:
            if pinned:
                mapping = shm.map_block(path, location[2], size)
            else:
                fd = os.open(path, os.O_RDONLY)
                try:
                    mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
                finally:
                    os.close(fd)
        except (OSError, ValueError) as exc:
            if pinned:
                self._unpin(object_id)
            return None, f"could not open its file {path}: {exc}"
        served = self.served[object_id] = _Served(mapping, size, pinned)
        return served, None

    def _done_serving(self, object_id):
        served = self.served.pop(object_id, None)
        if served is not None and served.pinned:
            self.unpin_due[object_id] = time.monotonic() + UNPIN_DELAY_S

    def _unpin(self, object_id):
        self.node.handle(E.Unpinned(PIN_OWNER, [object_id]))

    def _reply(self, identity, object_id, offset, length, compressed, error, data):
        self.node.send(identity, P.CHUNK, object_id, offset, length, compressed, error,
                       frames=[data], zero_copy=True)

    # == both =================================================================
    def tick(self, now):
        for object_id, served in list(self.served.items()):
            if now - served.last_used > SERVE_IDLE_S:
                self._done_serving(object_id)
        for object_id, due in list(self.unpin_due.items()):
            if now >= due:
                del self.unpin_due[object_id]
                self._unpin(object_id)

    def close(self):
        for pull in list(self.pulls.values()):
            self._cancel(pull)
        self.served.clear()
        self.requested.clear()
        self.held.clear()
        self.locating.clear()


def _pwrite_all(fd, data, offset):
    view = memoryview(data).cast("B")
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass

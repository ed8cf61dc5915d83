"""Large objects of clients that do not share the node's shared memory.

A driver on another machine cannot write into the node's arena or files,
so it sends the bytes and the node writes them::

    client ── REQUEST reserve(id, size) ──────────► node: a block (or file) for it
           ── WRITE(id, offset) + [bytes]  × n ───► pwrite into that block/file
           ── REQUEST uploaded(id, done) ─────────► its location, or why a write failed
           ── PUT [header naming that location] ──► sealed like any other object

Reading goes the other way with PULL/CHUNK (``transfer.Transfers.on_pull``
serves it, as for other nodes; ``by_value`` is the client's side).

A WRITE is accepted only for an object this client reserved and not yet
sealed, and only inside the reserved size: a client writes nowhere else.
"""
import os

from ..exceptions import ObjectStoreFullError
from .shm import object_file_name
from .store import ON_DISK


class Uploads:
    def __init__(self, node):
        self.node = node
        self.written = {}           # object_id -> bytes written so far
        self.failures = {}          # object_id -> why a write failed (told at `uploaded`)

    def on_write(self, identity, object_id, offset, data):
        if object_id in self.failures:
            return
        target = self._target(identity, object_id)
        if target is None:
            self.failures[object_id] = ("it was not reserved by this client, or is written "
                                        "already")
            return
        path, base, size, is_file = target
        view = memoryview(data).cast("B")
        if offset < 0 or offset + view.nbytes > size:
            self.failures[object_id] = (f"a write of {view.nbytes} bytes at {offset} falls "
                                        f"outside its {size} bytes")
            return
        try:
            flags = os.O_RDWR | (os.O_CREAT if is_file else 0)
            fd = os.open(path, flags, 0o600)
            try:
                if is_file and os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
                _pwrite_all(fd, view, base + offset)
            finally:
                os.close(fd)
        except OSError as exc:
            self.failures[object_id] = f"writing it to {path} failed: {exc}"
            return
        self.written[object_id] = self.written.get(object_id, 0) + view.nbytes

    def uploaded(self, identity, object_id, done):
        """Raise what went wrong so far; ``done``: the object's location to
        seal it at (the writes are over)."""
        why = self.failures.pop(object_id, None) if done else self.failures.get(object_id)
        if done:
            self.written.pop(object_id, None)
        target = self._target(identity, object_id)
        if why is None and target is None:
            why = "it was not reserved by this client"
        if why is not None:
            if done and target is not None and target[3]:
                try:
                    os.unlink(target[0])
                except OSError:
                    pass
            raise ObjectStoreFullError(f"object {object_id.hex()} could not be stored on the "
                                       f"node: {why}")
        if not done:
            return None
        path, base, size, is_file = target
        return (path, size) if is_file else (path, size, base)

    def _target(self, identity, object_id):
        """``(path, base offset, size, is_file)`` reserved for ``identity``, or None."""
        objects = self.node.objects
        reservation = objects.reserved.get(object_id)
        if reservation is None or reservation[1] != identity or objects.is_ready(object_id):
            return None
        size, _owner, where, location = reservation
        if location is not None:
            return location[0], location[2], size, False
        directory = objects.spill_dir if where == ON_DISK else self.node.config["plasma_dir"]
        name = object_file_name(self.node.session_name, object_id)
        return os.path.join(directory, name), 0, size, True


def _pwrite_all(fd, view, offset):
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written

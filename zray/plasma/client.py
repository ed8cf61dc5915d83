"""A process's side of the object store: write objects, map them back.

- ``write``: large objects are first admitted by the node (a ``reserve``
  request that may spill older objects to make room, or fail with
  ``ObjectStoreFullError``); the answer is usually a block of the node's
  arena, which this process maps once per chunk and copies the value into
  (one memcpy, into pages already faulted in). Without a free block the
  object gets a file of its own, in memory or on disk. Smaller objects
  skip the round trip and get their own file; the node accounts them when
  sealed.
- ``read``: a file is mapped read-only (following it to the spill
  directory if it moved). An arena object is first *pinned* (one request:
  the node says where it is now and keeps its block from reuse) and read
  from this process's read-only mapping of its chunk. While this process
  holds a ref to the object it keeps the pin, so the next get needs no
  round trip (``ArenaViews.kept``); the node hears (batched with the
  reference traffic) when no value views the block any more (``pin_use``:
  idle, so the block may be spilled, and the node then asks for the pin
  back with DROP_PINS) or views it again; the pin goes (``unpin``) once the
  ref is dropped or the node asked, and the last value viewing it is gone.
  Per-object views are cached weakly either way, so the second get of a
  value still alive costs nothing.
- A process that does not share its node's shared memory (a driver on
  another machine) does both over its connection instead (``by_value``).
"""
import functools
import os
import time
import weakref

from ..exceptions import ObjectLostError, ObjectStoreFullError
from ..transport import protocol as P
from . import shm
from .spare import SPARE_MAX_BYTES, SpareBlock, fresh_put_id
from .store import IN_MEMORY, ON_DISK

# Below this the reservation round trip costs more than the write itself.
RESERVE_MIN_BYTES = 1 << 20
# A task or call that came straight from its caller (core/lease.py, direct.py)
# may name an object whose PUT, sent first on the caller's node socket, the
# node has not read yet: a pin is asked again this long before it is lost.
PIN_WAIT_S = 2.0


class ArenaViews:
    """One process's mappings of arena chunks (each mapped once), the pins it
    keeps, and what to tell the node about them (deques sent with the
    reference traffic: ``unpins``, and ``uses``: (id, in use) changes)."""

    def __init__(self, unpins, uses):
        self.readable = {}          # chunk path -> read-only mmap
        self.writable = {}          # chunk path -> writable mmap
        self.unpins = unpins        # a deque: ids whose pinned view died (any thread appends)
        self.spare = SpareBlock()   # a block reserved ahead for the next put
        self.uses = uses            # a deque: (id, True) viewed again, (id, False) no value views it
        # object_id -> (pinned view of its block, shm.read_header of it), while a local ref lives
        self.kept = {}
        self.watches = {}           # id(weakref) -> weakref to a view of a kept block

    def reuse(self, object_id):
        """``(a new view, its shm.read_header)`` of a block this process keeps pinned
        (no round trip), or None."""
        kept = self.kept.get(object_id)
        if kept is None:
            return None
        self.uses.append((object_id, True))
        return self.watched(object_id, kept[0][:]), kept[1]

    def watched(self, object_id, view):
        """``view`` (of a pinned block), telling the node once no value uses it."""
        # A weakref with a callback: a third of weakref.finalize's cost.
        watch = weakref.ref(view, functools.partial(self._unused, object_id))
        self.watches[id(watch)] = watch
        return view

    def _unused(self, object_id, watch):
        self.watches.pop(id(watch), None)
        self.uses.append((object_id, False))

    def drop_pins(self, object_ids):
        """Keep these pins no longer (ref dropped, or the node wants the block
        back): each goes once the values viewing it are gone."""
        kept = self.kept
        for object_id in object_ids:
            kept.pop(object_id, None)

    def chunk(self, path, writable):
        maps = self.writable if writable else self.readable
        mapping = maps.get(path)
        if mapping is None:
            mapping = maps[path] = shm.map_chunk(path, writable)
        return mapping

    def close(self):
        """Unmap the chunks no value views any more (the rest go with the process)."""
        self.kept.clear()
        self.watches.clear()
        for maps in (self.readable, self.writable):
            for path, mapping in list(maps.items()):
                try:
                    mapping.close()
                    del maps[path]
                except BufferError:
                    pass



def put_id(runtime, data):
    """The id of a new ``ray.put`` of ``data``: a large one may take the
    block reserved ahead for it (``spare.py``)."""
    if data.nbytes < RESERVE_MIN_BYTES // 2 or runtime.objects.by_value is not None:
        return fresh_put_id()
    size = shm.object_size(data.meta, data.buffers)
    if not RESERVE_MIN_BYTES <= size <= SPARE_MAX_BYTES:
        return fresh_put_id()
    return runtime.objects.arena.spare.new_put_id(size)


def write(runtime, object_id, data, is_error=False):
    """Write ``data`` as a shared-memory object; return its header tuple."""
    if runtime.objects.by_value is not None:
        return runtime.objects.by_value.write(runtime, object_id, data, is_error)
    size = shm.object_size(data.meta, data.buffers)
    reserved = size >= RESERVE_MIN_BYTES
    directory = runtime.plasma_dir
    where = IN_MEMORY
    spare = runtime.objects.arena.spare
    if reserved:
        where = spare.claim(runtime, object_id, size)
        if where is None:
            try:
                # Raises ObjectStoreFullError; ON_DISK: too big for memory, straight to disk.
                where = runtime.request("reserve", object_id, size, True)
            except BaseException:
                spare.forget(object_id)
                raise
        if where == ON_DISK:
            directory = runtime.spill_dir
    try:
        if isinstance(where, tuple):
            path, _, offset = where
            block = memoryview(runtime.objects.arena.chunk(path, True))[offset:offset + size]
            shm.write_into(block, data.meta, data.buffers, is_error)
            block.release()
            spare.after_write(runtime, object_id, size)
            return (object_id, P.SHM, 0, where, data.contained, is_error)
        spare.forget(object_id)
        path = os.path.join(directory, shm.object_file_name(runtime.session_name, object_id))
        size = shm.write_object(path, data.meta, data.buffers, is_error)
    except OSError as exc:
        spare.forget(object_id)
        if reserved:
            runtime.send_message(P.REQUEST, 0, "unreserve", (object_id,))
        raise ObjectStoreFullError(
            f"could not write an object of {size} bytes to {directory}: {exc}. Free space in "
            f"{directory} (drop ObjectRefs you no longer need), or start zray with a "
            f"smaller object_store_memory, another plasma_directory or another "
            f"object_spilling_directory") from exc
    return (object_id, P.SHM, 0, (path, size), data.contained, is_error)


def _pin(objects, object_id):
    deadline = time.monotonic() + PIN_WAIT_S
    delay = 0.0005
    while True:
        location = objects.request("pin", object_id)
        if location is not None or time.monotonic() > deadline:
            return location
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def read(objects, object_id, location):
    """``(meta, buffers, is_error)`` of a shared-memory object, as views.
    ``objects``: the process's ``core.object_cache.ObjectCache``."""
    cache = objects.mapped
    mapping = cache.get(object_id)
    if mapping is None and objects.by_value is not None:
        mapping = cache[object_id] = objects.by_value.read(object_id, location[1])
    if mapping is None:
        in_arena = len(location) == 3
        reused = objects.arena.reuse(object_id) if in_arena else None   # a kept pin
        if reused is not None:
            mapping, header = reused
            cache[object_id] = mapping
            return shm.views(mapping, header)
        if in_arena:
            location = _pin(objects, object_id)
            if location is None:
                raise ObjectLostError(f"object {object_id.hex()} is no longer in its node's store")
        if mapping is None:
            mapping = (_pinned_view(objects, object_id, location) if len(location) == 3
                       else _map_file(object_id, location, objects.spill_dir))
        cache[object_id] = mapping
    return shm.parse(mapping)


def _map_file(object_id, location, spill_dir):
    try:
        return shm.map_file(location[0], spill_dir)
    except FileNotFoundError:
        raise ObjectLostError(
            f"object {object_id.hex()} is gone from {location[0]} and from the spill "
            f"directory {spill_dir}: its files were removed outside zray, or the node "
            f"holding it stopped") from None


def _pinned_view(objects, object_id, location):
    """A weak-referenceable read-only view of an arena block; when the last
    value built on it goes, the block is unpinned, or kept pinned (and the
    node told it is idle) while this process holds a ref to the object."""
    arena = objects.arena
    path, size, offset = location
    keepable = True
    try:
        try:
            import numpy
        except ImportError:
            # Without numpy, a mapping of just this block (blocks are page-aligned),
            # not sliceable into new views: never kept.
            view = shm.map_block(path, offset, size)
            keepable = False
        else:
            chunk = memoryview(arena.chunk(path, False))[offset:offset + size]
            view = numpy.frombuffer(chunk, dtype=numpy.uint8)     # read-only, like the mapping
    except FileNotFoundError:
        arena.unpins.append(object_id)
        raise ObjectLostError(
            f"object {object_id.hex()} lives in {path}, which this process cannot open: "
            f"it runs on another machine than the object's node, or the node stopped") from None
    weakref.finalize(view, arena.unpins.append, object_id)
    if keepable:
        with objects.cond:      # forget drops kept pins under it: none is left behind
            if objects.holds(object_id):
                arena.kept[object_id] = (view, shm.read_header(view))
                return arena.watched(object_id, view[:])
    return view

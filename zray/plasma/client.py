"""A process's side of the object store: write objects, map them back.

- ``write``: large objects are first admitted by the node (a ``reserve``
  request that may spill older objects to make room, or fail with
  ``ObjectStoreFullError``), then written straight into their file. Smaller
  ones skip the round trip; the node accounts them when sealed.
- ``read``: map an object's file read-only (following it to the spill
  directory if it moved). Mappings are cached weakly: reused while any value
  still views them, unmapped when the last one goes, so a spilled object's
  shared memory is really given back.
"""
import os

from ..exceptions import ObjectLostError, ObjectStoreFullError
from ..transport import protocol as P
from . import shm
from .store import ON_DISK

# Below this the reservation round trip costs more than the write itself.
RESERVE_MIN_BYTES = 1 << 20


def write(runtime, object_id, data, is_error=False):
    """Write ``data`` as a shared-memory object; return its header tuple."""
    size = shm.object_size(data.meta, data.buffers)
    reserved = size >= RESERVE_MIN_BYTES
    directory = runtime.plasma_dir
    if reserved:
        # Raises ObjectStoreFullError; ON_DISK: too big for memory, straight to disk.
        if runtime.request("reserve", object_id, size) == ON_DISK:
            directory = runtime.spill_dir
    path = os.path.join(directory, shm.object_file_name(runtime.session_name, object_id))
    try:
        size = shm.write_object(path, data.meta, data.buffers, is_error)
    except OSError as exc:
        if reserved:
            runtime.send_message(P.REQUEST, 0, "unreserve", (object_id,))
        raise ObjectStoreFullError(
            f"could not write an object of {size} bytes to {path}: {exc}. Free space in "
            f"{directory} (drop ObjectRefs you no longer need), or start zray with a "
            f"smaller object_store_memory, another plasma_directory or another "
            f"object_spilling_directory") from exc
    return (object_id, P.SHM, 0, (path, size), data.contained, is_error)


def read(cache, object_id, location, spill_dir):
    """``(meta, buffers, is_error)`` of a shared-memory object, as views."""
    mapping = cache.get(object_id)
    if mapping is None:
        try:
            mapping = shm.map_file(location[0], spill_dir)
        except FileNotFoundError:
            raise ObjectLostError(
                f"object {object_id.hex()} is gone from {location[0]} and from the spill "
                f"directory {spill_dir}: its files were removed outside zray, or the node "
                f"holding it stopped") from None
        cache[object_id] = mapping
    return shm.parse(mapping)

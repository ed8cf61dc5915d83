"""One object, one file in shared memory: write once, map read-only.

File layout::

    b"ZRAY" | uint32 header length | header (pickled) | pickle stream | buffers

Every buffer starts on a 64-byte boundary so numpy sees aligned data. The
header is ``(meta_offset, meta_length, [(offset, length), ...], is_error)``.
Readers ``mmap`` the file read-only: numpy arrays built on those buffers are
views of the shared memory and are not writeable. Unlinking a file while a
reader has it mapped is safe: the memory goes when the last mapping does.
"""
import mmap
import os
import pickle
import struct

MAGIC = b"ZRAY"
ALIGN = 64


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def object_file_name(session_name, object_id):
    return f"zray-{session_name}-{object_id.hex()}"


def write_object(path, meta, buffers, is_error=False):
    """Write a serialized value to ``path``; return the file's size in bytes."""
    views = [memoryview(b).cast("B") for b in buffers]
    lengths = [len(meta)] + [v.nbytes for v in views]
    # Offsets depend on the header's length, which depends on the offsets:
    # reserve room generously, then place everything after it.
    header_room = _aligned(64 + 24 * len(lengths) + 8)
    offsets, cursor = [], header_room
    for length in lengths:
        offsets.append(cursor)
        cursor = _aligned(cursor + length)
    header = pickle.dumps((offsets[0], lengths[0],
                           list(zip(offsets[1:], lengths[1:])), is_error), protocol=5)
    if 8 + len(header) > header_room:
        raise AssertionError("object header outgrew its room")
    size = offsets[-1] + lengths[-1] if lengths else header_room
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            out.write(MAGIC + struct.pack("<I", len(header)) + header)
            out.write(bytes(header_room - 8 - len(header)))
            position = header_room
            for offset, part in zip(offsets, [meta] + views):
                if offset > position:
                    out.write(bytes(offset - position))
                _write_all(out, part)
                position = offset + memoryview(part).nbytes
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    return size


def _write_all(out, data):
    view = memoryview(data).cast("B")
    while view.nbytes:
        written = out.write(view)
        view = view[written:]


def read_object(path):
    """Map ``path``; return ``(meta, buffers, is_error)`` as views of it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    view = memoryview(mapping)
    if bytes(view[:4]) != MAGIC:
        raise ValueError(f"{path} is not a zray object file")
    (header_len,) = struct.unpack("<I", view[4:8])
    meta_off, meta_len, parts, is_error = pickle.loads(view[8:8 + header_len])
    meta = view[meta_off:meta_off + meta_len]
    buffers = [view[off:off + length] for off, length in parts]
    return meta, buffers, is_error

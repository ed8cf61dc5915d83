"""One object, one file in shared memory: write once, map read-only.

File layout::

    b"ZRAY" | uint32 header length | header (pickled) | pickle stream | buffers

Every buffer starts on a 64-byte boundary so numpy sees aligned data. The
header is ``(meta_offset, meta_length, [(offset, length), ...], is_error)``.
Readers ``mmap`` the file read-only: numpy arrays built on those buffers are
views of the shared memory and are not writeable. Unlinking a file while a
reader has it mapped is safe: the memory goes when the last mapping does.

A spilled object is the same file moved to the spill directory under the same
name, so a reader that finds the shared-memory path gone looks there.

Large objects of clients live in arena chunks instead (``arena.py``): the
same layout at an offset of a chunk file (``write_into``, ``parse`` of a
slice of the chunk's mapping); spilled, such an object becomes a file like
any other.
"""
import ctypes
import errno
import mmap
import os
import pickle
import struct

MAGIC = b"ZRAY"
ALIGN = 64
_HUGETLBFS_CACHE = {}     # directory -> bool


def _aligned(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def object_file_name(session_name, object_id):
    return f"zray-{session_name}-{object_id.hex()}"


def layout(meta_length, buffer_lengths):
    """Return ``(header_room, offsets, size)`` of a file holding these parts."""
    lengths = [meta_length] + list(buffer_lengths)
    # Offsets depend on the header's length, which depends on the offsets:
    # reserve room generously, then place everything after it.
    header_room = _aligned(64 + 24 * len(lengths) + 8)
    offsets, cursor = [], header_room
    for length in lengths:
        offsets.append(cursor)
        cursor = _aligned(cursor + length)
    return header_room, offsets, offsets[-1] + lengths[-1]


def object_size(meta, buffers):
    """Bytes the file for ``(meta, buffers)`` will take, known before writing."""
    return layout(len(meta), [memoryview(b).nbytes for b in buffers])[2]


def parts(meta, buffers, is_error):
    """``(parts, size)``: the ``(offset, bytes)`` pieces of an object's layout."""
    views = [memoryview(b).cast("B") for b in buffers]
    lengths = [len(meta)] + [v.nbytes for v in views]
    header_room, offsets, size = layout(lengths[0], lengths[1:])
    header = pickle.dumps((offsets[0], lengths[0],
                           list(zip(offsets[1:], lengths[1:])), is_error), protocol=5)
    if 8 + len(header) > header_room:
        raise AssertionError("object header outgrew its room")
    prefix = MAGIC + struct.pack("<I", len(header)) + header
    return [(0, prefix)] + list(zip(offsets, [meta] + views)), size


def write_object(path, meta, buffers, is_error=False):
    """Write a serialized value to ``path``; return the file's size in bytes."""
    pieces, size = parts(meta, buffers, is_error)
    fd = _create(path)
    try:
        if is_hugetlbfs(os.path.dirname(path)):
            _write_mapped(fd, pieces, size)      # hugetlbfs has no write(2)
        else:
            _write_sequential(fd, pieces)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)
    return size


def write_into(block, meta, buffers, is_error=False):
    """Write a serialized value into ``block`` (a writable memoryview of an
    arena block, at least ``object_size`` long): one copy per part."""
    pieces, size = parts(meta, buffers, is_error)
    if size > block.nbytes:
        raise ValueError(f"an object of {size} bytes does not fit its {block.nbytes}-byte block")
    for offset, part in pieces:
        view = memoryview(part).cast("B")
        block[offset:offset + view.nbytes] = view
    return size


def create_chunk(path, size):
    """Make an arena chunk of ``size`` bytes, sparse: no pages yet."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)


def allocate_pages(path, offset, size):
    """Give ``[offset, offset + size)`` of a chunk its pages now (cheap where
    it already has them); raises OSError (ENOSPC) if the file system is full."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, offset, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise                           # else: no fallocate here, pages come on first touch
    finally:
        os.close(fd)


def release_pages(path, offset, size):
    """Punch ``[offset, offset + size)`` out of a chunk: its pages go back to
    the OS, the file keeps its size (reads of the range give zeros). False if
    the file system cannot (then the pages stay)."""
    fd = os.open(path, os.O_RDWR)
    try:
        if _libc_fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, offset, size) == 0:
            return True
        error = ctypes.get_errno()
        if error in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise OSError(error, f"punching a hole in {path}: {os.strerror(error)}")
    finally:
        os.close(fd)


_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01      # FALLOC_FL_* of <linux/falloc.h>


def _load_fallocate():
    libc = ctypes.CDLL(None, use_errno=True)
    fallocate = libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    return fallocate


def _libc_fallocate(fd, mode, offset, size):
    global _fallocate
    if _fallocate is None:
        _fallocate = _load_fallocate()
    return _fallocate(fd, mode, offset, size)


_fallocate = None


def map_chunk(path, writable):
    """The whole chunk ``path`` mapped (read-only unless ``writable``)."""
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
    finally:
        os.close(fd)


def _create(path):
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Left by a writer that died before sealing (its task is being
        # retried). Unlink, never truncate: a reader's mapping stays valid.
        unlink_quietly(path)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _write_sequential(fd, parts):
    position = 0
    for offset, part in parts:
        if offset > position:
            os.lseek(fd, offset, os.SEEK_SET)    # the gap stays a hole: no bytes written
        view = memoryview(part).cast("B")
        while view.nbytes:
            written = os.write(fd, view)
            view = view[written:]
        position = offset + memoryview(part).nbytes
    return position


def _write_mapped(fd, parts, size):
    page = huge_page_size()
    os.ftruncate(fd, (size + page - 1) // page * page)
    with mmap.mmap(fd, 0, access=mmap.ACCESS_WRITE) as mapping:
        for offset, part in parts:
            view = memoryview(part).cast("B")
            mapping[offset:offset + view.nbytes] = view


def read_object(path, spill_dir=None):
    """Map ``path`` (or its spilled copy in ``spill_dir``); return
    ``(meta, buffers, is_error)`` as read-only views of the mapping."""
    return parse(map_file(path, spill_dir))


def map_file(path, spill_dir=None):
    """The object file mapped read-only; it stays mapped while views of it live."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if spill_dir is None:
            raise
        # Spilled after we heard of it: the spiller renames the copy into
        # place before unlinking the original, so it is there now.
        fd = os.open(os.path.join(spill_dir, os.path.basename(path)), os.O_RDONLY)
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def map_block(path, offset, size):
    """``size`` bytes at the page-aligned ``offset`` of a chunk, mapped read-only."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ, offset=offset)
    finally:
        os.close(fd)


def parse(mapping):
    """``(meta, buffers, is_error)``: views into a mapped object file."""
    return views(mapping, read_header(mapping))


def read_header(mapping):
    """``(meta offset, meta length, [(offset, length)] of the buffers,
    is_error)`` from an object's header."""
    view = memoryview(mapping)
    if bytes(view[:4]) != MAGIC:
        raise ValueError("not a zray object file")
    (header_len,) = struct.unpack("<I", view[4:8])
    return pickle.loads(view[8:8 + header_len])


def views(mapping, header):
    """``(meta, buffers, is_error)`` of an object whose ``read_header`` is known."""
    meta_off, meta_len, parts, is_error = header
    view = memoryview(mapping)
    return view[meta_off:meta_off + meta_len], [view[o:o + n] for o, n in parts], is_error


def copy_to_spill(location, target):
    """Copy an object (its file, or its arena block) to ``target``.

    Copies under a temporary name and renames into place, so a reader always
    finds one complete file; the caller unlinks the original (or frees the
    block) once it has recorded the new place. Raises OSError (disk full,
    not writable) with nothing left behind.
    """
    partial = target + ".partial"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    offset, size = (location[2], location[1]) if len(location) == 3 else (0, None)
    try:
        with open(location[0], "rb") as source, open(partial, "wb") as out:
            _copy_file(source.fileno(), out.fileno(), offset, size)
        os.rename(partial, target)
    except BaseException:
        unlink_quietly(partial)
        raise
    return target


def free_bytes(directory):
    """Bytes an unprivileged writer can still put under ``directory``."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def _copy_file(src_fd, dst_fd, offset=0, size=None):
    """Copy ``size`` bytes (all, if None) from ``offset`` of ``src_fd``."""
    if size is None:
        size = os.fstat(src_fd).st_size - offset
    copied = 0
    while copied < size:
        try:
            sent = os.sendfile(dst_fd, src_fd, offset + copied, size - copied)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS) and copied == 0:
                return _copy_by_read(src_fd, dst_fd, offset, size)
            raise
        if sent == 0:
            raise OSError(errno.EIO, "short copy while spilling")
        copied += sent


def _copy_by_read(src_fd, dst_fd, offset, size):
    while size > 0:
        chunk = os.pread(src_fd, min(size, 1 << 22), offset)
        if not chunk:
            raise OSError(errno.EIO, "short copy while spilling")
        offset += len(chunk)
        size -= len(chunk)
        view = memoryview(chunk)
        while view.nbytes:
            view = view[os.write(dst_fd, view):]


def is_hugetlbfs(directory):
    """True if ``directory`` lies on a hugetlbfs mount (longest mount wins)."""
    directory = os.path.realpath(directory)
    cached = _HUGETLBFS_CACHE.get(directory)
    if cached is None:
        cached = _HUGETLBFS_CACHE[directory] = _mount_type(directory) == "hugetlbfs"
    return cached


def _mount_type(directory):
    best, kind = "", None
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount_point = parts[1]
                inside = (directory == mount_point
                          or directory.startswith(mount_point.rstrip("/") + "/"))
                if inside and len(mount_point) >= len(best):
                    best, kind = mount_point, parts[2]
    except OSError:
        pass
    return kind


def huge_page_size():
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 2 * 1024 * 1024


def unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def unlink_session_files(directories, session_name):
    """Remove every file of a session (objects, arena chunks, spilled copies)
    from these directories, whoever wrote them and whether sealed or not."""
    prefix = f"zray-{session_name}-"
    for directory in directories:
        if directory and os.path.isdir(directory):
            for name in os.listdir(directory):
                if name.startswith(prefix):
                    unlink_quietly(os.path.join(directory, name))

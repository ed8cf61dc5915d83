"""Where large objects live in shared memory: a few big regions, reused.

A fresh file per object makes the kernel hand out and zero new pages for
every put; here the large objects of a node share a *chunk* (a file in the
plasma directory as big as the store), and a put is one copy into a block
whose pages earlier objects already faulted in. Every process maps the
chunk once and keeps it mapped.

The chunk is sparse: made when the first large object comes (so ``init``
and an idle node pay nothing), its pages allocated block by block as
blocks are first handed out (the node ``fallocate``s a block before the
writer gets it, so a full ``/dev/shm`` is an error to the writer, never a
SIGBUS), and kept when blocks are freed: first fit from the start reuses
the same pages again and again, so memory in use is the high-water mark of
what was live at once, never more than the store's capacity.

This module is the bookkeeping only (no files, no clock): which byte
ranges of which chunk are free. First fit over a sorted free list per
chunk, neighbours merged on free. Blocks start on ``ALIGN`` boundaries.
"""
import bisect

ALIGN = 4096                       # page-aligned blocks: numpy views start aligned
CHUNK_ROUND = 2 << 20              # chunks are whole huge pages (hugetlbfs needs it)


def _round_up(n, to):
    return (n + to - 1) // to * to


class Chunk:
    __slots__ = ("index", "path", "size", "free_offsets", "free_sizes", "used_bytes", "touched")

    def __init__(self, index, path, size):
        self.index = index
        self.path = path
        self.size = size
        self.free_offsets = [0]        # sorted starts of free ranges
        self.free_sizes = [size]       # their lengths, same order
        self.used_bytes = 0
        self.touched = 0               # bytes below this have their pages (a high-water mark)

    def allocate(self, size):
        for i, length in enumerate(self.free_sizes):
            if length >= size:
                offset = self.free_offsets[i]
                if length == size:
                    del self.free_offsets[i]
                    del self.free_sizes[i]
                else:
                    self.free_offsets[i] += size
                    self.free_sizes[i] -= size
                self.used_bytes += size
                return offset
        return None

    def free(self, offset, size):
        i = bisect.bisect_left(self.free_offsets, offset)
        if i < len(self.free_offsets) and self.free_offsets[i] < offset + size:
            raise ValueError(f"block at {offset} of chunk {self.path} is already free")
        if i and self.free_offsets[i - 1] + self.free_sizes[i - 1] > offset:
            raise ValueError(f"block at {offset} of chunk {self.path} is already free")
        self.used_bytes -= size
        self.free_offsets.insert(i, offset)
        self.free_sizes.insert(i, size)
        # Merge with the next range, then with the previous one.
        if i + 1 < len(self.free_offsets) and offset + size == self.free_offsets[i + 1]:
            self.free_sizes[i] += self.free_sizes.pop(i + 1)
            del self.free_offsets[i + 1]
        if i and self.free_offsets[i - 1] + self.free_sizes[i - 1] == offset:
            self.free_sizes[i - 1] += self.free_sizes.pop(i)
            del self.free_offsets[i]


class Arena:
    """Blocks in chunks. ``make_chunk(index, size) -> path`` creates a chunk's
    file (the table's disk port); it may raise OSError (no room)."""

    def __init__(self, capacity_bytes, make_chunk):
        self.capacity_bytes = capacity_bytes
        self.make_chunk = make_chunk
        self.chunks = []
        self.by_path = {}
        self.mapped_bytes = 0          # sum of chunk sizes
        self.failure = None            # why the last new chunk could not be made

    def allocate(self, size):
        """``(path, offset)`` of a block of ``size`` bytes, or None if no
        chunk has room and no new one may be made."""
        size = _round_up(max(size, 1), ALIGN)
        for chunk in self.chunks:
            if chunk.size - chunk.used_bytes >= size:
                offset = chunk.allocate(size)
                if offset is not None:
                    return chunk.path, offset
        chunk = self._grow(size)
        if chunk is None:
            return None
        return chunk.path, chunk.allocate(size)

    def _grow(self, size):
        room = _round_up(self.capacity_bytes, CHUNK_ROUND) - self.mapped_bytes
        want = room
        if want < size:
            return None
        index = len(self.chunks)
        try:
            path = self.make_chunk(index, want)
        except OSError as exc:
            self.failure = f"a new {want >> 20} MiB arena chunk could not be made: {exc}"
            return None
        chunk = Chunk(index, path, want)
        self.chunks.append(chunk)
        self.by_path[path] = chunk
        self.mapped_bytes += want
        return chunk

    def free(self, path, offset, size):
        self.by_path[path].free(offset, _round_up(max(size, 1), ALIGN))

    def contains(self, path, offset, size):
        """True if ``[offset, offset + size)`` lies inside the chunk ``path``."""
        chunk = self.by_path.get(path)
        return (chunk is not None and isinstance(offset, int) and isinstance(size, int)
                and 0 <= offset and 0 <= size and offset + size <= chunk.size)

    def paths(self):
        return [chunk.path for chunk in self.chunks]

    def used_bytes(self):
        return sum(chunk.used_bytes for chunk in self.chunks)

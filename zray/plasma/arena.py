"""Where large objects live in shared memory: a few big regions, reused.

A fresh file per object makes the kernel hand out and zero new pages for
every put; here the large objects of a node share a *chunk* (a file in the
plasma directory as big as the store), and a put is one copy into a block
whose pages earlier objects already faulted in. Every process maps the
chunk once and keeps it mapped.

The chunk is sparse: made when the first large object comes (so ``init``
and an idle node pay nothing), its pages allocated block by block as
blocks are handed out (the node ``fallocate``s the parts of a block that
have no pages before the writer gets it, so a full ``/dev/shm`` is an error
to the writer, never a SIGBUS). A freed block keeps its pages for a while:
first fit from the start hands the same range to the next object, so a
repeated put is one memcpy into pages already there. A range that has
stayed free ``RELEASE_AFTER_S`` (``idle_ranges``) goes back to the OS (the
node punches a hole in the file), so memory in use falls back to what is
live once a burst of big objects is gone.

This module is the bookkeeping only (no files, no clock): which byte
ranges of which chunk are free, which have no pages (``holes``) and
since when a freed range has gone unused (``idle``); the caller passes the
time. First fit over a sorted free list per chunk, neighbours merged on
free. Blocks start on ``ALIGN`` boundaries.
"""
import bisect

ALIGN = 4096                       # page-aligned blocks: numpy views start aligned
CHUNK_ROUND = 2 << 20              # chunks are whole huge pages (hugetlbfs needs it)
# A freed range keeps its pages this long: a put of the same size soon after
# (a loop of put/get/free) finds them there. Longer idle, they go to the OS.
RELEASE_AFTER_S = 2.0


def _round_up(n, to):
    return (n + to - 1) // to * to


class Chunk:
    __slots__ = ("index", "path", "size", "free_offsets", "free_sizes", "used_bytes", "holes",
                 "idle")

    def __init__(self, index, path, size):
        self.index = index
        self.path = path
        self.size = size
        self.free_offsets = [0]        # sorted starts of free ranges
        self.free_sizes = [size]       # their lengths, same order
        self.used_bytes = 0
        self.holes = [(0, size)]       # sorted (start, end) ranges without pages, merged
        self.idle = []                 # (start, end, freed_at) of freed ranges with pages, sorted

    def resident_bytes(self):
        """Bytes of the chunk that have pages now."""
        return self.size - sum(end - start for start, end in self.holes)

    def take_holes(self, start, end):
        """The parts of ``[start, end)`` without pages (the caller gives them
        pages now), no longer holes; ``put_holes`` undoes it."""
        return _cut(self.holes, start, end)

    def put_holes(self, ranges):
        """These ranges have no pages (any more)."""
        for start, end in ranges:
            _insert_merged(self.holes, start, end)

    def mark_used(self, start, end):
        """``[start, end)`` was handed out: no longer idle."""
        idle = self.idle
        if not idle:
            return
        # Idle ranges never overlap: those that may meet [start, end) are
        # the last one starting at or before ``start`` and the ones after it.
        first = max(bisect.bisect_right(idle, start, key=_start) - 1, 0)
        last, kept = first, []
        while last < len(idle) and idle[last][0] < end:
            s, e, since = idle[last]
            if e <= start:
                kept.append((s, e, since))
            else:
                if s < start:
                    kept.append((s, start, since))
                if e > end:
                    kept.append((end, e, since))
            last += 1
        idle[first:last] = kept

    def add_idle(self, start, end, now):
        """``[start, end)`` was freed at ``now`` (its own entry: a neighbour
        freed later must not keep an older range from being released)."""
        bisect.insort(self.idle, (start, end, now), key=_start)

    def due_idle(self, now, after):
        """Pop the idle ranges freed at least ``after`` seconds before ``now``."""
        due = [(s, e) for s, e, since in self.idle if now - since >= after]
        if due:
            self.idle = [r for r in self.idle if not now - r[2] >= after]
        return due

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
                    chunk.mark_used(offset, offset + size)
                    return chunk.path, offset
        chunk = self._grow(size)
        if chunk is None:
            return None
        return chunk.path, chunk.allocate(size)     # a new chunk: nothing idle in it

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

    def free(self, path, offset, size, now=0.0):
        """Free a block; its pages stay (idle since ``now``) until released."""
        chunk = self.by_path[path]
        size = _round_up(max(size, 1), ALIGN)
        chunk.free(offset, size)
        chunk.add_idle(offset, offset + size, now)

    def idle_ranges(self, now, after=RELEASE_AFTER_S):
        """``[(path, start, end)]`` of free ranges unused for ``after`` seconds
        that still have pages: the caller releases them (``released``)."""
        return [(chunk.path, start, end) for chunk in self.chunks
                for start, end in chunk.due_idle(now, after)]

    def released(self, path, start, end):
        """The pages of ``[start, end)`` went back to the OS."""
        self.by_path[path].put_holes([(start, end)])

    def resident_bytes(self):
        return sum(chunk.resident_bytes() for chunk in self.chunks)

    def contains(self, path, offset, size):
        """True if ``[offset, offset + size)`` lies inside the chunk ``path``."""
        chunk = self.by_path.get(path)
        return (chunk is not None and isinstance(offset, int) and isinstance(size, int)
                and 0 <= offset and 0 <= size and offset + size <= chunk.size)

    def paths(self):
        return [chunk.path for chunk in self.chunks]

    def used_bytes(self):
        return sum(chunk.used_bytes for chunk in self.chunks)


def _start(entry):
    return entry[0]


def _cut(ranges, start, end):
    """Remove ``[start, end)`` from sorted disjoint ``ranges`` (in place);
    return the parts that were in them."""
    first = max(bisect.bisect_right(ranges, start, key=_start) - 1, 0)
    last, taken, kept = first, [], []
    while last < len(ranges) and ranges[last][0] < end:
        s, e = ranges[last][:2]
        if e <= start:
            kept.append(ranges[last])
        else:
            taken.append((max(s, start), min(e, end)))
            if s < start:
                kept.append((s, start))
            if e > end:
                kept.append((end, e))
        last += 1
    ranges[first:last] = kept
    return taken


def _insert_merged(ranges, start, end):
    """Add ``[start, end)`` to sorted disjoint ``ranges``, merging neighbours."""
    i = bisect.bisect_left(ranges, (start, end))
    ranges.insert(i, (start, end))
    if i + 1 < len(ranges) and ranges[i + 1][0] <= end:
        ranges[i] = (start, max(end, ranges[i + 1][1]))
        del ranges[i + 1]
    if i and ranges[i - 1][1] >= start:
        ranges[i - 1] = (ranges[i - 1][0], max(ranges[i - 1][1], ranges[i][1]))
        del ranges[i]

"""The object table's port to files: what ``store.ObjectTable`` asks of the disk.

The table decides (what to spill, whether an object fits in memory or must
go to disk); this carries it out on a node: unlink a file, start a copy to
the spill directory on the spiller thread, say how much room the spill
directory has, read the clock for the spill retry delay, make an arena
chunk. The node's loop
also reads finished copies here (``done_fd``, ``finished``) and hands them
to the table as an event. Unit tests of the node's state pass a fake.
"""
import os
import time

from . import shm
from .spiller import Spiller


class SpillDisk:
    def __init__(self, plasma_dir, session_name):
        self.plasma_dir = plasma_dir
        self.session_name = session_name
        self.spiller = Spiller()

    # -- asked by the table -------------------------------------------------
    def unlink(self, path):
        shm.unlink_quietly(path)

    def make_chunk(self, index, size):
        """A new arena chunk's file (sparse); its path. Raises OSError."""
        path = os.path.join(self.plasma_dir, f"zray-{self.session_name}-arena-{index}")
        shm.unlink_quietly(path)         # left by a node of this session that died
        shm.create_chunk(path, size)
        return path

    def allocate_pages(self, path, offset, size):
        """Pages for an arena block before its writer gets it; raises OSError."""
        shm.allocate_pages(path, offset, size)

    def release_pages(self, path, offset, size):
        """Give a free range's pages back to the OS; False if this file system cannot."""
        return shm.release_pages(path, offset, size)

    def start_copy(self, object_id, location, spill_dir):
        """Copy an object (file or arena block) to its file in ``spill_dir``."""
        target = os.path.join(spill_dir, shm.object_file_name(self.session_name, object_id))
        self.spiller.start(object_id, location, target)

    def free_bytes(self, spill_dir):
        """Room left in ``spill_dir`` (made if missing); raises OSError."""
        os.makedirs(spill_dir, exist_ok=True)
        return shm.free_bytes(spill_dir)

    def now(self):
        return time.monotonic()

    # -- read by the node's loop --------------------------------------------
    @property
    def done_fd(self):
        """Readable when copies have finished: read ``finished()`` then."""
        return self.spiller.done_fd

    def finished(self, wait=False):
        """[(object_id, path, target, error)] of finished copies."""
        return self.spiller.finished(wait)

    def close(self):
        """Wait for copies in flight; unlink what they made (nobody's now)."""
        for _, _, target, _ in self.spiller.close():
            if target is not None:
                shm.unlink_quietly(target)

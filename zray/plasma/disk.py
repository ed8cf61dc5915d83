"""The object table's port to files: what ``store.ObjectTable`` asks of the disk.

The table decides (what to spill, whether an object fits in memory or must
go to disk); this carries it out on a node: unlink a file, start a copy to
the spill directory on the spiller thread, say how much room the spill
directory has, read the clock for the spill retry delay. The node's loop
also reads finished copies here (``done_fd``, ``finished``) and hands them
to the table as an event. Unit tests of the node's state pass a fake.
"""
import os
import time

from . import shm
from .spiller import Spiller


class SpillDisk:
    def __init__(self):
        self.spiller = Spiller()

    # -- asked by the table -------------------------------------------------
    def unlink(self, path):
        shm.unlink_quietly(path)

    def start_copy(self, object_id, path, spill_dir):
        self.spiller.start(object_id, path, spill_dir)

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

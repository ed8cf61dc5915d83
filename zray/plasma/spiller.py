"""Copying object files to the spill directory, off the node's loop.

::

    node loop ── start(id, location, target) ──► jobs ──► spill thread: copy to <name>.partial,
        ▲                                                   rename into place
        └── done_fd readable ◄── byte on pipe ◄── results ◄─┘
            finished() -> [(id, path, target, error)]: the loop applies them

- A copy of a large file takes seconds; inside the loop it would starve the
  node's heartbeats, so one thread does it (sendfile releases the GIL).
- The thread never unlinks the original: readers keep mapping it until the
  loop applies the result (then it unlinks it, or keeps the object in memory
  if the copy failed). A partial copy never appears under the final name.
"""
import os
import queue
import threading

from . import shm


class Spiller:
    def __init__(self):
        self.jobs = queue.SimpleQueue()
        self.results = queue.SimpleQueue()
        self.done_r, self.done_w = os.pipe()
        os.set_blocking(self.done_r, False)
        os.set_blocking(self.done_w, False)
        self.thread = None
        self.in_flight = 0
        self.lock = threading.Lock()

    @property
    def done_fd(self):
        """Readable when results wait for ``finished()``."""
        return self.done_r

    def start(self, object_id, location, target):
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="zray-spill", daemon=True)
            self.thread.start()
        with self.lock:
            self.in_flight += 1
        self.jobs.put((object_id, location, target))

    def finished(self, wait=False):
        """Results so far (all of them, waiting for copies in flight, if ``wait``)."""
        try:
            os.read(self.done_r, 65536)
        except (BlockingIOError, OSError):
            pass
        results = []
        while True:
            with self.lock:
                if not self.in_flight:
                    break
            try:
                results.append(self.results.get(block=wait))
            except queue.Empty:
                break
            with self.lock:
                self.in_flight -= 1
        return results

    def _run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            object_id, location, target = job
            try:
                target, error = shm.copy_to_spill(location, target), None
            except Exception as exc:         # reported to the loop, never raised here
                target, error = None, exc
            self.results.put((object_id, location[0], target, error))
            try:
                os.write(self.done_w, b"x")
            except (BlockingIOError, OSError):
                pass                        # the pipe is full: the loop is waking anyway

    def close(self):
        """Finish copies in flight; return their results (for cleanup)."""
        results = self.finished(wait=True) if self.thread is not None else []
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join(timeout=5.0)
        for fd in (self.done_r, self.done_w):
            try:
                os.close(fd)
            except OSError:
                pass
        return results

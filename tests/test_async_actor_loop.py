"""An async actor's event loop is run by its worker's main thread, and the
loop's select is the connection's pump (core/actor_loop.py): calls are read,
started and answered by one thread. What users see must not change: calls
that come while a method blocks the loop, the loop's own file descriptors,
the calls still queued when the last handle goes, ordering."""
import asyncio
import os
import threading
import time

import psutil

import zray as ray

from cluster_util import wait_for


@ray.remote
class Loop:
    def __init__(self):
        self.seen = []

    async def record(self, x):
        self.seen.append(x)
        return x

    def block(self, seconds):
        # A plain method of an async actor runs on the loop and holds it:
        # meanwhile the I/O thread reads the sockets.
        time.sleep(seconds)
        return len(self.seen)

    def seen_so_far(self):
        return list(self.seen)

    async def wait_on_a_pipe(self):
        """Waits for a file descriptor of its own, written by another thread."""
        loop = asyncio.get_running_loop()
        read_end, write_end = os.pipe()
        arrived = loop.create_future()

        def readable():
            loop.remove_reader(read_end)
            arrived.set_result(os.read(read_end, 10))
        loop.add_reader(read_end, readable)
        threading.Timer(0.05, os.write, (write_end, b"ping")).start()
        try:
            return await asyncio.wait_for(arrived, 20)
        finally:
            os.close(read_end)
            os.close(write_end)

    async def from_another_thread(self):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: threading.current_thread().name)

    async def mark(self, path):
        await asyncio.sleep(0.05)
        with open(path, "w") as file:
            file.write("ran")

    def pid(self):
        return os.getpid()


def test_calls_sent_while_a_method_blocks_the_loop_run_after_it_in_order(ray_shared):
    actor = Loop.remote()
    ray.get(actor.record.remote(-1))
    blocking = actor.block.remote(0.5)      # ten times the I/O thread's grace and more
    calls = [actor.record.remote(i) for i in range(30)]
    assert ray.get(calls, timeout=60) == list(range(30))
    assert ray.get(blocking) == 1           # none ran while it blocked
    assert ray.get(actor.seen_so_far.remote()) == [-1] + list(range(30))


def test_a_method_may_wait_on_a_file_descriptor_of_its_own(ray_shared):
    actor = Loop.remote()
    assert ray.get(actor.wait_on_a_pipe.remote(), timeout=60) == b"ping"
    name = ray.get(actor.from_another_thread.remote(), timeout=60)
    assert name != threading.main_thread().name


def test_calls_queued_when_the_last_handle_goes_still_run(ray_shared, tmp_path):
    actor = Loop.remote()
    pid = ray.get(actor.pid.remote())
    paths = [str(tmp_path / f"call-{i}") for i in range(5)]
    for path in paths:
        actor.mark.remote(path)
    del actor
    wait_for(lambda: all(os.path.exists(p) for p in paths), 30,
             "the calls sent before the last handle went to run")
    wait_for(lambda: not _alive(pid), 30, "the actor's worker to exit")


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False

"""An async actor's event loop, run by the worker's main thread, whose
selector is the connection's pump.

A call and its reply never change thread: the loop's select polls the
node's socket, the actor's direct sockets and the loop's own file
descriptors in one ``zmq_poll``; the calls it reads start as tasks on the
loop, and a method's reply leaves from the loop's thread at once (the
socket is free between selects). With the loop on a thread of its own, each
call crossed two thread hand-offs (a self-pipe write to start it, a wake of
the socket's holder to send its reply): on two busy cores tens of
microseconds each.

While a method keeps the loop busy, the connection's I/O thread reads the
sockets (after its grace): calls wait in ``runtime.tasks`` for the next
select, as they waited on the loop before.
"""
import asyncio
import selectors

import zmq

from ..transport import protocol as P

MAX_BLOCK_MS = 100       # a select never blocks longer (closing, lost wakes)
_ERROR_EVENTS = int(zmq.POLLERR)


class PumpingSelector(selectors.SelectSelector):
    """A selector whose ``select`` is one pump of the connection (flush,
    poll, dispatch) with the loop's own descriptors in the same poll; then
    ``take_work()`` starts what the pump brought. (``SelectSelector`` keeps
    the registrations; its ``select`` is never used.)"""

    def __init__(self, connection, has_work, take_work):
        super().__init__()
        self.connection = connection
        self.has_work = has_work
        self.take_work = take_work
        self.fds = None             # [(fd, events)] to poll, made again after a change

    def register(self, fileobj, events, data=None):
        self.fds = None
        return super().register(fileobj, events, data)

    def unregister(self, fileobj):
        self.fds = None
        return super().unregister(fileobj)

    def select(self, timeout=None):
        if timeout is None:
            timeout_ms = MAX_BLOCK_MS
        else:
            timeout_ms = max(0, min(MAX_BLOCK_MS, int(timeout * 1000)))
        keys = self._fd_to_key      # (the base class's table: get_map() is a Python view)
        if self.fds is None:
            self.fds = [(fd, key.events) for fd, key in keys.items()]
        ready = self.connection.pump_with(self.fds, timeout_ms, self.has_work)
        self.take_work()
        events = []
        for item, flags in ready:
            if type(item) is int:
                key = keys.get(item)
                if key is not None:
                    mask = key.events if flags & _ERROR_EVENTS else flags & key.events
                    if mask:
                        events.append((key, mask))
        return events


class AsyncActorExecutor:
    """Methods of an async actor, interleaved on one event loop; at most
    ``concurrency`` run at once. ``serve`` runs the loop on the calling
    thread (the worker's main thread) until the node's EXIT."""

    def __init__(self, worker, concurrency):
        self.worker = worker
        self.tasks = worker.runtime.tasks
        self.lock = worker.runtime.lock
        selector = PumpingSelector(worker.runtime.connection, self._has_work, self._take_work)
        self.loop = asyncio.SelectorEventLoop(selector)
        self.limit = asyncio.Semaphore(concurrency)
        self.pending = set()         # asyncio tasks of calls not finished
        self.exiting = False

    def serve(self):
        asyncio.set_event_loop(self.loop)
        self._take_work()           # what came before the loop ran
        self.loop.run_forever()

    def _has_work(self):
        return bool(self.tasks)

    def _take_work(self):
        """After each pump (on the loop): start the calls it brought, in
        order; at EXIT, finish (calls already here still run; after
        exit_actor() the rest are dropped: the node fails them)."""
        tasks = self.tasks
        if not tasks or self.exiting:
            return
        with self.lock:     # (Worker.bounce_stuck may rewrite it under this lock)
            items = list(tasks)
            tasks.clear()
        worker = self.worker
        for item in items:
            if item is None:
                self.exiting = True
                self.loop.create_task(self._finish(drain=not worker.stopping))
                return
            if worker.stopping:
                continue
            fields, frames = item
            if fields[0].kind == P.ACTOR_METHOD:
                self._start(fields, frames)
            elif worker.execute(fields, frames):    # (not sent to an actor's worker)
                worker.stop_soon()

    def _start(self, fields, frames):
        task = self.loop.create_task(self._execute(fields, frames))
        self.pending.add(task)

    async def _execute(self, fields, frames):
        try:
            async with self.limit:
                if self.worker.stopping:
                    return
                if await self.worker.execute_async(fields, frames):
                    self.worker.stop_soon()
        finally:
            # Here, not a done callback: that would cost every call a pass
            # of the loop (and a poll) after it ends.
            self.pending.discard(asyncio.current_task())

    async def _finish(self, drain):
        pending = list(self.pending)
        if not drain:
            for task in pending:
                task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=None if drain else 2.0)
        self.loop.stop()

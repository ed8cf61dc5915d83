"""The slice of the Ray API the rows use, on a stdlib ProcessPoolExecutor.

It is the "no runtime at all" baseline.  There is no object store: put()
pickles the value into the ref itself (a copy, as a store would make) and
get() unpickles it, so put/get rows measure plain serialisation; a task's
result is unpickled once when it arrives and later gets return that same
object (no copy).  There are
no actors, and tasks cannot submit tasks; rows needing those are skipped.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import pickle
import platform
import time

BENCH_UNSUPPORTED = frozenset({"actors", "nested_tasks"})
__version__ = "python " + platform.python_version()

_executor = None


class NotSupported(RuntimeError):
    pass


class ObjectRef:
    """Either a pending task (future) or a pickled value (put)."""
    __slots__ = ("_future", "_blob")

    def __init__(self, future=None, blob=None):
        self._future = future
        self._blob = blob

    def _done(self):
        return self._future is None or self._future.done()

    def _value(self, timeout=None):
        if self._future is not None:
            return self._future.result(timeout)
        return pickle.loads(self._blob)


def _in_worker():
    # Forked workers inherit the parent's executor object; drop it so a
    # nested submit fails clearly instead of touching a copied pool.
    global _executor
    _executor = None


def init(num_cpus=None, **_ignored):
    global _executor
    _executor = cf.ProcessPoolExecutor(max_workers=num_cpus or os.cpu_count(),
                                       initializer=_in_worker)


def is_initialized():
    return _executor is not None


def shutdown():
    global _executor
    if _executor is not None:
        _executor.shutdown(wait=True, cancel_futures=True)
        _executor = None


def put(value):
    return ObjectRef(blob=pickle.dumps(value, protocol=5))


def get(refs, timeout=None):
    if isinstance(refs, list):
        return [r._value(timeout) for r in refs]
    return refs._value(timeout)


def wait(refs, num_returns=1, timeout=None, fetch_local=True):
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = [r for r in refs if r._done()]
        pending = [r._future for r in refs if not r._done()]
        if len(done) >= num_returns or not pending:
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
    ready = set(map(id, done[:num_returns]))
    return ([r for r in refs if id(r) in ready],
            [r for r in refs if id(r) not in ready])


class RemoteFunction:
    def __init__(self, fn):
        self._fn = fn

    def options(self, **_ignored):
        return self

    def remote(self, *args, **kwargs):
        if _executor is None:
            raise NotSupported("pool: tasks cannot be submitted from a worker")
        # Like Ray, top-level ref arguments arrive as their values.
        args = [a._value() if isinstance(a, ObjectRef) else a for a in args]
        return ObjectRef(future=_executor.submit(self._fn, *args, **kwargs))


class _NoActor:
    def __init__(self, cls):
        self._cls = cls

    def options(self, **_ignored):
        return self

    def remote(self, *args, **kwargs):
        raise NotSupported("pool: no actors")


def remote(*args, **options):
    """`@remote` or `@remote(num_cpus=...)`, as in Ray."""
    def wrap(target):
        return _NoActor(target) if isinstance(target, type) else RemoteFunction(target)
    if len(args) == 1 and not options and callable(args[0]):
        return wrap(args[0])
    return wrap

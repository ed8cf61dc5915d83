"""The slice of the Ray API the rows use, on dask.distributed futures.

put() is `scatter`, get() is `gather`, tasks are `submit(pure=False)` on a
LocalCluster of one single-threaded worker process per CPU.  Actors, tasks
submitting tasks and puts from inside tasks are left out (dask has forms of
them, but with different semantics), so those rows are skipped.
"""

from __future__ import annotations

import time

import distributed

BENCH_UNSUPPORTED = frozenset({"actors", "nested_tasks", "worker_put"})
__version__ = "distributed " + distributed.__version__

_client = None
_cluster = None


class NotSupported(RuntimeError):
    pass


def init(num_cpus=None, **_ignored):
    global _client, _cluster
    _cluster = distributed.LocalCluster(
        n_workers=num_cpus or 2, threads_per_worker=1, processes=True,
        dashboard_address=None)
    _client = distributed.Client(_cluster)


def is_initialized():
    return _client is not None


def shutdown():
    global _client, _cluster
    if _client is not None:
        _client.close()
        _cluster.close()
        _client = _cluster = None


def put(value):
    # hash=False: every put is a new object, as in Ray.
    return _client.scatter(value, hash=False)


def get(refs, timeout=None):
    return _client.gather(refs)


def wait(refs, num_returns=1, timeout=None, fetch_local=True):
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = [f for f in refs if f.done()]
        pending = [f for f in refs if not f.done()]
        if len(done) >= num_returns or not pending:
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        try:
            distributed.wait(pending, timeout=left, return_when="FIRST_COMPLETED")
        except distributed.TimeoutError:
            break
    ready = set(map(id, done[:num_returns]))
    return ([f for f in refs if id(f) in ready],
            [f for f in refs if id(f) not in ready])


class RemoteFunction:
    def __init__(self, fn):
        self._fn = fn

    def options(self, **_ignored):
        return self

    def remote(self, *args, **kwargs):
        if _client is None:
            raise NotSupported("dask: tasks cannot be submitted from a worker")
        return _client.submit(self._fn, *args, pure=False, **kwargs)


class _NoActor:
    def __init__(self, cls):
        self._cls = cls

    def options(self, **_ignored):
        return self

    def remote(self, *args, **kwargs):
        raise NotSupported("dask shim: no actors")


def remote(*args, **options):
    def wrap(target):
        return _NoActor(target) if isinstance(target, type) else RemoteFunction(target)
    if len(args) == 1 and not options and callable(args[0]):
        return wrap(args[0])
    return wrap

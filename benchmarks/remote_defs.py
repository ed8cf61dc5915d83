"""Plain functions and classes that the rows turn into tasks and actors.

They are defined undecorated at module level so every system pickles them
by reference (workers import this module) and the same objects can be
wrapped by `ray.remote`, `zray.remote` or a shim's `remote`.  Code that runs
inside a worker and needs the API again (nested tasks, puts from a task)
receives the API's module name and re-imports it there, since the module
object itself cannot travel.
"""

from __future__ import annotations

import importlib

_remote_cache: dict = {}


def api(name: str):
    """The Ray-compatible module called `name` ("ray", "zray", a shim)."""
    return importlib.import_module(name)


def remote_of(name: str, target, **options):
    """`api(name).remote(target)`, made once per process and options set."""
    key = (name, target.__module__, target.__qualname__,
           tuple(sorted(options.items())))
    handle = _remote_cache.get(key)
    if handle is None:
        mod = api(name)
        handle = mod.remote(**options)(target) if options else mod.remote(target)
        _remote_cache[key] = handle
    return handle


# --- tasks -----------------------------------------------------------------

def small_value():
    return b"ok"


def noop():
    return None


def small_value_batch(name: str, n: int):
    # A task (or actor method) acting as a client that submits n tasks.
    mod = api(name)
    sv = remote_of(name, small_value)
    mod.get([sv.remote() for _ in range(n)])
    return 0


def put_small_many(name: str, count: int):
    mod = api(name)
    for _ in range(count):
        mod.put(0)


def put_arrays(name: str, count: int, nbytes: int):
    import numpy as np
    mod = api(name)
    for _ in range(count):
        mod.put(np.zeros(nbytes // 8, dtype=np.int64))


def make_refs(name: str, count: int):
    mod = api(name)
    return [mod.put(1) for _ in range(count)]


def call_actors_round_robin(name: str, actors, n: int):
    mod = api(name)
    mod.get([actors[i % len(actors)].small_value.remote() for i in range(n)])


# --- actors ----------------------------------------------------------------

class Actor:
    """Server actor; also a task-submitting client for 'multi client tasks'."""

    def __init__(self, name: str):
        self.name = name

    def small_value(self):
        return b"ok"

    def small_value_arg(self, x):
        return b"ok"

    def small_value_batch(self, n: int):
        return small_value_batch(self.name, n)


class AsyncActor:
    async def small_value(self):
        return b"ok"

    async def small_value_with_arg(self, x):
        return b"ok"


class Client:
    """Actor that drives calls to one or more server actors."""

    def __init__(self, name: str, servers):
        self.name = name
        self.servers = servers if isinstance(servers, list) else [servers]

    def small_value_batch(self, n: int):
        mod = api(self.name)
        refs = []
        for s in self.servers:
            refs.extend(s.small_value.remote() for _ in range(n))
        mod.get(refs)

    def small_value_batch_arg(self, n: int):
        mod = api(self.name)
        x = mod.put(0)
        refs = []
        for s in self.servers:
            refs.extend(s.small_value_arg.remote(x) for _ in range(n))
        mod.get(refs)

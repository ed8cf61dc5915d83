"""``ray.init(local_mode=True)``: everything runs serially in the driver.

The same API, no processes: a task runs at ``.remote()`` time, its result
(or error) is kept in a dict, and ``ray.get`` reads it. Useful with a
debugger and pdb.
"""
import copy
import os
import traceback

from .exceptions import RayActorError, RayTaskError
from .object_ref import ObjectRef


class LocalRuntime:
    def __init__(self):
        self.values = {}          # object_id -> ("ok", value) | ("error", exception)
        self.actors = {}          # name -> handle

    # ObjectRef bookkeeping: nothing to count without other processes.
    def add_local_ref(self, object_id, borrowed):
        pass

    def drop_local_ref(self, object_id):
        pass

    def store(self, status, value):
        object_id = os.urandom(20)
        self.values[object_id] = (status, value)
        return ObjectRef(object_id, _runtime=self)

    def put(self, value):
        # Objects are immutable: the caller may change its copy afterwards.
        return self.store("ok", copy.deepcopy(value))

    def get(self, object_ids):
        out = []
        for object_id in object_ids:
            status, value = self.values[object_id]
            if status == "error":
                raise value
            out.append(value)
        return out

    def get_actor(self, name):
        if name not in self.actors:
            raise ValueError(f"no actor named {name!r}")
        return self.actors[name]


def _runtime():
    from . import api
    return api._runtime()


def _resolve(args, kwargs):
    runtime = _runtime()

    def value(v):
        return runtime.get([v.id])[0] if isinstance(v, ObjectRef) else v
    return [value(a) for a in args], {k: value(v) for k, v in kwargs.items()}


def _results(name, call, n_returns):
    runtime = _runtime()
    try:
        result = call()
    except Exception as exc:
        text = traceback.format_exc()
        error = RayTaskError(name, text, exc, os.getpid()).as_instanceof_cause()
        refs = [runtime.store("error", error) for _ in range(max(n_returns, 1))]
        return refs[0] if n_returns == 1 else refs
    if n_returns == 1:
        return runtime.store("ok", result)
    if not isinstance(result, (tuple, list)) or len(result) != n_returns:
        raise ValueError(f"{name} declared num_returns={n_returns} but returned {result!r}")
    return [runtime.store("ok", v) for v in result]


def local_call(function, args, kwargs, n_returns):
    args, kwargs = _resolve(args, kwargs)
    return _results(function.__qualname__, lambda: function(*args, **kwargs), n_returns)


class LocalActorHandle:
    def __init__(self, instance, methods):
        self._instance = instance
        self._methods = methods
        self._dead = False
        self._actor_id = os.urandom(20)

    def __getattr__(self, name):
        methods = self.__dict__.get("_methods", {})
        if name not in methods:
            raise AttributeError(f"actor has no method {name!r}")
        from .actor import ActorMethod
        return ActorMethod(self, name, methods[name])

    def _kill(self):
        self._dead = True


def local_actor(cls, args, kwargs, methods):
    args, kwargs = _resolve(args, kwargs)
    return LocalActorHandle(cls(*args, **kwargs), methods)


def local_method(handle, name, args, kwargs, n_returns):
    if handle._dead:
        raise RayActorError("the actor was killed")
    args, kwargs = _resolve(args, kwargs)
    method = getattr(handle._instance, name)
    return _results(f"{type(handle._instance).__name__}.{name}",
                    lambda: method(*args, **kwargs), n_returns)

"""``ray.init(local_mode=True)``: everything runs serially in the driver.

The same API, no processes: a task runs at ``.remote()`` time, its result
(or error) is kept in a dict, and ``ray.get`` reads it. Useful with a
debugger and pdb.
"""
import asyncio
import inspect
import os
import traceback
import weakref

from .exceptions import RayActorError, RayTaskError
from .object_ref import ObjectRef
from .serialization import deserialize, serialize


class LocalRuntime:
    def __init__(self):
        self.values = {}          # object_id -> ("ok", value) | ("error", exception)
        self.actors = {}          # name -> handle
        self.in_actor_method = 0  # depth of actor method calls, for exit_actor()

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
        return self.store("ok", through_store(value))

    def get(self, object_ids):
        out = []
        for object_id in object_ids:
            status, value = self.values[object_id]
            if status == "error":
                raise value
            out.append(value)
        return out

    def get_actor(self, name):
        handle = self.actors.get(name)
        if handle is None or handle._dead:
            raise ValueError(f"no live actor named {name!r}; named actors are created with "
                             f"Cls.options(name={name!r}).remote()")
        return handle


def through_store(value):
    """``value`` as a task or ``ray.get`` would see it on a cluster: written
    and read back, so custom serializers run and arrays come back read-only."""
    data = serialize(value)
    return deserialize(data.meta, [bytes(b) for b in data.buffers])


def _runtime():
    from . import api
    return api._runtime()


def _resolve(args, kwargs):
    runtime = _runtime()

    def value(v):
        return runtime.get([v.id])[0] if isinstance(v, ObjectRef) else through_store(v)
    return [value(a) for a in args], {k: value(v) for k, v in kwargs.items()}


def _results(name, call, n_returns):
    """Run call() now; return refs to its value(s) or to its error."""
    runtime = _runtime()
    try:
        result = call()
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        if n_returns == 1:
            values = [result]
        elif not isinstance(result, (tuple, list)) or len(result) != n_returns:
            raise ValueError(f"{name} declared num_returns={n_returns} but returned "
                             f"{result!r}; return a tuple of {n_returns} values")
        else:
            values = list(result)
        values = [through_store(v) for v in values]
    except RayActorError as exc:
        values, error = None, exc
    except Exception as exc:
        values = None
        error = RayTaskError(name, traceback.format_exc(), exc, os.getpid()).as_instanceof_cause()
    if values is None:
        refs = [runtime.store("error", error) for _ in range(max(n_returns, 1))]
    else:
        refs = [runtime.store("ok", v) for v in values]
    if n_returns == 1:
        return refs[0]
    return refs if n_returns else None


def local_call(function, args, kwargs, n_returns):
    args, kwargs = _resolve(args, kwargs)
    return _results(function.__qualname__, lambda: function(*args, **kwargs), n_returns)


class LocalActorHandle:
    def __init__(self, instance, handle_meta):
        self._instance = instance
        self._class_name, self._methods, self._signatures = handle_meta
        self._dead = None         # why it died, once it has
        self._actor_id = os.urandom(20)

    def __getattr__(self, name):
        methods = self.__dict__.get("_methods", {})
        if name not in methods:
            raise AttributeError(f"actor {self.__dict__.get('_class_name', '?')} has no method "
                                 f"{name!r}")
        from .actor import ActorMethod
        return ActorMethod(self, name, methods[name])

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()[:12]}, local mode)"

    def __reduce__(self):
        # A handle passed to a task stays the same actor, not a copy of it.
        _handles[self._actor_id] = self
        return _handle_by_id, (self._actor_id,)

    def _kill(self):
        self._dead = self._dead or "it was killed by ray.kill()"


_handles = weakref.WeakValueDictionary()     # actor id -> handle, for pickling


def _handle_by_id(actor_id):
    return _handles[actor_id]


def local_actor(cls, args, kwargs, handle_meta, options):
    runtime = _runtime()
    name = options.get("name")
    if name is not None:
        existing = runtime.actors.get(name)
        if existing is not None and not existing._dead:
            if options.get("get_if_exists"):
                return existing
            raise ValueError(f"an actor named {name!r} already exists; pick another name, "
                             f"use ray.get_actor({name!r}), or pass get_if_exists=True")
    args, kwargs = _resolve(args, kwargs)
    handle = LocalActorHandle(cls(*args, **kwargs), handle_meta)
    if name is not None:
        runtime.actors[name] = handle
    return handle


def local_method(handle, name, args, kwargs, n_returns):
    runtime = _runtime()
    label = f"{handle._class_name}.{name}"
    if handle._dead:
        error = RayActorError(f"actor {handle._class_name} died before running {label}: "
                              f"{handle._dead}")
        refs = [runtime.store("error", error) for _ in range(max(n_returns, 1))]
        return refs[0] if n_returns == 1 else refs
    args, kwargs = _resolve(args, kwargs)
    method = getattr(handle._instance, name)

    def call():
        runtime.in_actor_method += 1
        try:
            result = method(*args, **kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
            return result
        except SystemExit:
            # exit_actor(): the actor is gone; this call and later ones fail.
            handle._dead = f"it exited on purpose: {label} called ray.exit_actor()"
            raise RayActorError(f"the actor exited on purpose: {label} called "
                                f"ray.exit_actor() (exit_actor)") from None
        finally:
            runtime.in_actor_method -= 1
    return _results(label, call, n_returns)

"""``ray.init(local_mode=True)``: everything runs serially in the driver.

``LocalRuntime`` has the API-facing methods of the cluster ``Runtime``
(put, get, wait, submit_task, create_actor, submit_actor_method, kill_actor,
get_actor, in_actor, request, kv_client ...), so the API calls it the same
way. A task runs at ``.remote()`` time, its result (or error) is kept in a
dict, and ``ray.get`` reads it. Useful with a debugger and pdb.
"""
import asyncio
import inspect
import os
import traceback

from .core.submit import num_returns_of
from .exceptions import RayActorError, RayTaskError, RaySystemError
from .object_ref import ObjectRef
from .serialization import deserialize, serialize

# What introspection answers in local mode: there is no cluster to ask.
_LOCAL_ANSWERS = {"cluster_resources": {}, "available_resources": {}, "nodes": [],
                  "flush_events": []}


class _LocalActor:
    __slots__ = ("instance", "class_name", "dead")

    def __init__(self, instance, class_name):
        self.instance = instance
        self.class_name = class_name
        self.dead = None          # why it died, once it has


class LocalRuntime:
    def __init__(self):
        self.values = {}          # object_id -> ("ok", value) | ("error", exception)
        self.actors = {}          # actor_id -> _LocalActor
        self.named = {}           # name -> (actor_id, handle)
        self.in_actor_method = 0  # depth of actor method calls, for exit_actor()

    # ObjectRef bookkeeping: nothing to count without other processes.
    def add_local_ref(self, object_id, borrowed):
        pass

    def add_local_refs(self, object_ids, borrowed):
        pass

    def drop_local_ref(self, object_id):
        pass

    # == objects ==============================================================
    def _store(self, status, value):
        object_id = os.urandom(20)
        self.values[object_id] = (status, value)
        return ObjectRef(object_id, _runtime=self)

    def put(self, value):
        # Objects are immutable: the caller may change its copy afterwards.
        return self._store("ok", through_store(value))

    def get(self, object_ids, timeout=None):
        out = []
        for object_id in object_ids:
            status, value = self.values[object_id]
            if status == "error":
                raise value
            out.append(value)
        return out

    def wait(self, object_ids, num_returns, timeout=None, fetch_local=True):
        return set(object_ids)    # everything ran at .remote() time

    def _resolve(self, args, kwargs):
        def value(v):
            return self.get([v.id])[0] if isinstance(v, ObjectRef) else through_store(v)
        return [value(a) for a in args], {k: value(v) for k, v in kwargs.items()}

    def _results(self, name, call, n_returns):
        """Run call() now; return refs to its value(s) or to its error."""
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
            error = RayTaskError(name, traceback.format_exc(), exc,
                                 os.getpid()).as_instanceof_cause()
        if values is None:
            refs = [self._store("error", error) for _ in range(max(n_returns, 1))]
        else:
            refs = [self._store("ok", v) for v in values]
        if n_returns == 1:
            return refs[0]
        return refs if n_returns else None

    # == tasks and actors =====================================================
    def submit_task(self, code, args, kwargs, options):
        function = code.target
        args, kwargs = self._resolve(args, kwargs)
        return self._results(function.__qualname__, lambda: function(*args, **kwargs),
                             num_returns_of(options))

    def create_actor(self, code, args, kwargs, options, handle_meta, make_handle):
        name = options.get("name")
        if name is not None and name in self.named:
            actor_id, handle = self.named[name]
            if not self.actors[actor_id].dead:
                if options.get("get_if_exists"):
                    return handle
                raise ValueError(f"an actor named {name!r} already exists; pick another "
                                 f"name, use ray.get_actor({name!r}), or pass "
                                 f"get_if_exists=True")
        args, kwargs = self._resolve(args, kwargs)
        actor_id = os.urandom(20)
        self.actors[actor_id] = _LocalActor(code.target(*args, **kwargs), handle_meta[0])
        handle = make_handle(actor_id, handle_meta, ObjectRef(actor_id, _runtime=self))
        if name is not None:
            self.named[name] = (actor_id, handle)
        return handle

    def submit_actor_method(self, actor_id, label, method, args, kwargs, n_returns):
        actor = self.actors[actor_id]
        if actor.dead:
            error = RayActorError(f"actor {actor.class_name} died before running {label}: "
                                  f"{actor.dead}")
            refs = [self._store("error", error) for _ in range(max(n_returns, 1))]
            return refs[0] if n_returns == 1 else refs
        args, kwargs = self._resolve(args, kwargs)
        bound = getattr(actor.instance, method)

        def call():
            self.in_actor_method += 1
            try:
                result = bound(*args, **kwargs)
                if inspect.iscoroutine(result):
                    result = asyncio.run(result)
                return result
            except SystemExit:
                # exit_actor(): the actor is gone; this call and later ones fail.
                actor.dead = f"it exited on purpose: {label} called ray.exit_actor()"
                raise RayActorError(f"the actor exited on purpose: {label} called "
                                    f"ray.exit_actor() (exit_actor)") from None
            finally:
                self.in_actor_method -= 1
        return self._results(label, call, n_returns)

    def kill_actor(self, actor_id, no_restart):
        actor = self.actors[actor_id]
        actor.dead = actor.dead or "it was killed by ray.kill()"

    def get_actor(self, name, make_handle):
        actor_id, handle = self.named.get(name, (None, None))
        if handle is None or self.actors[actor_id].dead:
            raise ValueError(f"no live actor named {name!r}; named actors are created with "
                             f"Cls.options(name={name!r}).remote()")
        return handle

    def in_actor(self):
        return self.in_actor_method > 0

    # == the rest: nothing to ask =============================================
    def request(self, op, *args, timeout_s=None):
        if op in _LOCAL_ANSWERS:
            return _LOCAL_ANSWERS[op]
        raise RaySystemError(f"{op!r} needs a cluster; it is not available in local mode "
                             f"(ray.init(local_mode=True))")

    def kv_client(self):
        return None

    def record_event(self, event):
        pass

    def flush_events(self):
        pass

    def close(self):
        pass


def through_store(value):
    """``value`` as a task or ``ray.get`` would see it on a cluster: written
    and read back, so custom serializers run and arrays come back read-only."""
    data = serialize(value)
    return deserialize(data.meta, [bytes(b) for b in data.buffers])

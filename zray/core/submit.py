"""Building and sending task specs: argument encoding, option checking, ids;
the cluster runtime's submit_task, create_actor and submit_actor_method.

Top-level ``ObjectRef`` arguments become dependencies (the task runs once
they exist and receives their values); refs nested deeper travel as refs.
A large argument passed by value is put in the object store once for the
call and passed as a dependency, so it is not copied through the node.
"""
import itertools
import os
import sys

from ..object_ref import ObjectRef
from ..sched.resources import demand_from_options
from ..serialization import dumps_function, serialize
from ..transport import protocol as P
from ..transport.protocol import function_id_of
from ..transport.sockets import MAX_FRAME_BYTES
from .object_cache import INLINE_MAX_BYTES

# Options Ray accepts that zray takes without acting on them.
_ACCEPTED_QUIETLY = {"memory", "object_store_memory", "accelerator_type", "runtime_env",
                     "scheduling_strategy", "placement_group", "placement_group_bundle_index",
                     "placement_group_capture_child_tasks", "retry_exceptions", "name",
                     "checkpoint_interval", "_metadata", "label_selector", "enable_task_events"}

TASK_OPTIONS = {"num_returns", "num_return_vals", "num_cpus", "num_gpus", "resources",
                "max_calls", "max_retries"} | _ACCEPTED_QUIETLY
ACTOR_OPTIONS = {"num_cpus", "num_gpus", "resources", "max_restarts", "max_reconstructions",
                 "max_concurrency", "name", "lifetime", "namespace", "max_task_retries",
                 "get_if_exists", "concurrency_groups"} | _ACCEPTED_QUIETLY

DEFAULT_MAX_RETRIES = 3


class ArgRef:
    """Placeholder for a top-level ObjectRef argument, replaced by its value."""
    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __reduce__(self):
        return ArgRef, (self.index,)


def check_options(options, allowed, what):
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))} for {what}; valid options are "
                        f"{', '.join(sorted(allowed - _ACCEPTED_QUIETLY))}")
    for key in ("num_returns", "num_return_vals", "max_calls", "max_retries", "max_restarts",
                "max_reconstructions", "max_concurrency"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (-1 if key.startswith("max_re") else 0)):
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    # Validate resources early, where the user can see the call that was wrong.
    demand_from_options(options.get("num_cpus"), options.get("num_gpus"), options.get("resources"))


def legacy_options(options):
    """Options as ``_remote(args, kwargs, **options)`` passes them in Ray 0.8
    code: every option spelled out, None meaning "not set"."""
    out = {k: v for k, v in options.items() if v is not None and k not in _LEGACY_ONLY}
    if options.get("detached"):
        out["lifetime"] = "detached"
    return out


_LEGACY_ONLY = {"is_direct_call", "is_asyncio", "detached"}


def num_returns_of(options, default=1):
    value = options.get("num_returns", options.get("num_return_vals"))
    return default if value is None else value


def new_task_id():
    """16 bytes unique in the cluster: a random prefix per process, then a
    count (os.urandom per task cost a system call, ~5% of a task's driver time)."""
    return _ID_PREFIX + next(_ids).to_bytes(8, "little")


def _new_id_prefix():
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8)


_ID_PREFIX = b""
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)     # a forked driver counts apart
_ids = itertools.count()


def return_ids(task_id, count):
    return tuple(task_id + index.to_bytes(4, "little") for index in range(count))


class FunctionBlob:
    """The pickled code of a function or class, made once, shipped once.

    ObjectRefs the code holds (globals, closures) are counted like refs in
    arguments: this process keeps them while the function lives, and every
    task of it lists them in ``contained_ids``, so the node keeps them until
    the task is done (the worker then holds its own borrowed refs).
    """

    def __init__(self, target):
        self.target = target
        self._blob = None
        self._id = None
        self.contained = ()
        self._refs = ()
        qualname = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
        self.name = qualname.split("<locals>.")[-1]

    def ensure(self, runtime):
        if self._blob is None:
            blob, contained = dumps_function(self.target)
            if len(blob) > MAX_FRAME_BYTES:     # the node would drop the connection
                raise ValueError(
                    f"remote function or class {self.name} pickles to {len(blob) >> 20} MiB, "
                    f"over zray's {MAX_FRAME_BYTES >> 20} MiB limit: it captures large data "
                    f"(a global or closure variable); pass that data as an argument or "
                    f"ray.put it and pass the ref")
            self.contained = tuple(dict.fromkeys(contained))
            self._refs = [ObjectRef(object_id, _runtime=runtime) for object_id in self.contained]
            self._blob, self._id = blob, function_id_of(blob)
        runtime.register_function(self._id, self.name, self._blob)
        return self._id

    def record(self):
        """(name, blob, sys_path), as a worker installs it (after ``ensure``)."""
        return (self.name, self._blob, list(sys.path))


def encode_arguments(runtime, args, kwargs, publish_deps=True):
    """Return (frames, dep_ids, contained_ids, keepalive) for a task's arguments.
    ``publish_deps=False``: the caller publishes the dependencies itself if
    the call goes to the node (an actor call may carry their values direct)."""
    if not args and not kwargs:
        return [_no_arguments()], (), (), ()
    deps, keepalive = [], []

    def as_marker(value):
        if isinstance(value, ObjectRef):
            deps.append(value.id)
            return ArgRef(len(deps) - 1)
        return value

    plain_args = [as_marker(a) for a in args]
    plain_kwargs = {k: as_marker(v) for k, v in kwargs.items()}
    data = serialize((plain_args, plain_kwargs))
    if data.nbytes >= INLINE_MAX_BYTES:
        def by_ref_if_large(value):
            if isinstance(value, ArgRef):
                return value
            single = serialize(value)
            if single.nbytes < INLINE_MAX_BYTES // 4:
                return value
            ref = runtime.put_data(single)
            keepalive.append(ref)
            return as_marker(ref)
        plain_args = [by_ref_if_large(a) for a in plain_args]
        plain_kwargs = {k: by_ref_if_large(v) for k, v in plain_kwargs.items()}
        data = serialize((plain_args, plain_kwargs))
    frames = [data.meta] + [bytes(b) for b in data.buffers]
    published = (deps if publish_deps else []) + list(data.contained)
    if published:
        runtime.publish(published)      # the node must know what it is given
    return frames, tuple(deps), tuple(data.contained), keepalive


_NO_ARGUMENTS = []


def _no_arguments():
    """The argument frame of a call without arguments (the same every time)."""
    if not _NO_ARGUMENTS:
        data = serialize(([], {}))
        assert not data.buffers and not data.contained
        _NO_ARGUMENTS.append(data.meta)
    return _NO_ARGUMENTS[0]


def make_spec(kind, task_id, function_id, name, n_returns, deps, contained, demand,
              max_retries=0, max_calls=0, n_arg_frames=1, actor_id=None, method=None,
              options=None, returns=None):
    return P.TaskSpec(task_id, kind, function_id, name,
                      returns if returns is not None else return_ids(task_id, n_returns),
                      deps, contained, demand, max_retries, max_calls, n_arg_frames,
                      actor_id, method, options or {}, None)


def _refs(runtime, spec, n_returns):
    refs = [ObjectRef(object_id, _runtime=runtime) for object_id in spec.return_ids]
    if n_returns == 1:
        return refs[0]
    return refs if n_returns else None


_demands = {}       # (num_cpus, num_gpus) -> demand, checked once


def _task_demand(num_cpus, num_gpus, resources):
    """``demand_from_options``, remembered for the usual options (no custom resources)."""
    if resources is not None:
        return demand_from_options(num_cpus, num_gpus, resources)
    key = (type(num_cpus), num_cpus, type(num_gpus), num_gpus)
    try:
        demand = _demands.get(key)
    except TypeError:       # unhashable: demand_from_options says what is wrong
        return demand_from_options(num_cpus, num_gpus, None)
    if demand is None:
        demand = demand_from_options(num_cpus, num_gpus, None)
        if len(_demands) < 256:
            _demands[key] = demand
    return dict(demand)


def submit_task(runtime, code, args, kwargs, options):
    """Send a task of ``code`` (a FunctionBlob); its ObjectRef(s)."""
    n_returns = num_returns_of(options)
    function_id = code.ensure(runtime)
    # Arguments go with a pushed task, or are published before its SUBMIT.
    frames, deps, contained, keepalive = encode_arguments(runtime, args, kwargs,
                                                          publish_deps=False)
    demand = _task_demand(options.get("num_cpus"), options.get("num_gpus"),
                          options.get("resources"))
    max_retries = options.get("max_retries")
    spec = make_spec(P.TASK, new_task_id(), function_id, code.name, n_returns, deps,
                     contained + code.contained, demand,
                     max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
                     max_calls=options.get("max_calls") or 0, n_arg_frames=len(frames))
    refs = _refs(runtime, spec, n_returns)
    if not (runtime.leases.eligible(spec, spec.contained_ids)
            and runtime.leases.submit(spec, frames, code.record())):   # to a leased worker
        if deps:
            runtime.publish(deps)       # the node must know what it is given
        runtime.send_message(P.SUBMIT, spec, frames=frames)
    del keepalive
    return refs


def new_actor_id(runtime):
    """20 bytes that begin with the id of the node it is created on (its home,
    which places it and routes calls to it from other nodes)."""
    try:
        home = bytes.fromhex(runtime.node_info.get("node_id", ""))
    except ValueError:
        home = b""
    if len(home) != 8:
        home = os.urandom(8)
    return home + os.urandom(12)


def create_actor(runtime, code, args, kwargs, options, handle_meta, make_handle):
    """Send an actor's creation task; ``make_handle(actor_id, meta, ref)``."""
    name = options.get("name")
    if name is not None and options.get("get_if_exists"):
        try:
            return runtime.get_actor(name, make_handle)
        except ValueError:
            pass
    function_id = code.ensure(runtime)
    frames, deps, contained, keepalive = encode_arguments(runtime, args, kwargs)
    actor_id = new_actor_id(runtime)
    if name is not None:
        # Raises ValueError on a duplicate before anything is submitted.
        runtime.request("reserve_actor_name", name, actor_id)
    explicit = any(options.get(k) is not None for k in ("num_cpus", "num_gpus", "resources"))
    if explicit:
        # Resources asked for explicitly are held for the actor's life.
        demand = demand_from_options(options.get("num_cpus"), options.get("num_gpus"),
                                     options.get("resources"), default_cpus=0)
    else:
        # As Ray: one CPU to place the actor, none while it lives.
        demand = demand_from_options(1)
    restarts = options.get("max_restarts")
    if restarts is None:
        restarts = options.get("max_reconstructions") or 0
    extra = {"max_restarts": float("inf") if restarts == -1 else restarts,
             "max_task_retries": options.get("max_task_retries") or 0,
             "max_concurrency": options.get("max_concurrency"), "name": name,
             "hold_resources": explicit, "handle_meta": handle_meta,
             "detached": options.get("lifetime") == "detached"}
    spec = make_spec(P.ACTOR_CREATE, new_task_id(), function_id, handle_meta[0], 1, deps,
                     contained + code.contained, demand, n_arg_frames=len(frames),
                     actor_id=actor_id, options=extra, returns=(actor_id,))
    ref = ObjectRef(actor_id, _runtime=runtime)
    runtime.send_message(P.SUBMIT, spec, frames=frames)
    del keepalive
    return make_handle(actor_id, handle_meta, ref)


def submit_actor_method(runtime, actor_id, label, method, args, kwargs, n_returns):
    """Send one call of an actor's method; its ObjectRef(s)."""
    frames, deps, contained, keepalive = encode_arguments(runtime, args, kwargs,
                                                          publish_deps=False)
    spec = make_spec(P.ACTOR_METHOD, new_task_id(), b"", label, n_returns, deps, contained, {},
                     n_arg_frames=len(frames), actor_id=actor_id, method=method)
    refs = _refs(runtime, spec, n_returns)
    # Straight to the actor's worker when it can go so (core/direct.py); it
    # keeps the arguments alive until the call is answered.
    runtime.send_actor_call(spec, frames)
    del keepalive
    return refs

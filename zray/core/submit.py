"""Building task specs: argument encoding, option checking, ids.

Top-level ``ObjectRef`` arguments become dependencies (the task runs once
they exist and receives their values); refs nested deeper travel as refs.
A large argument passed by value is put in the object store once for the
call and passed as a dependency, so it is not copied through the node.
"""
import os

from ..object_ref import ObjectRef
from ..sched.resources import demand_from_options
from ..serialization import dumps_function, serialize
from ..transport import protocol as P
from ..transport.protocol import function_id_of
from .runtime import INLINE_MAX_BYTES
from .worker import ArgRef

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
    return os.urandom(16)


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
            self.contained = tuple(dict.fromkeys(contained))
            self._refs = [ObjectRef(object_id, _runtime=runtime) for object_id in self.contained]
            self._blob, self._id = blob, function_id_of(blob)
        runtime.register_function(self._id, self.name, self._blob)
        return self._id


def encode_arguments(runtime, args, kwargs, put_large):
    """Return (frames, dep_ids, contained_ids, keepalive) for a task's arguments."""
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
            ref = put_large(single)
            keepalive.append(ref)
            return as_marker(ref)
        plain_args = [by_ref_if_large(a) for a in plain_args]
        plain_kwargs = {k: by_ref_if_large(v) for k, v in plain_kwargs.items()}
        data = serialize((plain_args, plain_kwargs))
    frames = [data.meta] + [bytes(b) for b in data.buffers]
    return frames, tuple(deps), tuple(data.contained), keepalive


def make_spec(kind, task_id, function_id, name, n_returns, deps, contained, demand,
              max_retries=0, max_calls=0, n_arg_frames=1, actor_id=None, method=None,
              options=None, returns=None):
    return P.TaskSpec(task_id, kind, function_id, name,
                      returns if returns is not None else return_ids(task_id, n_returns),
                      deps, contained, demand, max_retries, max_calls, n_arg_frames,
                      actor_id, method, options or {}, None)

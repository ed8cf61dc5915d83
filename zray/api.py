"""The public functions of ``zray``: init/shutdown, get/put/wait, remote.

One ``_Session`` object holds everything ``init`` made; ``shutdown`` undoes
it. Nothing is created at import time. ``init`` puts a runtime in
``core.context`` (a cluster ``Runtime``, or a ``LocalRuntime`` in local
mode, with the same methods); every call here and in ``actor`` /
``remote_function`` goes to whichever it is, without asking which.
"""
import atexit
import numbers
import os
import threading

from . import stackdump
from .actor import ActorClass, ActorHandle
from .core import context
from .core.runtime import Runtime
from .local_mode import LocalRuntime
from .object_ref import ObjectRef
from .plasma import shm
from .remote_function import RemoteFunction

_INIT_LEGACY_OPTIONS = {
    "redis_max_memory", "node_ip_address", "object_id_seed", "num_redis_shards",
    "redis_max_clients", "redirect_worker_output", "redirect_output", "include_webui",
    "include_dashboard", "dashboard_host", "dashboard_port", "driver_id", "driver_mode",
    "configure_logging", "logging_level", "logging_format", "plasma_store_socket_name",
    "raylet_socket_name", "load_code_from_local", "_internal_config", "_system_config",
    "num_workers", "use_raylet", "num_custom_resource", "namespace", "runtime_env",
    "job_config", "_node_ip_address", "_enable_object_reconstruction", "_metrics_export_port",
    "object_spilling_directory", "_temp_dir", "_plasma_directory", "_redis_password",
}

_session = None
_lock = threading.RLock()


class _Session:
    def __init__(self, runtime, daemons, info):
        self.runtime = runtime
        self.daemons = daemons
        self.info = info


# == init / shutdown ===========================================================
def init(address=None, *, num_cpus=None, num_gpus=None, resources=None,
         object_store_memory=None, local_mode=False, ignore_reinit_error=False,
         log_to_driver=True, plasma_directory=None, huge_pages=False, temp_dir=None,
         redis_address=None, redis_password=None, _password=None, **options):
    """Start zray on this machine, or connect to a running cluster.

    ``address=None`` starts a kv service, a node daemon and workers that stop
    with this process. ``address="HOST:PORT"`` (alias ``redis_address``) or
    ``"auto"`` connects to a cluster started with ``zray start``.
    """
    global _session
    unknown = sorted(set(options) - _INIT_LEGACY_OPTIONS)
    if unknown:
        raise TypeError(f"ray.init got unknown keyword argument{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}. Valid ones include address, num_cpus, "
                        f"num_gpus, resources, object_store_memory, local_mode, "
                        f"ignore_reinit_error, log_to_driver, plasma_directory, temp_dir, "
                        f"redis_password")
    with _lock:
        if _session is not None:
            if ignore_reinit_error:
                return dict(_session.info)
            raise RuntimeError("ray.init was called twice: zray is already running in this "
                               "process. Call ray.shutdown() first, or pass "
                               "ignore_reinit_error=True")
        address = address or redis_address
        temp_dir = temp_dir or options.get("_temp_dir")
        plasma_directory = plasma_directory or options.get("_plasma_directory")
        password = redis_password or _password or options.get("_redis_password") or ""
        _check_resources(num_cpus, num_gpus, resources, object_store_memory)
        if local_mode:
            _session = _Session(LocalRuntime(), None, {"local_mode": True})
            context.set_current(_session.runtime)
        elif address:
            if any(v is not None for v in (num_cpus, num_gpus, resources, object_store_memory)):
                raise ValueError("when connecting to an existing cluster (address=...), "
                                 "num_cpus, num_gpus, resources and object_store_memory cannot "
                                 "be passed: they were fixed when the cluster was started "
                                 "(`zray start --num-cpus ...`)")
            _session = _connect(address, password, log_to_driver)
        else:
            _session = _start_local(num_cpus, num_gpus, resources, object_store_memory,
                                    plasma_directory, huge_pages, temp_dir, password,
                                    log_to_driver, _dashboard_options(options),
                                    options.get("object_spilling_directory"))
        if not local_mode:
            stackdump.install("driver", _session.info.get("session_dir"))
        _register_exit_hook()
        return dict(_session.info)


def _check_resources(num_cpus, num_gpus, resources, object_store_memory):
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus),
                        ("object_store_memory", object_store_memory)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or value < 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict of name -> quantity, got {resources!r}")
        for name, value in resources.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"pass {name} as num_{name.lower()}s=..., not in resources")
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"resource {name!r} must be a number >= 0, got {value!r}")
    # Whole GPUs, 0.0001 precision, names: the node's own rules, checked here
    # so the error comes from ray.init and not from a node that failed to start.
    from .sched.resources import totals_from_options
    totals_from_options(num_cpus or 0, num_gpus or 0, resources)


def _dashboard_options(options):
    """include_dashboard / include_webui (default on), dashboard_host, dashboard_port."""
    include = options.get("include_dashboard", options.get("include_webui"))
    return {"include_dashboard": include is None or bool(include),
            "dashboard_host": options.get("dashboard_host"),
            "dashboard_port": options.get("dashboard_port")}


def _start_local(num_cpus, num_gpus, resources, object_store_memory, plasma_directory,
                 huge_pages, temp_dir, password, log_to_driver, dashboard_options,
                 spill_dir=None):
    import psutil
    from . import session
    if spill_dir is not None:
        spill_dir = session.check_spill_dir(spill_dir)
    plasma_dir = plasma_directory or "/dev/shm"
    if not os.path.isdir(plasma_dir):
        raise ValueError(f"plasma_directory {plasma_dir!r} is not a directory")
    if huge_pages and not shm.is_hugetlbfs(plasma_dir):
        raise ValueError("huge_pages=True needs plasma_directory to be a hugetlbfs mount "
                         f"(mount -t hugetlbfs none /mnt/huge); {plasma_dir!r} is not one")
    gpu_ids = session.detect_gpus()
    if num_gpus is None:
        num_gpus = len(gpu_ids)
    elif len(gpu_ids) < num_gpus:
        gpu_ids = list(range(int(num_gpus)))
    daemons = session.start_daemons(
        num_cpus=psutil.cpu_count() if num_cpus is None else num_cpus,
        num_gpus=num_gpus, gpu_ids=gpu_ids, resources=resources,
        object_store_memory=object_store_memory or session.default_object_store_memory(),
        plasma_dir=plasma_dir, temp_dir=temp_dir, password=password, owner_pid=os.getpid(),
        spill_dir=spill_dir, head=True, wait_dashboard=False, **dashboard_options)
    try:
        runtime = Runtime(daemons.node_address, "driver", password=daemons.token,
                          log_to_driver=log_to_driver)
    except BaseException:
        daemons.stop()
        raise
    runtime.node_alive = lambda: daemons.node_process.poll() is None
    context.set_current(runtime)
    info = dict(daemons.info)
    info["address"] = daemons.info["kv_address"]
    return _Session(runtime, daemons, info)


def _connect(address, password, log_to_driver):
    from .cluster import current_token, find_cluster
    password = current_token(address, password)
    node_address, info = find_cluster(address, password)
    runtime = Runtime(node_address, "driver", password=password, log_to_driver=log_to_driver)
    context.set_current(runtime)
    return _Session(runtime, None, info)


def shutdown(exiting_interpreter=False):
    """Disconnect, and stop the processes ``init`` started. Safe to call twice."""
    global _session
    with _lock:
        session, _session = _session, None
        if session is None:
            return
        context.set_current(None)
        stackdump.uninstall()
        session.runtime.close()
        if session.daemons is not None:
            session.daemons.stop()


_exit_hook_registered = False
context.set_auto_init(init)     # a .remote() before ray.init starts zray, as in Ray


def _register_exit_hook():
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(shutdown, True)
        _exit_hook_registered = True


def is_initialized():
    return _session is not None


# == helpers for the other API modules =========================================
def _runtime():
    return context.require()


def _kv():
    """A kv client for this process (drivers and workers alike); None in local mode."""
    runtime = context.current()
    return None if runtime is None else runtime.kv_client()


# == objects ===================================================================
def put(value):
    """Store ``value`` in the object store; return its ObjectRef."""
    runtime = context.for_submit()
    if isinstance(value, ObjectRef):
        raise TypeError("ray.put of an ObjectRef is not allowed; pass the ObjectRef itself")
    return runtime.put(value)


def _as_ref_list(refs, what):
    if isinstance(refs, ObjectRef):
        return [refs], True
    if isinstance(refs, (list, tuple)):
        for item in refs:
            if not isinstance(item, ObjectRef):
                raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs; the list "
                                f"holds {type(item).__name__} {item!r}")
        return list(refs), False
    raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs, got "
                    f"{type(refs).__name__} {refs!r}")


def _check_timeout(timeout):
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
                                or timeout < 0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")


def get(object_refs, *, timeout=None):
    """The value(s) of one ObjectRef or a list of them; blocks until ready."""
    refs, single = _as_ref_list(object_refs, "ray.get")
    _check_timeout(timeout)
    values = context.require().get([r.id for r in refs], timeout)
    return values[0] if single else values


def wait(object_refs, *, num_returns=1, timeout=None, fetch_local=True):
    """Return (ready, not_ready): the first ``num_returns`` ready refs, in input order."""
    if isinstance(object_refs, ObjectRef):
        raise TypeError("ray.wait takes a list of ObjectRefs; wrap a single one in a list")
    refs, _ = _as_ref_list(object_refs, "ray.wait")
    _check_timeout(timeout)
    if not refs:
        return [], []           # as Ray: nothing to wait for
    if len({r.id for r in refs}) != len(refs):
        raise ValueError("ray.wait got the same ObjectRef more than once; pass unique refs")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"num_returns must be a positive integer, got {num_returns!r}")
    if num_returns > len(refs):
        raise ValueError(f"num_returns={num_returns} is more than the {len(refs)} refs given")
    # fetch_local=False: ready once it exists on any node; nothing is copied here.
    ready_ids = context.require().wait([r.id for r in refs], num_returns, timeout,
                                       fetch_local=bool(fetch_local))
    ready, not_ready = [], []
    for ref in refs:
        if ref.id in ready_ids and len(ready) < num_returns:
            ready.append(ref)
        else:
            not_ready.append(ref)
    return ready, not_ready


# == remote ====================================================================
def remote(*args, **kwargs):
    """``@ray.remote`` or ``@ray.remote(num_cpus=..., ...)`` on a function or class."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@ray.remote takes either a function/class, or keyword options only: "
                        "@ray.remote(num_cpus=2)")

    def decorate(target):
        return _make_remote(target, kwargs)
    return decorate


def _make_remote(target, options):
    if isinstance(target, type):
        return ActorClass(target, options)
    if callable(target) and hasattr(target, "__code__"):
        return RemoteFunction(target, options)
    raise TypeError(f"@ray.remote works on functions and classes, not on "
                    f"{type(target).__name__} {target!r}")


# == actors ====================================================================
def kill(actor, *, no_restart=True):
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"ray.kill takes an actor handle, got {type(actor).__name__}")
    context.require().kill_actor(actor._actor_id, no_restart)


def get_actor(name):
    if not isinstance(name, str):
        raise TypeError(f"ray.get_actor takes the actor's name, got {name!r}")
    return context.require().get_actor(name, ActorHandle)

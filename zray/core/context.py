"""The runtime of this process, if any: the layer the API modules share, so
none of them imports another to find it. Set by ``ray.init`` (a cluster
``Runtime`` or a ``LocalRuntime``) or by the worker main loop; nothing is
created at import."""
from ..exceptions import RaySystemError

_runtime = None
_worker = None
_auto_init = None       # fn() that starts zray, for a .remote() before ray.init


def current():
    return _runtime


def set_current(runtime):
    global _runtime
    _runtime = runtime


def require():
    """The current runtime; a clear error if there is none."""
    if _runtime is None:
        raise RaySystemError("zray is not running in this process: call ray.init() first")
    return _runtime


def set_auto_init(init):
    global _auto_init
    _auto_init = init


def for_submit():
    """The current runtime, starting zray first if nobody has (as Ray does)."""
    if _runtime is None and _auto_init is not None:
        _auto_init()
    return require()


def current_worker():
    """The Worker object when this process is a zray worker, else None."""
    return _worker


def set_worker(worker):
    global _worker
    _worker = worker

"""The runtime of this process, if any. Set by ``ray.init`` or the worker
main loop; nothing is created at import."""
_runtime = None


def current():
    return _runtime


def set_current(runtime):
    global _runtime
    _runtime = runtime

_worker = None


def current_worker():
    """The Worker object when this process is a zray worker, else None."""
    return _worker


def set_worker(worker):
    global _worker
    _worker = worker

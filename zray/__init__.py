"""zray: the Ray API on a broker-less ZeroMQ runtime. ``import zray as ray``.

Layers, top down: the API (``api`` over ``actor``, ``remote_function``,
``local_mode``, ``object_ref``), the per-process runtime (``core/``, current
one in ``core.context``), the node daemon (``sched/``, its pure state in
``sched/state/``), the object store (``plasma/``), the metadata service
(``kv/``), and the wire (``transport/``). Lower layers never import upper ones
(``tests/test_layering.py``)."""
from . import exceptions
from .actor import ActorClass, ActorHandle, exit_actor, method
from .api import get, get_actor, init, is_initialized, kill, put, remote, shutdown, wait
from .introspection import (available_resources, cluster_resources, error_info, errors,
                            get_gpu_ids, get_resource_ids, get_webui_url, nodes, profile,
                            timeline)
from .object_ref import ObjectID, ObjectRef
from .serialization import register_custom_serializer

__version__ = "0.1.0"

__all__ = [
    "ActorClass", "ActorHandle", "ObjectID", "ObjectRef", "available_resources",
    "cluster_resources", "error_info", "errors", "exceptions", "exit_actor", "get", "get_actor",
    "get_gpu_ids", "get_resource_ids", "get_webui_url", "init", "is_initialized", "kill",
    "method", "nodes", "profile", "put", "register_custom_serializer", "remote", "shutdown",
    "timeline", "wait",
]

"""Looking at a running cluster: resources, nodes, errors, the timeline."""
import json
import os
import threading
import time

from . import api
from .cluster import local_ip_towards
from .core import context


def cluster_resources():
    """Total resources of the cluster: {'CPU': 2, 'GPU': 0, ...}."""
    return context.require().request("cluster_resources")


def available_resources():
    """Resources free right now."""
    return context.require().request("available_resources")


def nodes():
    """One dict per node: id, address, resources, alive."""
    rows = []
    for n in context.require().request("nodes"):
        ip, port = _ip_and_port(n.get("tcp_address"))
        rows.append({"NodeID": n["node_id"], "Alive": n["alive"], "Resources": n["resources"],
                     "NodeManagerAddress": ip, "NodeManagerPort": port,
                     "NodeManagerHostname": n["hostname"], **n})
    return rows


def _ip_and_port(tcp_address):
    """(ip, port) of a node's tcp endpoint; a node listening only on its unix
    socket (a local ray.init) has this machine's ip and port 0."""
    if tcp_address and tcp_address.startswith("tcp://"):
        host, _, port = tcp_address[len("tcp://"):].rpartition(":")
        if host not in ("0.0.0.0", "*", ""):
            return host, int(port)
        return local_ip_towards("8.8.8.8"), int(port)
    return local_ip_towards("8.8.8.8"), 0


def errors(all_jobs=False):
    """Ray 0.8's name of ``error_info``."""
    return error_info()


def error_info():
    """Errors of failed tasks, oldest first, as kept in the kv service."""
    kv = api._kv()
    if kv is None:
        return []
    errors = kv.scan("err:")
    return [errors[key] for key in sorted(errors)]


def get_gpu_ids():
    """GPU ids given to the current task or actor ([] in a driver)."""
    worker = context.current_worker()
    if worker is None:
        return []
    return [gpu for gpu, _ in worker.resource_ids.get("GPU", [])]


def get_resource_ids():
    """{name: [(id, fraction), ...]} of what the current task or actor holds:
    GPUs as the node assigned them, other resources as whole units 0, 1, ...
    and a last fractional share ({} in a driver)."""
    worker = context.current_worker()
    if worker is None:
        return {}
    from .sched.resources import UNIT
    out = {}
    for name, amount in sorted(worker.resource_demand.items()):
        if name != "GPU" and amount > 0:
            whole, part = divmod(amount, UNIT)
            out[name] = [(i, 1.0) for i in range(whole)] + ([(whole, part / UNIT)] if part else [])
    out.update({k: list(v) for k, v in worker.resource_ids.items()})
    return out


def get_webui_url():
    """The dashboard's URL, token included (None in local mode or without a
    dashboard). The head publishes it in the kv, so connected drivers see it too."""
    daemons = getattr(api._session, "daemons", None)
    if daemons is not None:         # started by this ray.init: wait for it once
        return daemons.webui_url()
    kv = api._kv()
    return kv.get("webui:url") if kv is not None else None


def timeline(filename=None):
    """Task start/end events (chrome://tracing format); written to ``filename`` if given."""
    runtime = context.require()
    runtime.flush_events()
    held = runtime.request("flush_events")      # the node's batch, not yet stored
    kv = runtime.kv_client()
    if kv is not None and held:
        kv.call("add_events", held)
    stored = kv.scan("event:") if kv is not None else {}
    events = [stored[key] for key in sorted(stored)]
    if filename is not None:
        with open(filename, "w") as out:
            json.dump(events, out)
        return None
    return events


class profile:
    """``with ray.profile("name", extra_data={...}):`` adds a span to the timeline."""

    def __init__(self, event_type, extra_data=None):
        if extra_data is not None and not isinstance(extra_data, dict):
            raise TypeError("extra_data must be a dict of strings")
        self.event_type = event_type
        self.extra_data = dict(extra_data or {})

    def __enter__(self):
        self.start = time.time()
        return self

    def __exit__(self, *exc):
        runtime = context.current()
        if runtime is None:
            return False
        event = {"name": self.extra_data.get("name", self.event_type), "cat": self.event_type,
                 "ph": "X", "pid": os.getpid(), "tid": threading.get_ident() % 100000,
                 "ts": self.start * 1e6, "dur": (time.time() - self.start) * 1e6,
                 "args": self.extra_data}
        if "cname" in self.extra_data:
            event["cname"] = self.extra_data["cname"]
        runtime.record_event(event)
        return False

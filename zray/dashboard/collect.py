"""Reading the cluster for the dashboard: the kv service and every node.

::

    ClusterReader.refresh() ── kv: scan node:, scan err:, events_since ──► kv service
                            └─ per node: REQUEST status, introspect ──► node daemons

The kv says which nodes exist, which tasks failed (``err:``) and what ran
(``event:``, read incrementally: only events after the last one seen).
Each node answers for its resources, workers, actors and objects. A
refresh happens when a page asks and the last one is older than
``max_age_s``, so an unwatched dashboard costs the cluster nothing.
"""
import collections
import logging
import threading
import time

from ..cluster import NodeClient
from ..introspection import _ip_and_port as ip_and_port
from ..kv.client import KvClient

log = logging.getLogger("zray.dashboard")

EVENTS_KEPT = 20_000          # task spans kept for the tasks and timeline pages
FIRST_READ_EVENTS = 20_000    # a dashboard opened late reads only this many old events
NODE_TIMEOUT_S = 2.0
KV_TIMEOUT_S = 3.0            # a page waits at most this for a kv service being restarted


class ClusterReader:
    def __init__(self, kv_address, password="", max_age_s=0.8):
        self.kv = KvClient(kv_address, password)
        self.password = password
        self.max_age_s = max_age_s
        self.lock = threading.Lock()
        self.clients = {}                 # node_id -> NodeClient
        self.known_nodes = {}             # node_id -> last kv record (dead ones stay, marked)
        self.event_sequence = 0
        self.spans = collections.deque(maxlen=EVENTS_KEPT)   # task and profile events
        self.tasks_done = 0               # task spans seen since the dashboard started
        self.worker_nodes = {}            # pid -> node_id, remembered after workers exit
        self.first_seen = {}              # running task id -> when first seen running
        self.snapshot = None
        self.taken_at = 0.0

    def latest(self):
        """The cluster as of at most ``max_age_s`` ago (refreshed if older)."""
        with self.lock:
            if self.snapshot is None or time.monotonic() - self.taken_at > self.max_age_s:
                self.snapshot = self._refresh()
                self.taken_at = time.monotonic()
            return self.snapshot

    def _refresh(self):
        listed = self.kv.call("scan", "node:", timeout_s=KV_TIMEOUT_S)
        records = {key[len("node:"):]: info for key, info in listed.items()}
        for node_id, info in records.items():
            self.known_nodes[node_id] = info
        nodes = [self._read_node(node_id, info, node_id in records)
                 for node_id, info in self.known_nodes.items()]
        errors = self.kv.call("scan", "err:", timeout_s=KV_TIMEOUT_S)
        self._read_events()
        running_ids = set()
        for node in nodes:
            for worker in (node.get("view") or {}).get("workers", ()):
                self.worker_nodes[worker["pid"]] = node["node_id"]
            for task in (node.get("view") or {}).get("running", ()):
                running_ids.add(task["task_id"])
                self.first_seen.setdefault(task["task_id"], time.time())
        for task_id in set(self.first_seen) - running_ids:
            del self.first_seen[task_id]
        return {"time": time.time(), "nodes": nodes,
                "errors": [errors[key] for key in sorted(errors)],
                "spans": list(self.spans), "tasks_done": self.tasks_done,
                "worker_nodes": dict(self.worker_nodes), "first_seen": dict(self.first_seen)}

    def _read_node(self, node_id, info, listed):
        ip, port = ip_and_port(info.get("tcp_address"))     # as ray.nodes() gives them
        row = {"node_id": node_id, "info": info, "alive": listed, "ip": ip, "port": port}
        if not listed:
            self._drop_client(node_id)
            return row
        try:
            client = self.clients.get(node_id)
            if client is None:
                client = self.clients[node_id] = NodeClient(
                    info.get("tcp_address") or info["address"], self.password, NODE_TIMEOUT_S)
            row["status"] = client.request("status")
            row["view"] = client.request("introspect")
        except Exception as exc:      # one unreachable node must not hide the others
            self._drop_client(node_id)
            row["error"] = str(exc)
        return row

    def _drop_client(self, node_id):
        client = self.clients.pop(node_id, None)
        if client is not None:
            client.close()

    def _read_events(self):
        for client in list(self.clients.values()):
            # Nodes hold events back for a moment; this page wants them now.
            try:
                held = client.request("flush_events")     # its batch: we store it
            except Exception:
                continue    # _read_node reports an unreachable node
            if held:
                self.kv.call("add_events", held, timeout_s=KV_TIMEOUT_S)
        limit = FIRST_READ_EVENTS if self.event_sequence == 0 else EVENTS_KEPT
        last, events = self.kv.call("events_since", self.event_sequence, limit,
                                    timeout_s=KV_TIMEOUT_S)
        if last < self.event_sequence:
            # A restarted kv service (events are not journaled) counts from 0 again.
            last, events = self.kv.call("events_since", 0, limit, timeout_s=KV_TIMEOUT_S)
        self.event_sequence = last
        for event in events:
            if event.get("ph") == "X":
                self.spans.append(event)
                if event.get("cat") == "task":
                    self.tasks_done += 1

    def log_tail(self, node_id, pid, max_bytes=64 * 1024):
        with self.lock:
            client = self.clients.get(node_id)
            if client is None:
                raise KeyError(f"no live node {node_id!r}")
            return client.request("log_tail", int(pid), max_bytes)

    def all_events(self):
        """Every event the kv holds, for the chrome-tracing download."""
        with self.lock:
            stored = self.kv.scan("event:")
        return [stored[key] for key in sorted(stored)]

    def close(self):
        for node_id in list(self.clients):
            self._drop_client(node_id)
        self.kv.close()

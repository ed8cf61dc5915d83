"""Finding a running cluster from an address: ``"auto"`` or ``"HOST:PORT"``.

``zray start`` writes the cluster's addresses to ``<temp root>/cluster.json``;
``"auto"`` reads it. ``"HOST:PORT"`` is the kv service; the node to talk to
is the one on this machine if there is one, else the head node.
"""
import json
import os
import socket

from .kv.client import KvClient
from .session import default_temp_root


def cluster_file(temp_dir=None):
    return os.path.join(temp_dir or default_temp_root(), "cluster.json")


def find_cluster(address, password=""):
    if address == "auto":
        path = cluster_file()
        if not os.path.exists(path):
            raise ConnectionError("address='auto' found no zray cluster started on this machine "
                                  "(start one with `zray start --head`)")
        with open(path) as f:
            address = json.load(f)["address"]
    kv_address = address if "://" in address else f"tcp://{address}"
    kv = KvClient(kv_address, password)
    try:
        nodes = kv.call("scan", "node:", timeout_s=5.0)
    except Exception as exc:
        raise ConnectionError(f"could not reach a zray cluster at {address}: {exc}") from None
    finally:
        kv.close()
    if not nodes:
        raise ConnectionError(f"the zray cluster at {address} has no live nodes")
    here = socket.gethostname()
    infos = sorted(nodes.values(), key=lambda n: (n.get("hostname") != here, not n.get("head")))
    chosen = infos[0]
    node_address = chosen.get("tcp_address") or chosen["address"]
    info = {"address": address, "kv_address": kv_address, "node_address": node_address,
            "node_id": chosen["node_id"], "session_dir": chosen.get("session_dir")}
    return node_address, info

"""Finding a running cluster from an address: ``"auto"`` or ``"HOST:PORT"``.

``zray start`` writes the cluster's address to ``<temp root>/cluster.json``;
``"auto"`` reads it, and so does any client on that machine that was given
no token: the file (0600) holds the cluster token. ``"HOST:PORT"`` is the kv service; the node to talk to
is one on this machine if there is one (over ipc when its socket is here),
else the head node. ``NodeClient`` is the small blocking client the command
line uses to ask each node for its status.
"""
import os
import socket

import zmq

from .exceptions import RaySystemError
from .kv.client import KvClient
from .kv.records import valid_node_record
from .session import default_temp_root
from .temp_root import check_temp_root, read_private_json, write_private_json
from .transport import auth
from .transport import protocol as P

WRONG_PASSWORD = "wrong cluster password"


def cluster_file(temp_dir=None):
    return os.path.join(temp_dir or default_temp_root(), "cluster.json")


def write_cluster_file(temp_dir, record):
    """Record the cluster (with its token: the file is 0600 in our own root)."""
    path = cluster_file(temp_dir)
    check_temp_root(os.path.dirname(path))
    write_private_json(path, record)
    return path


def read_cluster_file(temp_dir=None):
    path = cluster_file(temp_dir)
    check_temp_root(os.path.dirname(path), create=False)
    record = read_private_json(path)
    return record if isinstance(record, dict) else None


def current_token(address="auto", password="", temp_dir=None):
    """The token of the cluster at ``address`` (default: the current one):
    ``password`` if given; else that of the cluster this process is connected
    to (ray.init), if it is that one; else the one `zray start` recorded on
    this machine for it; "" if none is known. The one place to ask."""
    if password:
        return password
    from .core import context
    runtime = context.current()
    token = getattr(runtime, "password", None)
    if token and isinstance(getattr(runtime, "node_info", None), dict):
        here = runtime.node_info.get("kv_address") or ""
        if address in (None, "", "auto") or _bare(address) == _bare(here):
            return token
    record = read_cluster_file(temp_dir)
    if record is None:
        return ""
    if address not in (None, "", "auto") and _bare(address) != record.get("address"):
        return ""
    token = record.get("token")
    return token if isinstance(token, str) else ""


def _bare(address):
    return address.strip().split("://", 1)[-1] if isinstance(address, str) else ""


def resolve_address(address, temp_dir=None):
    """``"auto"``/None -> the address in cluster.json; returns ``(address, kv_address)``."""
    if address in (None, "", "auto"):
        record = read_cluster_file(temp_dir)
        if record is None:
            raise ConnectionError(
                f"found no zray cluster started on this machine (no {cluster_file(temp_dir)}): "
                f"start one with `zray start --head`, or pass its address (HOST:PORT)")
        address = record["address"]
    address = address.strip()
    if "://" in address:
        return address.split("://", 1)[1], address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"a cluster address looks like HOST:PORT (as printed by "
                         f"`zray start --head`), got {address!r}")
    return address, f"tcp://{address}"


def kv_call(kv_address, password, op, *args, timeout_s=5.0, address=None):
    """One kv call with the errors a user can act on."""
    address = address or kv_address
    try:
        kv = KvClient(kv_address, password)
    except auth.NeedsToken:
        raise
    except ConnectionError as exc:
        raise ConnectionError(f"could not reach a zray cluster at {address}: {exc}") from None
    try:
        return kv.call(op, *args, timeout_s=timeout_s)
    except RaySystemError as exc:
        if WRONG_PASSWORD in str(exc):
            raise ConnectionRefusedError(
                f"the zray cluster at {address} refused the connection: wrong password. Pass "
                f"the --redis-password it was started with (redis_password=... in "
                f"ray.init)") from None
        raise ConnectionError(f"could not reach a zray cluster at {address}: {exc}") from None
    finally:
        kv.close()


def list_nodes(address, password="", temp_dir=None):
    """``(address, kv_address, {node_id: info})`` of the live nodes."""
    password = current_token(address, password, temp_dir)
    address, kv_address = resolve_address(address, temp_dir)
    nodes = kv_call(kv_address, password, "scan", "node:", address=address)
    nodes = {key[len("node:"):]: info for key, info in nodes.items()}
    return address, kv_address, {node_id: info for node_id, info in nodes.items()
                                 if valid_node_record(node_id, info)}


def find_cluster(address, password="", temp_dir=None):
    address, kv_address, nodes = list_nodes(address, password, temp_dir)
    if not nodes:
        raise ConnectionError(f"the zray cluster at {address} has no live nodes; start one "
                              f"with `zray start --head` (or `zray start --address {address}`)")
    here = socket.gethostname()
    infos = sorted(nodes.values(), key=lambda n: (n.get("hostname") != here, not n.get("head")))
    chosen = infos[0]
    # No node here: the head's, over tcp. Large objects then travel over that
    # connection (plasma/by_value.py) instead of through shared memory.
    node_address = chosen.get("tcp_address") or chosen["address"]
    ipc = chosen.get("address", "")
    if chosen.get("hostname") == here and ipc.startswith("ipc://") and os.path.exists(ipc[6:]):
        node_address = ipc       # same machine: the unix socket is faster than tcp
    info = {"address": address, "kv_address": kv_address, "node_address": node_address,
            "node_id": chosen["node_id"], "session_dir": chosen.get("session_dir"),
            "session_name": chosen.get("session_name")}
    return node_address, info


def local_ip_towards(host):
    """This machine's address on the route to ``host`` (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 9))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class NodeClient:
    """A blocking control-plane connection to one node (for the command line)."""

    def __init__(self, address, password="", timeout_s=5.0):
        self.address = address
        self.timeout_s = timeout_s
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IDENTITY, b"t" + os.urandom(7))
        try:
            auth.connect(self.socket, address, password, check_s=min(timeout_s,
                                                                     auth.HANDSHAKE_TIMEOUT_S))
        except BaseException:
            self.socket.close(0)
            raise
        self.next_id = 0
        self.socket.send_multipart(P.pack(P.HELLO, "tool", os.getpid(), password,
                                          P.PROTOCOL_VERSION, [], None))
        msg_type, fields = self._receive()
        if msg_type == P.REFUSED:
            self.close()
            raise ConnectionRefusedError(f"the zray node at {address} refused: {fields[0]}")
        self.info = fields[0]

    def _receive(self):
        if not self.socket.poll(int(self.timeout_s * 1000)):
            self.close()
            raise ConnectionError(f"the zray node at {self.address} did not answer within "
                                  f"{self.timeout_s:.0f} s")
        return P.unpack(self.socket.recv_multipart()[0])

    def request(self, op, *args):
        self.next_id += 1
        self.socket.send_multipart(P.pack(P.REQUEST, self.next_id, op, args))
        while True:
            msg_type, fields = self._receive()
            if msg_type == P.RESPONSE and fields[0] == self.next_id:
                _, ok, value = fields
                if not ok:
                    raise RaySystemError(f"node {self.address}: {op} failed: {value}")
                return value

    def close(self):
        try:
            self.socket.send_multipart(P.pack(P.BYE), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self.socket.close(0)

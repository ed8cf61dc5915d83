"""What a record in the kv must look like before anyone acts on it.

Any client holding the token can write any key; a node or driver that
connects somewhere, or counts resources, because of a record checks it here
first, and ignores it if malformed.
"""

ACTOR_NAME_PREFIX = "actor_name:"    # name -> (actor_id, handle_meta), by the actor's home
ACTOR_DIRECT_PREFIX = "actor_direct:"  # actor id hex -> its worker's tcp socket (by the worker)


def valid_actor_direct_record(record):
    """A worker's tcp address, its node's id and its worker id (hex)."""
    if not isinstance(record, dict):
        return False
    address, node_id, worker_id = (record.get(k) for k in ("address", "node_id", "worker_id"))
    if not (isinstance(address, str) and address.startswith("tcp://")
            and isinstance(node_id, str) and len(node_id) == 16 and isinstance(worker_id, str)):
        return False
    try:
        bytes.fromhex(worker_id)
        bytes.fromhex(node_id)
    except ValueError:
        return False
    host, _, port = address[len("tcp://"):].rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def valid_actor_name_record(record):
    """An actor id (20 bytes) and a handle's (class name, methods, signatures)."""
    if not isinstance(record, tuple) or len(record) != 2:
        return False
    actor_id, meta = record
    return (isinstance(actor_id, bytes) and len(actor_id) == 20 and isinstance(meta, tuple)
            and len(meta) == 3 and isinstance(meta[0], str)
            and isinstance(meta[1], dict) and isinstance(meta[2], dict))


def valid_node_record(node_id, info):
    """Is this a node record one may act on: a 16-hex-digit id (its own),
    string addresses, a ``tcp://host:port`` to connect to, numeric resources."""
    if (not isinstance(node_id, str) or len(node_id) != 16
            or any(c not in "0123456789abcdef" for c in node_id)):
        return False
    if not isinstance(info, dict) or info.get("node_id") != node_id:
        return False
    if not all(isinstance(info.get(field, ""), str) for field in ("address", "hostname")):
        return False
    address = info.get("tcp_address")
    if address is not None:
        if not isinstance(address, str) or not address.startswith("tcp://"):
            return False
        host, _, port = address[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return False
    for field in ("resources", "available"):
        table = info.get(field, {})
        if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in table.items()):
            return False
    return isinstance(info.get("queued", 0), int)

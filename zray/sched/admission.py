"""Clients are who they say they are: what the node checks before it acts.

- HELLO: a worker proves it was started by this node with the secret its
  node handed it at spawn (by environment); a worker's identity is taken by
  nobody else. Peers come over tcp only, workers over ipc only.
- Objects a client stores (PUT, DONE) that live in a file must live in the
  file this node would give that object: in its plasma directory or its
  spill directory, named after this session and the object id. So no client
  can make the node serve, or unlink, any other file. One that lives in the
  arena must name exactly the block this node reserved for that object and
  that client: no client can claim (and later free) bytes it was not given.
- A function blob is stored under its hash, so no client can replace the
  code another client registered.

Each check returns a reason (a string) to refuse, or None; the node logs or
answers with it.
"""
import hmac
import os

from ..plasma.shm import object_file_name
from ..transport import protocol as P

LOCAL_KINDS = frozenset(["driver", "worker", "tool"])
REMOTE_KINDS = frozenset(["driver", "peer", "tool"])


def hello_refusal(worker, remote, kind, worker_secret):
    """Why a HELLO of ``kind`` must be refused (None: welcome). ``worker`` is
    the pool's worker of that identity, if any."""
    if kind not in (REMOTE_KINDS if remote else LOCAL_KINDS):
        return f"a {kind!r} client cannot connect {'over tcp' if remote else 'here'}"
    if worker is None:
        return "not a worker this node started" if kind == "worker" else None
    if kind != "worker" or not isinstance(worker_secret, str) or not hmac.compare_digest(
            worker_secret.encode(), worker.secret.encode()):
        return "this identity belongs to a worker of this node; it did not prove it is that worker"
    return None


def object_entries_refusal(entries, n_frames, session_name, directories,
                           reserved_block=lambda object_id: None):
    """Why these object headers (of a PUT or DONE, with ``n_frames`` payload
    frames) must be refused. ``directories``: where this node keeps objects;
    ``reserved_block(object_id)``: the arena location reserved for the
    sender, or None."""
    if not isinstance(entries, (list, tuple)):
        return "object entries must be a list"
    needed = 0
    for header in entries:
        if not isinstance(header, tuple) or len(header) != 6:
            return "an object header is a 6-tuple"
        object_id, kind, count, location, contained, _is_error = header
        if not isinstance(object_id, bytes) or not isinstance(contained, (tuple, list)):
            return "an object id is bytes, its contained ids a tuple"
        if kind == P.INLINE:
            if not isinstance(count, int) or count < 1:
                return "an inline object has one frame or more"
            needed += count
        elif kind == P.SHM and isinstance(location, tuple) and len(location) == 3:
            if location != reserved_block(object_id):
                return (f"object {object_id.hex()} names the arena block {location!r}, which "
                        f"this node did not reserve for it and this client")
        elif kind == P.SHM:
            if not (isinstance(location, tuple) and len(location) == 2
                    and isinstance(location[0], str) and isinstance(location[1], int)
                    and location[1] >= 0):
                return "a shared-memory object's location is (path, size)"
            name = object_file_name(session_name, object_id)
            if location[0] not in [os.path.join(d, name) for d in directories if d]:
                return (f"object {object_id.hex()} names the file {location[0]!r}, which is "
                        f"not its file in this node's store or spill directory")
        else:
            return f"unknown object kind {kind!r}"
    if needed > n_frames:
        return f"the headers describe {needed} payload frames, the message has {n_frames}"
    return None


def function_refusal(function_id, blob):
    if not isinstance(blob, bytes) or function_id != P.function_id_of(blob):
        return "a function is registered under the hash of its blob"
    return None

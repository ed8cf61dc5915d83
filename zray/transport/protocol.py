"""The wire vocabulary: every message zray sends, on one screen.

A message is a list of ZeroMQ frames::

    frame 0: head, the pickled pair (message type, fields): the types and
             their fields are listed below
    frame 1+: payload buffers, sent as-is (numpy data is never re-pickled)

A ROUTER sees the sender's identity in front of frame 0.

Heads are pickled, so only peers that may run code anyway are ever read:
over tcp only token holders complete a CURVE handshake (``auth.py``); ipc
sockets sit in a directory only this user can enter.

Object entries (in OBJECTS, DONE, PUT, EXECUTE) are header tuples
``(object_id, kind, n_frames, location, contained_ids, is_error)``: kind
``INLINE`` means its ``n_frames`` payload frames are ``[pickle, *buffers]``;
kind ``SHM`` means ``location`` is ``(path, size)`` of a sealed shared-memory
file and there are no payload frames.
"""
import hashlib
import pickle
import pickletools
from collections import namedtuple

PROTOCOL_VERSION = 1

# client (driver or worker) -> node daemon
HELLO = b"HELLO"            # (kind, pid, token, version, sys_path, worker_secret or None)
FUNCTION = b"FUNC"          # (function_id, name, blob)
SUBMIT = b"SUBMIT"          # (TaskSpec,) + argument frames
PUT = b"PUT"                # (entries,) + payload frames
SUBSCRIBE = b"SUB"          # (object_ids,) push them to me when ready
ADD_REF = b"ADDREF"         # (object_ids,) this process now holds refs
REMOVE_REF = b"DELREF"      # (object_ids,) this process dropped its refs
BLOCKED = b"BLOCKED"        # () worker waits in get/wait: lend its CPU
UNBLOCKED = b"UNBLOCKED"    # () worker runs again
DONE = b"DONE"              # (task_id, entries, worker_exiting, error_text, events[, holder])
                            #   + frames; holder: an actor's direct caller, who now holds them
EVENTS = b"EVENTS"          # (events,) timeline records, batched
REQUEST = b"REQ"            # (request_id, op, args) control-plane call
BYE = b"BYE"                # () client leaves cleanly

# node daemon -> client
WELCOME = b"WELCOME"        # (node_info dict)
REFUSED = b"REFUSED"        # (reason,)
OBJECTS = b"OBJS"           # (entries,) + payload frames
EXECUTE = b"EXEC"           # (TaskSpec, dep_entries, function_blobs, resource_ids) + frames
LOG = b"LOG"                # (pid, stream, text)
TASK_ERROR = b"TERR"        # (function_name, message, return_ids or None) failure or warning
RESPONSE = b"RESP"          # (request_id, ok, value)
EXIT = b"EXIT"              # () worker: finish and leave
SERIALIZERS = b"SER"         # ([(blob, sys_path), ...]) custom serializers registered by drivers

# caller <-> actor worker, direct (see core/direct.py): a DEALER per actor in
# the caller, a ROUTER in the actor's worker at actor_socket_path (ipc only)
CALL = b"CALL"              # (TaskSpec,) + argument frames: no ObjectRef in them
REPLY = b"REPLY"            # (task_id, entries or None, error_name_and_text or None) + frames;
                            #   entries None: the results went to the node (DONE with holder)
PING = b"PING"              # () caller, on connecting: who are you?
PONG = b"PONG"              # (worker_id,) the actor's worker (named in resubmitted calls)

# node daemon <-> node daemon (see sched/peers.py, plasma/transfer.py). A
# peer says HELLO with kind "peer" and is then a client like any other: it
# fetches objects with ADD_REF + SUBSCRIBE, gets OBJECTS, drops refs with
# REMOVE_REF; results of tasks it forwarded come back to it as OBJECTS.
FORWARD = b"FWD"            # (TaskSpec, function or None, n_task_frames, inline dep entries)
                            #   + task frames + the inline deps' frames
PULL = b"PULL"              # (object_id, offset, length, lz4_wanted): a byte range of an shm object
CHUNK = b"CHUNK"            # (object_id, offset, length, compressed, error) + [data]

# kv client -> kv service (ROUTER); replies come back as RESPONSE
KV_REQUEST = b"KV"          # (request_id, op, args)

INLINE = 0
SHM = 1

TaskSpec = namedtuple("TaskSpec", [
    "task_id",        # bytes: unique id of this task
    "kind",           # TASK, ACTOR_CREATE or ACTOR_METHOD
    "function_id",    # bytes: id of the registered function or class
    "name",           # str: for errors, logs and the timeline
    "return_ids",     # tuple of object ids the task will produce
    "dep_ids",        # tuple of ids passed as top-level arguments
    "contained_ids",  # tuple of ids nested inside the argument values
    "resources",      # dict name -> fixed-point quantity
    "max_retries",    # int: retries left after a worker crash
    "max_calls",      # int: 0 = unlimited calls per worker
    "n_arg_frames",   # number of payload frames holding the arguments
    "actor_id",       # bytes or None
    "method",         # str or None: the actor method to call
    "options",        # dict: rarely used extras (actor name, restarts, ...)
    "owner",          # bytes: the client that submitted it (set by the node)
])

TASK = 0
ACTOR_CREATE = 1
ACTOR_METHOD = 2


def actor_socket_path(session_dir, actor_id):
    """Where an actor's worker listens for direct calls: the same path after a
    restart, so callers' sockets reconnect by themselves."""
    return f"{session_dir}/a-{actor_id[-8:].hex()}.sock"   # its random part (8 bytes: its home)


def function_id_of(blob):
    """The id a function or class is registered under: the hash of its code."""
    return hashlib.sha1(blob).digest()[:16]


def pack(msg_type, *fields):
    """The head frame of a message: type and fields pickled together (one
    frame, not two: every frame costs a send call at every hop)."""
    return [pickle.dumps((msg_type, fields), protocol=5)]


def unpack(frame):
    """(msg_type, fields) from a head frame."""
    return pickle.loads(frame)


_MEMO_STORES = frozenset(["PUT", "BINPUT", "LONG_BINPUT"])


def unpack_remote(frame):
    """``unpack`` for heads that came over the network (from token holders):
    first walk the opcodes, refusing a memo index beyond the entries made so
    far (one LONG_BINPUT of 2**32 makes the C unpickler allocate 32 GB)."""
    entries = 0
    for opcode, arg, _ in pickletools.genops(frame):
        if opcode.name == "MEMOIZE":
            entries += 1
        elif opcode.name in _MEMO_STORES:
            if arg > entries:
                raise ValueError(f"pickle memo index {arg} out of range")
            entries = max(entries, arg + 1)
    return pickle.loads(frame)

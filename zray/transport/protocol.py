"""The wire vocabulary: every message zray sends, on one screen.

A message is a list of ZeroMQ frames (a ROUTER sees the sender's identity
in front)::

    frame 0:  head, a msgpack array [type, field, ...], fields as declared below
    frame 1+: payload, sent as-is: pickled task arguments and results (numpy
              buffers never re-pickled), a RESPONSE's pickled exception, a CHUNK's bytes

Heads are data, never code: msgpack decodes them, then every field is checked
against its declared type (``wire_types.py``); anything else raises
``ProtocolError``, which every daemon loop catches and logs. Pickled values
live only in payload frames and function blobs (read by workers and drivers,
from their own node), never in a head; the node and kv daemons unpickle nothing.
Over tcp only token holders complete a CURVE handshake (``auth.py``); ipc
sockets sit in a directory only this user can enter.
"""
import hashlib

from .socket_dir import socket_dir

from .wire_types import (BOOL, BYTES, DATA, INT, NUM, STR, ProtocolError, decode, encode,
                         fixed, keyed, mapping, opt, pair, record, seq)

PROTOCOL_VERSION = 2

INLINE, SHM = 0, 1                    # object kinds
TASK, ACTOR_CREATE, ACTOR_METHOD = 0, 1, 2   # task kinds
LEASE = 3     # a client's claim on one worker for its tasks (core/lease.py), queued like a task

IDS = seq(BYTES)
# An object's header. INLINE: its n_frames payload frames are [pickle, *buffers];
# SHM: no payload frames; location is (path, size) of a sealed shared-memory
# file, or (chunk path, size, offset) of a block in the node's arena.
ObjectHeader = record("ObjectHeader", object_id=BYTES, kind=INT, n_frames=INT,
                      location=opt(fixed(STR, INT, optional=(INT,))), contained_ids=IDS,
                      is_error=BOOL)
HEADERS = seq(ObjectHeader.check)
# Task options the node reads, by name (any other key is refused).
TASK_OPTIONS = keyed("task options", max_restarts=NUM, max_task_retries=INT,
                     max_concurrency=opt(INT), name=opt(STR), hold_resources=BOOL,
                     detached=BOOL, handle_meta=DATA,
                     _origin_node=STR, _caller=pair(STR, opt(BYTES)),   # set by forwarding nodes
                     _arg_nodes=mapping(BYTES, STR),
                     attempted=opt(BYTES))   # a direct call resubmitted: the worker it went to
TaskSpec = record(
    "TaskSpec", task_id=BYTES, kind=INT, function_id=BYTES,
    name=STR,                   # for errors, logs and the timeline
    return_ids=IDS, dep_ids=IDS,   # deps: ids passed as top-level arguments
    contained_ids=IDS,          # ids nested inside the argument values
    resources=mapping(STR, INT),   # name -> fixed-point quantity
    max_retries=INT,            # retries left after a worker crash
    max_calls=INT,              # 0 = unlimited calls per worker
    n_arg_frames=INT,           # payload frames holding the arguments
    actor_id=opt(BYTES), method=opt(STR), options=TASK_OPTIONS,
    owner=opt(BYTES))           # the client that submitted it (set by the node)
Function = record("Function", name=STR, blob=BYTES, sys_path=seq(STR))   # blob: pickled code

MESSAGES = {}     # type -> record of its fields


def _message(msg_type, /, **fields):
    MESSAGES[msg_type] = record(msg_type.decode().title().replace("_", ""), **fields)
    return msg_type


# client (driver or worker) -> node daemon
HELLO = _message(b"HELLO", kind=STR, pid=INT, token=STR, version=INT, sys_path=seq(STR),
                 worker_secret=opt(STR))
FUNCTION = _message(b"FUNC", function_id=BYTES, name=STR, blob=BYTES, sys_path=seq(STR))
SUBMIT = _message(b"SUBMIT", spec=TaskSpec.check)                 # + argument frames
PUT = _message(b"PUT", entries=HEADERS)                           # + payload frames
SUBSCRIBE = _message(b"SUB", object_ids=IDS)      # push them to me when ready
ADD_REF = _message(b"ADDREF", object_ids=IDS)     # this process now holds refs
REMOVE_REF = _message(b"DELREF", object_ids=IDS)  # this process dropped its refs
BLOCKED = _message(b"BLOCKED")                    # worker waits in get/wait: lend its CPU
UNBLOCKED = _message(b"UNBLOCKED")                # worker runs again
DONE = _message(b"DONE", task_id=BYTES, entries=HEADERS, worker_exiting=BOOL,
                error_text=opt(STR), events=seq(DATA),           # + result frames
                holder=opt(BYTES))      # an actor's direct caller, who now holds them
EVENTS = _message(b"EVENTS", events=seq(DATA))    # timeline records, batched
REQUEST = _message(b"REQ", request_id=INT, op=STR, args=seq(DATA))   # ops: NODE_OPS
BYE = _message(b"BYE")                            # client leaves cleanly
# A client without the node's shared memory (another machine) sends a large
# object's bytes for the node to write into the block or file it reserved
# (plasma/uploads.py); it reads objects back with PULL (answered by CHUNK).
WRITE = _message(b"WRITE", object_id=BYTES, offset=INT)          # + [data]
LEASE_REQUEST = _message(b"LEASE", lease_id=BYTES,      # lend me a worker for tasks
                         resources=mapping(STR, INT))   # of this demand (core/lease.py)
LEASE_RETURN = _message(b"RETURN", lease_id=BYTES)      # worker: my lessee gave me back
HELD_AT = _message(b"HELDAT", node_id=STR,       # hold these for me: they are held for
                   entries=HEADERS)              # this node on node_id (a direct call's)
# node -> peer node: a direct call from your client ``caller`` left these results
# here, held for you (its worker's DONE): the caller's HELD_AT may never come
# (it died first, or resubmitted the call), so you hear it from us as well.
HELD_FOR = _message(b"HELDFOR", caller=BYTES, entries=HEADERS)
# Work the node does not see (core/work_report.py), sent at most every tick
# and only when it changed: direct actor calls and pushed tasks running here
# ((task id, name)), queued here, finished here so far; tasks waiting here for a lease.
WORK = _message(b"WORK", running=seq(pair(BYTES, STR)), queued=INT, finished_tasks=INT,
                finished_calls=INT, waiting=INT)

# node daemon -> client
WELCOME = _message(b"WELCOME", node_info=mapping(STR, DATA))
REFUSED = _message(b"REFUSED", reason=STR)
OBJECTS = _message(b"OBJS", entries=HEADERS)                      # + payload frames
EXECUTE = _message(b"EXEC", spec=TaskSpec.check, deps=HEADERS,
                   functions=mapping(BYTES, opt(Function.check)),   # ones it lacks
                   resource_ids=mapping(STR, DATA))  # + task frames, then the deps' frames
LOG = _message(b"LOG", pid=INT, text=STR)
TASK_ERROR = _message(b"TERR", function_name=STR, message=STR,  # a failure, or a
                      return_ids=opt(IDS))                      # warning if no ids
RESPONSE = _message(b"RESP", request_id=opt(INT), ok=BOOL, value=DATA)
#   not ok: value is the error's text; a payload frame may hold the pickled exception
EXIT = _message(b"EXIT")                          # worker: finish and leave
SERIALIZERS = _message(b"SER", registrations=seq(pair(BYTES, seq(STR))))  # (blob, sys_path)
DROP_PINS = _message(b"DROPPINS", object_ids=IDS)  # let go of the pins you keep on these
LEASED = _message(b"LEASED", lease_id=BYTES,     # worker None: refused, send the
                  worker_id=opt(BYTES))          # tasks through the node instead
RECALL = _message(b"RECALL", lease_id=BYTES,     # give it back once its tasks are done;
                  lost=opt(STR))                 # lost: its worker died (why), resubmit

# caller <-> actor worker, direct (see core/direct.py): a DEALER per actor in
# the caller, a ROUTER in the actor's worker at actor_socket_path (ipc only)
CALL = _message(b"CALL", spec=TaskSpec.check, deps=HEADERS)   # + argument frames, then
#   the deps' frames (as EXECUTE; an object in shared memory: its header only)
REPLY = _message(b"REPLY", task_id=BYTES, entries=opt(HEADERS),   # + frames; entries None:
                 error=opt(pair(STR, STR)),  # the results went to the node (DONE with holder)
                 events=seq(DATA))           # the worker's timeline records, for the caller to send
# Across machines (core/remote_endpoint.py): at the worker's CURVE tcp socket, a
# CALL from a caller on another node carries inline values only and names
# that node; results that cannot come back in REPLY stay on the worker's
# node, held for the caller's node (DONE with holder p<node id>): HELD says
# where, and the caller tells its own node (HELD_AT), which pulls them.
REMOTE_CALL = _message(b"RCALL", spec=TaskSpec.check, deps=HEADERS,  # + frames, as CALL
                       from_node=STR)     # the caller's node: it holds what cannot go inline
HELD = _message(b"HELD", task_id=BYTES, node_id=STR, entries=HEADERS,
                error=opt(pair(STR, STR)))
PING = _message(b"PING", nonce=INT)               # caller, on connecting: who are you?
PONG = _message(b"PONG", worker_id=BYTES, nonce=INT)   # the actor's worker (named in
#   resubmitted calls), answering the PING of that nonce (only the latest counts)
# lessee -> leased worker, direct (core/lease.py), at worker_socket_path; results
# come back as REPLY, as for actor calls
PUSH = _message(b"PUSH", spec=TaskSpec.check,     # + argument frames, then the deps' (as CALL)
                functions=mapping(BYTES, Function.check),   # the ones not sent to it yet,
                serializers=seq(pair(BYTES, seq(STR))),     # as custom serializers (SER)
                deps=HEADERS)
RELEASE = _message(b"RELEASE", lease_id=BYTES)    # nothing more: tell the node (RETURN)
BOUNCE = _message(b"BOUNCE", task_ids=IDS)        # worker: stuck behind a long task, not run

# node daemon <-> node daemon (sched/peers.py, plasma/transfer.py). A peer says
# HELLO with kind "peer" and is then a client like any other: it fetches objects
# with ADD_REF + SUBSCRIBE, gets OBJECTS, drops refs with REMOVE_REF; results
# of tasks it forwarded come back to it as OBJECTS.
FORWARD = _message(b"FWD", spec=TaskSpec.check, function=opt(Function.check),
                   n_task_frames=INT, inline=HEADERS)   # + task frames + inline deps' frames
PULL = _message(b"PULL", object_id=BYTES, offset=INT, length=INT, lz4_wanted=BOOL)
CHUNK = _message(b"CHUNK", object_id=BYTES, offset=INT, length=INT, compressed=BOOL,
                 error=opt(STR))                              # + [data]

# kv client -> kv service (ROUTER); replies come back as RESPONSE
KV_REQUEST = _message(b"KV", request_id=INT, op=STR, args=seq(DATA), token=STR)


def args(*required, optional=()):
    """A request's argument types: ``required``, then up to len(optional) more."""
    return (required, optional)


# REQUEST ops a node answers (``request_<op>`` of sched/node_requests.py, store_requests.py)
NODE_OPS = {
    "cluster_resources": args(), "available_resources": args(), "nodes": args(),
    "status": args(), "flush_events": args(), "shutdown": args(),
    "store_stats": args(), "memory": args(),
    "kill_actor": args(BYTES, optional=(BOOL,)), "get_actor": args(STR),
    "actor_location": args(BYTES),
    "reserve_actor_name": args(STR, optional=(opt(BYTES),)),
    "introspect": args(optional=(INT,)), "log_tail": args(INT, optional=(INT,)),
    "reserve": args(BYTES, INT, optional=(BOOL, BOOL)), "unreserve": args(BYTES),
    "pin": args(BYTES), "unpin": args(IDS), "pin_use": args(IDS, IDS),
    "probe_memory": args(STR), "uploaded": args(BYTES, BOOL), "objects_exist": args(IDS),
    "register_serializer": args(BYTES, seq(STR)),
    "publish_actor_address": args(BYTES, STR),
}
# KV_REQUEST ops the kv service answers (``op_<op>`` of kv/server.py)
KV_OPS = {
    "put": args(STR, DATA), "put_ttl": args(STR, DATA, NUM),
    "put_many": args(seq(pair(STR, DATA))), "add_events": args(seq(DATA)),
    "events_since": args(INT, INT), "get": args(STR, optional=(DATA,)),
    "delete": args(STR), "delete_if": args(STR, STR, DATA), "delete_where": args(STR, STR, DATA),
    "scan": args(STR), "ping": args(), "info": args(),
    "shutdown": args(),
}


def check_op(table, op, arguments):
    """The arguments of a declared op, checked; ProtocolError otherwise."""
    declared = table.get(op)
    if declared is None:
        raise ProtocolError(f"unknown operation {op!r}")
    required, optional = declared
    if not len(required) <= len(arguments) <= len(required) + len(optional):
        raise ProtocolError(f"{op} takes {len(required)} to {len(required) + len(optional)} "
                            f"arguments, got {len(arguments)}")
    return tuple(check(value) for check, value in zip(required + optional, arguments))


def actor_socket_path(session_dir, actor_id):
    """Where an actor's worker listens for direct calls: the same path after a
    restart, so callers' sockets reconnect by themselves."""
    return f"{socket_dir(session_dir)}/a-{actor_id[-8:].hex()}.sock"   # its random part (8 bytes: its home)


def worker_socket_path(session_dir, worker_id):
    """Where a worker listens for the tasks of the client that leased it."""
    return f"{socket_dir(session_dir)}/w-{hashlib.sha1(worker_id).hexdigest()[:16]}.sock"


def function_id_of(blob):
    """The id a function or class is registered under: the hash of its code."""
    return hashlib.sha1(blob).digest()[:16]


def pack(msg_type, *fields):
    """The head frame of a message, as a one-frame list (every frame costs a
    send call at every hop)."""
    if _arity[msg_type] != len(fields):
        raise ProtocolError(f"{msg_type.decode()} has the fields "
                            f"{MESSAGES[msg_type]._fields}, got {len(fields)} values")
    return [encode((msg_type,) + fields)]


def unpack(frame):
    """(msg_type, record of its declared fields) from a head frame; the record
    destructures like a tuple. ProtocolError for anything malformed."""
    items = decode(frame)
    try:
        return items[0], _checks[items[0]](items)
    except (KeyError, IndexError, TypeError):
        if type(items) is tuple and items and type(items[0]) is bytes:
            raise ProtocolError(f"unknown message type {items[0]!r}") from None
        raise ProtocolError(f"a message head is a list [type, field, ...], got "
                            f"{type(items).__name__}") from None


_checks = {msg_type: fields.check_tagged for msg_type, fields in MESSAGES.items()}
_arity = {msg_type: len(fields._fields) for msg_type, fields in MESSAGES.items()}

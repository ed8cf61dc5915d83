"""What the node must do, as small typed records: the output of ``NodeState.handle``.

The node's loop carries these out in order (sockets, processes, files).
Records hold references to the state's own objects (tasks, object entries),
never copies: building one costs a tuple.
"""
from typing import Any, NamedTuple


class Execute(NamedTuple):          # EXECUTE to a worker
    worker_id: bytes
    task: Any                 # the Task: spec, argument frames, resource ids
    deps: list                # ObjectEntry of each top-level argument
    functions: dict           # function_id -> record, for functions it has not seen


class PushObject(NamedTuple):       # OBJECTS to a client (batched per loop pass)
    identity: bytes
    entry: Any


class ClientGone(NamedTuple):       # forgotten here: the edge forgets its socket too
    identity: bytes


class TellClient(NamedTuple):       # any other message to a client
    identity: bytes
    msg_type: bytes
    fields: tuple


class ReportError(NamedTuple):      # TASK_ERROR to the owner (return_ids None: a warning)
    identity: bytes
    name: str
    text: str
    return_ids: Any


class Reserved(NamedTuple):         # the answer to ReserveRequested: where to write it
    object_id: bytes
    where: object             # store.IN_MEMORY, store.ON_DISK or an arena location


class Pinned(NamedTuple):           # the answer to PinRequested: where to read it
    object_id: bytes
    location: object          # arena location (kept until Unpinned), a file's, or None


class RecordError(NamedTuple):      # the error table in the kv service
    task_id: bytes
    text: str
    pid: Any
    name: Any = None                # the task's function or method name, when known


class WarnDrivers(NamedTuple):      # log it and tell every driver
    message: str


class StartWorker(NamedTuple):
    worker_id: bytes


class StopWorker(NamedTuple):       # EXIT: finish and leave
    worker_id: bytes


class KillWorker(NamedTuple):       # SIGKILL
    worker_id: bytes


class Forward(NamedTuple):          # FORWARD a task to a peer
    node_id: str
    spec: Any
    function: Any
    inline: list              # ObjectEntry of arguments sent along
    task_frames: list


class WantObjects(NamedTuple):      # pull these from a peer
    node_id: str
    object_ids: list
    held: bool = False        # we hold them there already (no ref taken or dropped)


class ReleaseRemote(NamedTuple):    # drop our holds on these copies on a peer
    node_id: str
    object_ids: list


class DropPeerTransfers(NamedTuple):  # a peer left: cancel its transfers
    node_id: str
    expected_again: set       # objects a retried task will make again


class ShareSerializers(NamedTuple):  # custom serializers to a peer (None: every peer)
    node_id: Any
    registrations: list       # [(blob, sys_path)]


class TellPeer(NamedTuple):         # any message to a peer node, on our link to it
    node_id: str
    msg_type: bytes
    fields: tuple


class PublishActorName(NamedTuple):  # the kv's name -> actor table, for get_actor elsewhere
    name: str
    record: Any               # (actor_id, handle_meta); None: the name is free again


class PublishActorAddress(NamedTuple):  # the kv's record of an actor worker's tcp socket
    actor_id: bytes           # (actor_direct:, core/remote_endpoint.py), where callers on
    worker_id: bytes          # other nodes look it up
    address: str


class ForgetActorAddress(NamedTuple):  # the kv's record of a dead worker's tcp socket
    actor_id: bytes           # (actor_direct:, core/remote_endpoint.py): callers stop
    worker_id: bytes          # looking it up; a restarted worker's own record stays

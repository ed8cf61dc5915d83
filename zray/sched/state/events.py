"""What happens to a node, as small typed records: the input of ``NodeState.handle``.

The node's loop decodes each message, each exited process and each timer
into one of these. They carry everything the state needs, the time
included, so the state never reads a socket, a file or the clock.
"""
from typing import Any, NamedTuple


# -- clients (drivers, workers, peers seen as clients) ---------------------------
class ClientJoined(NamedTuple):
    identity: bytes
    kind: str                 # "driver", "worker" or "peer"
    pid: int


class ClientLeft(NamedTuple):      # BYE, a dead driver, a gone peer's connection
    identity: bytes


class FunctionRegistered(NamedTuple):
    function_id: bytes
    record: tuple             # (name, blob, sys_path), never unpickled here


class TaskSubmitted(NamedTuple):
    client: bytes
    spec: Any                 # protocol.TaskSpec
    frames: list              # argument frames


# -- objects ------------------------------------------------------------------
class ObjectsPut(NamedTuple):      # a client stored values it now holds
    client: bytes
    headers: list
    frames: list


class ObjectsSealed(NamedTuple):   # values made here or copied here, held by no client
    headers: list
    frames: list


class ObjectsExpected(NamedTuple):  # values on their way (e.g. nested in a pulled object)
    object_ids: list


class ObjectLost(NamedTuple):      # a value that cannot come: store an error in its place
    object_id: bytes
    why: str


class Subscribed(NamedTuple):
    client: bytes
    object_ids: list


class HeldFor(NamedTuple):         # a peer holds a direct call's results for our client
    node_id: str
    caller: bytes
    headers: list


class HeldElsewhere(NamedTuple):   # a direct call's results, held for us on node_id
    client: bytes             # the caller: hold them for it
    node_id: str
    headers: list


class RefsAdded(NamedTuple):
    client: bytes
    object_ids: list


class RefsRemoved(NamedTuple):
    client: bytes
    object_ids: list


class ReserveRequested(NamedTuple):  # answered by Reserved; ObjectStoreFullError raises
    owner: Any
    object_id: bytes
    size: int
    arena: bool = False       # the writer can write into an arena block (same machine)
    spare: bool = False       # ahead of a put: an arena block only if it fits without spilling


class SpillsFinished(NamedTuple):  # copies to the spill directory done (or failed)
    results: list             # [(object_id, path, target, error)]


class ReservationReleased(NamedTuple):
    object_id: bytes


class PinRequested(NamedTuple):    # a client maps an object: answered by Pinned
    owner: Any
    object_id: bytes


class Unpinned(NamedTuple):        # the client's views of these objects are gone
    owner: Any
    object_ids: list


class PinsUsed(NamedTuple):        # the client keeps these pins, viewing the blocks again / not
    owner: Any
    used_ids: list
    idle_ids: list


class SerializerRegistered(NamedTuple):
    blob: bytes
    sys_path: list
    from_peer: bool           # another node passed on its driver's registration


# -- workers ------------------------------------------------------------------
class WorkerBlocked(NamedTuple):
    worker_id: bytes


class WorkerUnblocked(NamedTuple):
    worker_id: bytes


class TaskDone(NamedTuple):
    worker_id: bytes
    task_id: bytes
    headers: list             # its return values
    frames: list
    exiting: bool             # the worker leaves after this (max_calls, exit_actor)
    error_text: Any           # the task raised (its returns already hold the error)
    holder: Any = None        # an actor's direct caller: it holds the returns (core/direct.py)


class LeaseRequested(NamedTuple):  # a client wants a worker for tasks of this demand
    client: bytes
    lease_id: bytes
    demand: dict


class LeaseReturned(NamedTuple):   # the leased worker says its lessee gave it back
    worker_id: bytes
    lease_id: bytes


class WorkReported(NamedTuple):    # a client's work the node does not see (WORK)
    client: bytes
    running: list             # (task id, name) of direct calls and pushed tasks running there
    queued: int               # ... queued there
    finished_tasks: int       # pushed tasks it finished so far
    finished_calls: int       # direct actor calls it served so far
    waiting: int              # its tasks waiting for a leased worker


class ActorAddressPublished(NamedTuple):   # an actor's worker listens on tcp there
    worker_id: bytes
    actor_id: bytes
    address: str


class WorkerExited(NamedTuple):
    worker_id: bytes
    pid: int
    code: int


class WorkersWanted(NamedTuple):   # start this many now (prestart_workers)
    count: int


class Tick(NamedTuple):
    now: float                # monotonic seconds
    wall: float               # time.time(), for the records people read


# -- actors -------------------------------------------------------------------
class KillActorRequested(NamedTuple):
    actor_id: bytes
    no_restart: bool


class ActorNameReserved(NamedTuple):   # raises ValueError from handle when taken
    name: str
    actor_id: Any


# -- peers --------------------------------------------------------------------
class PeerSeen(NamedTuple):        # joined, or a fresh heartbeat
    node_id: str
    info: dict


class PeerAnswered(NamedTuple):    # our HELLO to it: refused (reason) or welcomed (None)
    node_id: str
    refused: Any


class PeerGone(NamedTuple):
    node_id: str


class TaskForwardedIn(NamedTuple):  # a peer sends us one of its tasks
    client: bytes
    origin: Any               # its node id, when known
    spec: Any
    function: Any
    task_frames: list
    inline_headers: list      # argument values sent along
    inline_frames: list


class PeerObjectArrived(NamedTuple):  # a result of a task we forwarded is here (or unwanted)
    object_id: bytes


class ObjectLocated(NamedTuple):   # a large result of a task we forwarded stays on its node
    node_id: str
    header: tuple             # its header there (kind SHM: location (path, size))

"""Driving a NodeState by hand: a node without sockets, processes or files."""
import itertools

from zray.sched import resources as R
from zray.serialization import deserialize
from zray.sched.state import NodeState, commands as C, events as E
from zray.transport import protocol as P

_ids = itertools.count(1)


def new_id():
    return b"%016d" % next(_ids)


def spec(kind=P.TASK, deps=(), returns=1, cpus=1, gpus=0, max_retries=0, max_calls=0,
         actor_id=None, name="f", options=None, function_id=b"fn"):
    resources = {}
    if cpus:
        resources["CPU"] = R.to_fixed(cpus)
    if gpus:
        resources["GPU"] = R.to_fixed(gpus)
    return P.TaskSpec(new_id(), kind, function_id, name, tuple(new_id() for _ in range(returns)),
                      tuple(deps), (), resources, max_retries, max_calls, 0, actor_id,
                      "m" if kind == P.ACTOR_METHOD else None, options or {}, None)


def inline(object_id, is_error=False):
    """An inline object header with one frame."""
    return (object_id, P.INLINE, 1, None, (), is_error)


def shm_header(object_id, size):
    return (object_id, P.SHM, 0, (f"/shm/{object_id.hex()}", size), (), False)


class FakeDisk:
    """The object table's port to files, recording instead of acting."""

    def __init__(self):
        self.unlinked, self.copies = [], []
        self.free = 1 << 40
        self.clock = 0.0

    def unlink(self, path):
        self.unlinked.append(path)

    def start_copy(self, object_id, location, spill_dir):
        self.copies.append((object_id, location[0], spill_dir))

    def make_chunk(self, index, size):
        return f"/shm/arena-{index}"

    def allocate_pages(self, path, offset, size):
        pass

    def release_pages(self, path, offset, size):
        return True

    def free_bytes(self, spill_dir):
        return self.free

    def now(self):
        return self.clock


class Node:
    """A NodeState and a log of every command it gave."""

    def __init__(self, cpus=2, gpus=0, max_workers=8, store_bytes=1 << 20, max_starting=8,
                 soft_limit=2, resources=None, node_id="node"):
        totals = R.totals_from_options(cpus, gpus, resources)
        self.disk = FakeDisk()
        self.state = NodeState(totals, store_bytes, "/spill", max_workers, self.disk,
                               max_starting=max_starting, soft_limit=soft_limit, node_id=node_id)
        self.log = []
        self.pids = itertools.count(100)

    def finish_copies(self):
        """The spiller thread's copies are done."""
        results = [(oid, path, spill_dir + "/" + path.rsplit("/", 1)[-1], None)
                   for oid, path, spill_dir in self.disk.copies]
        self.disk.copies = []
        return self.do(E.SpillsFinished(results))

    def do(self, event):
        commands = self.state.handle(event)
        self.log.extend(commands)
        return commands

    def driver(self, identity=b"driver"):
        self.do(E.ClientJoined(identity, "driver", next(self.pids)))
        return identity

    def submit(self, spec_, client=b"driver"):
        return self.do(E.TaskSubmitted(client, spec_, []))

    def start_workers(self, commands=None):
        """Let every worker the state asked for say HELLO; the commands that follow."""
        out = []
        for command in list(self.log if commands is None else commands):
            if isinstance(command, C.StartWorker) and command.worker_id not in self.state.clients:
                out += self.do(E.ClientJoined(command.worker_id, "worker", next(self.pids)))
        return out

    def done(self, execute, error_text=None, exiting=False):
        spec_ = execute.task.spec
        headers = [inline(i, bool(error_text)) for i in spec_.return_ids]
        return self.do(E.TaskDone(execute.worker_id, spec_.task_id, headers,
                                  [b"x"] * len(headers), exiting, error_text))


def of(kind, commands):
    return [c for c in commands if isinstance(c, kind)]


def value_of(command):
    """The value a PushObject carries (inline objects)."""
    return deserialize(command.entry.frames[0], command.entry.frames[1:])


def pushed(commands, identity=b"driver"):
    """Object ids pushed to ``identity``, with their is_error flag."""
    return {c.entry.object_id: c.entry.is_error for c in of(C.PushObject, commands)
            if c.identity == identity}

"""``NodeState``: everything one node knows, changed only by ``handle(event)``.

It owns the scheduler queues and resources, the object table (readiness,
reference counts), the workers' records, the actor table and the view of
peer nodes, and returns the commands the node's loop carries out. No zmq,
no processes, no clock: see the package docstring.

Its events are handled by parts mixed in, one module each: ``clients.py``
(clients joining and leaving, registrations), ``task_events.py`` (tasks
submitted and done), ``worker_events.py`` (workers blocked, exited, wanted),
``objects.py`` (objects and references); ``dispatch.py`` places the work.
The tables it holds have their own modules: ``actors.py``, ``leases.py``,
``forwarding.py``, ``locations.py``, ``direct_work.py``.
"""
from ...plasma.store import ObjectTable
from .. import resources as R
from ..scheduler import Scheduler
from ..worker_pool import WorkerPool
from . import events as E
from .actors import ActorTable
from .clients import ClientEvents
from .direct_work import DirectWork
from .dispatch import Dispatch
from .forwarding import Forwarding
from .leases import LeaseTable
from .locations import Locations
from .objects import ObjectEvents
from .task_events import TaskEvents
from .worker_events import WorkerEvents


class NodeState(ClientEvents, TaskEvents, WorkerEvents, ObjectEvents, Dispatch):
    def __init__(self, totals, object_store_memory, spill_dir, max_workers, disk, *,
                 node_id="node", gpu_ids=None, max_starting=2, soft_limit=2,
                 worker_prefix=b"w", logs_dir="logs"):
        self.node_id = node_id
        self.resources = R.NodeResources(totals, gpu_ids)
        self.scheduler = Scheduler(self.resources)
        self.wall = 0.0                # time.time() of the last Tick
        # ``disk``: the object table's port to files (plasma/disk.py on a node).
        self.objects = ObjectTable(object_store_memory, spill_dir, disk,
                                   clock=lambda: self.wall)
        # A ref inside a freed object goes as a client's does: an actor whose
        # last handle was in it exits (else it lived on, unreachable).
        self.objects.release_inner = self.release_object
        self.pool = WorkerPool(max_workers, max_starting=max_starting, soft_limit=soft_limit,
                               name_prefix=worker_prefix)
        self.logs_dir = logs_dir
        self.actors = ActorTable(self)
        self.forwarding = Forwarding(self)
        self.leases = LeaseTable(self)      # workers lent to clients for their tasks
        self.direct_work = DirectWork()     # what clients run past the node, as they say
        self.locations = Locations(self)    # objects on other nodes, lineage
        self.clients = {}              # identity -> Client
        self.functions = {}            # function_id -> (name, blob, sys_path)
        self.serializers = []          # (blob, sys_path) in registration order
        self.recycled = set()          # workers killed because their task's owner left
        self.warned_pool_exhausted = False
        self.had_peers = False         # another node ever connected (see _freed_here)
        self.counts = {"submitted": 0, "ended": 0}
        self.out = []
        self.needs_dispatch = False

    # == the entry point =====================================================
    def handle(self, event):
        """Apply one event; return the commands the node must carry out, in order."""
        self.out = out = []
        self._handlers[type(event)](self, event)
        if self.objects.pins_to_drop:
            self.ask_to_drop_pins()
        if self.needs_dispatch:
            self._dispatch()
        return out

    def emit(self, command):
        self.out.append(command)

    # == time ================================================================
    def _on_tick(self, ev):
        self.wall = ev.wall
        for worker in self.pool.idle_to_stop(ev.now):
            self.stop_worker(worker)
        if self.leases.orphans:
            self.leases.kill_orphans(ev.wall)
        if self.locations.where or self.locations.lineage or self.locations.wanted:
            self.locations.sweep()
        self.objects.release_idle_pages()

    # == looking (no changes) ================================================
    def cluster_totals(self):
        return self.forwarding.cluster_totals()

    def cluster_available(self):
        return self.forwarding.cluster_available()

    def local_available(self):
        return R.describe({k: max(v, 0) for k, v in self.resources.available.items() if v > 0})

    _handlers = {
        **ClientEvents.client_handlers, **TaskEvents.task_handlers,
        **WorkerEvents.worker_handlers, **ObjectEvents.object_handlers,
        E.Tick: _on_tick,
        E.LeaseRequested: lambda self, ev: (
            ev.client in self.clients
            and self.leases.request(self.clients[ev.client], ev.lease_id, ev.demand)),
        E.LeaseReturned: lambda self, ev: self.leases.returned(ev.worker_id, ev.lease_id),
        E.WorkReported: lambda self, ev: ev.client in self.clients and self.direct_work.reported(
            *ev),
        E.KillActorRequested: lambda self, ev: self.actors.kill(ev.actor_id, ev.no_restart),
        E.ActorNameReserved: lambda self, ev: self.actors.reserve_name(ev.name, ev.actor_id),
        E.PeerSeen: lambda self, ev: self.forwarding.seen(ev.node_id, ev.info),
        E.PeerAnswered: lambda self, ev: self.forwarding.answered(ev.node_id, ev.refused),
        E.PeerGone: lambda self, ev: self.forwarding.gone(ev.node_id),
        E.TaskForwardedIn: lambda self, ev: self.forwarding.forwarded_in(ev),
        E.PeerObjectArrived: lambda self, ev: self.forwarding.arrived(ev.object_id),
        E.ObjectLocated: lambda self, ev: self.locations.located(ev.node_id, ev.header),
    }

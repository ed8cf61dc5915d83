"""The node daemon: one per machine, one thread, one ROUTER; I/O only.

::

    driver ──┐                                  ┌──────── NodeState (pure) ───────┐
    worker ──┤ DEALER ──► ROUTER ──decode──►event──► handle: tasks, objects, refs,│
    worker ──┘            pipes, reaped processes│  workers, actors, forwarding  │
                          timers (Tick)          └──────────┬─────────────────────┘
                                  ◄── carry out ── [commands]: EXECUTE, OBJECTS,
                                                   start/kill workers, FORWARD, ...

- The loop receives a message (or a worker's exit, or a timer), decodes it
  into an event (``node_messages.py``), calls ``NodeState.handle`` and carries
  out the commands it returns (``node_commands.py``) with sockets, processes
  and files. Every decision lives in the state; see ``sched/state/``.
- Clients (drivers and workers) say HELLO; drivers own the tasks they submit
  and get their results pushed to them as soon as they exist.
- Objects pushed to one client leave as one OBJECTS message per loop pass.
- Worker output is read from pipes, logged and forwarded to drivers.
- Local clients come over ipc (the session directory, this user's only);
  peers and remote drivers over a second ROUTER on tcp, a CURVE server of
  the cluster token (``transport/auth.py``), so the ipc hot path pays
  nothing for encryption. A client is answered on the socket it came in on.
"""
import logging
import os
import time

import psutil
import zmq

from ..plasma import shm
from ..plasma.disk import SpillDisk
from ..plasma.uploads import Uploads
from ..stackdump import remove_file_of as remove_stack_file
from ..transport import auth
from ..transport import protocol as P
from ..transport.sockets import OwnerWatch, RateLimitedLog, bound_receiving, unlink_ipc
from . import resources as R
from .node_commands import NodeCommands
from .node_messages import NodeMessages
from .node_requests import NodeRequests
from .remote_clients import RemoteConnections
from .state import NodeState, commands as C, events as E
from .store_requests import ObjectStoreRequests
from .worker_processes import WorkerProcesses

log = logging.getLogger("zray.node")

TICK_S = 0.05
EVENT_FLUSH_S = 0.2
REAP_INTERVAL_S = 0.02


class NodeDaemon(NodeMessages, NodeCommands, NodeRequests, ObjectStoreRequests):
    def __init__(self, config):
        self.config = config
        self.node_id = os.urandom(8).hex()
        self.session_dir = config["session_dir"]
        self.session_name = config["session_name"]
        # The token comes by environment (never argv) and leaves it at once.
        self.password = config.get("password") or os.environ.pop(auth.TOKEN_ENV, "")
        self.context = zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)     # a ROUTER drops at its SNDHWM
        bound_receiving(self.router)               # (and why these bounds: sockets.py)
        self.router.bind(config["address"])
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.tcp_address = None        # for peers and remote drivers (zray start)
        self.tcp_router = self.gatekeeper = None
        self.remote_clients = set()    # identities that came in on tcp_router
        self.remote_connections = None
        if config.get("tcp_address"):
            self.gatekeeper = auth.start_gatekeeper(self.context, self.password)
            self.tcp_router = self.context.socket(zmq.ROUTER)
            self.tcp_router.setsockopt(zmq.LINGER, 0)
            self.tcp_router.setsockopt(zmq.ROUTER_MANDATORY, 0)
            self.tcp_router.setsockopt(zmq.SNDHWM, 0)
            self.remote_connections = RemoteConnections(self.tcp_router)
            auth.serve_securely(self.tcp_router, self.password)
            self.tcp_router.bind(config["tcp_address"])
            self.tcp_address = self.tcp_router.getsockopt_string(zmq.LAST_ENDPOINT)
        totals = R.totals_from_options(config["num_cpus"], config["num_gpus"],
                                       config.get("resources"))
        totals.update(R.memory_totals(config["object_store_memory"],
                                      psutil.virtual_memory().available))
        cpus = max(1, -(-totals.get("CPU", 0) // R.UNIT))
        # Start at most as many workers at once as there are cores (as Ray's
        # maximum_startup_concurrency); keep that many warm when idle.
        # Files of the object table (arena chunks, spill copies in a thread).
        self.disk = SpillDisk(config["plasma_dir"], self.session_name)
        self.uploads = Uploads(self)   # objects written for clients without our shared memory
        self.state = NodeState(
            totals, config["object_store_memory"],
            config.get("spill_dir") or os.path.join(self.session_dir, "spill"),
            config["max_workers"], self.disk, node_id=self.node_id,
            gpu_ids=config.get("gpu_ids"), max_starting=config.get("max_starting_workers") or cpus,
            soft_limit=max(cpus, config.get("prestart_workers") or 0),
            worker_prefix=b"w%d" % os.getpid(), logs_dir=os.path.join(self.session_dir, "logs"))
        self.processes = WorkerProcesses(self.address, self.session_dir,
                                         env_extra={auth.TOKEN_ENV: self.password})
        # The state's parts, by the names the request handlers read them.
        self.resources, self.scheduler = self.state.resources, self.state.scheduler
        self.objects, self.pool, self.actors = self.state.objects, self.state.pool, self.state.actors
        self.clients = self.state.clients
        self.events = []
        self.kv = None
        if config.get("kv_address"):
            from ..kv.client import KvClient
            self.kv = KvClient(config["kv_address"], self.password, self.context)
        self.owner = OwnerWatch(config.get("owner_pid"))
        self.kv_supervisor = None      # the head restarts its kv service if it dies
        if config.get("kv_restart"):
            from ..kv.supervisor import KvSupervisor
            restart = config["kv_restart"]
            self.kv_supervisor = KvSupervisor(restart["command"], restart["pid"],
                                              restart["log"], self.password,
                                              self.owner.gone_now)
        self.watched = {}              # extra sockets polled by the loop -> callback
        if self.remote_connections is not None:
            self.watched[self.remote_connections.monitor] = self._on_remote_disconnect
        # Spill copies run in a thread; the loop hands the finished ones to the state.
        self.watched[self.disk.done_fd] = lambda: self.handle(
            E.SpillsFinished(self.disk.finished()))
        self.peers = None              # other nodes of a multi-node cluster (peers.py)
        if self.tcp_address and self.kv is not None:
            from .peers import Peers
            self.peers = Peers(self)
        self.running = True
        self.prestarted = False
        self.orphaned = False
        self.pushes = {}               # client -> (headers, frames) to send as one OBJECTS
        self.next_reap = 0.0
        self.next_event_flush = time.monotonic() + EVENT_FLUSH_S
        self.next_client_check = time.monotonic() + 1.0
        self.complaints = RateLimitedLog(log)

    def prestart_workers(self):
        """Spawn the configured warm workers (once): called before the node
        says READY, so their interpreters start while the driver connects."""
        if not self.prestarted:
            self.prestarted = True
            self.handle(E.WorkersWanted(self.config.get("prestart_workers", 0)))

    # == the loop ============================================================
    def serve_forever(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.tcp_router is not None:
            poller.register(self.tcp_router, zmq.POLLIN)
        registered_fds, registered_sockets = set(), set()
        self.handle(E.Tick(time.monotonic(), time.time()))
        self.prestart_workers()
        self._publish_node_info()
        while self.running:
            by_fd = self.processes.by_fd
            if registered_fds != by_fd.keys():
                for fd in by_fd.keys() - registered_fds:
                    poller.register(fd, zmq.POLLIN)
                for fd in registered_fds - by_fd.keys():
                    poller.unregister(fd)
                registered_fds = set(by_fd)
            if registered_sockets != self.watched.keys():
                for sock in registered_sockets - self.watched.keys():
                    poller.unregister(sock)
                for sock in self.watched.keys() - registered_sockets:
                    poller.register(sock, zmq.POLLIN)
                registered_sockets = set(self.watched)
            for sock, _ in poller.poll(int(TICK_S * 1000)):
                # Nothing that arrives may stop the loop: every step is guarded.
                try:
                    if sock is self.router or sock is self.tcp_router:
                        self._drain_router(sock)
                    elif sock in self.watched:
                        self.watched[sock]()
                    else:
                        self._forward_output(sock)
                except Exception as exc:
                    self.complaints.warn("loop", "error in the node loop: %r", exc)
                    log.debug("error in the node loop", exc_info=True)
            try:
                self._tick()
            except Exception as exc:
                self.complaints.warn("tick", "error in the node's timers: %r", exc)
                log.debug("error in the node's timers", exc_info=True)
        self._stop()

    def handle(self, event):
        """Give the state one event and carry out what it decides; return the
        commands (a request reads its answer there)."""
        commands = self.state.handle(event)
        for command in commands:
            self._do[type(command)](self, command)
        return commands

    def _drain_router(self, router):
        try:
            self._drain_batch(router)
        finally:
            self._flush_pushes()

    def _drain_batch(self, router):
        remote = router is self.tcp_router
        if remote:      # closed connections first: a new one may reuse a closed one's fd
            self._on_remote_disconnect()
        for _ in range(1000):      # bounded, so ticks still happen under load
            # Asking EVENTS is cheaper than the zmq.Again of an empty recv.
            if not router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            frames = self.remote_connections.recv() if remote else router.recv_multipart()
            try:
                self._receive(frames, remote)
            except Exception as exc:      # one bad message must not take the node down
                self.complaints.warn("message", "error handling a message (%r): %r",
                                     frames[1][:20] if len(frames) > 1 else frames, exc)
                log.debug("error handling a message", exc_info=True)

    def _on_remote_disconnect(self):
        """A driver or tool over tcp whose connection closed is gone (killed
        without a BYE, or silent for sockets.REMOTE_SILENCE_S): its work stops as a
        local driver's does. Peers are judged by ``Peers``."""
        for identity in self.remote_connections.closed():
            client = self.state.clients.get(identity)
            if client is not None and client.kind != "peer":
                log.info("the connection of remote %s %r closed; releasing its work",
                         client.kind, identity)
                self.handle(E.ClientLeft(identity))

    def _tick(self):
        now = time.monotonic()
        if now >= self.next_reap:
            # Rate-limited: under load the loop turns thousands of times a second.
            self.next_reap = now + REAP_INTERVAL_S
            for worker_id, pid, code in self.processes.reap():
                self.handle(E.WorkerExited(worker_id, pid, code))
        if self.events and now >= self.next_event_flush:
            if self.kv is not None:
                self.kv.tell("add_events", self.events)
            self.events = []
            self.next_event_flush = now + EVENT_FLUSH_S
        if self.peers is not None:
            self.peers.tick(now)
        if now >= self.next_client_check:
            self.next_client_check = now + 1.0
            for identity, pid in self.state.driver_pids().items():
                # A pid says something only on this machine: drivers of other
                # machines (tcp) leave by BYE.
                if identity not in self.remote_clients and not _pid_alive(pid):
                    log.info("driver pid %d is gone; releasing its objects", pid)
                    self.handle(E.ClientLeft(identity))
                    remove_stack_file(self.session_dir, pid, "driver")   # killed, it left it
            self.handle(E.Tick(now, time.time()))
        if self.owner.gone():
            log.info("the driver that started this node is gone; shutting down")
            self.orphaned = True
            self.running = False
        if self.kv_supervisor is not None and self.running:
            self.kv_supervisor.tick(now)
        self._flush_pushes()

    # == the rest of the edge ================================================
    def _node_info(self):
        return {"node_id": self.node_id, "address": self.address,
                "session_dir": self.session_dir, "session_name": self.session_name,
                "plasma_dir": self.config["plasma_dir"], "spill_dir": self.objects.spill_dir,
                "kv_address": self.config.get("kv_address"),
                "kv_pub_address": self.config.get("kv_pub_address"),
                "tcp_address": self.tcp_address,    # an actor's worker listens on this host too
                "resources": R.describe(self.resources.totals),
                "hostname": os.uname().nodename}

    def _forward_output(self, fd):
        process, text = self.processes.read_output(fd)
        if not text or process is None:
            return
        for client in self.state.clients.values():
            if client.kind in ("driver", "peer"):    # peers pass it on to their drivers
                self.send(client.identity, P.LOG, process.pid, text)

    def _publish_node_info(self):
        if self.peers is not None:
            self.peers.heartbeat()
        elif self.kv is not None:
            self.kv.tell("put", f"node:{self.node_id}", self._node_info())

    def _stop(self):
        for client in self.state.clients.values():
            if client.kind == "worker":
                self._stop_worker(C.StopWorker(client.identity))
        if self.peers is not None:
            self.peers.close()
        self.processes.stop_all(grace_s=0.5)
        self.disk.close()
        self.objects.unlink_all()
        # And what the table did not know of (a put cut short by the stop).
        shm.unlink_session_files((self.config["plasma_dir"], self.config.get("spill_dir")),
                                 self.session_name)
        if self.kv is not None:
            try:
                self.kv.tell("delete", f"node:{self.node_id}")
            except Exception:
                pass
        if self.kv_supervisor is not None:
            self.kv_supervisor.stop()
        self.router.close(0)
        unlink_ipc(self.address)     # a stale node.sock would be tried by drivers and `zray status`
        if self.tcp_router is not None:
            self.remote_connections.close()
            self.tcp_router.close(0)
            self.gatekeeper.stop()
        if not self.orphaned and self.owner.gone_now():
            # Told to stop as its owner died (a signal to both): nobody else
            # is left to remove the session's files.
            self.orphaned = True
        if self.orphaned and self.config.get("remove_session_dir_on_orphan"):
            from ..session import remove_session_files
            remove_session_files(self.session_dir, self.config["plasma_dir"], self.session_name,
                                 self.config.get("spill_dir"))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

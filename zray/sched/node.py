"""The node daemon: one per machine, one thread, one ROUTER.

::

    driver ──┐
    worker ──┤ DEALER ──► ROUTER ┌ NodeDaemon ─────────────────────────────┐
    worker ──┘                   │ Scheduler   tasks: waiting/ready/running│
                                 │ ObjectTable objects, refs, shm, spill   │
                                 │ WorkerPool  processes, pipes, reaping   │
                                 │ ActorTable  actors and their queues     │
                                 └─────────────── kv (errors, events) ─────┘

- Clients (drivers and workers) say HELLO; drivers own the tasks they submit
  and get their results pushed to them as soon as they exist.
- A task runs once its argument objects exist and the node's free
  resources fit it; workers start on demand.
- Worker output is read from pipes, logged and forwarded to drivers.
"""
import json
import logging
import os
import signal
import time

import zmq

from ..exceptions import WorkerCrashedError
from ..serialization import serialize
from ..transport import protocol as P
from ..transport.sockets import OwnerWatch, authorize
from ..plasma.store import READY as OBJECT_READY, ObjectTable
from . import resources as R
from .actors import ActorTable
from .scheduler import Scheduler, Task
from .worker_pool import ACTOR, BUSY, IDLE, WorkerPool, describe_exit

log = logging.getLogger("zray.node")

TICK_S = 0.05
EVENT_FLUSH_S = 0.2
REAP_INTERVAL_S = 0.02


class Client:
    __slots__ = ("identity", "kind", "pid", "held")

    def __init__(self, identity, kind, pid):
        self.identity = identity
        self.kind = kind
        self.pid = pid
        self.held = set()     # object ids this process holds refs to


class NodeDaemon:
    def __init__(self, config):
        self.config = config
        self.node_id = os.urandom(8).hex()
        self.session_dir = config["session_dir"]
        self.session_name = config["session_name"]
        self.password = config.get("password", "")
        self.context = zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.RCVHWM, 0)
        self.router.setsockopt(zmq.SNDHWM, 0)
        self.router.bind(config["address"])
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        totals = R.totals_from_options(config["num_cpus"], config["num_gpus"],
                                       config.get("resources"))
        self.resources = R.NodeResources(totals, config.get("gpu_ids"))
        self.scheduler = Scheduler(self.resources)
        self.objects = ObjectTable(config["object_store_memory"],
                                   os.path.join(self.session_dir, "spill"))
        self.pool = WorkerPool(self.address, self.session_dir, config["max_workers"])
        self.actors = ActorTable(self)
        self.clients = {}
        self.functions = {}            # function_id -> (name, blob, sys_path)
        self.events = []
        self.kv = None
        if config.get("kv_address"):
            from ..kv.client import KvClient
            self.kv = KvClient(config["kv_address"], self.password, self.context)
        self.owner = OwnerWatch(config.get("owner_pid"))
        self.running = True
        self.orphaned = False
        self.next_reap = 0.0
        self.next_event_flush = time.monotonic() + EVENT_FLUSH_S
        self.next_client_check = time.monotonic() + 1.0
        self.warned_infeasible = set()

    # == the loop ============================================================
    def serve_forever(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        registered_fds = set()
        for _ in range(self.config.get("prestart_workers", 0)):
            self.pool.start()
        self._publish_node_info()
        while self.running:
            for fd in set(self.pool.by_fd) - registered_fds:
                poller.register(fd, zmq.POLLIN)
                registered_fds.add(fd)
            for fd in registered_fds - set(self.pool.by_fd):
                poller.unregister(fd)
                registered_fds.discard(fd)
            for sock, _ in poller.poll(int(TICK_S * 1000)):
                if sock is self.router:
                    self._drain_router()
                else:
                    self._forward_output(sock)
            self._tick()
        self._stop()

    def _drain_router(self):
        for _ in range(1000):      # bounded, so ticks still happen under load
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._handle(frames)
            except Exception:      # one bad message must not take the node down
                log.exception("error handling %r", frames[1][:20] if len(frames) > 1 else frames)

    def _tick(self):
        now = time.monotonic()
        if now >= self.next_reap:
            # Rate-limited: under load the loop turns thousands of times a second.
            self.next_reap = now + REAP_INTERVAL_S
            for worker, code in self.pool.reap():
                self._on_worker_exit(worker, code)
        if self.events and now >= self.next_event_flush:
            if self.kv is not None:
                self.kv.tell("add_events", self.events)
            self.events = []
            self.next_event_flush = now + EVENT_FLUSH_S
        if now >= self.next_client_check:
            self.next_client_check = now + 1.0
            self._drop_dead_clients()
        if self.owner.gone():
            log.info("the driver that started this node is gone; shutting down")
            self.orphaned = True
            self.running = False

    # == messages ============================================================
    def _handle(self, frames):
        identity, msg_type, header = frames[0], frames[1], frames[2]
        fields = P.unpack_header(header)
        payload = frames[3:]
        client = self.clients.get(identity)
        if client is None:
            if msg_type == P.HELLO:
                self._on_hello(identity, *fields)
            return
        handler = self.handlers.get(msg_type)
        if handler is None:
            log.warning("unknown message %r from %r", msg_type, identity)
            return
        handler(self, client, fields, payload)

    def send(self, identity, msg_type, *fields, frames=()):
        self.router.send_multipart([identity] + P.pack(msg_type, *fields) + list(frames))

    def _on_hello(self, identity, kind, pid, password, version, sys_path, _worker_id):
        if not authorize(self.password, password):
            self.send(identity, P.REFUSED, "wrong cluster password: connect with the "
                      "redis_password/--redis-password the cluster was started with")
            return
        if version != P.PROTOCOL_VERSION:
            self.send(identity, P.REFUSED, f"protocol version {version} does not match the "
                      f"node's {P.PROTOCOL_VERSION}: use the same zray version everywhere")
            return
        self.clients[identity] = Client(identity, kind, pid)
        self.send(identity, P.WELCOME, self._node_info())
        if kind == "worker":
            worker = self.pool.workers.get(identity)
            if worker is None:
                return
            worker.state = IDLE
            self._dispatch()

    def _node_info(self):
        return {"node_id": self.node_id, "address": self.address,
                "session_dir": self.session_dir, "session_name": self.session_name,
                "plasma_dir": self.config["plasma_dir"], "kv_address": self.config.get("kv_address"),
                "kv_pub_address": self.config.get("kv_pub_address"),
                "resources": R.describe(self.resources.totals),
                "hostname": os.uname().nodename}

    def _on_function(self, client, fields, _payload):
        function_id, name, blob, sys_path = fields
        self.functions[function_id] = (name, blob, sys_path)

    def _on_submit(self, client, fields, payload):
        (spec,) = fields
        spec = spec._replace(owner=client.identity)
        for object_id in spec.return_ids:
            entry = self.objects.expect(object_id)
            entry.subscribers.add(client.identity)
            self._hold(client, object_id)
        for object_id in spec.dep_ids + spec.contained_ids:
            self.objects.add_ref(object_id)
        task = Task(spec, payload)
        if spec.kind == P.ACTOR_METHOD:
            self.actors.submit_method(task)
            return
        if spec.kind == P.ACTOR_CREATE:
            self.actors.register(task)
        self._wait_for_arguments(task, self.scheduler.make_ready)
        self._dispatch()

    def _wait_for_arguments(self, task, when_ready):
        """Call when_ready(task) once every argument object exists."""
        task.missing = 0
        for object_id in task.spec.dep_ids:
            entry = self.objects.get(object_id)
            if entry is None or entry.state != OBJECT_READY:
                entry = self.objects.expect(object_id)
                entry.waiting_tasks.append((task, when_ready))
                task.missing += 1
        if task.missing == 0:
            when_ready(task)

    def _on_put(self, client, fields, payload):
        (entries,) = fields
        self._store_objects(entries, payload, holder=client)

    def _store_objects(self, entries, payload, holder=None):
        offset = 0
        for header in entries:
            n_frames = header[2]
            frames = payload[offset:offset + n_frames]
            offset += n_frames
            if holder is not None:
                self.objects.expect(header[0])
                self._hold(holder, header[0])
            entry = self.objects.seal(header, frames)
            if entry is not None:
                self._on_object_ready(entry)

    def _on_object_ready(self, entry):
        for identity in entry.subscribers:
            if identity in self.clients:
                self.send(identity, P.OBJECTS, [entry.header()], frames=entry.frames)
        entry.subscribers = set()
        waiting, entry.waiting_tasks = entry.waiting_tasks, []
        for task, when_ready in waiting:
            task.missing -= 1
            if task.missing == 0:
                when_ready(task)
        if waiting:
            self._dispatch()

    def _on_subscribe(self, client, fields, _payload):
        (object_ids,) = fields
        ready_headers, frames = [], []
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is None:
                entry = self._lost(object_id)
            if entry.state == OBJECT_READY:
                ready_headers.append(entry.header())
                frames.extend(entry.frames)
            else:
                entry.subscribers.add(client.identity)
        if ready_headers:
            self.send(client.identity, P.OBJECTS, ready_headers, frames=frames)

    def _lost(self, object_id):
        from ..exceptions import ObjectLostError
        entry = self.objects.expect(object_id)
        error = ObjectLostError(f"object {object_id.hex()} no longer exists: every reference "
                                f"to it was dropped before it was read")
        data = serialize(error)
        entry.refcount = max(entry.refcount, 1)
        self.objects.seal((object_id, P.INLINE, 1, None, (), True), [data.meta])
        return entry

    def _on_add_ref(self, client, fields, _payload):
        for object_id in fields[0]:
            self._hold(client, object_id)

    def _on_remove_ref(self, client, fields, _payload):
        for object_id in fields[0]:
            if object_id in client.held:
                client.held.discard(object_id)
                self._release_object(object_id)

    def _hold(self, client, object_id):
        if object_id not in client.held:
            client.held.add(object_id)
            self.objects.add_ref(object_id)

    def _release_object(self, object_id):
        entry = self.objects.get(object_id)
        if entry is not None and entry.refcount == 1 and object_id in self.actors.by_id:
            self.actors.out_of_scope(object_id)
        self.objects.remove_ref(object_id)

    def _on_blocked(self, client, _fields, _payload):
        worker = self.pool.workers.get(client.identity)
        task = worker.task if worker else None
        if worker is None or worker.blocked:
            return
        worker.blocked = True
        cpus = task.demand.get("CPU", 0) if task else 0
        if cpus:
            self.resources.release({"CPU": cpus})
        self._dispatch()

    def _on_unblocked(self, client, _fields, _payload):
        worker = self.pool.workers.get(client.identity)
        if worker is None or not worker.blocked:
            return
        worker.blocked = False
        task = worker.task
        cpus = task.demand.get("CPU", 0) if task else 0
        if cpus:   # may dip below zero for a moment: new work waits until it is back
            self.resources.available["CPU"] = self.resources.available.get("CPU", 0) - cpus

    def _on_done(self, client, fields, payload):
        task_id, entries, exiting, error_text, events = fields
        self.events.extend(events)
        worker = self.pool.workers.get(client.identity)
        self._store_objects(entries, payload)
        if worker is not None and worker.actor_id is not None:
            task = self.actors.method_done(worker, task_id, exiting)
            if error_text:
                self._report_failure(task, task_id, error_text, client.pid)
            return
        task = self.scheduler.running.get(task_id)
        if error_text:
            self._report_failure(task, task_id, error_text, client.pid)
        if task is not None and task.spec.kind == P.ACTOR_CREATE and worker is not None:
            self.actors.created(task, worker, failed=bool(error_text))
            self._dispatch()
            return
        task = self._finish_task(task_id, worker)
        if worker is not None:
            worker.task = None
            if exiting or worker.exiting:
                worker.exiting = True
                worker.state = BUSY      # leaving; reaped when it exits
            else:
                worker.state = IDLE
        self._dispatch()

    def _finish_task(self, task_id, worker):
        task = self.scheduler.running.get(task_id)
        if task is None:
            return None
        if worker is not None and worker.blocked:
            worker.blocked = False
            self.resources.available["CPU"] = (self.resources.available.get("CPU", 0)
                                               - task.demand.get("CPU", 0))
        self.scheduler.finish(task_id)
        self._release_arguments(task)
        return task

    def _release_arguments(self, task):
        for object_id in task.spec.dep_ids + task.spec.contained_ids:
            self._release_object(object_id)

    def _report_failure(self, task, task_id, text, pid):
        self._record_error(task_id, text, pid)
        if task is not None and task.spec.owner in self.clients:
            self.send(task.spec.owner, P.TASK_ERROR, task.spec.name, text, task.spec.return_ids)

    def _record_error(self, task_id, text, pid):
        if self.kv is None:
            return
        key = f"err:{time.time():.6f}:{task_id.hex()}"
        self.kv.tell("put", key, {"type": "task", "message": text, "pid": pid,
                                  "node_id": self.node_id, "time": time.time()})

    def _on_events(self, client, fields, _payload):
        self.events.extend(fields[0])

    def _on_request(self, client, fields, _payload):
        request_id, op, args = fields
        handler = getattr(self, "request_" + op, None)
        if handler is None:
            handler = getattr(self.actors, "request_" + op, None)
        try:
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            result = (True, handler(client, *args))
        except Exception as exc:
            result = (False, exc)
        if request_id:
            try:
                self.send(client.identity, P.RESPONSE, request_id, *result)
            except Exception:
                self.send(client.identity, P.RESPONSE, request_id, False, repr(result[1]))

    def _on_bye(self, client, _fields, _payload):
        self._drop_client(client)

    handlers = {
        P.FUNCTION: _on_function, P.SUBMIT: _on_submit, P.PUT: _on_put,
        P.SUBSCRIBE: _on_subscribe, P.ADD_REF: _on_add_ref, P.REMOVE_REF: _on_remove_ref,
        P.BLOCKED: _on_blocked, P.UNBLOCKED: _on_unblocked, P.DONE: _on_done,
        P.EVENTS: _on_events, P.REQUEST: _on_request, P.BYE: _on_bye,
    }

    # == control-plane requests ==============================================
    def request_cluster_resources(self, _client):
        return R.describe(self.resources.totals)

    def request_available_resources(self, _client):
        return R.describe({k: max(v, 0) for k, v in self.resources.available.items() if v > 0})

    def request_nodes(self, _client):
        info = self._node_info()
        info.update({"alive": True, "available": self.request_available_resources(None)})
        return [info]

    def request_status(self, _client):
        infeasible = [{"name": t.spec.name, "demand": R.describe(t.demand)}
                      for t in self.scheduler.infeasible]
        return {"node": self._node_info(),
                "available": self.request_available_resources(None),
                "running": len(self.scheduler.running),
                "queued": self.scheduler.queued_count(),
                "infeasible": infeasible,
                "workers": self.pool.live_count(),
                "store": self.objects.stats()}

    def request_memory(self, _client):
        return self.objects.listing()

    def request_flush_events(self, _client):
        if self.kv is not None and self.events:
            self.kv.call("add_events", self.events)
        self.events = []
        return True

    def request_shutdown(self, _client):
        self.running = False
        return True

    # == placing work ========================================================
    def _dispatch(self):
        idle = [w for w in self.pool.workers.values() if w.state == IDLE and not w.exiting]
        pairs, want = self.scheduler.placements(idle)
        for task in pairs:
            self._execute(task, task.worker)
        to_start = min(want - self.pool.starting_count(),
                       self.pool.max_workers - self.pool.live_count())
        for _ in range(max(0, to_start)):
            self.pool.start()
        self._warn_infeasible()

    def _warn_infeasible(self):
        for task in self.scheduler.infeasible:
            if task.warned:
                continue
            task.warned = True
            message = (f"task {task.spec.name} needs {R.describe(task.demand)} but this "
                       f"cluster has {R.describe(self.resources.totals)}: it waits until a node "
                       f"with those resources joins (see `zray status`)")
            log.warning(message)
            owner = task.spec.owner
            if owner in self.clients:
                self.send(owner, P.TASK_ERROR, task.spec.name, message, None)

    def _execute(self, task, worker):
        spec = task.spec
        worker.state = ACTOR if spec.kind == P.ACTOR_CREATE else BUSY
        worker.task = task
        self.send_task(worker, task)

    def send_task(self, worker, task):
        spec = task.spec
        dep_headers, dep_frames = [], []
        for object_id in spec.dep_ids:
            entry = self.objects.get(object_id)
            dep_headers.append(entry.header())
            dep_frames.extend(entry.frames)
        functions = {}
        if spec.function_id not in worker.known_functions:
            functions[spec.function_id] = self.functions.get(spec.function_id)
            worker.known_functions.add(spec.function_id)
        self.send(worker.worker_id, P.EXECUTE, spec, dep_headers, functions, task.resource_ids,
                  frames=list(task.frames) + dep_frames)

    def pool_kill(self, worker):
        try:
            worker.process.send_signal(signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    # == failures ============================================================
    def _on_worker_exit(self, worker, code):
        client = self.clients.get(worker.worker_id)
        if client is not None:
            self._drop_client(client)
        if worker.actor_id is not None:
            self.actors.worker_died(worker, code)
        task = worker.task
        if (task is not None and task.spec.kind == P.ACTOR_CREATE
                and task.spec.task_id in self.scheduler.running):
            self.scheduler.finish(task.spec.task_id)
            actor = self.actors.by_id.get(task.spec.actor_id)
            if actor is not None:
                self.actors.creation_crashed(
                    actor, f"its worker process (pid {worker.pid}) died with "
                           f"{describe_exit(code)} while running __init__")
        elif task is not None and task.spec.task_id in self.scheduler.running:
            if worker.blocked:
                self.resources.available["CPU"] = (self.resources.available.get("CPU", 0)
                                                   - task.demand.get("CPU", 0))
            self.scheduler.finish(task.spec.task_id)
            how = describe_exit(code)
            if task.retries_left > 0 and not worker.exiting:
                task.retries_left -= 1
                log.warning("worker pid %d running %s died (%s); retrying (%d left)",
                            worker.pid, task.spec.name, how, task.retries_left)
                task.worker = None
                self.scheduler.requeue_front(task)
            else:
                self._fail_task(task, WorkerCrashedError(
                    f"the worker process (pid {worker.pid}) running task {task.spec.name} died "
                    f"with {how} before the task finished"
                    + (f", after {task.spec.max_retries} retries" if task.spec.max_retries else "")
                    + ". Likely causes: the task called os._exit or sys.exit, ran out of memory "
                      "(check `dmesg`), crashed in a C extension, or was killed. Its output is "
                      f"in {worker.log_file.name}."))
        self._dispatch()

    def _fail_task(self, task, error):
        data = serialize(error)
        headers = [(oid, P.INLINE, 1, None, (), True) for oid in task.spec.return_ids]
        self._store_objects(headers, [data.meta] * len(headers))
        self._report_failure(task, task.spec.task_id, str(error), None)
        self._release_arguments(task)

    def _drop_client(self, client):
        self.clients.pop(client.identity, None)
        held, client.held = client.held, set()
        for object_id in held:
            self._release_object(object_id)

    def _drop_dead_clients(self):
        for client in list(self.clients.values()):
            if client.kind == "driver" and client.pid and not _pid_alive(client.pid):
                log.info("driver pid %d is gone; releasing its objects", client.pid)
                self._drop_client(client)

    def _forward_output(self, fd):
        worker, text = self.pool.read_output(fd)
        if not text or worker is None:
            return
        for client in self.clients.values():
            if client.kind == "driver":
                self.send(client.identity, P.LOG, worker.pid, text)

    def _publish_node_info(self):
        if self.kv is not None:
            self.kv.tell("put", f"node:{self.node_id}", self._node_info())

    # == stop ================================================================
    def _stop(self):
        for client in self.clients.values():
            if client.kind == "worker":
                try:
                    self.send(client.identity, P.EXIT)
                except zmq.ZMQError:
                    pass
        self.pool.stop_all(grace_s=0.5)
        self.objects.unlink_all()
        if self.kv is not None:
            try:
                self.kv.tell("delete", f"node:{self.node_id}")
            except Exception:
                pass
        self.router.close(0)
        if self.orphaned and self.config.get("remove_session_dir_on_orphan"):
            from ..session import remove_session_files
            remove_session_files(self.session_dir, self.config["plasma_dir"], self.session_name)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m zray.sched")
    parser.add_argument("--config", required=True, help="JSON config")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s node: %(message)s")
    node = NodeDaemon(config)
    signal.signal(signal.SIGTERM, lambda *_: setattr(node, "running", False))
    from ..transport.sockets import announce_ready
    announce_ready({"address": node.address, "node_id": node.node_id})
    node.serve_forever()

"""The runtime of a process on a cluster (driver or worker): what the API
calls, built from three parts with one job each.

::

    Runtime ─┬─ Connection   the socket to the node and the threads sharing it
             ├─ RefCounter   live ObjectRefs here; ADD_REF / REMOVE_REF to send
             └─ ObjectCache  objects received, and the one ``decode``

``local_mode.LocalRuntime`` has the same API-facing methods (put, get, wait,
submit_task, create_actor, submit_actor_method, kill_actor, get_actor,
in_actor, request, kv_client, ...), so the API never asks which one it has.
The current one lives in ``core.context``.
"""
import os
import sys
import time
from collections import deque

from ..exceptions import GetTimeoutError
from ..object_ref import ObjectRef
from ..plasma import by_value, client as object_store
from ..serialization import install_shipped_registrations, serialize, ship_registrations
from ..transport import protocol as P
from . import context, submit
from .connection import Connection
from .direct import DirectCalls
from .direct_channel import Channel
from .lease import Leases
from .object_cache import INLINE_MAX_BYTES, IS_ERROR, ObjectCache
from .refcount import RefCounter
from .work_report import WorkReport

ERROR_PRINT_DELAY_S = 0.5


class Runtime:
    def __init__(self, node_address, kind, identity=None, password="", log_to_driver=True,
                 connect_timeout_s=10.0, watch_parent=False, worker_secret=None):
        self.kind = kind
        self.pid = os.getpid()
        self.refs = RefCounter(self._forget)
        self.connection = connection = Connection(
            node_address, kind, self.refs, identity=identity, password=password,
            connect_timeout_s=connect_timeout_s, watch_parent=watch_parent,
            worker_secret=worker_secret)
        self.node_address = node_address
        self.node_info = connection.node_info
        self.session_name = self.node_info["session_name"]
        self.plasma_dir = self.node_info["plasma_dir"]
        self.spill_dir = self.node_info.get("spill_dir")
        self.log_to_driver = log_to_driver
        self.password = password
        self.kv = None              # a KvClient, made on first use
        self.closers = []           # called before the connection closes (a gatekeeper)
        self.objects = ObjectCache(connection.cond, self.refs.holds, self.spill_dir,
                                   object_store.ArenaViews(self.refs.unpins, self.refs.pin_uses),
                                   connection.request, lock=connection.lock)
        self.cond = connection.cond
        self.lock = connection.lock     # cond's lock, for sections that do not wait
        # The hot paths, bound once: ObjectRef.__init__/__del__ and every send.
        self.add_local_ref = self.refs.add
        self.add_local_refs = self.refs.add_many
        self.drop_local_ref = self.refs.drop
        self.send = connection.send
        self.send_message = connection.send_message
        self.request = connection.request
        self.wait_until = connection.wait_until
        self.registered_functions = set()
        self.events = []
        self.pending_errors = {}    # object_id -> print deadline, for unretrieved errors
        self.raised_errors = set()  # errors ray.get already raised: never print those
        self.tasks = deque()        # workers: (fields, frames), or None to exit
        self.tick_hooks = []        # fn(now), with the I/O thread's tick
        connection.handlers.update({
            P.OBJECTS: self.objects.on_objects, P.EXECUTE: self._on_execute,
            P.EXIT: self._on_exit, P.LOG: self._on_log, P.TASK_ERROR: self._on_task_error,
            P.SERIALIZERS: self._on_serializers,
            P.DROP_PINS: self.objects.on_drop_pins})
        connection.on_tick = self._on_tick
        connection.on_last_flush = self._flush_events_locked
        self.direct = DirectCalls(self)
        self.leases = Leases(self)
        self.work = WorkReport(self)     # direct work, told to the node (zray status)
        connection.start()
        if not by_value.shares_node_memory(connection, self.node_info):
            # Another machine: large objects travel over the connection.
            self.objects.by_value = by_value.ByValue(
                connection, self.node_info.get("hostname") != os.uname().nodename)
            connection.handlers[P.CHUNK] = self.objects.by_value.on_chunk
        ship_registrations(self)    # custom serializers registered before init

    @property
    def node_alive(self):
        return self.connection.node_alive

    @node_alive.setter
    def node_alive(self, check):
        self.connection.node_alive = check

    def _forget(self, object_ids):
        return self.objects.forget(object_ids)

    # == messages from the node ===============================================
    def _on_execute(self, fields, frames):
        self.tasks.append((fields, frames))

    def _on_exit(self, _fields, _frames):
        self.tasks.append(None)

    def _on_log(self, fields, _frames):
        pid, text = fields
        if not self.log_to_driver:
            return
        prefix = f"(pid={pid}) "
        sys.stdout.write("".join(prefix + line + "\n" for line in text.splitlines()))
        sys.stdout.flush()

    def _on_task_error(self, fields, _frames):
        name, message, return_ids = fields
        if not return_ids:
            print(f"zray warning: {message}", file=sys.stderr, flush=True)
            return
        # Printed a moment later unless ray.get has raised it by then.
        with self.cond:
            if return_ids[0] in self.raised_errors:
                return
            self.pending_errors[return_ids[0]] = (time.monotonic() + ERROR_PRINT_DELAY_S,
                                                  name, message)

    def _on_serializers(self, fields, _frames):
        install_shipped_registrations(fields[0])

    def _on_tick(self, now):
        self.leases.tick(now)
        for hook in self.tick_hooks:
            hook(now)
        self.flush_events()
        self.work.tick()
        self.objects.arena.spare.expire(self, now)
        self._print_unretrieved_errors(now)

    def _print_unretrieved_errors(self, now):
        with self.cond:
            due = [(oid, item) for oid, item in self.pending_errors.items() if item[0] <= now]
            for object_id, _ in due:
                del self.pending_errors[object_id]
        for _, (_, name, message) in due:
            print(f"zray: task {name} failed (not yet retrieved with ray.get):\n{message}",
                  file=sys.stderr, flush=True)

    def next_task(self):
        """Workers: the next (fields, frames) to run, or None to exit."""
        tasks = self.tasks
        while True:
            if not tasks:   # (several pushed at once: run the next without a pump)
                self.wait_until(lambda: tasks)
            with self.lock:     # (Worker.bounce_stuck may have taken it meanwhile)
                if tasks:
                    return tasks.popleft()

    # == objects ==============================================================
    def put(self, value):
        return self.put_data(serialize(value))

    def put_data(self, data):
        """A new object holding already-serialized ``data``; its ObjectRef."""
        object_id = object_store.put_id(self, data)
        ref = ObjectRef(object_id, _runtime=self)
        self.put_serialized(object_id, data)
        return ref

    def put_serialized(self, object_id, data, is_error=False):
        """Store a serialized value as a new object held by this process."""
        header, frames = self.store_serialized(object_id, data, is_error)
        self.objects.add(object_id, header, frames)
        self.send_message(P.PUT, [header], frames=frames)

    def store_serialized(self, object_id, data, is_error=False):
        """Inline frames for small values, a shared-memory file for big ones."""
        if data.contained:
            self.direct.publish(data.contained)   # refs to direct-call results it holds
        if data.nbytes < INLINE_MAX_BYTES:
            frames = [data.meta] + [bytes(b) for b in data.buffers]
            return (object_id, P.INLINE, len(frames), None, data.contained, is_error), frames
        return object_store.write(self, object_id, data, is_error), []

    def get(self, object_ids, timeout=None):
        return self.get_values(object_ids, timeout, _in_task())

    def wait(self, object_ids, num_returns, timeout=None, fetch_local=True):
        if not fetch_local:
            return self.wait_anywhere(object_ids, num_returns, timeout, _in_task())
        return self.wait_objects(object_ids, num_returns, timeout, _in_task())

    def wait_anywhere(self, object_ids, num_returns, timeout_s, in_task=False):
        """The ids that exist here or on any node (none is copied here), once
        ``num_returns`` do or at the deadline: asks the node, backing off
        from 1 to 100 ms between asks."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        object_ids = list(dict.fromkeys(object_ids))
        objects = self.objects.objects
        pause = 0.001
        if in_task:
            self.send_message(P.BLOCKED)
        try:
            while True:
                with self.lock:
                    ready = {i for i in object_ids if i in objects}
                unsent = self.direct.not_at_node(object_ids)    # only here once they are
                ask = [i for i in object_ids if i not in ready and i not in unsent]
                if ask and len(ready) < num_returns:
                    ready.update(self.request("objects_exist", ask))
                if len(ready) >= num_returns:
                    return ready
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return ready
                until = now + pause if deadline is None else min(deadline, now + pause)
                self.wait_until(lambda: any(i in objects for i in ask), until)
                pause = min(pause * 2, 0.1)
        finally:
            if in_task:
                self.send_message(P.UNBLOCKED)

    def wait_objects(self, object_ids, num_returns, timeout_s, in_task=False,
                     stop_on_error=False):
        """Block until ``num_returns`` of the ids are here (or, with
        ``stop_on_error``, one of them is an error); return the ready set."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        object_ids = list(dict.fromkeys(object_ids))
        cache = self.objects
        objects = cache.objects
        with self.lock:
            ready = {i for i in object_ids if i in objects}
            if len(ready) >= num_returns or (
                    stop_on_error and any(objects[i][0][IS_ERROR] for i in ready)):
                return ready
            # Before `unsent`: a task of ours that goes to the node after all
            # (core/lease.py `_to_node`) asks for the results a waiter watches.
            waiter = cache.watch(object_ids)     # told of each arrival from now on
        blocked = False
        try:
            unsent = self.direct.not_at_node(object_ids)   # (never takes its lock inside cond)
            with self.connection.critical():     # asked for means SUBSCRIBE sent: never one alone
                with self.lock:
                    # `objects`, not `ready`: a direct call's result may have come
                    # meanwhile, and the node never heard of it (see core/direct.py);
                    # one in flight direct or held back is not the node's to answer.
                    # Results of our own tasks are pushed when made on our node;
                    # asking also fetches one made (and kept) on another node.
                    ask = [i for i in object_ids if i not in objects
                           and i not in cache.requested and i not in unsent]
                    cache.requested.update(ask)
                if ask:
                    self.send_message(P.SUBSCRIBE, ask)
            if in_task:
                self.send_message(P.BLOCKED)
                blocked = True
            needed = num_returns - (len(object_ids) - len(waiter.missing))

            def enough():       # (under cond)
                if waiter.arrived:
                    arrived, waiter.arrived = waiter.arrived, []
                    # ray.get raises as soon as one failed.
                    if stop_on_error and any(objects[i][0][IS_ERROR] for i in arrived
                                             if i in objects):
                        return True
                return len(object_ids) - len(waiter.missing) >= num_returns
            if needed > 0:
                self.wait_until(enough, deadline)
            with self.lock:
                return {i for i in object_ids if i in objects}
        finally:
            with self.lock:
                cache.unwatch(waiter)
            if blocked:
                self.send_message(P.UNBLOCKED)

    def get_values(self, object_ids, timeout_s=None, in_task=False):
        objects = self.objects.objects
        decode = self.objects.decode
        with self.lock:
            entries = [objects.get(i) for i in object_ids]
        if None not in entries and not any(entry[0][IS_ERROR] for entry in entries):
            # All here, none an error (the usual repeated get): nothing to wait for.
            return [decode(header, frames) for header, frames in entries]
        if (len(object_ids) == 1 and not in_task
                and type(self.direct.pending.get(object_ids[0])) is Channel):
            # The result of one direct actor call on its way here (a sync
            # call): nothing to ask the node, one id to wait for. (Not
            # a leased task's: one sent to the node after all asks for the
            # results a waiter watches, core/lease.py.) Watched all the same,
            # for whatever sends the call on to the node meanwhile.
            object_id = object_ids[0]
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            cache = self.objects
            with self.lock:
                waiter = cache.watch(object_ids)
            try:
                arrived = self.connection.wait_until(lambda: object_id in objects, deadline)
            finally:
                with self.lock:
                    cache.unwatch(waiter)
            ready = {object_id} if arrived else set()
        else:
            ready = self.wait_objects(object_ids, len(set(object_ids)), timeout_s, in_task,
                                      stop_on_error=True)
        if len(ready) < len(set(object_ids)):
            self._raise_first_error(object_ids, ready)
            missing = [i.hex() for i in object_ids if i not in ready]
            raise GetTimeoutError(f"ray.get timed out after {timeout_s} s; {len(missing)} of "
                                  f"{len(object_ids)} objects not ready (first: {missing[0]})")
        values = []
        for object_id in object_ids:
            with self.lock:
                header, frames = objects[object_id]
                self.pending_errors.pop(object_id, None)
                if header[IS_ERROR]:
                    if len(self.raised_errors) > 10000:
                        self.raised_errors.clear()
                    self.raised_errors.add(object_id)
            values.append(decode(header, frames))
        return values

    def _raise_first_error(self, object_ids, ready):
        """Raise the error of the first failed object among ``ready``, if any."""
        for object_id in object_ids:
            if object_id not in ready:
                continue
            with self.lock:
                entry = self.objects.objects.get(object_id)
            if entry is not None and entry[0][IS_ERROR]:
                self.get_values([object_id])

    # == tasks and actors (the API's verbs) ===================================
    def submit_task(self, code, args, kwargs, options):
        return submit.submit_task(self, code, args, kwargs, options)

    def create_actor(self, code, args, kwargs, options, handle_meta, make_handle):
        return submit.create_actor(self, code, args, kwargs, options, handle_meta, make_handle)

    def submit_actor_method(self, actor_id, label, method, args, kwargs, num_returns):
        return submit.submit_actor_method(self, actor_id, label, method, args, kwargs,
                                          num_returns)

    def send_actor_call(self, spec, frames):
        """Straight to the actor's worker when it can go so (core/direct.py)."""
        self.direct.send(spec, frames)

    def hold_ref(self, object_id):
        """An ObjectRef held here (not borrowed: the node counts us already)."""
        return ObjectRef(object_id, _runtime=self)

    def publish(self, object_ids):
        self.direct.publish(object_ids)

    def kill_actor(self, actor_id, no_restart):
        self.direct.suspend(actor_id)       # later calls must not reach the dying worker
        try:
            self.request("kill_actor", actor_id, bool(no_restart))
        finally:
            self.direct.resume(actor_id)

    def get_actor(self, name, make_handle):
        try:
            actor_id, meta = self.request("get_actor", name)
        except ValueError:
            # Not made from this node: its home published it in the kv.
            from ..kv.records import ACTOR_NAME_PREFIX, valid_actor_name_record
            kv = self.kv_client()
            record = kv.get(ACTOR_NAME_PREFIX + name) if kv is not None else None
            if not valid_actor_name_record(record):
                raise
            actor_id, meta = record
        return make_handle(actor_id, meta, ObjectRef(actor_id, borrowed=True, _runtime=self))

    def in_actor(self):
        worker = context.current_worker()
        return worker is not None and worker.actor is not None

    def register_function(self, function_id, name, blob):
        if function_id in self.registered_functions:
            return
        self.registered_functions.add(function_id)
        self.send_message(P.FUNCTION, function_id, name, blob, list(sys.path))

    # == metadata, events =====================================================
    def kv_client(self):
        """A kv client for this process (drivers and workers alike), made on first use."""
        if self.kv is None:
            from ..kv.client import KvClient
            address = self.node_info.get("kv_address")
            if not address:
                return None
            self.kv = KvClient(address, self.password)
        return self.kv

    def record_event(self, event):
        self.events.append(event)

    def take_events(self):
        events, self.events = self.events, []
        return events

    def flush_events(self):
        events = self.take_events()
        if events:
            self.send_message(P.EVENTS, events)

    def _flush_events_locked(self):
        events = self.take_events()
        if events:
            self.connection.enqueue(P.EVENTS, events)

    # == stop =================================================================
    def close(self):
        if self.connection.closing:
            return
        self.leases.close()
        try:
            self.flush_events()     # before BYE (events of direct calls and leased tasks)
        except Exception:
            pass                    # the node is gone: nobody to tell
        for close in self.closers:
            close()
        self.connection.close()
        if self.kv is not None:
            self.kv.close()
        self.objects.arena.close()


def _in_task():
    """Is this thread running a task (a worker's ray.get must say it is blocked)?"""
    worker = context.current_worker()
    return worker is not None and getattr(worker.current_task, "spec", None) is not None

"""A worker process: runs the tasks and actor methods its node sends.

``python -m zray.core NODE_ADDRESS WORKER_ID``. The main thread takes
tasks from the runtime's queue and runs them one at a time; an async actor's
methods run on an event loop that the main thread runs from then on (its
select reads the sockets: core/actor_loop.py), threaded actors' on a pool.
Results go back to the node in one DONE message per task.
"""
import asyncio
import inspect
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from types import CoroutineType

from ..exceptions import RayActorError, RayTaskError
from ..object_ref import counting_refs_once
from ..plasma.shm import unlink_session_files
from ..serialization import SerializationError, deserialize, loads_function, serialize
from ..transport import auth
from ..transport import protocol as P
from ..stackdump import install as install_stack_dump
from . import context
from .actor_loop import AsyncActorExecutor
from .endpoint import ActorEndpoint, TaskEndpoint
from .remote_endpoint import RemoteActorEndpoint
from .runtime import Runtime
from .submit import ArgRef

BOUNCE_AFTER_S = 0.1     # a pushed task queued behind one running this long goes back


class Worker:
    def __init__(self, runtime):
        self.runtime = runtime
        self.functions = {}          # function_id -> callable or class
        self.calls = {}              # function_id -> calls run here
        self.actor = None
        self.actor_executor = None   # thread pool or event loop for concurrent actors
        self.endpoint = None         # an actor's socket for direct calls (core/direct.py)
        self.remote_endpoint = None  # ... and for callers on other nodes (tcp)
        self.push_endpoint = None    # where a client that leased it pushes tasks (core/lease.py)
        self.running_since = None    # time.monotonic() the main thread's task began
        self.stopping = False        # leaving (exit_actor, max_calls): run nothing more, wait for EXIT
        self.resource_ids = {}       # GPU -> [(id, share)], as the node assigned them
        self.resource_demand = {}    # what the running task or actor holds (fixed point)
        self.current_task = threading.local()

    # -- main loop ------------------------------------------------------------
    def run(self):
        while True:
            if type(self.actor_executor) is AsyncActorExecutor:
                # An async actor's loop reads the sockets itself from now on
                # (core/actor_loop.py), until EXIT.
                self.actor_executor.serve()
                return
            item = self.runtime.next_task()
            if item is None:
                break
            if self.stopping:
                continue        # after exit_actor(): the node fails what is left
            fields, frames = item
            spec = fields[0]
            if spec.kind == P.ACTOR_METHOD and self.actor_executor is not None:
                self.actor_executor.submit(fields, frames)
                continue
            self.running_since = time.monotonic()
            try:
                leaving = self.execute(fields, frames)
            finally:
                self.running_since = None
            if leaving:
                # Leaving (max_calls, exit_actor, __init__ raised): wait for the
                # node's EXIT, its answer to our DONE, so the DONE is surely
                # handled before the node sees the process go (else it would
                # take the exit for a crash and run the task again).
                self.stopping = True
        if self.actor_executor is not None:
            # EXIT (last handle dropped): calls already here still run.
            # exit_actor(): the rest are dropped; the node fails them.
            self.actor_executor.shutdown(drain=not self.stopping)

    def stop_soon(self):
        """An executor thread ran exit_actor(): run nothing more, wait for EXIT."""
        self.stopping = True

    def execute(self, fields, frames):
        """Run one task; return True if this worker should exit afterwards."""
        spec, dep_headers, functions, resource_ids = fields[:4]
        route = fields[4] if len(fields) > 4 else None      # a direct call's caller
        endpoint = fields[5] if len(fields) > 5 else self.endpoint   # ... where it came in
        if functions:
            self._install(functions)
        if spec.kind != P.ACTOR_METHOD:
            self._set_resources(resource_ids)
            held = spec.kind == P.TASK or spec.options.get("hold_resources")
            self.resource_demand = spec.resources if held else {}
        start = time.time()
        self.current_task.spec = spec
        if route is not None:
            self.runtime.work.began(spec)
        error_text, exiting = None, False
        try:
            args, kwargs = self._arguments(spec, dep_headers, frames)
            result = self._call(spec, args, kwargs)
            if type(result) is CoroutineType:      # (inspect.iscoroutine is a Python call)
                result = asyncio.run(result)
            values = self._split_returns(spec, result)
            entries, payload = self._store_results(spec, values)
        except BaseException as exc:       # noqa: B036 - everything goes back to the caller
            if isinstance(exc, SystemExit) and spec.kind == P.ACTOR_METHOD:
                exiting = True
                entries, payload = self._store_exit(spec, exc)
            else:
                entries, payload, error_text = self._store_error(spec, exc)
        finally:
            self.current_task.spec = None
        if spec.max_calls:
            count = self.calls[spec.function_id] = self.calls.get(spec.function_id, 0) + 1
            exiting = exiting or count >= spec.max_calls
        if spec.kind == P.ACTOR_CREATE:
            if error_text:
                exiting = True
            else:
                self._listen_for_direct_calls(spec.actor_id)
        self._report_done(spec, start, entries, payload, exiting, error_text, route, endpoint)
        return exiting

    def listen_for_pushes(self):
        """The socket a client that leases this worker pushes its tasks to
        (core/lease.py); the client leases only when such paths fit."""
        try:
            self.push_endpoint = TaskEndpoint(self.runtime, self.runtime.connection.identity)
        except ValueError:
            return
        self.runtime.tick_hooks.append(self.bounce_stuck)

    def bounce_stuck(self, now):
        """I/O thread: the running task has taken long; pushed tasks queued
        behind it go back to their client (BOUNCE), for another worker."""
        started, tasks = self.running_since, self.runtime.tasks
        if started is None or now - started < BOUNCE_AFTER_S or not tasks:
            return
        connection = self.runtime.connection
        bounced = {}
        with connection.sock_lock, connection.cond:   # handlers append under sock_lock
            keep = []
            for item in tasks:
                fields = item[0] if item is not None else ()
                if len(fields) > 5 and fields[5] is self.push_endpoint:
                    bounced.setdefault(fields[4], []).append(fields[0].task_id)
                else:
                    keep.append(item)
            if bounced:
                tasks.clear()
                tasks.extend(keep)
                self.runtime.work.bounced += sum(len(ids) for ids in bounced.values())
        for route, task_ids in bounced.items():
            connection.send_on(self.push_endpoint.socket, [route] + P.pack(P.BOUNCE, task_ids))

    def _listen_for_direct_calls(self, actor_id):
        if self.push_endpoint is not None:
            # An actor's worker is never leased (the node leases idle workers
            # only): its push socket leaves the poll, where each zmq socket
            # costs every blocking poll of a call four system calls.
            self.runtime.connection.set_polled(self.push_endpoint.socket, False)
        try:
            self.endpoint = ActorEndpoint(self.runtime, actor_id)
        except Exception as exc:     # callers then reach it through the node
            print(f"zray: actor without direct calls: {exc}", file=sys.stderr, flush=True)
        if auth.is_tcp(self.runtime.node_info.get("tcp_address")):
            try:        # callers on other nodes (a cluster)
                self.remote_endpoint = RemoteActorEndpoint(self.runtime, actor_id)
            except Exception as exc:
                print(f"zray: actor without direct calls from other nodes: {exc}",
                      file=sys.stderr, flush=True)

    def _report_done(self, spec, start, entries, payload, exiting, error_text, route=None,
                     endpoint=None):
        """Record the task's span and send DONE (timeline events ride along);
        a direct call's results go back to its caller (core/direct.py)."""
        self.runtime.record_event({"name": spec.name, "ph": "X", "pid": self.runtime.pid,
                                   "tid": threading.get_ident() % 100000, "cat": "task",
                                   "ts": start * 1e6, "dur": (time.time() - start) * 1e6})
        if route is not None:
            self.runtime.work.ended(spec)
            endpoint.reply(spec, route, entries, payload, exiting, error_text)
            return
        self.runtime.send_message(P.DONE, spec.task_id, entries, exiting, error_text,
                                  self.runtime.take_events(), None, frames=payload)

    async def execute_async(self, fields, frames):
        """Like execute, but awaits coroutine methods on the actor's loop.
        Returns True if the method ended the actor (exit_actor)."""
        spec, dep_headers = fields[:2]
        route = fields[4] if len(fields) > 4 else None
        endpoint = fields[5] if len(fields) > 5 else self.endpoint
        start = time.time()
        if route is not None:
            self.runtime.work.began(spec)
        error_text, exiting = None, False
        try:
            args, kwargs = self._arguments(spec, dep_headers, frames)
            result = getattr(self.actor, spec.method)(*args, **kwargs)
            if type(result) is CoroutineType or inspect.isawaitable(result):
                result = await result
            entries, payload = self._store_results(spec, self._split_returns(spec, result))
        except BaseException as exc:       # noqa: B036
            if isinstance(exc, asyncio.CancelledError) and self.stopping:
                raise                      # dropped after exit_actor(); the node fails it
            if isinstance(exc, SystemExit):
                exiting = True
                entries, payload = self._store_exit(spec, exc)
            else:
                entries, payload, error_text = self._store_error(spec, exc)
        self._report_done(spec, start, entries, payload, exiting, error_text, route, endpoint)
        return exiting

    def _install(self, functions):
        for function_id, registration in functions.items():
            if registration is None:
                continue
            name, blob, sys_path = registration
            for entry in sys_path:
                if entry not in sys.path:
                    sys.path.append(entry)
            try:
                self.functions[function_id] = loads_function(blob)
            except Exception as exc:
                self.functions[function_id] = _Unloadable(name, exc)

    def _set_resources(self, resource_ids):
        self.resource_ids = resource_ids or {}
        # As Ray: a task sees exactly the GPUs it was given, none if it asked
        # for none (a reused worker must not keep a previous task's GPUs).
        visible = ",".join(str(gpu) for gpu, _ in self.resource_ids.get("GPU", ()))
        if os.environ.get("CUDA_VISIBLE_DEVICES") != visible:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible

    def _arguments(self, spec, dep_headers, frames):
        n_args = spec.n_arg_frames
        args, kwargs = counting_refs_once(deserialize, frames[0], frames[1:n_args])
        if not dep_headers:
            return args, kwargs
        dep_values, offset = [], n_args
        decode = self.runtime.objects.decode
        for header in dep_headers:
            n = header[2]
            dep_values.append(decode(header, frames[offset:offset + n]))
            offset += n
        args = [dep_values[a.index] if isinstance(a, ArgRef) else a for a in args]
        kwargs = {k: dep_values[v.index] if isinstance(v, ArgRef) else v
                  for k, v in kwargs.items()}
        return args, kwargs

    def _call(self, spec, args, kwargs):
        if spec.kind == P.TASK:
            return self.functions[spec.function_id](*args, **kwargs)
        if spec.kind == P.ACTOR_CREATE:
            cls = self.functions[spec.function_id]
            self.actor = cls(*args, **kwargs)
            self._start_actor_executor(cls, spec.options)
            return None
        return getattr(self.actor, spec.method)(*args, **kwargs)

    def _start_actor_executor(self, cls, options):
        is_async = any(inspect.iscoroutinefunction(m) for _, m in inspect.getmembers(cls))
        concurrency = options.get("max_concurrency")
        if is_async:
            self.actor_executor = AsyncActorExecutor(self, concurrency or 1000)
        elif concurrency and concurrency > 1:
            self.actor_executor = ThreadedActorExecutor(self, concurrency)

    def _split_returns(self, spec, result):
        n = len(spec.return_ids)
        if n == 1:
            return [result]
        if n == 0:
            return []
        if not isinstance(result, (tuple, list)) or len(result) != n:
            raise ValueError(f"{spec.name} declared num_returns={n} but returned "
                             f"{type(result).__name__} {_short(result)}; return a tuple of {n} values")
        return list(result)

    def _store_results(self, spec, values):
        entries, payload = [], []
        for object_id, value in zip(spec.return_ids, values):
            try:
                data = serialize(value)
            except SerializationError as exc:
                raise SerializationError(f"the return value of {spec.name} could not be "
                                         f"serialized: {exc}") from None
            header, frames = self.runtime.store_serialized(object_id, data)
            entries.append(header)
            payload.extend(frames)
        return entries, payload

    def _store_exit(self, spec, exc):
        """The method ended the actor on purpose: its caller gets RayActorError."""
        how = ("ray.exit_actor()" if type(exc).__name__ == "ActorExit"
               else f"sys.exit({exc.code!r})")
        error = RayActorError(f"the actor exited on purpose: {spec.name} called {how} "
                              f"(exit_actor), so later calls to it fail")
        return self._store_error_value(spec, serialize(error))

    def _store_error_value(self, spec, data):
        """Every return of the task holds the same serialized error."""
        entries, payload = [], []
        for object_id in spec.return_ids:
            header, frames = self.runtime.store_serialized(object_id, data, is_error=True)
            entries.append(header)
            payload.extend(frames)
        return entries, payload

    def _store_error(self, spec, exc):
        if isinstance(exc, RayTaskError):
            # An argument was itself a failed task's result: pass its error on.
            text = exc.traceback_str
            error = RayTaskError(exc.function_name, text, exc.cause, exc.pid)
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            error = RayTaskError(spec.name, text, exc, os.getpid())
        try:
            data = serialize(error)
        except Exception:
            data = serialize(RayTaskError(spec.name, text, None, os.getpid()))
        entries, payload = self._store_error_value(spec, data)
        return entries, payload, f"{spec.name}: {text}"


class ThreadedActorExecutor:
    """Plain methods of an actor with max_concurrency > 1, on a thread pool."""

    def __init__(self, worker, concurrency):
        self.worker = worker
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="zray-actor")

    def submit(self, fields, frames):
        self.pool.submit(self._run, fields, frames)

    def _run(self, fields, frames):
        if self.worker.stopping:
            return
        if self.worker.execute(fields, frames):
            self.worker.stop_soon()

    def shutdown(self, drain=True):
        self.pool.shutdown(wait=True, cancel_futures=not drain)


class _Unloadable:
    def __init__(self, name, exc):
        self.name, self.exc = name, exc

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"could not load the code of {self.name} in the worker: "
                           f"{type(self.exc).__name__}: {self.exc}. Is the module it comes from "
                           f"importable on this node (same working directory / PYTHONPATH)?")


def _short(value):
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def main():
    node_address, worker_id = sys.argv[1], sys.argv[2]
    install_stack_dump("worker")
    # Popped: user code run here (and what it starts) does not inherit them.
    runtime = Runtime(node_address, "worker", identity=worker_id.encode(),
                      password=os.environ.pop(auth.TOKEN_ENV, ""), watch_parent=True,
                      worker_secret=os.environ.pop(auth.WORKER_SECRET_ENV, None))
    # A node killed outright (SIGKILL, the OOM killer) cannot remove its
    # shared memory; its workers see it gone and do (the rest: `zray stop`).
    runtime.connection.on_parent_gone = lambda: unlink_session_files(
        (runtime.plasma_dir, runtime.spill_dir), runtime.session_name)
    context.set_current(runtime)
    worker = Worker(runtime)
    worker.listen_for_pushes()
    context.set_worker(worker)
    try:
        worker.run()
    finally:
        runtime.close()
    # Leave without running atexit/GC finalizers of user code: the node may
    # already be gone and there is nothing left to report.
    sys.stdout.flush()
    os._exit(0)


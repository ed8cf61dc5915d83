"""Actors on one node: creation, method queues, death and restart (part of NodeState).

::

    PENDING ──created──► ALIVE ──worker dies──► RESTARTING ──created──► ALIVE
       │                   │   (restarts left)
       └─ __init__ raised ─┴─ no restarts left / killed / exit_actor ─► DEAD
                                                                        │
                    last handle gone and worker reaped: entry forgotten ┘

- An actor is created by an ACTOR_CREATE task that pins a worker for life.
  Resources asked for explicitly stay held while the worker lives; the
  default CPU is only needed to place it.
- Method calls queue per actor *and per caller* (the client that submitted
  them) and go to the actor's worker in each caller's submission order as
  soon as their arguments exist. A call whose argument is missing holds
  back that caller's later calls only: other callers' calls go ahead, so
  one caller's slow argument never stalls another (and calls that depend
  on each other's results across callers cannot deadlock).
- The actor id is also an object id: every handle holds a ref to it. When
  the last handle anywhere is dropped the actor becomes *unreferenced*: the
  calls already submitted still run, then the worker is told to exit.
- A dead actor stays as a tombstone while handles remain, so later calls
  fail fast with the reason it died.
- Actors on other nodes (placed there, or homed there): ``actor_routing.py``.

The table changes only inside ``NodeState.handle``; what it decides leaves
as commands (``state.emit``): EXECUTE via ``state.send_task``, EXIT via
``state.stop_worker``, ``KillWorker``.
"""
import logging
from collections import deque

from ...exceptions import RayActorError
from ..task import TaskState
from ..worker_pool import describe_exit
from . import commands as C
from .actor_record import ALIVE, DEAD, PENDING, RESTARTING, Actor
from .actor_routing import ActorRouting, caller_of

log = logging.getLogger("zray.actors")

S = TaskState


class ActorTable:
    def __init__(self, state):
        self.state = state            # the NodeState this table is part of
        self.by_id = {}
        self.names = {}               # name -> actor id (reserved before the creation arrives)
        self.proxies = {}             # actor id -> proxy, for actors homed on other nodes
        self.routing = ActorRouting(self)

    # -- creation -----------------------------------------------------------
    def submit_creation(self, task):
        actor = Actor(task)
        self.by_id[actor.actor_id] = actor
        if actor.name:
            self.names[actor.name] = actor.actor_id
            if self.routing.is_home(actor):
                self.state.emit(C.PublishActorName(actor.name,
                                                   (actor.actor_id, actor.handle_meta)))
        self.state.wait_for_arguments(task, lambda _task: self._creation_ready(actor))

    def _creation_ready(self, actor, front=False):
        if actor.state in (PENDING, RESTARTING):
            self.state.scheduler.make_ready(actor.creation, front)
            self.state.needs_dispatch = True

    def _restart(self, actor):
        actor.restarts_left -= 1
        actor.state = RESTARTING
        actor.last_death = actor.death_reason or actor.last_death
        actor.death_reason = None
        creation = actor.creation
        creation.worker = None
        creation.to(S.WAITING)
        # First in line, as a retried task is: its callers wait on it, and
        # behind every queued task of its shape it would wait for them all.
        self._creation_ready(actor, front=True)

    def created(self, task, worker, error_text=None):
        """The creation task finished on ``worker`` (``error_text``: __init__ raised)."""
        scheduler = self.state.scheduler
        worker.task = None
        actor = self.by_id.get(task.spec.actor_id)
        if actor is None or actor.state == DEAD or actor.creation is not task:
            scheduler.finish(task.spec.task_id)
            task.to(S.DONE)
            self.state.emit(C.KillWorker(worker.worker_id))
            return
        if error_text:
            scheduler.finish(task.spec.task_id)
            task.to(S.DONE)
            self.state.stop_worker(worker)
            self._die(actor, f"its __init__ raised:\n\n{error_text}")
            self._forget_if_done(actor)
            return
        if actor.hold:
            # Explicit resources stay with the worker until it exits.
            scheduler.keep_holding(task.spec.task_id)
            actor.holding = True
        else:
            scheduler.finish(task.spec.task_id)
        task.to(S.DONE)
        worker.actor_id = actor.actor_id
        actor.worker = worker
        actor.state = ALIVE
        self._pump(actor)

    # -- methods ------------------------------------------------------------
    def submit_method(self, task):
        actor = self.by_id.get(task.spec.actor_id)
        if actor is None:
            actor = self.routing.proxy_for(task)
        # A direct call resubmitted after its socket closed: judged where the
        # actor lives (else it goes on, as any call, to that node, through
        # its home), even once the actor is dead: the call may be the one
        # that ended it (exit_actor), its results here already.
        attempted = actor is not None and actor.node is None and \
            "attempted" in task.spec.options
        if actor is None or actor.state == DEAD and not attempted:
            self._fail(task, actor)
            return
        task.retries_left = actor.task_retries
        if attempted:
            self._submit_attempted(actor, task, task.spec.options["attempted"])
            return
        caller = caller_of(task.spec)
        if not task.spec.dep_ids and caller not in actor.queues and self._can_send(actor):
            # The common case, kept short: no argument to wait for and nothing
            # of this caller's ahead of it.
            task.to(S.READY)
            self._send(actor, task)
            return
        queue = actor.queues.get(caller)
        if queue is None:
            queue = actor.queues[caller] = deque()
        queue.append(task)
        self.state.wait_for_arguments(task, self._arguments_ready)

    def _submit_attempted(self, actor, task, worker_id):
        """A call sent straight to the actor's worker ``worker_id`` whose
        caller lost the connection before the reply (core/direct.py): it may
        have run. It is handled as a call in flight when that worker died:
        retried while max_task_retries allow, else failed; its result is kept
        if it came."""
        state = self.state
        if all(state.objects.is_ready(object_id) for object_id in task.spec.return_ids):
            # It ran and its results reached the node (DONE with a holder).
            for object_id in task.spec.return_ids:
                state.push_object(task.spec.owner, object_id)
            state.release_arguments(task)
            state.end(task, S.DISCARDED)
            return
        task.to(S.READY)
        worker = actor.worker
        if actor.state == ALIVE and worker is not None and worker.worker_id == worker_id:
            # The node has not seen that worker go yet: the call joins the
            # calls in flight, which worker_died retries or fails.
            task.to(S.RUNNING)
            actor.inflight[task.spec.task_id] = task
            return
        # That worker's death is handled (the actor may already live again).
        restarting = actor.state in (PENDING, RESTARTING, ALIVE)
        if restarting and task.retries_left > 0:
            task.retries_left -= 1
            actor.queues.setdefault(task.spec.owner, deque()).append(task)
            self._pump(actor)
            return
        self._fail(task, actor, actor.death_reason or actor.last_death, running=True,
                   restarting=restarting)

    def _arguments_ready(self, task):
        if task.state is not S.WAITING:      # failed meanwhile (its actor died)
            return
        task.to(S.READY)
        actor = self.lookup(task.spec.actor_id)
        if actor is not None and self._can_send(actor):
            self._send_ready(actor, caller_of(task.spec))
            self._exit_if_unreferenced(actor)

    def lookup(self, actor_id):
        actor = self.by_id.get(actor_id)
        return actor if actor is not None else self.proxies.get(actor_id)

    def _can_send(self, actor):
        if actor.node is not None:
            return actor.state == ALIVE       # calls follow it to its node
        worker = actor.worker     # None while its death is being handled
        return actor.state == ALIVE and worker is not None and not worker.exiting

    def _pump(self, actor):
        if not self._can_send(actor):
            return
        for caller in list(actor.queues):
            self._send_ready(actor, caller)
        self._exit_if_unreferenced(actor)

    def _send_ready(self, actor, caller):
        """Send this caller's calls from the front of its queue while their arguments exist."""
        queue = actor.queues.get(caller)
        if queue is None:
            return
        while queue and queue[0].state is S.READY:
            self._send(actor, queue.popleft())
        if not queue:
            del actor.queues[caller]

    def _send(self, actor, task):
        if actor.node is not None:
            self.routing.forward_call(actor, task)
            return
        task.to(S.RUNNING)
        actor.inflight[task.spec.task_id] = task
        self.state.send_task(actor.worker, task)

    def _exit_if_unreferenced(self, actor):
        if actor.unreferenced and not actor.queues and not actor.inflight:
            if actor.node is not None:    # its node hears that our handles are gone
                self._die(actor, actor.death_reason)
                self._forget_if_done(actor)
                return
            # Nobody can call it any more and every result is in: exit. (Sent
            # only now so no result is lost with a process already leaving.)
            self.state.stop_worker(actor.worker)

    def method_done(self, worker, task_id, exiting):
        actor = self.by_id.get(worker.actor_id)
        if actor is None:
            return None
        task = actor.inflight.pop(task_id, None)
        if task is not None:
            self.state.release_arguments(task)
            self.state.end(task, S.DONE)
        if exiting:
            # The worker waits for EXIT, which _die sends.
            actor.restarts_left = 0
            self._die(actor, "it exited on purpose (exit_actor() or sys.exit() in "
                             f"{task.spec.name if task else 'a method'})")
        elif actor.unreferenced:
            self._pump(actor)
        return task

    # -- death --------------------------------------------------------------
    def worker_died(self, worker, code, pid):
        actor = self.by_id.get(worker.actor_id)
        if actor is None or actor.worker is not worker:
            return
        actor.worker = None
        if actor.holding:
            self.state.scheduler.release_held(actor.creation)
            actor.holding = False
        reason = actor.death_reason or (f"its worker process (pid {pid}) died with "
                                        f"{describe_exit(code)}")
        restart = actor.state != DEAD and actor.restarts_left > 0 and not actor.unreferenced
        actor.last_death = reason
        retry = []
        for task in actor.inflight.values():
            if restart and task.retries_left > 0:
                task.retries_left -= 1
                task.to(S.READY)
                retry.append(task)
            else:
                self._fail(task, actor, reason, running=True, restarting=restart)
        actor.inflight.clear()
        if restart:
            for task in reversed(retry):     # first in their callers' queues, in order
                actor.queues.setdefault(caller_of(task.spec), deque()).appendleft(task)
            log.warning("actor %s died (%s); restarting it (%s restarts left)",
                        actor.class_name, reason, actor.restarts_left - 1)
            self._restart(actor)
        else:
            self._die(actor, reason)
        self._forget_if_done(actor)

    def creation_crashed(self, creation, reason):
        """The worker died inside __init__ (its resources are released)."""
        actor = self.by_id.get(creation.spec.actor_id)
        if actor is None or actor.creation is not creation:
            return
        if actor.state != DEAD and actor.restarts_left > 0 and not actor.unreferenced:
            self._restart(actor)
        else:
            self._die(actor, reason)
        self._forget_if_done(actor)

    def _die(self, actor, reason):
        if actor.state == DEAD:
            return
        state = self.state
        actor.state = DEAD
        actor.death_reason = actor.death_reason or reason
        queued, actor.queues = actor.queued(), {}
        for task in queued:
            self._fail(task, actor)
        self._release_name(actor)
        creation = actor.creation
        if creation is None:          # a proxy: nothing of it runs here
            return
        if actor.node is not None:
            self.routing.let_go(actor)
        if creation.state is S.FORWARDED:
            pass                      # its node runs it; a result may still come back
        elif creation.state is S.RUNNING and creation.spec.task_id in state.scheduler.running:
            if creation.worker is not None:      # stop an __init__ still running
                state.emit(C.KillWorker(creation.worker.worker_id))
        elif creation.state is not S.RUNNING:
            state.scheduler.discard(creation)
        if not actor.args_released:
            actor.args_released = True
            state.release_arguments(creation)
            creation.frames = ()
        if actor.worker is not None:
            state.stop_worker(actor.worker)

    def _forget_if_done(self, actor):
        # A tombstone is kept while handles may still call it.
        if actor.state == DEAD and actor.worker is None and actor.unreferenced:
            if self.by_id.get(actor.actor_id) is actor:
                del self.by_id[actor.actor_id]

    def _fail(self, task, actor, reason=None, running=False, restarting=False):
        if actor is None:
            message = self.routing.unknown_actor_message(task.spec)
        else:
            reason = reason or actor.death_reason
            when = "while running" if running else "before running"
            message = (f"actor {actor.class_name} ({actor.actor_id.hex()[:12]}) died {when} "
                       f"{task.spec.name}: {reason}")
            if restarting:
                message += ("; it is being restarted, so later calls run on a fresh instance "
                            "(pass max_task_retries=N to retry calls like this one)")
            elif ("died with" in reason or "left the cluster" in reason) and \
                    not actor.max_restarts and not actor.proxy:
                message += ("; create the actor with max_restarts=N to have it restarted "
                            "after a crash")
        self.state.fail_task(task, RayActorError(message))

    def out_of_scope(self, actor_id):
        """The last handle is gone: finish what was submitted, then exit."""
        actor = self.by_id.get(actor_id)
        if actor is None or actor.unreferenced:
            return
        if actor.detached and actor.state != DEAD:
            return          # lives until ray.kill or the cluster stops
        actor.unreferenced = True
        actor.restarts_left = 0
        self._release_name(actor)
        if actor.state == DEAD:
            self._forget_if_done(actor)
            return
        actor.death_reason = actor.death_reason or "every handle to it went out of scope"
        if actor.state == ALIVE:
            self._pump(actor)
        elif not actor.queues or actor.creation.state is S.INFEASIBLE:
            # Not created yet and nothing it could ever run: stop here.
            self._die(actor, actor.death_reason)
            self._forget_if_done(actor)

    def _release_name(self, actor):
        if actor.name and self.names.get(actor.name) == actor.actor_id:
            del self.names[actor.name]
            if self.routing.is_home(actor):
                self.state.emit(C.PublishActorName(actor.name, None))

    # -- requests (events KillActorRequested, ActorNameReserved) ---------------
    def kill(self, actor_id, no_restart=True):
        actor = self.by_id.get(actor_id)
        if actor is None:
            self.routing.kill_elsewhere(actor_id, no_restart)
            return
        if actor.state == DEAD:
            return
        if actor.node is not None:
            self.routing.kill_there(actor, no_restart)
            if no_restart:     # over here too: its name is free, later calls fail here
                actor.restarts_left = 0
                self._die(actor, "it was killed by ray.kill()")
                self._forget_if_done(actor)
            return
        if no_restart:
            actor.restarts_left = 0
        actor.death_reason = ("it was killed by ray.kill()" if no_restart or not actor.restarts_left
                              else "it was killed by ray.kill(no_restart=False)")
        if actor.worker is not None:
            self.state.emit(C.KillWorker(actor.worker.worker_id))
            if actor.restarts_left > 0 and not actor.unreferenced:
                actor.state = RESTARTING      # send nothing more; restarts once reaped
            else:
                self._die(actor, actor.death_reason)
        elif not actor.restarts_left:
            self._die(actor, actor.death_reason)
            self._forget_if_done(actor)

    def owner_gone(self, actor, reason):
        """The driver (or worker) that created it left: it goes, name and all."""
        if actor.state == DEAD:
            return
        actor.restarts_left = 0
        actor.death_reason = reason
        if actor.worker is not None:
            self.state.emit(C.KillWorker(actor.worker.worker_id))
        if actor.node is not None:
            self.routing.kill_there(actor, True)
        self._die(actor, reason)
        self._forget_if_done(actor)

    def reserve_name(self, name, actor_id=None):
        existing = self.names.get(name)
        if existing is not None:
            actor = self.by_id.get(existing)
            if actor is None or (actor.state != DEAD and not actor.unreferenced):
                raise ValueError(f"an actor named {name!r} already exists; pick another name, "
                                 f"use ray.get_actor({name!r}), or pass get_if_exists=True")
        if actor_id is not None:
            self.names[name] = actor_id

    # -- looking ------------------------------------------------------------
    def get_by_name(self, name):
        actor = self.by_id.get(self.names.get(name))
        if actor is None or actor.state == DEAD or actor.unreferenced:
            raise ValueError(f"no live actor named {name!r}; named actors are created with "
                             f"Cls.options(name={name!r}).remote()")
        return actor.actor_id, actor.handle_meta

    def statistics(self):
        states = {}
        for actor in self.by_id.values():
            states[actor.state] = states.get(actor.state, 0) + 1
        return {"actors": len(self.by_id), "by_state": states, "named": len(self.names)}

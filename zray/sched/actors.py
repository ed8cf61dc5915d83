"""Actors on one node: creation, method queues, death and restart.

::

    PENDING ──created──► ALIVE ──worker dies──► RESTARTING ──created──► ALIVE
       │                   │   (restarts left)
       └─ __init__ raised ─┴─ no restarts left / killed / exit_actor ─► DEAD
                                                                        │
                    last handle gone and worker reaped: entry forgotten ┘

- An actor is created by an ACTOR_CREATE task that pins a worker for life.
  Resources asked for explicitly stay held while the worker lives; the
  default CPU is only needed to place it.
- Method calls queue per actor and go to its worker in submission order, as
  soon as their arguments exist (a call whose argument is missing holds back
  the calls after it); the worker runs them in that order, or concurrently
  for async and threaded actors.
- The actor id is also an object id: every handle holds a ref to it. When
  the last handle anywhere is dropped the actor becomes *unreferenced*: the
  calls already submitted still run, then the worker is told to exit.
- A dead actor stays as a tombstone while handles remain, so later calls
  fail fast with the reason it died.
"""
import logging
from collections import deque

from ..exceptions import RayActorError
from ..transport import protocol as P
from .scheduler import INFEASIBLE, READY, RUNNING, WAITING
from .worker_pool import describe_exit

log = logging.getLogger("zray.actors")

PENDING, ALIVE, RESTARTING, DEAD = "pending", "alive", "restarting", "dead"
INFINITE = float("inf")


class Actor:
    __slots__ = ("actor_id", "creation", "worker", "state", "restarts_left", "max_restarts",
                 "task_retries", "queue", "inflight", "name", "death_reason", "hold",
                 "holding", "class_name", "handle_meta", "unreferenced", "detached",
                 "args_released")

    def __init__(self, creation):
        spec = creation.spec
        options = spec.options
        self.actor_id = spec.actor_id
        self.creation = creation      # kept to run __init__ again on restart
        self.worker = None
        self.state = PENDING
        self.max_restarts = options.get("max_restarts", 0)
        self.restarts_left = self.max_restarts
        retries = options.get("max_task_retries") or 0
        self.task_retries = INFINITE if retries == -1 else retries
        self.queue = deque()          # method tasks not yet sent, in submission order
        self.inflight = {}            # task_id -> task sent to the worker (dict keeps order)
        self.name = options.get("name")
        self.death_reason = None
        self.hold = options.get("hold_resources", False)
        self.holding = False          # hold=True and the worker has the resources now
        self.class_name = spec.name
        self.handle_meta = options.get("handle_meta")
        self.unreferenced = False     # no handle left anywhere: exit once the queue is empty
        self.detached = options.get("detached", False)
        self.args_released = False


class ActorTable:
    def __init__(self, node):
        self.node = node
        self.by_id = {}
        self.names = {}               # name -> actor id (reserved before the creation arrives)

    # -- creation -----------------------------------------------------------
    def submit_creation(self, task):
        actor = Actor(task)
        self.by_id[actor.actor_id] = actor
        if actor.name:
            self.names[actor.name] = actor.actor_id
        self.node._wait_for_arguments(task, lambda _task: self._creation_ready(actor))

    def _creation_ready(self, actor):
        if actor.state in (PENDING, RESTARTING):
            self.node.scheduler.make_ready(actor.creation)

    def _restart(self, actor):
        actor.restarts_left -= 1
        actor.state = RESTARTING
        actor.death_reason = None
        creation = actor.creation
        creation.worker = None
        creation.state = WAITING
        self._creation_ready(actor)

    def created(self, task, worker, error_text=None):
        """The creation task finished on ``worker`` (``error_text``: __init__ raised)."""
        node = self.node
        scheduler = node.scheduler
        worker.task = None
        actor = self.by_id.get(task.spec.actor_id)
        if actor is None or actor.state == DEAD or actor.creation is not task:
            scheduler.finish(task.spec.task_id)
            node.pool_kill(worker)
            return
        if error_text:
            scheduler.finish(task.spec.task_id)
            worker.exiting = True
            node.send(worker.worker_id, P.EXIT)
            self._die(actor, f"its __init__ raised:\n\n{error_text}")
            self._forget_if_done(actor)
            return
        if actor.hold:
            # Explicit resources stay with the worker until it exits.
            scheduler.unblock(task)
            scheduler.running.pop(task.spec.task_id, None)
            actor.holding = True
        else:
            scheduler.finish(task.spec.task_id)
        worker.actor_id = actor.actor_id
        actor.worker = worker
        actor.state = ALIVE
        self._pump(actor)

    # -- methods ------------------------------------------------------------
    def submit_method(self, task):
        actor = self.by_id.get(task.spec.actor_id)
        if actor is None or actor.state == DEAD:
            self._fail(task, actor)
            return
        task.retries_left = actor.task_retries
        task.state = WAITING
        actor.queue.append(task)
        self.node._wait_for_arguments(task, self._arguments_ready)

    def _arguments_ready(self, task):
        task.state = READY
        actor = self.by_id.get(task.spec.actor_id)
        if actor is not None:
            self._pump(actor)

    def _pump(self, actor):
        if actor.state != ALIVE or actor.worker.exiting:
            return
        while actor.queue and actor.queue[0].state == READY:
            task = actor.queue.popleft()
            task.state = RUNNING
            actor.inflight[task.spec.task_id] = task
            self.node.send_task(actor.worker, task)
        if actor.unreferenced and not actor.queue and not actor.inflight:
            # Nobody can call it any more and every result is in: exit. (Sent
            # only now so no result is lost with a process already leaving.)
            actor.worker.exiting = True
            self.node.send(actor.worker.worker_id, P.EXIT)

    def method_done(self, worker, task_id, exiting):
        actor = self.by_id.get(worker.actor_id)
        if actor is None:
            return None
        task = actor.inflight.pop(task_id, None)
        if task is not None:
            self.node._release_arguments(task)
        if exiting:
            # The worker waits for EXIT, which _die sends.
            actor.restarts_left = 0
            self._die(actor, "it exited on purpose (exit_actor() or sys.exit() in "
                             f"{task.spec.name if task else 'a method'})")
        elif actor.unreferenced:
            self._pump(actor)
        return task

    # -- death --------------------------------------------------------------
    def worker_died(self, worker, code):
        actor = self.by_id.get(worker.actor_id)
        if actor is None or actor.worker is not worker:
            return
        node = self.node
        actor.worker = None
        if actor.holding:
            node.resources.release(actor.creation.demand, actor.creation.resource_ids)
            actor.creation.resource_ids = {}
            actor.holding = False
        reason = actor.death_reason or (f"its worker process (pid {worker.pid}) died with "
                                        f"{describe_exit(code)}")
        restart = actor.state != DEAD and actor.restarts_left > 0 and not actor.unreferenced
        retry = []
        for task in actor.inflight.values():
            if restart and task.retries_left > 0:
                task.retries_left -= 1
                task.state = READY
                retry.append(task)
            else:
                self._fail(task, actor, reason, running=True, restarting=restart)
        actor.inflight.clear()
        if restart:
            actor.queue.extendleft(reversed(retry))
            log.warning("actor %s died (%s); restarting it (%s restarts left)",
                        actor.class_name, reason, actor.restarts_left - 1)
            self._restart(actor)
        else:
            self._die(actor, reason)
        self._forget_if_done(actor)

    def creation_crashed(self, actor, reason):
        """The worker died inside __init__ (the node has released its resources)."""
        if actor.state != DEAD and actor.restarts_left > 0 and not actor.unreferenced:
            self._restart(actor)
        else:
            self._die(actor, reason)
        self._forget_if_done(actor)

    def _die(self, actor, reason):
        if actor.state == DEAD:
            return
        node = self.node
        actor.state = DEAD
        actor.death_reason = actor.death_reason or reason
        queued, actor.queue = list(actor.queue), deque()
        for task in queued:
            self._fail(task, actor)
        self._release_name(actor)
        creation = actor.creation
        if creation.state == RUNNING and creation.spec.task_id in node.scheduler.running:
            if creation.worker is not None:      # stop an __init__ still running
                node.pool_kill(creation.worker)
        elif creation.state != RUNNING:
            node.scheduler.discard(creation)
        if not actor.args_released:
            actor.args_released = True
            node._release_arguments(creation)
            creation.frames = ()
        if actor.worker is not None and not actor.worker.exiting:
            actor.worker.exiting = True
            node.send(actor.worker.worker_id, P.EXIT)

    def _forget_if_done(self, actor):
        # A tombstone is kept while handles may still call it.
        if actor.state == DEAD and actor.worker is None and actor.unreferenced:
            if self.by_id.get(actor.actor_id) is actor:
                del self.by_id[actor.actor_id]

    def _fail(self, task, actor, reason=None, running=False, restarting=False):
        if actor is None:
            message = (f"{task.spec.name} was called on an actor this node does not know "
                       f"(id {task.spec.actor_id.hex()[:12]}); it may have exited after its "
                       f"last handle was dropped")
        else:
            reason = reason or actor.death_reason
            when = "while running" if running else "before running"
            message = (f"actor {actor.class_name} ({actor.actor_id.hex()[:12]}) died {when} "
                       f"{task.spec.name}: {reason}")
            if restarting:
                message += ("; it is being restarted, so later calls run on a fresh instance "
                            "(pass max_task_retries=N to retry calls like this one)")
            elif "died with" in reason and not actor.max_restarts:
                message += ("; create the actor with max_restarts=N to have it restarted "
                            "after a crash")
        self.node._fail_task(task, RayActorError(message))

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
        elif not actor.queue or actor.creation.state == INFEASIBLE:
            # Not created yet and nothing it could ever run: stop here.
            self._die(actor, actor.death_reason)
            self._forget_if_done(actor)

    def _release_name(self, actor):
        if actor.name and self.names.get(actor.name) == actor.actor_id:
            del self.names[actor.name]

    # -- requests -----------------------------------------------------------
    def request_kill_actor(self, _client, actor_id, no_restart=True):
        actor = self.by_id.get(actor_id)
        if actor is None or actor.state == DEAD:
            return True
        if no_restart:
            actor.restarts_left = 0
        actor.death_reason = ("it was killed by ray.kill()" if no_restart or not actor.restarts_left
                              else "it was killed by ray.kill(no_restart=False)")
        if actor.worker is not None:
            self.node.pool_kill(actor.worker)
            if actor.restarts_left > 0 and not actor.unreferenced:
                actor.state = RESTARTING      # send nothing more; restarts once reaped
            else:
                self._die(actor, actor.death_reason)
        elif not actor.restarts_left:
            self._die(actor, actor.death_reason)
            self._forget_if_done(actor)
        return True

    def request_get_actor(self, _client, name):
        actor = self.by_id.get(self.names.get(name))
        if actor is None or actor.state == DEAD or actor.unreferenced:
            raise ValueError(f"no live actor named {name!r}; named actors are created with "
                             f"Cls.options(name={name!r}).remote()")
        return actor.actor_id, actor.handle_meta

    def request_reserve_actor_name(self, _client, name, actor_id=None):
        existing = self.names.get(name)
        if existing is not None:
            actor = self.by_id.get(existing)
            if actor is None or (actor.state != DEAD and not actor.unreferenced):
                raise ValueError(f"an actor named {name!r} already exists; pick another name, "
                                 f"use ray.get_actor({name!r}), or pass get_if_exists=True")
        if actor_id is not None:
            self.names[name] = actor_id
        return True

    def statistics(self):
        states = {}
        for actor in self.by_id.values():
            states[actor.state] = states.get(actor.state, 0) + 1
        return {"actors": len(self.by_id), "by_state": states, "named": len(self.names)}

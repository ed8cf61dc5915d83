"""Actors on one node: creation, method queues, death and restart.

::

    PENDING ──created──► ALIVE ──worker dies──► RESTARTING ──created──► ALIVE
       │                   │   (restarts left)
       └─ __init__ raised ─┴── no restarts left / killed / out of scope ──► DEAD

- An actor is created by an ACTOR_CREATE task that pins a worker for life.
- Method calls queue per actor and go to its worker in submission order, as
  soon as their arguments exist; the worker runs them in that order (or
  concurrently, for async and threaded actors).
- The actor id is also an object id: every handle holds a ref to it, so when
  the last handle anywhere is dropped the refcount says so and the actor
  exits after the calls already sent.
"""
import logging
import signal
from collections import deque

from ..exceptions import RayActorError
from ..serialization import serialize
from ..transport import protocol as P
from .worker_pool import describe_exit

log = logging.getLogger("zray.actors")

PENDING, ALIVE, RESTARTING, DEAD = "pending", "alive", "restarting", "dead"


class Actor:
    __slots__ = ("actor_id", "creation", "worker", "state", "restarts_left", "queue",
                 "inflight", "name", "death_reason", "hold", "class_name")

    def __init__(self, creation):
        spec = creation.spec
        self.actor_id = spec.actor_id
        self.creation = creation
        self.worker = None
        self.state = PENDING
        self.restarts_left = spec.options.get("max_restarts", 0)
        self.queue = deque()      # method tasks not yet sent, in submission order
        self.inflight = {}        # task_id -> task sent to the worker
        self.name = spec.options.get("name")
        self.death_reason = None
        self.hold = spec.options.get("hold_resources", False)
        self.class_name = spec.name


class ActorTable:
    def __init__(self, node):
        self.node = node
        self.by_id = {}
        self.names = {}

    # -- creation -----------------------------------------------------------
    def register(self, task):
        actor = Actor(task)
        self.by_id[actor.actor_id] = actor
        if actor.name:
            self.names[actor.name] = actor.actor_id

    def created(self, task, worker, failed):
        node = self.node
        actor = self.by_id.get(task.spec.actor_id)
        node.scheduler.running.pop(task.spec.task_id, None)
        if actor is None or actor.state == DEAD:
            node.resources.release(task.demand, task.resource_ids)
            worker.task = None
            node.pool_kill(worker)
            return
        if failed:
            node.resources.release(task.demand, task.resource_ids)
            worker.task = None
            worker.exiting = True
            node.send(worker.worker_id, P.EXIT)
            self._die(actor, "its __init__ raised (see the error of the creation task)")
            return
        if not actor.hold:
            node.resources.release(task.demand, task.resource_ids)
        worker.task = None
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
        task.state = "waiting"
        actor.queue.append(task)
        self.node._wait_for_arguments(task, lambda t: self._arguments_ready(actor, t))

    def _arguments_ready(self, actor, task):
        task.state = "ready"
        self._pump(actor)

    def _pump(self, actor):
        if actor.state != ALIVE:
            return
        while actor.queue and actor.queue[0].state == "ready":
            task = actor.queue.popleft()
            task.state = "running"
            actor.inflight[task.spec.task_id] = task
            self.node.send_task(actor.worker, task)

    def method_done(self, worker, task_id, exiting):
        actor = self.by_id.get(worker.actor_id)
        if actor is None:
            return None
        task = actor.inflight.pop(task_id, None)
        if task is not None:
            self.node._release_arguments(task)
        if exiting:
            worker.exiting = True
            actor.restarts_left = 0
            actor.death_reason = "it called exit_actor()"
        return task

    # -- death --------------------------------------------------------------
    def worker_died(self, worker, code):
        actor = self.by_id.get(worker.actor_id)
        if actor is None:
            return
        node = self.node
        actor.worker = None
        reason = actor.death_reason or f"its worker process (pid {worker.pid}) died with {describe_exit(code)}"
        for task in list(actor.inflight.values()):
            self._fail(task, actor, reason)
        actor.inflight.clear()
        if actor.hold:
            node.resources.release(actor.creation.demand, actor.creation.resource_ids)
        if actor.state != DEAD and actor.restarts_left > 0:
            actor.restarts_left -= 1
            actor.state = RESTARTING
            log.warning("actor %s died (%s); restarting (%d restarts left)",
                        actor.class_name, reason, actor.restarts_left)
            creation = actor.creation
            creation.worker = None
            creation.state = "waiting"
            node.scheduler.make_ready(creation)
            return
        self._die(actor, reason)

    def creation_crashed(self, actor, reason):
        """The worker died inside __init__ (resources already released)."""
        actor.worker = None
        if actor.state != DEAD and actor.restarts_left > 0:
            actor.restarts_left -= 1
            actor.state = RESTARTING
            actor.creation.state = "waiting"
            self.node.scheduler.make_ready(actor.creation)
            return
        self._die(actor, reason)

    def _die(self, actor, reason):
        actor.state = DEAD
        actor.death_reason = actor.death_reason or reason
        if not self.node.objects.is_ready(actor.actor_id) and self.node.objects.get(actor.actor_id):
            error = RayActorError(f"actor {actor.class_name} could not be created: {actor.death_reason}")
            self.node._store_objects([(actor.actor_id, P.INLINE, 1, None, (), True)],
                                     [serialize(error).meta])
        queued, actor.queue = list(actor.queue), deque()
        for task in queued:
            self._fail(task, actor)
        if actor.name and self.names.get(actor.name) == actor.actor_id:
            del self.names[actor.name]
        if actor.creation is not None:
            self.node._release_arguments(actor.creation)
            actor.creation = None

    def _fail(self, task, actor, reason=None):
        if actor is None:
            message = "the actor this method was called on is unknown to this node"
        else:
            message = (f"actor {actor.class_name} ({actor.actor_id.hex()[:12]}) died before "
                       f"running {task.spec.name}: {reason or actor.death_reason}")
        self.node._fail_task(task, RayActorError(message))

    def out_of_scope(self, actor_id):
        """The last handle is gone: finish what was sent, then exit."""
        actor = self.by_id.get(actor_id)
        if actor is None or actor.state == DEAD:
            return
        actor.death_reason = "every handle to it went out of scope"
        actor.restarts_left = 0
        if actor.worker is not None:
            actor.worker.exiting = True
            self.node.send(actor.worker.worker_id, P.EXIT)
        actor.state = DEAD
        self._die(actor, actor.death_reason)

    # -- requests -----------------------------------------------------------
    def request_kill_actor(self, _client, actor_id, no_restart=True):
        actor = self.by_id.get(actor_id)
        if actor is None:
            raise ValueError(f"no actor with id {actor_id.hex()}")
        if no_restart:
            actor.restarts_left = 0
            actor.death_reason = "it was killed by ray.kill()"
        if actor.worker is not None:
            self.node.pool_kill(actor.worker)
        elif no_restart:
            self._die(actor, actor.death_reason)
        return True

    def request_get_actor(self, _client, name):
        actor_id = self.names.get(name)
        actor = self.by_id.get(actor_id)
        if actor is None or actor.state == DEAD:
            raise ValueError(f"no live actor named {name!r}; named actors are created with "
                             f"Cls.options(name={name!r}).remote()")
        return actor_id, actor.creation.spec.options.get("handle_meta")

    def request_reserve_actor_name(self, _client, name):
        actor_id = self.names.get(name)
        actor = self.by_id.get(actor_id)
        if actor is not None and actor.state != DEAD:
            raise ValueError(f"an actor named {name!r} already exists; pick another name or "
                             f"use ray.get_actor({name!r})")
        return True

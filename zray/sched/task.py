"""A task as the node keeps it, and the table of the states it may pass through.

::

    WAITING ──args here──► READY ──placed──► RUNNING ──DONE──► DONE
       │                    │  ▲ ╲              │ ╲
       │                    │  │  ╲─forwarded─► FORWARDED ──results back──► DONE
       │        (fits no node)│  └─worker died, retries left (or peer gone)
       └──────────────────► INFEASIBLE          └──► FAILED (crashed, no retries left)
    any state before RUNNING ──actor killed / creation superseded──► DISCARDED

- Every change of state goes through ``Task.to``, which checks the table
  below. An illegal change is a bug in the node: it raises when
  ``ZRAY_STRICT_STATE=1`` (the test suite sets it) and is logged otherwise,
  so a production node keeps serving.
- DONE and FAILED end a task. The ways back out: an actor restart, which
  runs the actor's creation task again (DONE/FAILED -> WAITING), and a
  forwarded task remade because its result was lost with its node
  (DONE -> WAITING, ``state/locations.py``).
"""
import enum
import logging
import os

log = logging.getLogger("zray.task")


class TaskState(enum.Enum):
    WAITING = "waiting"          # some argument objects are not here yet
    READY = "ready"              # queued (a scheduler queue or its actor's queue)
    INFEASIBLE = "infeasible"    # no node known could ever fit its demand
    RUNNING = "running"          # sent to a worker
    FORWARDED = "forwarded"      # sent to a peer node, which runs it for us
    DONE = "done"                # its worker said DONE (results sealed)
    FAILED = "failed"            # an error was stored in its returns
    DISCARDED = "discarded"      # dropped before running (its actor died first)


S = TaskState
ALLOWED = frozenset([
    (S.WAITING, S.READY), (S.WAITING, S.INFEASIBLE), (S.WAITING, S.FAILED),
    (S.WAITING, S.DISCARDED),
    (S.READY, S.RUNNING), (S.READY, S.FORWARDED), (S.READY, S.FAILED),
    (S.READY, S.DISCARDED),
    (S.INFEASIBLE, S.READY), (S.INFEASIBLE, S.FORWARDED), (S.INFEASIBLE, S.FAILED),
    (S.INFEASIBLE, S.DISCARDED), (S.INFEASIBLE, S.INFEASIBLE),
    (S.RUNNING, S.DONE), (S.RUNNING, S.FAILED), (S.RUNNING, S.READY),
    (S.FORWARDED, S.DONE), (S.FORWARDED, S.READY), (S.FORWARDED, S.FAILED),
    (S.FORWARDED, S.INFEASIBLE),
    # Locality: sent to the node with its arguments before being queued here.
    (S.WAITING, S.FORWARDED),
    # An actor restart runs its creation task again (also one its node took
    # with it when it left); a forwarded task whose node left is placed
    # again once its arguments exist.
    (S.DONE, S.WAITING), (S.FAILED, S.WAITING), (S.FORWARDED, S.WAITING),
])
FINAL = frozenset([S.DONE, S.FAILED, S.DISCARDED])
# The table per state, as a tuple: ``in`` on it compares by identity, where a
# set of enum members would hash each one in Python (a hot path: 3 per task).
for _state in S:
    _state.successors = tuple(new for old, new in ALLOWED if old is _state)
del _state


class IllegalTransition(RuntimeError):
    pass


def strict():
    return os.environ.get("ZRAY_STRICT_STATE", "") not in ("", "0")


STRICT = strict()


class Task:
    __slots__ = ("spec", "frames", "missing", "worker", "resource_ids", "retries_left",
                 "demand", "state", "warned", "seq", "depth", "blocked", "skipped")

    def __init__(self, spec, frames, depth=0):
        self.spec = spec
        self.frames = frames
        self.missing = 0             # argument objects not here yet
        self.worker = None           # the worker record running it
        self.resource_ids = {}       # {'GPU': [(id, share)]} while running
        self.retries_left = spec.max_retries
        self.demand = spec.resources  # fixed point, see resources.py
        self.state = S.WAITING
        self.warned = False          # infeasible warning sent
        self.seq = 0                 # order of becoming ready (FIFO within a queue)
        self.depth = depth           # 0 for driver tasks, parent's + 1 for nested
        self.blocked = False         # in ray.get/wait with its CPU lent back
        self.skipped = 0             # placements that went around it

    def to(self, new):
        """Move to state ``new`` if the table allows it (see the module doc)."""
        old = self.state
        if new not in old.successors:
            message = (f"illegal task transition {old.name} -> {new.name} for "
                       f"{self.spec.name} ({self.spec.task_id.hex()[:12]})")
            if STRICT:
                raise IllegalTransition(message)
            log.error(message)
        self.state = new

    @property
    def shape(self):
        return tuple(sorted(self.demand.items()))

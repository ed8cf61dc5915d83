"""The node's bookkeeping as a pure state machine: events in, commands out.

::

    sockets, pipes, timers ──decode──► event ──► NodeState.handle ──► [command, ...]
       (node.py, peers.py,                         │                      │
        transfer.py: the edge)                     ▼                      ▼
                                 scheduler queues, resources,     node.py carries them
                                 objects and refcounts, workers,  out: EXECUTE, OBJECTS,
                                 actors, peers and forwarding     start/kill workers, ...

- ``events.py`` / ``commands.py``: the vocabulary, small typed records.
- ``node_state.py``: ``NodeState``, one entry point ``handle(event) ->
  list[command]``; its events are handled by parts mixed in:
  ``clients.py`` (clients joining and leaving), ``task_events.py`` (tasks
  submitted and done), ``worker_events.py`` (workers blocked, exited,
  wanted), ``objects.py`` (objects and references); ``dispatch.py`` places
  ready tasks on idle workers.
- ``actors.py``: the actor table (creation, per-caller call queues, restart,
  kill); ``actor_routing.py``: actors placed on or homed on other nodes
  (calls routed there, re-created when their node dies; ``location()``
  says where one lives); ``forwarding.py``: which tasks go to other nodes.
- Task states are ``sched.task.TaskState`` with an explicit transition
  table; an illegal transition raises under ``ZRAY_STRICT_STATE=1`` (tests)
  and is logged otherwise.
- Nothing here imports zmq, starts a process, reads the clock (time comes in
  ``Tick``) or opens a file. The object table reaches files through a port
  the node passes in (``plasma/disk.py``: unlink, start a spill copy on the
  spiller thread, free space in the spill directory), since a reservation's
  answer depends on the disk's room; finished copies come back as the event
  ``SpillsFinished``. Unit tests pass a fake port.
"""
from . import commands, events
from .clients import Client
from .node_state import NodeState

__all__ = ["Client", "NodeState", "commands", "events"]

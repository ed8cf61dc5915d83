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
  list[command]``; tasks, workers, objects and clients.
- ``actors.py``: the actor table (creation, per-caller call queues, restart,
  kill); ``forwarding.py``: which tasks go to other nodes.
- Task states are ``sched.task.TaskState`` with an explicit transition
  table; an illegal transition raises under ``ZRAY_STRICT_STATE=1`` (tests)
  and is logged otherwise.
- Nothing here imports zmq, starts a process, reads the clock (time comes in
  ``Tick``) or opens a file: the object table's two file operations (unlink,
  move to the spill directory) are functions the node passes in, since a
  reservation's answer depends on whether spilling worked; tests pass fakes.
"""
from . import commands, events
from .node_state import Client, NodeState

__all__ = ["Client", "NodeState", "commands", "events"]

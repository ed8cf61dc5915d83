"""The node daemon: a pure state machine with a thin loop of I/O around it.

::

    messages, worker exits, timers ──► node_messages.py (decode) ──event──► state/NodeState
                                                                     │ scheduler.py, resources.py,
    sockets, processes, files ◄── node_commands.py ◄──commands───────┘ task.py, worker_pool.py,
                                                                       plasma/store.py

- ``state/``: ``NodeState.handle(event) -> [command]``: tasks, objects and
  refcounts, workers, actors, forwarding; no I/O (see its docstring).
- ``task``: a task's record and the table of its allowed state changes.
- ``scheduler``, ``resources``, ``worker_pool``: pure policy the state uses
  (ready queues and placement, fixed-point resources and GPU ids, the
  worker table and when to start or stop workers).
- ``node``: the loop and its timers; ``node_messages``: client messages
  checked and decoded into events; ``node_commands``: the state's commands
  carried out (every send); ``node_requests`` and ``store_requests``: REQUEST ops;
  ``worker_processes``: starting, reading and reaping worker processes;
  ``peers``: sockets and heartbeats to other nodes (``plasma/transfer``
  moves the bytes).
"""

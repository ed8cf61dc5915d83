"""The shared-memory object store.

::

    producer ─ reserve (large objects) ─► node: ObjectTable ── spill oldest ──► <session>/spill/
        │   (answer: memory, or disk when too big)  (copied by the spiller thread)
        │                                    ▲  refcounts, capacity, holders
        └─ write file in plasma_dir ─ PUT ───┘
    reader  ─ mmap read-only (plasma_dir, else spill dir) ─► zero-copy numpy views

- ``shm``: the object file format; write, map, spill a file.
- ``store``: the node's ObjectTable, a state machine without sockets (part
  of ``sched/state``'s NodeState); its file operations go through a port
  passed in: ``disk``'s ``SpillDisk`` (unlink, start a spill copy, free
  space) on a node, fakes in unit tests.
- ``spiller``: the thread that copies files to the spill directory, off the loop.
- ``client``: a process's side: reserve + write, map back (weak cache).
- ``transfer``: chunked pulls between nodes; its changes to the table go
  to the node's state as events.
- ``report``: ``zray memory``'s table.
"""

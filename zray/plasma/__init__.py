"""The shared-memory object store.

::

    producer ─ reserve (>= 1 MiB) ─► node: ObjectTable ── spill oldest ──► <session>/spill/
        │   (answer: an arena block,        │    (copied by the spiller thread)
        │    a file in memory, or disk)     ▲  refcounts, capacity, holders, pins
        └─ memcpy into the block / write file ─ PUT ─┘
    reader ─ pin (arena) ─► map the chunk once, read-only ─► zero-copy numpy views
           └ (file) mmap read-only (plasma_dir, else spill dir)

- ``shm``: the object format; write, map, spill a file or an arena block.
- ``arena``: which byte ranges of the node's arena chunk are free.
- ``store``: the node's ObjectTable, a state machine without sockets (part
  of ``sched/state``'s NodeState); its file operations go through a port
  passed in: ``disk``'s ``SpillDisk`` (unlink, start a spill copy, free
  space, make the arena chunk) on a node, fakes in unit tests. ``pins``:
  when an arena block may be reused; ``table_report``: its counters and rows.
- ``spiller``: the thread that copies files to the spill directory, off the loop.
- ``client``: a process's side: reserve + write, map back (weak cache).
- ``transfer``: chunked pulls between nodes; its changes to the table go
  to the node's state as events.
- ``report``: ``zray memory``'s table.
"""

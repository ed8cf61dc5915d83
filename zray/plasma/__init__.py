"""The shared-memory object store.

::

    producer ─ reserve (large objects) ─► node: ObjectTable ── spill oldest ──► <session>/spill/
        │   (answer: memory, or disk when too big)  (copied by the spiller thread)
        │                                    ▲  refcounts, capacity, holders
        └─ write file in plasma_dir ─ PUT ───┘
    reader  ─ mmap read-only (plasma_dir, else spill dir) ─► zero-copy numpy views

- ``shm``: the object file format; write, map, spill a file.
- ``store``: the node's ObjectTable, a state machine without sockets.
- ``spiller``: the thread that copies files to the spill directory, off the loop.
- ``client``: a process's side: reserve + write, map back (weak cache).
- ``control``: the node's REQUEST ops about objects (reserve, stats,
  listing, custom serializer shipping).
- ``report``: ``zray memory``'s table.
"""

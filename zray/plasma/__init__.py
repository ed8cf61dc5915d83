"""The shared-memory object store.

::

    producer ─ reserve (large objects) ─► node: ObjectTable ── spill oldest ──► <session>/spill/
        │                                    ▲  refcounts, capacity, holders
        └─ write file in plasma_dir ─ PUT ───┘
    reader  ─ mmap read-only (plasma_dir, else spill dir) ─► zero-copy numpy views

- ``shm``: the object file format; write, map, spill a file.
- ``store``: the node's ObjectTable, a state machine without sockets.
- ``client``: a process's side: reserve + write, map back (weak cache).
- ``control``: the node's REQUEST ops about objects (reserve, stats,
  listing, custom serializer shipping).
- ``report``: ``zray memory``'s table.
"""

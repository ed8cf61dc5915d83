"""Shared-memory object store: object files (``shm``) and the node's
bookkeeping of them (``store``)."""

"""The client runtime, in layers (each imports only those below it)::

    worker       the worker main loop: runs tasks and actor methods
    runtime      what the API calls (put, get, wait, submit_task, ...), built from
    submit       task specs: argument encoding, options, ids
    direct       actor calls straight to the actor's worker (and its socket there)
    connection   the socket to the node, its I/O thread, Ctrl-C safety
    refcount     live ObjectRefs here; ADD_REF / REMOVE_REF to send
    object_cache objects received and the one ``decode``
    context      the current runtime (cluster or local), for the API modules
"""

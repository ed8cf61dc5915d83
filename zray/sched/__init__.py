"""The node daemon: resources, scheduling policy, worker pool, object
directory (see ``node`` for the picture)."""

"""Wire vocabulary (``protocol``) and socket helpers (``sockets``)."""

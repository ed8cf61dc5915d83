"""Per-process runtime: the connection to the node (``runtime``), the worker
main loop (``worker``) and the process-wide current runtime (``context``)."""

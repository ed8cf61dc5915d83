"""zray's benchmark suite: the same workloads on zray and on a peer.

    python -m benchmarks [--against ray|dask|pool|none] [--quick]
                         [--filter PATTERN] [--json FILE] [--peer-python PATH]

Rows are the ones of Ray's `ray microbenchmark` plus zray's own (init,
shutdown, idle memory, tiny-task throughput, large-object get).  See
RESULTS.md for recorded figures.  Nothing here imports ray or zray at module
level: the module under test is always passed in.
"""


def main(argv=None) -> int:
    """Entry point for `zray microbenchmark`; returns the exit status."""
    from .cli import main as _main
    return _main(argv)

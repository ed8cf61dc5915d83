"""``python -m zray.sched --config JSON``: run a node daemon."""
import json
import logging
import signal

from .node import NodeDaemon
from ..stackdump import install as install_stack_dump
from ..transport.sockets import announce_ready


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m zray.sched")
    parser.add_argument("--config", required=True, help="JSON config")
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s node: %(message)s")
    node = NodeDaemon(config)
    install_stack_dump("node", config["session_dir"])
    # SIGTERM or SIGINT: stop as told, workers, sockets and shared memory with it
    # (a KeyboardInterrupt would leave the loop halfway and all of them behind).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: setattr(node, "running", False))
    # Workers first: their start (~0.1 s of imports each) overlaps the kv
    # listing, READY and the driver's connect, so the first task finds one.
    node.prestart_workers()
    try:
        if node.kv is not None and node.peers is None:
            # Listed before anyone hears READY: a driver connecting next finds it.
            node.kv.call("put", f"node:{node.node_id}", node._node_info())
        announce_ready({"address": node.address, "node_id": node.node_id,
                        "tcp_address": node.tcp_address})
    except BaseException:
        node.processes.stop_all(grace_s=0.5)    # no warm worker outlives a failed start
        raise
    node.serve_forever()


main()

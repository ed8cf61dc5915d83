"""``python -m zray.dashboard``: serve the dashboard of the cluster whose kv
service is at ``--kv-address``; the password comes by environment."""
import argparse
import logging
import signal
import threading

from ..stackdump import install as install_stack_dump
from ..transport.sockets import OwnerWatch, announce_ready
from .auth import cluster_token
from .collect import ClusterReader
from .server import DashboardServer

URL_KEY = "webui:url"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zray.dashboard")
    parser.add_argument("--kv-address", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--watch-pid", type=int, default=None,
                        help="exit when this process (the head's node daemon) is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s dashboard: %(message)s")
    install_stack_dump("dashboard")
    token = cluster_token()
    if not token:
        parser.error("the dashboard never serves without the cluster's token "
                     "(it comes by environment, as for every zray daemon)")
    reader = ClusterReader(args.kv_address, token)
    server = DashboardServer((args.host, args.port), reader, token)
    url = page_url(args.host, server.port, token)
    reader.kv.put(URL_KEY, url)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):      # either: stop, and clean up
        signal.signal(signum, lambda *_: stop.set())
    # A daemon thread: the process exits without waiting for a page being served.
    threading.Thread(target=server.serve_forever, daemon=True, name="http").start()
    announce_ready({"url": url, "port": server.port})
    owner = OwnerWatch(args.watch_pid, interval_s=1.0)
    while not stop.wait(1.0) and not owner.gone():
        pass
    server.server_close()
    try:
        reader.kv.call("delete", URL_KEY, timeout_s=0.5)
    except Exception:
        pass        # the kv service is gone already
    reader.close()


def page_url(host, port, token):
    from urllib.parse import quote
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/?token={quote(token, safe='')}"


main()

"""The kv metadata service: zray's replacement for Redis.

::

    clients (DEALER) --KV request--> ROUTER [ KvServer: one dict ] --PUB--> subscribers
                     <--RESPONSE----

- Tables are key prefixes: ``node:``, ``actor:``, ``err:``, ``event:``, ...
- Every change is published as ``[key, sequence, pickled value]`` (value
  ``None`` for a delete), so nodes and drivers react without polling.
- ``put_ttl`` entries (node heartbeats) are deleted, and the delete
  published, when not refreshed within their ttl: that is how every node
  learns that a peer died, without a failure detector of its own.
- One thread owns the state and both sockets; nothing else touches them.
"""
import logging
import os
import pickle
import time

import zmq

from ..transport import protocol as P
from ..transport.sockets import OwnerWatch, authorize

log = logging.getLogger("zray.kv")

MAX_EVENTS = 1_000_000


class KvServer:
    def __init__(self, router_address, pub_address, password="", owner_pid=None):
        self.context = zmq.Context.instance()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(router_address)
        self.publisher = self.context.socket(zmq.PUB)
        self.publisher.setsockopt(zmq.LINGER, 0)
        self.publisher.bind(pub_address)
        self.router_address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub_address = self.publisher.getsockopt_string(zmq.LAST_ENDPOINT)
        self.password = password
        self.owner = OwnerWatch(owner_pid)
        self.data = {}
        self.expiry = {}           # key -> monotonic deadline, for put_ttl entries
        self.sequence = 0
        self.event_sequence = 0
        self.running = True

    # -- operations: each takes the args tuple, returns the reply value ----
    def op_put(self, key, value):
        self.data[key] = value
        self.expiry.pop(key, None)
        self._publish(key, value)

    def op_put_ttl(self, key, value, ttl_s):
        """Put a value that disappears unless put again within ttl_s."""
        self.op_put(key, value)
        self.expiry[key] = time.monotonic() + ttl_s

    def op_put_many(self, items):
        for key, value in items:
            self.op_put(key, value)

    def op_add_events(self, events):
        # Timeline events need no notification: nobody waits on them. The
        # oldest go beyond MAX_EVENTS, so a long-lived cluster stays bounded.
        for event in events:
            self.event_sequence += 1
            self.data[f"event:{self.event_sequence:012d}"] = event
            self.data.pop(f"event:{self.event_sequence - MAX_EVENTS:012d}", None)

    def op_get(self, key, default=None):
        return self.data.get(key, default)

    def op_delete(self, key):
        self.expiry.pop(key, None)
        existed = self.data.pop(key, None) is not None
        if existed:
            self._publish(key, None)
        return existed

    def op_scan(self, prefix):
        return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    def op_ping(self):
        return "pong"

    def op_info(self):
        """Where to subscribe: joining nodes only know the ROUTER address."""
        return {"address": self.router_address, "pub_address": self.pub_address,
                "pid": os.getpid()}

    def _expire(self):
        if not self.expiry:
            return
        now = time.monotonic()
        for key in [k for k, deadline in self.expiry.items() if deadline <= now]:
            log.info("%s was not refreshed in time; removing it", key)
            self.op_delete(key)

    def op_shutdown(self):
        self.running = False

    def _publish(self, key, value):
        self.sequence += 1
        self.publisher.send_multipart(
            [key.encode(), str(self.sequence).encode(), pickle.dumps(value, protocol=5)])

    # -- loop ---------------------------------------------------------------
    def serve_forever(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while self.running:
            if poller.poll(500):
                while True:
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
            self._expire()
            if self.owner.gone():
                log.info("owner process gone; kv service exits")
                break
        self.router.close(0)
        self.publisher.close(0)

    def _handle(self, frames):
        try:
            identity = frames[0]
            msg_type, (request_id, op, args, password) = P.unpack(frames[1])
        except Exception:       # not a kv request: ignore it, never crash on it
            return
        if msg_type != P.KV_REQUEST:
            return
        if not authorize(self.password, password):
            reply = (request_id, False, "wrong cluster password: pass the --redis-password "
                                        "the cluster was started with")
        else:
            handler = getattr(self, "op_" + op, None)
            if handler is None:
                reply = (request_id, False, f"unknown kv operation {op!r}")
            else:
                try:
                    reply = (request_id, True, handler(*args))
                except Exception as exc:    # a bad request must not kill the service
                    log.exception("kv operation %s failed", op)
                    reply = (request_id, False, f"{type(exc).__name__}: {exc}")
        self.router.send_multipart([identity] + P.pack(P.RESPONSE, *reply))


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m zray.kv")
    parser.add_argument("--address", required=True)
    parser.add_argument("--pub-address", required=True)
    # From the environment by default: a password on the command line shows in `ps`.
    parser.add_argument("--password", default=os.environ.get("ZRAY_PASSWORD", ""))
    parser.add_argument("--owner-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s kv: %(message)s")
    server = KvServer(args.address, args.pub_address, args.password, args.owner_pid)
    from ..transport.sockets import announce_ready
    announce_ready({"address": server.router_address, "pub_address": server.pub_address})
    started = time.time()
    server.serve_forever()
    log.info("kv service stopped after %.1f s", time.time() - started)

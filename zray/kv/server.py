"""The kv metadata service: zray's replacement for Redis.

::

    clients (DEALER) --KV request--> ROUTER [ KvServer: one dict ] --PUB--> subscribers
                     <--RESPONSE----

- Tables are key prefixes: ``node:``, ``actor:``, ``err:``, ``event:``, ...
- Every change is published as ``[key, sequence, value]`` (msgpack;
  value ``None`` for a delete), so nodes and drivers react without polling.
- ``put_ttl`` entries (node heartbeats) are deleted, and the delete
  published, when not refreshed within their ttl: that is how every node
  learns that a peer died, without a failure detector of its own.
- One thread owns the state and both sockets; nothing else touches them.
- With ``--journal DIR`` (the head's session directory) every durable change
  is appended to a log there and the state reloaded from it at start
  (``journal.py``): a kv service restarted after a crash (by the head node,
  ``kv/supervisor.py``) has what its predecessor had; nodes re-register with
  their next heartbeat and clients reconnect by themselves.
- Over tcp both sockets are CURVE servers of the cluster token
  (``transport/auth.py``): only token holders connect, read the feed or
  reach a decoder. Whatever an authenticated client sends, the loop goes on:
  a bad request gets an error reply or is dropped, and is logged (rarely).
"""
import logging
import os
import signal
import time

import zmq

from ..transport import auth
from ..transport import protocol as P
from ..transport.wire_types import encode as encode_value
from ..transport.sockets import (OwnerWatch, RateLimitedLog, authorize, bound_receiving,
                                 unlink_ipc)
from .journal import Journal

log = logging.getLogger("zray.kv")

MAX_EVENTS = 1_000_000
LOOP_TURN_S = 0.5          # the longest the loop waits for a request


class KvServer:
    def __init__(self, router_address, pub_address, password="", owner_pid=None,
                 journal_dir=None):
        self.context = zmq.Context.instance()
        self.gatekeeper = None
        if auth.is_tcp(router_address) or auth.is_tcp(pub_address):
            self.gatekeeper = auth.start_gatekeeper(self.context, password)
        self.router = self._listen(zmq.ROUTER, router_address, password)
        self.publisher = self._listen(zmq.PUB, pub_address, password)
        self.router_address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub_address = self.publisher.getsockopt_string(zmq.LAST_ENDPOINT)
        self.password = password
        self.owner = OwnerWatch(owner_pid)
        self.journal = Journal(journal_dir) if journal_dir else None
        self.data = self.journal.load() if self.journal else {}
        self.expiry = {}           # key -> monotonic deadline, for put_ttl entries
        self.last_turn = time.monotonic()
        self.sequence = 0
        self.event_sequence = 0
        self.running = True
        self.complaints = RateLimitedLog(log)

    def _listen(self, kind, address, token):
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if auth.is_tcp(address):
            auth.serve_securely(sock, token)
        elif kind == zmq.ROUTER:
            bound_receiving(sock)
        sock.bind(address)
        return sock

    # -- operations: each takes the args tuple, returns the reply value ----
    def op_put(self, key, value):
        if not isinstance(key, str):
            raise TypeError(f"kv keys are strings, got {type(key).__name__}")
        self._set(key, value)
        self.expiry.pop(key, None)
        if self.journal is not None:
            self.journal.record(key, value)
            self.journal.maybe_compact(self.durable())

    def op_put_ttl(self, key, value, ttl_s):
        """Put a value that disappears unless put again within ttl_s (not journaled:
        its owner puts it again long before a restarted kv would miss it)."""
        ttl_s = float(ttl_s)
        if not isinstance(key, str):
            raise TypeError(f"kv keys are strings, got {type(key).__name__}")
        self._set(key, value)
        self.expiry[key] = time.monotonic() + ttl_s

    def _set(self, key, value):
        self.data[key] = value
        self._publish(key, value)

    def durable(self):
        """What the journal keeps: neither heartbeats nor timeline events."""
        return {k: v for k, v in self.data.items()
                if k not in self.expiry and not k.startswith("event:")}

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

    def op_events_since(self, after, limit):
        """(last sequence, the events after ``after``, at most the newest
        ``limit``): the dashboard reads only what is new."""
        first = max(int(after) + 1, self.event_sequence - int(limit) + 1, 1)
        keys = (f"event:{seq:012d}" for seq in range(first, self.event_sequence + 1))
        return self.event_sequence, [self.data[k] for k in keys if k in self.data]

    def op_get(self, key, default=None):
        return self.data.get(key, default)

    def op_delete(self, key):
        durable = self.expiry.pop(key, None) is None
        existed = self.data.pop(key, None) is not None
        if existed:
            self._publish(key, None)
            if durable and self.journal is not None:
                self.journal.record(key, None, deleted=True)
        return existed

    def op_delete_if(self, key, field, value):
        """Delete a record (a dict) only if its ``field`` is ``value``: a dead
        worker's address goes, never its restarted successor's."""
        record = self.data.get(key)
        if isinstance(record, dict) and record.get(field) == value:
            return self.op_delete(key)
        return False

    def op_delete_where(self, prefix, field, value):
        """Delete every record under ``prefix`` whose ``field`` is ``value``
        (a dead node's records); how many went."""
        keys = [k for k, v in self.data.items()
                if k.startswith(prefix) and isinstance(v, dict) and v.get(field) == value]
        for key in keys:
            self.op_delete(key)
        return len(keys)

    def op_scan(self, prefix):
        return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    def op_ping(self):
        return "pong"

    def op_info(self):
        """Where to subscribe: joining nodes only know the ROUTER address."""
        return {"address": self.router_address, "pub_address": self.pub_address,
                "pid": os.getpid()}

    def _expire(self):
        now = time.monotonic()
        paused = now - self.last_turn - LOOP_TURN_S
        self.last_turn = now
        if paused > 0.5:
            # This service itself was paused (or starved): its clients' puts
            # could not arrive meanwhile, so that time counts against nobody.
            for key in self.expiry:
                self.expiry[key] += paused
        if not self.expiry:
            return
        for key in [k for k, deadline in self.expiry.items() if deadline <= now]:
            log.info("%s was not refreshed in time; removing it", key)
            self.op_delete(key)

    def op_shutdown(self):
        self.running = False

    def _publish(self, key, value):
        self.sequence += 1
        self.publisher.send_multipart(
            [key.encode(), str(self.sequence).encode(), encode_value(value)])

    # -- loop ---------------------------------------------------------------
    def serve_forever(self):
        try:
            self._serve()
        finally:        # also on SIGTERM / SIGINT (main)
            self.router.close(0)
            self.publisher.close(0)
            for address in (self.router_address, self.pub_address):
                unlink_ipc(address)
            if self.journal is not None:
                self.journal.close()
            if self.gatekeeper is not None:
                self.gatekeeper.stop()

    def _serve(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while self.running:
            if poller.poll(int(LOOP_TURN_S * 1000)):
                while True:
                    try:
                        frames = self.router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        self._handle(frames)
                    except Exception as exc:    # nothing a client sends stops the service
                        self.complaints.warn("request", "dropped a bad kv request: %r", exc)
            try:
                self._expire()
            except Exception as exc:
                self.complaints.warn("expire", "expiring keys failed: %r", exc)
            if self.owner.gone():
                log.info("owner process gone; kv service exits")
                break

    def _handle(self, frames):
        if len(frames) < 2:
            return
        try:
            identity = frames[0]
            msg_type, (request_id, op, arguments, password) = P.unpack(frames[1])
        except Exception:       # not a kv request: ignore it, never crash on it
            self.complaints.warn("malformed", "dropped a malformed kv message")
            return
        if msg_type != P.KV_REQUEST:
            return
        if not authorize(self.password, password):
            reply = (request_id, False, "wrong cluster password: pass the --redis-password "
                                        "the cluster was started with")
        else:
            try:
                arguments = P.check_op(P.KV_OPS, op, arguments)
                reply = (request_id, True, self._ops[op](self, *arguments))
            except Exception as exc:    # a bad request must not kill the service
                self.complaints.warn(op, "kv operation %s failed: %r", op, exc)
                reply = (request_id, False, f"{type(exc).__name__}: {exc}")
        try:
            head = P.pack(P.RESPONSE, *reply)
        except Exception as exc:        # a value that is not plain data
            head = P.pack(P.RESPONSE, request_id, False, f"the reply could not be sent: {exc!r}")
        self.router.send_multipart([identity] + head)



# The method of each declared op, found once here (a missing one fails at import).
KvServer._ops = {op: getattr(KvServer, f"op_{op}") for op in P.KV_OPS}


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m zray.kv")
    parser.add_argument("--address", required=True)
    parser.add_argument("--pub-address", required=True)
    # From the environment only: a token on the command line shows in `ps`.
    parser.add_argument("--owner-pid", type=int, default=None)
    parser.add_argument("--journal", default=None, metavar="DIR",
                        help="keep the state in DIR and reload it from there at start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s kv: %(message)s")
    server = KvServer(args.address, args.pub_address, os.environ.pop(auth.TOKEN_ENV, ""),
                      args.owner_pid, args.journal)
    from ..stackdump import install as install_stack_dump
    install_stack_dump("kv")
    from ..transport.sockets import announce_ready
    stopping = []

    def stop(signum, _frame):
        # At once, out of the poll (a flag would wait for the loop's turn and
        # slow every ray.shutdown); once: a second signal must not cut the cleanup.
        if not stopping:
            stopping.append(signum)
            raise SystemExit(0)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    announce_ready({"address": server.router_address, "pub_address": server.pub_address})
    started = time.time()
    try:
        server.serve_forever()
    except SystemExit:
        pass
    server.context.destroy(linger=0)
    log.info("kv service stopped after %.1f s", time.time() - started)
    logging.shutdown()
    os._exit(0)         # nothing left to tear down: the interpreter's teardown only slows a stop

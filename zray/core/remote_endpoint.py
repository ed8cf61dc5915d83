"""An actor's worker's socket for callers on other machines (the caller's
side: core/direct.py, direct_sockets.py, direct_replies.py).

::

    caller (node B) DEALER ──RCALL (spec + inline values)──► actor worker ROUTER
                           ◄──REPLY (inline results)──────   (tcp, CURVE server of
                           ◄──HELD (results on node A)────    the cluster token)

- Only where the worker's node listens on tcp (a cluster). A call
  resubmitted after a death (``attempted``) goes through the caller's node
  and the actor's home to this node, which saw the worker die and judges it.
- Every byte goes through CURVE with the cluster token's keys and this
  process's ZAP gatekeeper (transport/auth.py), as the node's tcp socket:
  nothing from a peer without the token reaches a decoder.
- A call carries inline values only (no shared-memory header: that memory is
  on another machine) and no ObjectRef inside its arguments; anything else
  is dropped (said once) and the actor goes on serving.
- Results that are small, hold no ref and are no error go back in REPLY.
  Others go to this node in DONE, held for the caller's *node* (the peer
  ``p<node id>``), and HELD tells the caller where: its node pulls them as
  it pulls the large result of a task it forwarded. The node hears of the
  call only then.
- The address is published in the kv (``actor_direct:<actor id>``) where a
  caller on any node finds it, by this worker's node (a request, no kv
  connection of its own); a restarted worker publishes its own, and the
  node deletes a dead worker's.
"""
import logging

import zmq

from ..transport import auth
from ..transport import protocol as P
from ..transport.wire_types import ProtocolError
from .endpoint import _messages, fits_in_reply

log = logging.getLogger("zray.direct")


class RemoteActorEndpoint:
    """A CURVE ROUTER on the node's tcp host, for RCALLs from other nodes."""

    def __init__(self, runtime, actor_id):
        node_tcp = runtime.node_info.get("tcp_address")
        node_id = runtime.node_info.get("node_id", "")
        if not auth.is_tcp(node_tcp) or not runtime.password:
            raise ValueError("this node does not listen on tcp")
        self.runtime = runtime
        self.actor_id = actor_id
        self.node_id = node_id
        self.warned = False
        self.calls = 0                  # RCALLs taken (a test's proof that calls came direct)
        self.callers = {}               # task id -> the caller's node, until answered
        host = node_tcp[len("tcp://"):].rpartition(":")[0]
        context = runtime.connection.context
        self.gatekeeper = auth.start_gatekeeper(context, runtime.password)
        socket = self.socket = context.socket(zmq.ROUTER)
        try:
            socket.setsockopt(zmq.LINGER, 500)      # the last replies still go out at exit
            socket.setsockopt(zmq.SNDHWM, 0)
            auth.serve_securely(socket, runtime.password)    # bounded per peer, as ipc
            socket.bind(f"tcp://{host}:0")
            self.address = socket.getsockopt_string(zmq.LAST_ENDPOINT)
            # Its node writes the kv record (no kv connection per worker), before
            # it sees this creation's DONE; no answer awaited (request id 0).
            runtime.send_message(P.REQUEST, 0, "publish_actor_address",
                                 [actor_id, self.address])
        except Exception:
            socket.close(0)
            self.gatekeeper.stop()
            raise
        runtime.closers.append(self.close)
        runtime.connection.add_socket(socket, self._on_readable)

    def _check(self, msg_type, fields, n_frames):
        if msg_type == P.REMOTE_CALL:
            spec, deps, from_node = fields
            if spec.kind != P.ACTOR_METHOD or spec.actor_id != self.actor_id:
                raise ProtocolError("a direct call runs a method of this actor")
            if spec.contained_ids:
                raise ProtocolError("a call from another node holds no ObjectRef")
            needed = spec.n_arg_frames
            for header in deps:
                if header[1] != P.INLINE or header[4]:
                    raise ProtocolError(f"argument {header[0].hex()} of a call from another "
                                        f"node is not an inline value")
                needed += header[2]
            if needed > n_frames:
                raise ProtocolError(f"a call names {needed} frames, has {n_frames}")
            if len(from_node) != 16:
                raise ProtocolError(f"a call names no node: {from_node!r}")
        elif msg_type != P.PING:
            raise ProtocolError(f"{msg_type!r} is not a message for an actor's tcp socket")

    def _on_readable(self, socket):
        tasks = self.runtime.tasks
        for frames, msg_type, fields in _messages(self, socket, "zray.direct",
                                                  "a malformed call from another node"):
            if msg_type == P.REMOTE_CALL:
                spec, deps, from_node = fields
                self.calls += 1
                self.callers[spec.task_id] = from_node
                tasks.append(((spec, deps, {}, None, frames[0], self), frames[2:]))
                self.runtime.work.came_in()
            else:
                self.runtime.connection.send_on(
                    socket, [frames[0]] + P.pack(P.PONG, self.runtime.connection.identity,
                                                 fields[0]))

    def reply(self, spec, route, entries, payload, exiting, error_text):
        """REPLY if the results can live in the caller alone; else DONE to this
        node, held for the caller's node, and HELD saying where."""
        runtime = self.runtime
        from_node = self.callers.pop(spec.task_id, None)
        if fits_in_reply(entries, payload, exiting, error_text):
            runtime.connection.send_on(self.socket, [route] + P.pack(
                P.REPLY, spec.task_id, entries, None, runtime.take_events()) + payload)
            return
        # Held for the caller's node; a caller of this node over tcp (a driver
        # on another machine) is a client here, held for as over ipc.
        holder = (spec.owner if from_node == self.node_id
                  else b"p" + from_node.encode() + spec.owner)     # that node's, for the caller
        runtime.send_message(P.DONE, spec.task_id, entries, exiting, error_text,
                             runtime.take_events(), holder, frames=payload)
        error = (spec.name, error_text) if error_text else None
        runtime.connection.send_on(self.socket, [route] + P.pack(
            P.HELD, spec.task_id, self.node_id, entries, error))

    def close(self):
        """Before the context ends (its term waits for the gatekeeper's socket).
        The kv record goes with the worker: its node deletes it (ForgetActorAddress)."""
        self.gatekeeper.stop()

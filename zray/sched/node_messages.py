"""Messages into the node: each client message is checked and decoded into
an event for ``NodeState`` (``state/events.py``); HELLO is admitted here and
REQUESTs are answered by the ``request_<op>`` handlers. A mixin of
``NodeDaemon`` (``node.py``): nothing from a client reaches the state
without passing one of these decoders."""
import pickle

from ..transport import protocol as P
from ..transport.sockets import authorize
from . import admission
from .node_requests import NodeRequests
from .state import events as E
from .store_requests import ObjectStoreRequests


class NodeMessages:
    def _receive(self, frames, remote=False):
        identity = frames[0]
        clients = self.state.clients
        if (identity in self.remote_clients) != remote and identity in clients:
            return      # an identity taken on the other socket: not this client's
        msg_type, fields = P.unpack(frames[1])
        if identity not in clients:
            if msg_type == P.HELLO:
                if remote:
                    self.remote_clients.add(identity)
                try:
                    self._on_hello(identity, *fields)
                finally:
                    if identity not in clients:
                        self.remote_clients.discard(identity)
            return
        if remote and self.peers is not None and self.peers.holding(identity):
            self.peers.hold(identity, msg_type, fields, frames[2:])    # keeps their order
            return
        decode = self._decoders.get(msg_type)
        if decode is None:
            self.complaints.warn("unknown", "unknown message %r from %r", msg_type, identity)
            return
        event = decode(self, identity, fields, frames[2:])
        if event is not None:       # self.handle, inlined: this is every message's path
            do = self._do
            for command in self.state.handle(event):
                do[type(command)](self, command)

    def replay(self, identity, msg_type, fields, payload):
        """A message held back (``Peers.hold``), handled now."""
        if identity in self.state.clients:
            decode = self._decoders.get(msg_type)
            event = decode(self, identity, fields, payload) if decode is not None else None
            if event is not None:
                self.handle(event)

    def _on_hello(self, identity, kind, pid, password, version, sys_path, worker_secret):
        if not isinstance(password, str) or not authorize(self.password, password):
            self.send(identity, P.REFUSED, "wrong cluster password: connect with the "
                      "redis_password/--redis-password the cluster was started with")
            return
        if version != P.PROTOCOL_VERSION:
            self.send(identity, P.REFUSED, f"protocol version {version} does not match the "
                      f"node's {P.PROTOCOL_VERSION}: use the same zray version everywhere")
            return
        refusal = admission.hello_refusal(self.processes.by_id.get(identity),
                                          identity in self.remote_clients, kind, worker_secret)
        if refusal is not None:
            self.complaints.warn("hello", "refused a client: %s", refusal)
            self.send(identity, P.REFUSED, refusal)
            return
        self.send(identity, P.WELCOME, self._node_info())
        self.handle(E.ClientJoined(identity, kind, pid))

    def _on_events(self, _identity, fields, _payload):
        self.events.extend(fields[0])

    def _on_done(self, identity, fields, payload):
        task_id, entries, exiting, error_text, events = fields[:5]
        holder = fields[5] if len(fields) > 5 else None    # an actor's direct caller
        # Only the worker running a task finishes it (actors: their queue checks).
        if not self.state.may_finish(identity, task_id):
            self.complaints.warn("done", "ignored a DONE from a client not running that task")
            return None
        if self._refused_objects(identity, entries, payload, "DONE"):
            return None
        self.events.extend(events)
        return E.TaskDone(identity, task_id, entries, payload, exiting, error_text, holder)

    def _on_put(self, identity, fields, payload):
        (entries,) = fields
        if self._refused_objects(identity, entries, payload, "PUT"):
            return None
        return E.ObjectsPut(identity, entries, payload)

    def _refused_objects(self, identity, entries, payload, what):
        refusal = admission.object_entries_refusal(
            entries, len(payload), self.session_name,
            (self.config["plasma_dir"], self.objects.spill_dir),
            lambda object_id: self.objects.reserved_location(object_id, identity))
        if refusal is not None:
            self.complaints.warn(what, "ignored a %s: %s", what, refusal)
        return refusal is not None

    def _on_function(self, identity, fields, _payload):
        function_id, name, blob, sys_path = fields
        refusal = admission.function_refusal(function_id, blob)
        if refusal is not None:
            self.complaints.warn("function", "ignored a function: %s", refusal)
            return None
        return E.FunctionRegistered(function_id, (name, blob, sys_path))

    def _on_request(self, identity, fields, _payload):
        request_id, op, arguments = fields
        try:
            arguments = P.check_op(P.NODE_OPS, op, arguments)
            result = (True, self._requests[op](self, self.state.clients[identity], *arguments))
        except Exception as exc:
            result = (False, exc)
        if request_id:
            self._respond(identity, request_id, *result)

    def _respond(self, identity, request_id, ok, value):
        """RESPONSE: an answer is plain data; an error goes as its text plus,
        in a payload frame, the pickled exception for the caller to raise."""
        if ok:
            try:
                return self.send(identity, P.RESPONSE, request_id, True, value)
            except Exception as exc:        # not plain data: a bug of that request
                ok, value = False, exc
        frames = []
        try:
            frames = [pickle.dumps(value, protocol=5)]
        except Exception:
            pass
        self.send(identity, P.RESPONSE, request_id, False, f"{type(value).__name__}: {value}",
                  frames=frames)

    def _on_forward(self, identity, fields, payload):
        spec, function, n_task_frames, inline = fields
        if function is not None and admission.function_refusal(spec.function_id,
                                                               function[1]) is not None:
            raise ValueError(f"node {identity[1:17]!r} forwarded a function whose id is not "
                             f"its hash")
        origin = self.peers.origin_of(identity) if self.peers is not None else None
        if origin is None and self.peers is not None and self.peers.hold(
                identity, P.FORWARD, fields, payload):
            return None        # until we hear of its node: we pull its arguments from there
        return E.TaskForwardedIn(identity, origin, spec, function, payload[:n_task_frames],
                                 inline, payload[n_task_frames:])

    def _on_held_for(self, identity, fields):
        origin = self.peers.origin_of(identity) if self.peers is not None else None
        if origin is None:      # not a peer's link: nothing is held for us there
            self.complaints.warn("heldfor", "HELD_FOR from %r, not a peer's link", identity)
            return None
        return E.HeldFor(origin, fields[0], fields[1])

    def _on_pull(self, identity, fields, _payload):
        if self.peers is not None:
            self.peers.transfer.on_pull(identity, fields)
        else:       # never a silent drop: the puller would wait forever
            self.send(identity, P.CHUNK, fields[0], fields[1], fields[2], False,
                      "this node serves no pulls (it was started without a tcp address)",
                      frames=[b""])

    _decoders = {
        P.SUBMIT: lambda self, i, f, p: E.TaskSubmitted(i, f[0], p),
        P.DONE: _on_done,
        P.PUT: _on_put,
        P.SUBSCRIBE: lambda self, i, f, p: E.Subscribed(i, f[0]),
        P.ADD_REF: lambda self, i, f, p: E.RefsAdded(i, f[0]),
        P.HELD_AT: lambda self, i, f, p: E.HeldElsewhere(i, f[0], f[1]),
        P.HELD_FOR: lambda self, i, f, p: self._on_held_for(i, f),
        P.REMOVE_REF: lambda self, i, f, p: E.RefsRemoved(i, f[0]),
        P.FUNCTION: _on_function,
        P.BLOCKED: lambda self, i, f, p: E.WorkerBlocked(i),
        P.UNBLOCKED: lambda self, i, f, p: E.WorkerUnblocked(i),
        P.BYE: lambda self, i, f, p: E.ClientLeft(i),
        P.EVENTS: _on_events, P.REQUEST: _on_request,
        P.FORWARD: _on_forward, P.PULL: _on_pull,
        P.WRITE: lambda self, i, f, p: self.uploads.on_write(i, f[0], f[1], p[0] if p else b""),
        P.LEASE_REQUEST: lambda self, i, f, p: E.LeaseRequested(i, f[0], f[1]),
        P.LEASE_RETURN: lambda self, i, f, p: E.LeaseReturned(i, f[0]),
        P.WORK: lambda self, i, f, p: E.WorkReported(i, *f),
    }

    # The handler of each declared op, found once here (a missing one fails at import).
    _requests = {op: getattr(NodeRequests, f"request_{op}", None)
                 or getattr(ObjectStoreRequests, f"request_{op}") for op in P.NODE_OPS}

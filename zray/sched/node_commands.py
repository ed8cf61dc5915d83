"""Commands out of the node: what ``NodeState`` decides (``state/commands.py``)
carried out with sockets, processes and the kv service, plus the one
``send`` every message to a client leaves through. A mixin of
``NodeDaemon`` (``node.py``)."""
import logging
import time

import zmq

from ..kv.records import ACTOR_DIRECT_PREFIX, ACTOR_NAME_PREFIX, valid_actor_direct_record
from ..plasma.store import IN_MEMORY
from ..transport import protocol as P
from ..transport.sockets import send_frames
from .state import commands as C, events as E

log = logging.getLogger("zray.node")


class NodeCommands:
    def send(self, identity, msg_type, *fields, frames=(), zero_copy=False):
        """Every message to a client goes through here, so queued pushes to it
        leave first and it sees messages in the order they were decided.
        ``zero_copy``: big frames are lent to zmq, not copied (chunks of files)."""
        if identity in self.pushes:
            self._flush_pushes_to(identity)     # keep the order the client sees
        message = [identity] + P.pack(msg_type, *fields) + list(frames)
        if zero_copy:
            send_frames(self.socket_for(identity), message)
        else:
            self.socket_for(identity).send_multipart(message)

    def socket_for(self, identity):
        """The ROUTER a client came in on: its replies go back there."""
        return self.tcp_router if identity in self.remote_clients else self.router

    def _execute(self, cmd):
        task = cmd.task
        headers, frames = [], list(task.frames)
        for entry in cmd.deps:
            headers.append(entry.header())
            frames.extend(entry.frames)
        self.send(cmd.worker_id, P.EXECUTE, task.spec, headers, cmd.functions,
                  task.resource_ids, frames=frames)

    def _push_object(self, cmd):
        """Queue an object for a client; objects leave in one OBJECTS message per
        client per pass of the loop, not one message each."""
        queued = self.pushes.get(cmd.identity)
        if queued is None:
            queued = self.pushes[cmd.identity] = ([], [])
        entry = cmd.entry
        queued[0].append(entry.header())
        queued[1].extend(entry.frames)

    def _flush_pushes_to(self, identity):
        headers, frames = self.pushes.pop(identity)
        self.socket_for(identity).send_multipart(
            [identity] + P.pack(P.OBJECTS, headers) + frames)

    def _flush_pushes(self):
        for identity in list(self.pushes):
            self._flush_pushes_to(identity)

    def _record_error(self, cmd):
        if self.kv is None:
            return
        key = f"err:{time.time():.6f}:{cmd.task_id.hex()}"
        self.kv.tell("put", key, {"type": "task", "message": cmd.text, "pid": cmd.pid,
                                  "name": cmd.name, "node_id": self.node_id, "time": time.time()})

    def _warn_drivers(self, cmd):
        log.warning(cmd.message)
        for client in self.state.clients.values():
            if client.kind == "driver":
                self.send(client.identity, P.TASK_ERROR, "", cmd.message, None)

    def _publish_actor_name(self, cmd):
        if self.kv is None:
            return
        key = f"{ACTOR_NAME_PREFIX}{cmd.name}"
        if cmd.record is None:
            self.kv.tell("delete", key)
        else:
            self.kv.tell("put", key, cmd.record)

    def _publish_actor_address(self, cmd):
        record = {"address": cmd.address, "node_id": self.node_id,
                  "worker_id": cmd.worker_id.hex()}
        if self.kv is not None and valid_actor_direct_record(record):
            self.kv.tell("put", ACTOR_DIRECT_PREFIX + cmd.actor_id.hex(), record)
        elif self.kv is not None:
            self.complaints.warn("address", "an actor's worker published %r, not a tcp address",
                                 cmd.address[:100])

    def _forget_actor_address(self, cmd):
        if self.kv is not None and self.tcp_address:     # only there do workers publish one
            self.kv.tell("delete_if", ACTOR_DIRECT_PREFIX + cmd.actor_id.hex(), "worker_id",
                         cmd.worker_id.hex())

    def _forget_remote(self, identity):
        self.remote_clients.discard(identity)
        if self.remote_connections is not None:
            self.remote_connections.forget(identity)

    def _start_worker(self, cmd):
        self.processes.start(cmd.worker_id)

    def _stop_worker(self, cmd):
        try:
            self.send(cmd.worker_id, P.EXIT)
        except zmq.ZMQError:
            pass

    _do = {
        C.Execute: _execute,
        C.PushObject: _push_object,
        C.TellClient: lambda self, c: self.send(c.identity, c.msg_type, *c.fields),
        C.ReportError: lambda self, c: self.send(c.identity, P.TASK_ERROR, c.name, c.text,
                                                 c.return_ids),
        C.RecordError: _record_error,
        C.WarnDrivers: _warn_drivers,
        C.StartWorker: _start_worker,
        C.StopWorker: _stop_worker,
        C.KillWorker: lambda self, c: self.processes.kill(c.worker_id),
        C.Reserved: lambda self, c: None,          # read by whoever asked
        C.Pinned: lambda self, c: None,
        C.ClientGone: lambda self, c: self._forget_remote(c.identity),
        C.ShareSerializers: lambda self, c: self.peers.share_serializers(c.node_id,
                                                                         c.registrations),
        C.Forward: lambda self, c: self.peers.forward(c),
        C.WantObjects: lambda self, c: self.peers.want(c.node_id, c.object_ids, c.held),
        C.ReleaseRemote: lambda self, c: self.peers.release_remote(c.node_id, c.object_ids),
        C.TellPeer: lambda self, c: self.peers.tell(c.node_id, c.msg_type, c.fields),
        C.PublishActorName: _publish_actor_name,
        C.PublishActorAddress: _publish_actor_address,
        C.ForgetActorAddress: _forget_actor_address,
        C.DropPeerTransfers: lambda self, c: self.peers.drop_transfers(c.node_id,
                                                                       c.expected_again),
    }

    def reserve(self, owner, object_id, size, arena=False, spare=False):
        """Admit a large object: IN_MEMORY, ON_DISK or (``arena``) an arena
        location (raises ObjectStoreFullError); ``spare``: a block or None."""
        for command in self.handle(E.ReserveRequested(owner, object_id, size, arena, spare)):
            if isinstance(command, C.Reserved):
                return command.where
        return IN_MEMORY

    def pin(self, owner, object_id):
        """Where ``owner`` reads the object now (arena blocks stay until unpinned)."""
        for command in self.handle(E.PinRequested(owner, object_id)):
            if isinstance(command, C.Pinned):
                return command.location
        return None

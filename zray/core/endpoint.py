"""A worker's sockets for direct messages: an actor's (``ActorEndpoint``,
callers' CALLs; see core/direct.py) and a leased worker's (``TaskEndpoint``,
its lessee's PUSHes; see core/lease.py), and the REPLYs back.

- A CALL is checked before anything runs: its dependencies' headers may
  name only objects of this node (inline values, a file in its store or
  spill directory named for the object, or an arena block, pinned by id);
  anything else is dropped (logged once) and the actor goes on serving.
- Results that can live in the caller alone go back in REPLY; others (big,
  holding refs, errors, exit, or a call whose arguments held refs the actor
  may have borrowed) go to the node in DONE with the caller as holder.
"""
import logging
import os

import zmq

from ..plasma import shm
from ..serialization import install_shipped_registrations
from ..transport import protocol as P
from ..transport.sockets import bound_receiving, polled_messages
from ..transport.wire_types import ProtocolError
from ..transport.socket_dir import MAX_IPC_PATH
from .object_cache import INLINE_MAX_BYTES


class ActorEndpoint:
    """The actor worker's side: a ROUTER where callers send CALLs."""

    def __init__(self, runtime, actor_id):
        self.runtime = runtime
        session_dir = runtime.node_info.get("session_dir")
        path = P.actor_socket_path(session_dir, actor_id) if session_dir else None
        if path is None or len(path) > MAX_IPC_PATH:
            raise ValueError(f"no direct socket for this actor: path {path!r} too long")
        socket = self.socket = _router(runtime, path)
        self.warned = False
        self.borrowing = set()      # calls whose arguments held refs (see reply)
        runtime.connection.add_socket(socket, self._on_readable)

    def _check(self, msg_type, fields, n_frames):
        if msg_type == P.CALL:
            spec, deps = fields
            if spec.kind != P.ACTOR_METHOD:
                raise ProtocolError(f"a direct call runs a method, not a {spec.kind!r}")
            check_arguments(self.runtime, spec, deps, n_frames)

    def _on_readable(self, socket):
        tasks = self.runtime.tasks
        for frames, msg_type, fields in _messages(self, socket, "zray.direct",
                                                  "a malformed direct call"):
            if msg_type == P.CALL:
                spec, deps = fields
                if spec.contained_ids or (deps and any(header[4] for header in deps)):
                    self.borrowing.add(spec.task_id)
                tasks.append(((spec, deps, {}, None, frames[0]), frames[2:]))
                self.runtime.work.came_in()
            elif msg_type == P.PING:
                self.runtime.connection.send_on(
                    socket, [frames[0]] + P.pack(P.PONG, self.runtime.connection.identity,
                                                 fields[0]))

    def reply(self, spec, route, entries, payload, exiting, error_text):
        """Results straight to the caller if they can live there alone; else
        to the node, held for the caller, and a REPLY saying so. Also through
        the node when the call's arguments held refs: the node must hear this
        worker borrow them (sent before the DONE) before the caller lets go."""
        borrowed = spec.task_id in self.borrowing
        if borrowed:
            self.borrowing.discard(spec.task_id)
        send_results(self.runtime, self.socket, spec, route, entries, payload, exiting,
                     error_text, direct_ok=not borrowed)


def check_arguments(runtime, spec, deps, n_frames):
    """Arguments only where this node keeps objects: a file in its store or
    spill directory named for the object (a block of its arena is pinned
    by id, so its place is the node's word, not the caller's)."""
    needed = spec.n_arg_frames
    for header in deps:
        object_id, kind, count, location = header[:4]
        if kind == P.INLINE:
            needed += count
        elif not (kind == P.SHM and isinstance(location, tuple) and (
                len(location) == 3 or (len(location) == 2 and location[0] in [
                    os.path.join(d, shm.object_file_name(runtime.session_name, object_id))
                    for d in (runtime.plasma_dir, runtime.spill_dir) if d]))):
            raise ProtocolError(f"argument {object_id.hex()} of a call is not an object "
                                f"of this node: {kind!r} at {location!r}")
    if len(deps) != len(spec.dep_ids) or any(
            header[0] != object_id for header, object_id in zip(deps, spec.dep_ids)):
        raise ProtocolError("a call's argument values do not match its ObjectRef arguments")
    if needed > n_frames:
        raise ProtocolError(f"a call names {needed} frames, has {n_frames}")


def send_results(runtime, socket, spec, route, entries, payload, exiting, error_text,
                 direct_ok=True):
    """Results straight to the caller (REPLY) if they can live there alone;
    else to the node in DONE, held for the caller, and a REPLY saying so.
    The worker's timeline records ride along either way."""
    if direct_ok and fits_in_reply(entries, payload, exiting, error_text):
        runtime.connection.send_on(socket, [route] + P.pack(
            P.REPLY, spec.task_id, entries, None, runtime.take_events()) + payload)
        return
    runtime.send_message(P.DONE, spec.task_id, entries, exiting, error_text,
                         runtime.take_events(), spec.owner, frames=payload)
    error = (spec.name, error_text) if error_text else None
    runtime.connection.send_on(socket, [route] + P.pack(P.REPLY, spec.task_id, None, error, []))


def fits_in_reply(entries, payload, exiting, error_text):
    """Results that can live in the caller alone: small values, no ref, no error."""
    if exiting or error_text is not None:
        return False
    for header in entries:      # (a loop: a generator costs a Python call per item)
        if header[1] != P.INLINE or header[4] or header[5]:
            return False
    size = 0
    for frame in payload:
        size += len(frame)
    return size < INLINE_MAX_BYTES


class TaskEndpoint:
    """A worker's ROUTER where the client that leased it pushes its tasks
    (core/lease.py): PUSH runs a task, RELEASE ends the lease."""

    def __init__(self, runtime, worker_id):
        session_dir = runtime.node_info.get("session_dir")
        path = P.worker_socket_path(session_dir, worker_id) if session_dir else None
        if path is None or len(path) > MAX_IPC_PATH:
            raise ValueError(f"no socket for pushed tasks: path {path!r} too long")
        self.runtime = runtime
        self.socket = _router(runtime, path)
        self.warned = False
        self.borrowing = set()      # tasks whose arguments held refs (see ActorEndpoint.reply)
        runtime.connection.add_socket(self.socket, self._on_readable)

    def _check(self, msg_type, fields, n_frames):
        if msg_type == P.PUSH:
            spec, deps = fields[0], fields[3]
            if spec.kind != P.TASK or spec.contained_ids:
                raise ProtocolError("only a plain task without ObjectRefs nested in its "
                                    "arguments is pushed to a leased worker")
            check_arguments(self.runtime, spec, deps, n_frames)

    def _on_readable(self, socket):
        tasks = self.runtime.tasks
        for frames, msg_type, fields in _messages(self, socket, "zray.lease",
                                                  "a malformed pushed task"):
            if msg_type == P.PUSH:
                spec, functions, serializers, deps = fields
                if serializers:     # known before the task runs, whatever the node's SER
                    install_shipped_registrations(serializers)
                if any(header[4] for header in deps):
                    self.borrowing.add(spec.task_id)
                tasks.append(((spec, deps, functions, None, frames[0], self), frames[2:]))
                self.runtime.work.came_in()
            elif msg_type == P.RELEASE:
                # After the DONEs of the tasks it ran (the same socket, in order).
                self.runtime.connection.enqueue(P.LEASE_RETURN, fields[0])

    reply = ActorEndpoint.reply


def _messages(endpoint, socket, logger, what):
    """(frames, type, fields) of each message waiting at an endpoint, checked
    by its ``_check``. Only this user's processes reach these sockets, but a
    bad message must not stop the worker: it is dropped, said once."""
    for frames in polled_messages(socket):
        try:
            msg_type, fields = P.unpack(frames[1])
            endpoint._check(msg_type, fields, len(frames) - 2)
        except (IndexError, ProtocolError) as error:
            if not endpoint.warned:
                endpoint.warned = True
                logging.getLogger(logger).warning("dropped %s: %s", what, error)
            continue
        yield frames, msg_type, fields


def _router(runtime, path):
    socket = runtime.connection.context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 500)      # the last replies still go out at exit
    socket.setsockopt(zmq.SNDHWM, 0)
    bound_receiving(socket)     # as the node's sockets: back-pressure, never drops
    socket.bind("ipc://" + path)
    return socket

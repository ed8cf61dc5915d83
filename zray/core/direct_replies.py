"""Replies and connection events of the caller's direct sockets (part of
DirectCalls, core/direct.py; run under the connection's sock_lock).

- REPLY: results that live here alone; HELD: results on the actor's node,
  held for ours (a call over tcp, core/remote_endpoint.py): our node is
  told (HELD_AT) and pulls them when asked, as it does a forwarded task's.
- A socket that goes (its worker died, or its node): the calls in flight
  are resubmitted through our node, in order, ``attempted`` on that worker.
"""
import time
from collections import deque

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..transport import protocol as P
from ..transport.sockets import polled_messages
from .direct_channel import IDLE_CLOSE_S


class DirectReplies:
    """Mixed into DirectCalls."""

    def _on_readable(self, socket):
        for frames in polled_messages(socket):
            msg_type, fields = P.unpack(frames[0])
            if msg_type == P.REPLY:
                self._on_reply(*fields, frames[1:])
            elif msg_type == P.HELD:
                self._on_held(*fields)
            elif msg_type == P.PONG:
                self._on_pong(socket, *fields)

    def _on_pong(self, socket, worker_id, nonce):
        """Connected, and to this worker: calls may go direct now (unless a
        later PING is unanswered: this may be a worker killed since)."""
        with self.lock:
            for channel in self.channels.values():
                if channel.socket is socket and nonce == channel.pings:
                    channel.worker_id = worker_id
                    channel.connected = True
                    channel.retry_at = None     # a tcp socket's address was right
                    channel.lookups = 0
                    # Connected: its monitor speaks again only if the worker
                    # goes, news that may wait a few ms; out of the poll, each
                    # zmq socket in it costs a sync call six system calls.
                    self.connection.set_polled(channel.monitor, False, lazily=True)
                    channel.hold_until = None
                    if channel.waiting:         # held while it started: direct now
                        self._advance(channel)

    def _on_reply(self, task_id, entries, error, events, payload, held_at=None):
        enqueue = self.connection.enqueue
        cache = self.cache
        if events:
            self.runtime.events.extend(events)     # sent on with ours (timeline)
        with self.lock:
            channel = self.by_task.pop(task_id, None)
            call = channel.inflight.pop(task_id, None) if channel is not None else None
            if call is None:
                return                       # resubmitted through the node already
            spec, _frames, keep = call
            for object_id in spec.return_ids:
                self.pending.pop(object_id, None)
            if entries is not None:
                offset = 0
                with cache.lock:
                    for header in entries:
                        object_id, n = header[0], header[2]
                        part = payload[offset:offset + n]
                        offset += n
                        if object_id in self.publish_on_arrival:
                            self.publish_on_arrival.discard(object_id)
                            enqueue(P.PUT, [header], frames=part)
                            self.runtime.refs.drop(object_id)
                        elif self.runtime.refs.holds(object_id):
                            cache.local_only.add(object_id)
                        if self.runtime.refs.holds(object_id):
                            cache.objects[object_id] = (header, part)
                            if cache.waiters:
                                cache.tell_waiters(object_id)
                    cache.cond.notify_all()
                if cache.on_arrival:
                    cache.arrived(spec.return_ids)   # calls waiting for these as arguments
            else:
                self._from_node(spec, error, keep, held_at)
            if channel.idle():
                self._release_held_back(channel)
                channel.actor_ref = None

    def _on_held(self, task_id, node_id, entries, error):
        """A call over tcp whose results stay on the actor's node, held for
        ours (core/remote_endpoint.py): our node is told where, and pulls
        them; for a client of that node itself (over tcp), held for us there."""
        held_at = None if node_id == self.node_id.hex() else (node_id, entries)
        self._on_reply(task_id, None, error, (), (), held_at)

    def _release_held_back(self, channel, send=None):
        held, channel.held_back = channel.held_back, []
        for spec, frames, _keep in held:
            self._through_node(channel, spec, frames, send or self.connection.enqueue)
        # Refs in `held` drop after the SUBMITs are queued, so the node sees them first.

    def _from_node(self, spec, error, keep, held_at=None):
        """The results went to the node with us as holder: ask for them, and
        keep a ref until they are here (our release must follow its DONE).
        The arguments too: the actor may have borrowed refs they hold, and the
        node hears of that before the DONE, on the same socket. ``held_at``:
        (node id, headers), on that node, held for ours, which holds them
        for us on HELD_AT (instead of ADD_REF) and pulls them."""
        refs = self.runtime.refs
        for object_id in spec.return_ids:
            if object_id in self.publish_on_arrival:
                self.publish_on_arrival.discard(object_id)   # publish's ref serves
            else:
                refs.add(object_id, False)
            self.cache.call_on_arrival(object_id, refs.drop)
        if spec.return_ids:
            self.cache.call_on_arrival(spec.return_ids[0], lambda _id, keep=keep: None)
            if held_at is None:
                self.connection.enqueue(P.ADD_REF, list(spec.return_ids))
            else:
                self.connection.enqueue(P.HELD_AT, *held_at)
            self.connection.enqueue(P.SUBSCRIBE, list(spec.return_ids))
        if error is not None:
            name, text = error
            self.runtime._on_task_error((name, text, spec.return_ids), ())

    def _on_monitor(self, monitor):
        channel = self.by_monitor.get(monitor)
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if channel is None:
                continue
            if event == zmq.EVENT_CONNECTED or event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                # Usable once the worker says who it is: a call resubmitted
                # after its death names it, so the node can tell a death it has
                # not seen yet from one it has already restarted the actor after.
                self._ping(channel)
            elif event == zmq.EVENT_DISCONNECTED:
                # Replies the worker sent before it went are answers: read
                # them first (a poll may name the monitor before the socket).
                self._on_readable(channel.socket)
                self._fail_over(channel)

    def _fail_over(self, channel):
        """The actor's worker went: its calls in flight go through the node,
        in order, marked as possibly run (its retry rules decide); the ones
        waiting for their arguments follow, as new calls."""
        with self.lock:
            channel.connected = False
            channel.epoch += 1      # a call not sent yet must not reach a restarted actor
            if channel.monitor is not None:     # its reconnection is news at once
                self.connection.set_polled(channel.monitor, True)
            attempted_on = channel.worker_id
            channel.worker_id = None
            calls = list(channel.inflight.values())
            channel.inflight.clear()
            for spec, frames, _keep in calls:
                self.by_task.pop(spec.task_id, None)
                for object_id in spec.return_ids:
                    self.pending.pop(object_id, None)
                    if object_id in self.publish_on_arrival:
                        # The node's SUBMIT holds it for us now: our extra ref goes after.
                        self.publish_on_arrival.discard(object_id)
                        self.runtime.refs.drop(object_id)
                retry = spec._replace(options={**spec.options, "attempted": attempted_on})
                self._through_node(channel, retry, frames, self.connection.enqueue)
            waiting, channel.waiting = list(channel.waiting), deque()
            for spec, frames, _keep in waiting:
                self._through_node(channel, spec, frames, self.connection.enqueue)
            self._release_held_back(channel)
            channel.actor_ref = None
            if channel.remote:      # a restarted actor listens elsewhere: look it up again
                channel.retry_at = time.monotonic() + IDLE_CLOSE_S

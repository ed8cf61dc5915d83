"""Opening the caller's sockets to actors (part of DirectCalls, core/direct.py).

- ipc, in the node's session directory, to an actor whose worker is on
  this node (or made from it and not started yet).
- tcp, to an actor living on another node (or from a process whose node is
  on another machine): the address its worker published in the kv
  (core/remote_endpoint.py), a CURVE client of the cluster token. A record
  not there yet, or a socket that never connects (a stale address: its
  worker died; an actor of this node placed on another), is looked up
  again after a while, when no call is out on it.
- At most MAX_CHANNELS sockets per process: past that, the least recently
  used one idle for IDLE_CLOSE_S closes (its actor's next call opens it
  again); with none idle, calls go through the node.
"""
import logging
import os
import threading
import time
from collections import deque

import zmq

from ..kv.records import ACTOR_DIRECT_PREFIX, valid_actor_direct_record
from ..transport import auth
from ..transport import protocol as P
from ..transport.socket_dir import MAX_IPC_PATH
from .direct_channel import IDLE_CLOSE_S, MAX_CHANNELS, Channel

REMOTE_CONNECT_S = 2.0      # a tcp socket not connected by then is looked up again
LOOKUP_TIMEOUT_S = 1.0      # the kv's answer to where an actor listens
LOOKUP_AGAIN_S = 0.025      # no address yet: look again after this, doubling (to 1 s)
HOLD_FIRST_S = 1.0          # the first calls to a starting actor wait this long for its address

log = logging.getLogger("zray.direct")


class DirectSockets:
    """Mixed into DirectCalls: needs ``channels``, ``lock``, ``sockets``,
    ``by_monitor``, ``connection``, ``runtime``, ``node_id``, ``session_dir``,
    ``over_tcp``, ``looks_remote``, ``_on_readable`` and ``_on_monitor``."""

    def _channel(self, actor_id):
        """The channel to this actor, opened on first use. One left without a
        socket for want of room tries again now and then, when quiet."""
        channel = self.channels.get(actor_id)
        if channel is not None and (channel.retry_at is None
                                    or time.monotonic() < channel.retry_at):
            return channel
        return self._open(actor_id, channel)

    def _open(self, actor_id, old):
        target, remote = self._target(actor_id)
        closing = []            # (socket, monitor) pairs to remove, outside the lock
        with self.lock:
            existing = self.channels.get(actor_id)
            if existing is not old:      # another thread opened it first
                return existing
            # A tcp channel gets its new socket in place once no call is out
            # on the old one: its count of calls through the node stays, so
            # they are answered before calls go direct again (order).
            in_place = (self.looks_remote and old is not None
                        and (old.socket is None or old.remote or old.worker_id is None)
                        and not (old.inflight or old.waiting))
            if old is not None and not in_place and not old.quiet():
                old.retry_at = time.monotonic() + IDLE_CLOSE_S
                return old
            if old is not None and old.socket is not None:
                closing.append(self._unhook(old))
            room = False
            if target is not None:
                room, victims = self._room()
                closing += [(victim.socket, victim.monitor) for victim in victims]
            channel = old if in_place else Channel(actor_id)
            if room:
                self._hook(channel, target, remote)
            if target is not None and not room:
                channel.retry_at = time.monotonic() + IDLE_CLOSE_S     # no room now
            elif self.looks_remote and not (room and remote):
                # (tcp) No address yet, or ipc to an actor of this node that
                # may start on another: look again soon, then less often.
                channel.lookups += 1
                channel.retry_at = time.monotonic() + min(
                    IDLE_CLOSE_S, LOOKUP_AGAIN_S * 2 ** channel.lookups)
            if old is None and (target is None and self.looks_remote or room and remote):
                # An actor on another node (or still starting): its first calls
                # wait here for its address (looked up meanwhile) and for its
                # socket's PONG, then go direct; through the node if too long.
                channel.hold_until = time.monotonic() + HOLD_FIRST_S
                self._watch_holds()
            if channel is not old:
                self.channels[actor_id] = channel
                if old is not None:
                    old.closed = True
        for socket, monitor in closing:
            self.connection.remove_socket(monitor)
            self.connection.remove_socket(socket)
        if room:
            self.connection.add_socket(channel.socket, self._on_readable)
            self.connection.add_socket(channel.monitor, self._on_monitor)
        return channel

    def _hook(self, channel, target, remote):
        """Under lock: a socket to ``target`` for ``channel``."""
        socket = self.connection.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        # Only to a connected actor: a call queued for a dead one must
        # never reach its restarted successor (it is resubmitted instead).
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.setsockopt(zmq.RECONNECT_IVL, 50)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        socket.setsockopt(zmq.IDENTITY, self.identity)
        # Over tcp usable once CURVE's handshake is done, not at connect.
        up = zmq.EVENT_HANDSHAKE_SUCCEEDED if remote else zmq.EVENT_CONNECTED
        monitor = socket.get_monitor_socket(up | zmq.EVENT_DISCONNECTED)
        auth.connect(socket, target, self.runtime.password)
        channel.socket, channel.monitor = socket, monitor
        channel.node_only = False
        channel.remote = remote
        # A stale address (its worker gone): looked up again if it never connects.
        channel.retry_at = time.monotonic() + REMOTE_CONNECT_S if remote else None
        self.by_monitor[monitor] = channel
        self.sockets += 1

    def _unhook(self, channel):
        """Under lock: ``channel`` lets go of its socket; (socket, monitor) to remove."""
        pair = channel.socket, channel.monitor
        channel.epoch += 1      # what is still queued for the old socket is not sent
        self.by_monitor.pop(channel.monitor, None)
        self.sockets -= 1
        channel.socket = channel.monitor = None
        channel.connected = False
        channel.worker_id = None
        channel.node_only = True
        return pair

    def _target(self, actor_id):
        """(address, over tcp) of the actor's worker's socket, or (None, _).
        ipc when its worker is on this node (its socket file is here), or the
        actor was made from this node and may not have started yet; tcp, from
        the kv, when it lives on another node, or for a process whose node is
        on another machine. A call resubmitted after a death goes through
        this process's node to the actor's, which judges it."""
        home_here = bool(self.node_id) and actor_id[:len(self.node_id)] == self.node_id
        path = P.actor_socket_path(self.session_dir, actor_id) if self.session_dir else None
        ipc = None if path is None or len(path) > MAX_IPC_PATH or self.over_tcp \
            else "ipc://" + path
        if ipc is not None and (not self.looks_remote and home_here or os.path.exists(path)):
            return ipc, False
        record = self._lookup(actor_id) if self.looks_remote else None
        if record is not None:
            return record["address"], True
        return (ipc, False) if ipc is not None and home_here else (None, self.looks_remote)

    def _lookup(self, actor_id):
        """The kv record of where the actor's worker listens on tcp, or None."""
        try:
            kv = self.runtime.kv_client()
            # Short: this is a caller's send (a miss is retried after a while).
            record = (kv.call("get", ACTOR_DIRECT_PREFIX + actor_id.hex(), None,
                              timeout_s=LOOKUP_TIMEOUT_S) if kv is not None else None)
        except Exception:       # noqa: BLE001 - no kv now: through the node, look again later
            return None
        return record if valid_actor_direct_record(record) else None

    # -- the first calls to a starting actor (``hold_until``) -------------------
    def _watch_holds(self):
        """Under lock: a thread looks up the addresses of the actors whose
        calls are held, every LOOKUP_AGAIN_S, until each connects (its PONG
        sends them direct) or its HOLD_FIRST_S are up (then through the node)."""
        if self.hold_watcher is None:
            self.hold_watcher = threading.Thread(target=self._hold_loop, daemon=True,
                                                 name="zray-direct-lookups")
            self.hold_watcher.start()

    def _hold_loop(self):
        try:
            self._look_up_held()
        except Exception:       # noqa: BLE001 - only at shutdown (see _look_up_held)
            with self.lock:
                self.hold_watcher = None

    def _look_up_held(self):
        """Until no channel holds. A PONG (the I/O thread) may end a hold at
        any moment: each channel's hold is read under the lock, once. A
        failure here is logged and the loop goes on: ended, it would leave
        the calls held here waiting for ever."""
        while True:
            time.sleep(LOOKUP_AGAIN_S)
            with self.lock:
                if self.connection.closing:
                    self.hold_watcher = None
                    return
                now = time.monotonic()
                held = [(c, now >= c.hold_until) for c in self.channels.values()
                        if c.hold_until is not None]
                if not held:
                    self.hold_watcher = None
                    return
            for channel, expired in held:
                try:
                    if expired:
                        self._stop_holding(channel)
                    elif channel.socket is None and not channel.closed:
                        record = self._lookup(channel.actor_id)
                        if record is not None:
                            self._hook_held(channel, record["address"])
                except Exception:       # noqa: BLE001 - see the docstring
                    if self.connection.closing:
                        raise
                    log.exception("looking up the address of actor %s",
                                  channel.actor_id.hex())

    def _hook_held(self, channel, target):
        with self.lock:
            if channel.closed or channel.socket is not None or channel.hold_until is None:
                return
            room, victims = self._room()
            if room:
                self._hook(channel, target, True)
        for victim in victims:
            self.connection.remove_socket(victim.monitor)
            self.connection.remove_socket(victim.socket)
        if room:
            self.connection.add_socket(channel.socket, self._on_readable)
            self.connection.add_socket(channel.monitor, self._on_monitor)

    def _stop_holding(self, channel):
        """No answer in time (still starting, or unreachable over tcp): the
        calls held go through the node, in order, and later ones follow."""
        send = self.connection.send_message
        with self.lock:
            if channel.hold_until is None:      # its PONG came meanwhile: direct
                return
            channel.hold_until = None
            if channel.usable():
                return
            waiting, channel.waiting = list(channel.waiting), deque()
            for spec, frames, _keep in waiting:
                self._through_node(channel, spec, frames, send)
            self._release_held_back(channel, send)

    def _room(self):
        """(room for one more socket, the channels closed to make it): the
        least recently used of those quiet for IDLE_CLOSE_S. Under lock."""
        excess = self.sockets + 1 - MAX_CHANNELS
        if excess <= 0:
            return True, ()
        cutoff = time.monotonic() - IDLE_CLOSE_S
        idle = [c for c in self.channels.values()
                if c.socket is not None and c.last_used < cutoff and c.quiet()]
        if len(idle) < excess:
            return False, ()
        victims = sorted(idle, key=lambda c: c.last_used)[:excess]
        for victim in victims:
            victim.closed = True
            victim.epoch += 1           # its PING, if still queued, is not sent
            del self.channels[victim.actor_id]
            self.by_monitor.pop(victim.monitor, None)
        self.sockets -= len(victims)
        return True, victims

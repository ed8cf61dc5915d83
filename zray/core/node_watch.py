"""A driver never waits forever on a node that is gone.

Its socket sends ZeroMQ heartbeats, and a socket monitor, read by the I/O
thread, reports the connection dropping and coming back: once the node has
been unreachable for NODE_LOST_GRACE_S, waiting calls and new submissions
raise instead of waiting forever. A driver that started its node also asks
whether that process still runs (``node_alive``). Nothing is added to the
hot path but one flag test.
"""
import zmq
from zmq.utils.monitor import recv_monitor_message

from ..exceptions import RaySystemError
from ..transport import auth
from ..transport.sockets import REMOTE_SILENCE_S

# A driver's node is gone when its connection has been down this long (a
# killed process closes its sockets at once; a dead machine misses heartbeats).
NODE_LOST_GRACE_S = 2.0
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000


class NodeWatch:
    """Mixed into ``Connection``: needs ``socket``, ``node_address``,
    ``node_info`` and ``cond``."""

    def _init_node_watch(self, kind):
        """Before connecting: heartbeats and the monitor (drivers only)."""
        self.monitor = None         # drivers: connection events, read by the I/O thread
        if kind == "driver":
            self.socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            self.socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            # The node closes our connection after this much silence (its
            # socket pings nobody: see sched/remote_clients.py).
            self.socket.setsockopt(zmq.HEARTBEAT_TTL, int(REMOTE_SILENCE_S * 1000))
            self.monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED
                                                          | zmq.EVENT_DISCONNECTED
                                                          | auth.HANDSHAKE_EVENTS)
        self.disconnected_at = None
        self.node_lost = None       # why the node is unreachable, once it is
        self.node_alive = None      # set by whoever started the node: () -> bool
        self.next_node_check = 0.0

    def _close_monitor(self):
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(0)

    def _check_node_alive(self):
        """Never wait forever on a node that is gone."""
        if self.node_lost:
            raise RaySystemError(self.node_lost)
        if self.node_alive is not None and not self.node_alive():
            raise RaySystemError(
                f"the zray node daemon at {self.node_address} has died, so this call can never "
                f"finish; its log is in {self.node_info.get('session_dir')}/logs/node.log")

    def _watch_connection(self, now):
        """I/O thread: note connection drops; past the grace, the node is lost."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_DISCONNECTED:
                self.disconnected_at = self.disconnected_at or now
            elif event == zmq.EVENT_CONNECTED:
                self.disconnected_at = None
        if self.disconnected_at is not None and now - self.disconnected_at >= NODE_LOST_GRACE_S:
            self.node_lost = (
                f"lost the connection to the zray node at {self.node_address} "
                f"{now - self.disconnected_at:.1f} s ago and it did not come back: the node "
                f"died (or its machine is unreachable), so this call can never finish. Its "
                f"log is in {self.node_info.get('session_dir')}/logs/node.log on that "
                f"machine; `zray status` shows the cluster")
            with self.cond:
                self.cond.notify_all()

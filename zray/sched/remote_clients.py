"""Which connection each remote client (tcp) came in on, and which closed.

A driver on another machine can die without a BYE (killed, its machine
gone) and its node cannot check its pid. ZeroMQ tells us instead: a killed
process's connection closes at once; a silent one is closed after the TTL
its own heartbeats carry (``Connection``: ``REMOTE_SILENCE_S``). A socket
monitor reports the closed connection's fd, and every message received here
says which fd it came on, so the node knows whose connection it was.

This socket sends no heartbeats of its own (no HEARTBEAT_IVL): libzmq 4.3.5
aborts the process (``!_io_error``, stream_engine_base.cpp:310) when a ping
timer fires on a connection whose peer hung up while its input was stopped
at RCVHWM, as a driver killed with thousands of messages queued leaves it
(``test_a_driver_that_dies_with_a_flood_queued_leaves_the_node_serving``).
The TTL timer that peers' heartbeats arm only closes the connection.
"""
import zmq
from zmq.utils.monitor import recv_monitor_message


class RemoteConnections:
    def __init__(self, router):
        self.router = router
        self.monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.fds = {}            # identity -> the fd of its connection

    def recv(self):
        """One message's frames (bytes), noting the fd it came on."""
        parts = self.router.recv_multipart(copy=False)
        frames = [part.bytes for part in parts]
        if len(parts) > 1 and frames[0] not in self.fds:
            self.fds[frames[0]] = _source_fd(parts[1])
        return frames

    def closed(self):
        """Identities whose connection has closed since last asked (forgotten here)."""
        gone = []
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return gone
            if event["event"] == zmq.EVENT_DISCONNECTED:
                fd = event["value"]
                for identity in [i for i, f in self.fds.items() if f == fd]:
                    del self.fds[identity]
                    gone.append(identity)

    def forget(self, identity):
        self.fds.pop(identity, None)

    def close(self):
        self.router.disable_monitor()
        self.monitor.close(0)


def _source_fd(frame):
    try:      # deprecated in libzmq, still there in 4.3; without it: no early notice
        return frame.get(zmq.SRCFD)
    except (zmq.ZMQError, ValueError, AttributeError):
        return None

"""The caller's socket to one actor and its calls in flight (core/direct.py)."""
from collections import deque

MAX_CHANNELS = 64           # direct sockets per process; past it, idle ones close (LRU)
IDLE_CLOSE_S = 1.0          # a socket unused this long may close to make room


class Channel:
    """This process's socket to one actor, and its calls in flight on it."""
    __slots__ = ("actor_id", "socket", "monitor", "connected", "inflight", "waiting",
                 "node_calls", "node_only", "silent_sent", "silent_answered", "actor_ref",
                 "held_back", "epoch", "worker_id", "pings", "last_used", "retry_at",
                 "closed", "remote", "lookups", "hold_until")

    def __init__(self, actor_id, socket=None, monitor=None):
        self.actor_id = actor_id
        self.socket = socket
        self.monitor = monitor
        self.connected = False
        self.inflight = {}          # task_id -> (spec, frames, keep), in send order
        # Calls to send direct once the arguments of the first are here (its
        # dependencies: the caller waits for them, as the node would).
        self.waiting = deque()      # (spec, frames, keep)
        self.node_calls = 0         # calls sent through the node, not answered yet
        self.node_only = socket is None   # no direct path to this actor
        # Calls without returns sent through the node (nothing says when they
        # ran): later ones go through the node too until one sent after them
        # is answered, since the node sends each caller's calls in order.
        self.silent_sent = 0
        self.silent_answered = 0
        self.actor_ref = None       # held while calls are in flight
        # Calls for the node made while direct ones are in flight or waiting:
        # sent once those are answered, so they cannot overtake them.
        self.held_back = []         # (spec, frames, keep)
        self.epoch = 0              # +1 at each fail-over: older sends are dropped
        self.worker_id = None       # the actor's worker at the other end (its PONG)
        self.pings = 0              # PINGs sent: only the PONG to the latest counts
        self.last_used = 0.0        # when a call last went on it (the LRU closes first)
        self.retry_at = None        # no socket for want of room: try again from then
        self.closed = False         # replaced (its socket closed to make room): look again
        self.remote = False         # over tcp, to a worker on another node (remote_endpoint.py)
        self.lookups = 0            # kv lookups of its address since it last answered
        # A fresh actor on another node, its address not in the kv yet (it is
        # starting): calls wait here (``waiting``) until then, not longer.
        self.hold_until = None

    def usable(self):
        return (self.connected and not self.node_calls and not self.node_only
                and self.silent_answered == self.silent_sent)

    def idle(self):
        return not (self.inflight or self.waiting)

    def quiet(self):
        """Nothing outstanding: a fresh channel could take its place."""
        return (not (self.inflight or self.waiting or self.held_back or self.node_calls)
                and self.silent_answered == self.silent_sent)

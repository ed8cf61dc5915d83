"""One actor as a node knows it: the record the actor table keeps (``actors.py``).

States: PENDING (its creation not done), ALIVE (its worker here runs calls,
or, with ``node`` set, calls are forwarded to the node it lives on),
RESTARTING, DEAD (a tombstone while handles remain).
"""

PENDING, ALIVE, RESTARTING, DEAD = "pending", "alive", "restarting", "dead"
INFINITE = float("inf")


class Actor:
    __slots__ = ("actor_id", "creation", "worker", "state", "restarts_left", "max_restarts",
                 "task_retries", "queues", "inflight", "name", "death_reason", "hold",
                 "holding", "class_name", "handle_meta", "unreferenced", "detached",
                 "args_released", "node", "proxy", "last_death")

    def __init__(self, creation, actor_id=None, class_name=None):
        spec = creation.spec if creation is not None else None
        options = spec.options if spec is not None else {}
        self.actor_id = spec.actor_id if spec is not None else actor_id
        self.creation = creation      # kept to run __init__ again on restart (None: a proxy)
        self.worker = None
        self.node = None              # the peer it lives on (a proxy: its home), None: here
        self.proxy = creation is None  # a stand-in for an actor homed on another node
        self.state = PENDING
        self.max_restarts = options.get("max_restarts", 0)
        self.restarts_left = self.max_restarts
        retries = options.get("max_task_retries") or 0
        self.task_retries = INFINITE if retries == -1 else retries
        self.queues = {}              # caller -> deque of calls not yet sent, in its order
        self.inflight = {}            # task_id -> task sent to the worker (dict keeps order)
        self.name = options.get("name")
        self.death_reason = None
        self.last_death = None        # why it last died, kept across a restart
        self.hold = options.get("hold_resources", False)
        self.holding = False          # hold=True and the worker has the resources now
        self.class_name = spec.name if spec is not None else class_name
        self.handle_meta = options.get("handle_meta")
        self.unreferenced = False     # no handle left anywhere: exit once the queues are empty
        self.detached = options.get("detached", False)
        self.args_released = False

    def queued(self):
        """Calls not sent yet, each caller's in its order."""
        return [task for queue in self.queues.values() for task in queue]

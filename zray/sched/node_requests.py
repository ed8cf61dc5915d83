"""Control-plane requests a node answers (``REQUEST`` messages): resources,
nodes, status, actors, shutdown. A mixin of ``NodeDaemon``; each
``request_<op>`` takes the asking client and returns a picklable answer.
Questions read the state; requests that change it go through
``handle(event)`` like any message."""
from .scheduler import infeasible_report
from .state import events as E


class NodeRequests:
    def request_cluster_resources(self, _client):
        return self.state.cluster_totals()

    def request_available_resources(self, _client):
        if self.peers is not None:
            return self.state.cluster_available()
        return self._local_available()

    def _local_available(self):
        return self.state.local_available()

    def request_nodes(self, _client):
        info = self._node_info()
        info.update({"alive": True, "available": self._local_available()})
        if self.peers is not None:
            return self.peers.nodes(info)
        return [info]

    def request_status(self, _client):
        infeasible = [infeasible_report(t, self.resources) for t in self.scheduler.infeasible]
        leases = self.state.leases
        # Work past the node, as its clients last said (at most a tick old).
        direct = self.state.direct_work.statistics()
        return {"node": self._node_info(),
                "available": self._local_available(),
                # Tasks and calls, wherever they run: a lease held or asked for is none.
                "running": max(0, len(self.scheduler.running) - len(leases.held))
                + direct["running"],
                "queued": max(0, self.scheduler.queued_count() - len(leases.queued))
                + direct["queued"] + direct["waiting_for_lease"],
                "direct": direct,
                "infeasible": infeasible,
                "scheduler": self.scheduler.statistics(),
                "workers": self.pool.live_count(),
                "max_workers": self.pool.max_workers,
                "actors": self.actors.statistics(),
                "tasks": dict(self.state.counts),     # submitted / ended through this node
                # workers lent to clients, which push their tasks straight to them
                "leases": {"held": len(leases.held), "queued": len(leases.queued)},
                "store": self.objects.stats(),
                "peers": self.peers.statistics() if self.peers is not None else None}

    def request_kill_actor(self, _client, actor_id, no_restart=True):
        self.handle(E.KillActorRequested(actor_id, no_restart))
        return True

    def request_get_actor(self, _client, name):
        return self.actors.get_by_name(name)

    def request_actor_location(self, _client, actor_id):
        """(node_id, worker_id or None) of a live actor this node knows, else None."""
        return self.actors.routing.location(actor_id)

    def request_publish_actor_address(self, client, actor_id, address):
        """An actor's worker listens on tcp there (core/remote_endpoint.py): the
        kv record callers on other nodes look up, written with this node's
        kv client (not one per worker); deleted when the worker dies."""
        self.handle(E.ActorAddressPublished(client.identity, actor_id, address))

    def request_reserve_actor_name(self, _client, name, actor_id=None):
        self.handle(E.ActorNameReserved(name, actor_id))
        return True

    def request_flush_events(self, _client):
        """Hand the batched events to the caller, which stores them in the kv:
        a kv round trip (up to seconds) never runs inside the node's loop."""
        events, self.events = self.events, []
        return events

    def request_shutdown(self, _client):
        self.running = False
        return True

    def request_introspect(self, _client, top_objects=10):
        """Workers, actors, running tasks, biggest objects (dashboard, zray stack)."""
        from .introspect import node_view
        return node_view(self, top_objects)

    def request_log_tail(self, _client, pid, max_bytes=64 * 1024):
        from .introspect import log_tail
        return log_tail(self, pid, max_bytes)

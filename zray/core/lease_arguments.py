"""Leased tasks with ObjectRef arguments: they wait in the caller for the
values, then travel with them (a part of ``Leases``, core/lease.py).

A task given an ObjectRef whose value is here, or on its way here (a
``ray.put``, a result of our own direct work), goes to a leased worker as
any plain task: it waits here, holding no worker, until every argument is
here (``park``), then its PUSH carries their headers and frames as a direct
actor call does (an object in shared memory: its header; the worker maps
it). So a chain ``g.remote(f.remote(x))`` never touches the node. Should a
task it waits on go through the node after all (refused, its worker died),
it follows (``dependents_of``): that result may stay on the node it runs on.
"""


class Parked:
    """A task waiting here for the values of its ObjectRef arguments."""
    __slots__ = ("demand", "spec", "frames", "keep", "missing")

    def __init__(self, demand, spec, frames, keep, missing):
        self.demand, self.spec, self.frames, self.keep = demand, spec, frames, keep
        self.missing = missing      # ids not here yet; None once it went on


class ArgumentWaits:
    """Mixed into ``Leases``: ``self.parked_on`` (object id -> [Parked]),
    ``self.lock``, ``self.runtime``, ``self.direct`` and ``self._queue``."""

    def _park(self, demand, spec, frames, keep, missing):
        """Wait here until every argument is here (results of our own direct
        work come by themselves), then queue. Under lock."""
        pending = self.direct.pending
        for object_id in spec.return_ids:
            pending[object_id] = demand      # passed on meanwhile: waits here too
        cache = self.runtime.objects
        parked = Parked(demand, spec, frames, keep, missing)
        for object_id in list(missing):
            cache.call_on_arrival(object_id, lambda object_id, p=parked: self._arrived(p, object_id))
            self.parked_on.setdefault(object_id, []).append(parked)
        for object_id in list(missing):      # came before we asked
            if object_id in cache.objects:
                missing.discard(object_id)
        if not missing:
            self._unpark(parked)
            self._queue(demand, spec, frames, keep, locked=False)

    def _arrived(self, parked, object_id):
        """An argument came (a handler, under sock_lock)."""
        with self.lock:
            if parked.missing:
                parked.missing.discard(object_id)
                if not parked.missing:
                    self._unpark(parked)
                    self._queue(parked.demand, parked.spec, parked.frames, parked.keep,
                                locked=True)
                    parked.frames = parked.keep = None

    def _unpark(self, parked):
        parked.missing = None
        for object_id in parked.spec.dep_ids:
            waiting = self.parked_on.get(object_id)
            if waiting and parked in waiting:
                waiting.remove(parked)
                if not waiting:
                    del self.parked_on[object_id]

    def _dependents_of(self, object_id):
        """Tasks still waiting here for ``object_id``."""
        return [parked for parked in self.parked_on.get(object_id, ()) if parked.missing]

    def _argument_values(self, spec):
        """Headers and frames of the task's ObjectRef arguments (all here)."""
        deps, dep_frames = [], []
        objects = self.runtime.objects.objects
        for object_id in spec.dep_ids:
            header, payload = objects[object_id]
            deps.append(header)
            dep_frames.extend(payload)
        return deps, dep_frames

"""Where objects made elsewhere live, and how to make them again (part of NodeState).

The owner of a task's results is the node its submitter is a client of
(for a driver, the node it connected to): it keeps, for each result made on
another node, a directory entry (which nodes hold a copy, its size) and the
task that made it (lineage). Drivers and workers keep talking to their own
node only, so the node can stand in for them.

- Objects stay where they are made. A large result of a task this node
  forwarded stays on the node that ran it, which keeps holding it for us
  (the hold the forward took) until our own entry is freed; small results
  still come back inline. Bytes move only when needed here: a local client
  asks for the value, or a task that runs here takes it as an argument; the
  pull comes from a node that holds a copy.
- Locality: a plain task whose arguments all exist somewhere, but not all
  here, goes to the peer holding most of its argument bytes when that peer
  can run it (and has room, unless no local resources ever fit); otherwise
  its arguments are pulled and it runs here. Forwarded tasks say where their
  arguments are, so the executing node pulls from the holder, not from us.
- Lineage: a forwarded task that finished is kept, with its argument refs
  (so the arguments can be remade or re-read), while one of its results
  lives here only as a directory entry. When the last copy of such a result
  goes with its node, the task is placed again (one of its retries used),
  recursively for arguments lost the same way. What cannot be remade (no
  lineage: ``ray.put`` objects, refs found inside results; or no retries
  left) is replaced by an ObjectLostError naming the object and the node.
"""
from ...exceptions import ObjectLostError
from ...plasma.store import READY as OBJECT_READY
from ...serialization import serialize
from ...transport import protocol as P
from ..task import TaskState
from . import commands as C

S = TaskState


class _Where:
    """The copies of one object on other nodes."""
    __slots__ = ("nodes", "size")

    def __init__(self):
        self.nodes = {}       # node_id -> whether we hold that copy (our ref keeps it there)
        self.size = 0


class Locations:
    def __init__(self, state):
        self.state = state                 # the NodeState this is part of
        self.where = {}                    # object_id -> _Where (no local copy needed)
        self.lineage = {}                  # object_id -> (task that made it, args pinned)
        # Pending objects a client asked for (``ray.get``): pulled once located.
        # A submitter is subscribed to its results too, but only to have
        # them pushed if they are made here: that alone pulls nothing.
        self.wanted = set()

    # == where objects are ====================================================
    def located(self, node_id, header, held=True):
        """A copy of ``header``'s object is on ``node_id`` (held for us there)."""
        state = self.state
        object_id = header[0]
        entry = state.objects.get(object_id)
        if entry is None or entry.state == OBJECT_READY:
            if held:                       # nobody here wants it, or we have it already
                state.emit(C.ReleaseRemote(node_id, [object_id]))
        else:
            where = self.where.get(object_id)
            if where is None:
                where = self.where[object_id] = _Where()
            where.nodes[node_id] = where.nodes.get(node_id, False) or held
            where.size = header[3][1] if header[1] == P.SHM else 0
            self._wake(entry)
            if object_id in self.wanted or entry.waiting_tasks:
                self.pull(object_id)       # someone here needs the bytes
        state.forwarding.arrived(object_id)

    def _wake(self, entry):
        """Tasks that wait only for their arguments to exist somewhere."""
        waiting, keep = entry.waiting_tasks, []
        woken = []
        for item in waiting:
            if item[1] == self.place:
                woken.append(item[0])
            else:
                keep.append(item)
        if not woken:
            return
        entry.waiting_tasks = keep or ()
        for task in woken:
            task.missing -= 1
            if task.missing == 0:
                self.place(task)
        self.state.needs_dispatch = True

    def asked(self, object_id):
        """A client here waits for the value of this pending object (until it
        is here: a pull cut short by a node's death starts again when the
        object is remade)."""
        self.wanted.add(object_id)
        if object_id in self.where:
            self.pull(object_id)

    def pull(self, object_id):
        """Copy the object here from a live node that holds it."""
        where = self.where.get(object_id)
        if where is None:
            return
        peers = self.state.forwarding.peers
        live = [(held, node) for node, held in where.nodes.items() if node in peers]
        if live:
            held, node = max(live)
            self.state.emit(C.WantObjects(node, [object_id], held))

    def exists(self, object_id):
        return self.state.objects.is_ready(object_id) or object_id in self.where

    def node_of(self, object_id, default=None):
        """A node with a copy of the object (one we hold first), for a forward."""
        where = self.where.get(object_id)
        if where is None or not where.nodes:
            return default
        return max((held, node) for node, held in where.nodes.items())[1]

    # == placing tasks whose arguments may be elsewhere =========================
    def wait_anywhere(self, task):
        """Place ``task`` once each argument exists here or on another node."""
        task.missing = 0
        objects = self.state.objects
        for object_id in task.spec.dep_ids:
            entry = objects.get(object_id)
            if entry is not None and entry.state == OBJECT_READY:
                continue
            if object_id in self.where:
                continue
            entry = objects.expect(object_id)
            entry.add_waiting_task(task, self.place)
            task.missing += 1
        if task.missing == 0:
            self.place(task)

    def place(self, task):
        """Every argument exists: run here, or where its arguments are (locality)."""
        if task.state is not S.WAITING:        # dropped meanwhile (its owner left)
            return
        state = self.state
        if task.spec.dep_ids:
            remote = [i for i in task.spec.dep_ids if not state.objects.is_ready(i)]
            if remote:
                peer = state.forwarding.holder_for(task, self._bytes_by_node(remote))
                if peer is not None:
                    state.forwarding.forward(task, peer)
                    return
                if state.resources.feasible(task.demand):
                    # Runs here: pull what is elsewhere, then queue.
                    state.wait_for_arguments(task, state.scheduler.make_ready)
                    state.needs_dispatch = True
                    return
        state.scheduler.make_ready(task)       # (infeasible here: a peer gets it)
        state.needs_dispatch = True

    def _bytes_by_node(self, object_ids):
        by_node = {}
        for object_id in object_ids:
            where = self.where.get(object_id)
            if where is not None:
                for node in where.nodes:
                    by_node[node] = by_node.get(node, 0) + where.size
        return by_node

    # == lineage ===============================================================
    def finished(self, task):
        """A forwarded task is done: keep it while a result lives only elsewhere."""
        state = self.state
        kept = [i for i in task.spec.return_ids if i in self.where]
        pinned = bool(kept) and task.retries_left != 0 and task.spec.kind == P.TASK
        for object_id in kept:
            self.lineage[object_id] = (task, pinned)
        if not pinned:
            state.release_arguments(task)

    def freed(self, object_id):
        """Our entry of the object is gone: let go of copies and lineage kept for it."""
        where = self.where.pop(object_id, None)
        if where is not None:
            for node, held in where.nodes.items():
                if held:
                    self.state.emit(C.ReleaseRemote(node, [object_id]))
        kept = self.lineage.pop(object_id, None)
        if kept is not None:
            task, pinned = kept
            if pinned and not any(i in self.lineage for i in task.spec.return_ids):
                self.state.release_arguments(task)

    def sweep(self):
        """Entries freed by a path that did not say so (inside another object)."""
        entries = self.state.objects.entries
        self.wanted = {i for i in self.wanted
                       if i in entries and entries[i].state != OBJECT_READY}
        for object_id in [i for i in self.where if i not in entries]:
            self.freed(object_id)
        for object_id in [i for i in self.lineage if i not in entries]:
            self.freed(object_id)

    def node_gone(self, node_id, address=None, rerun=()):
        """``node_id`` left: drop its copies; remake or fail what it alone held
        (``rerun``: results of tasks it was running, placed again anyway).
        Returns the ids still to come (transfers of them are not failures)
        and those to pull again from another copy once its transfers are dropped."""
        state = self.state
        lost, again, repull = [], set(), []
        for object_id, where in list(self.where.items()):
            if where.nodes.pop(node_id, None) is None:
                continue
            if where.nodes:                    # another copy: pull from it if needed
                again.add(object_id)
                entry = state.objects.get(object_id)
                if entry is not None and (object_id in self.wanted or entry.waiting_tasks):
                    repull.append(object_id)
                continue
            del self.where[object_id]
            if object_id in rerun:
                continue
            if not state.objects.is_ready(object_id):
                lost.append(object_id)
        node = f"node {node_id}" + (f" ({address})" if address else "")
        for object_id in lost:
            if object_id in again:             # another result of a task remade above
                continue
            kept = self.lineage.get(object_id)
            if kept is None:
                self._fail(object_id, f"its only copy was on {node}, which left the cluster, "
                                      f"and it has no lineage to rebuild it from (a ray.put "
                                      f"value, one a task made inside it, or an actor call's "
                                      f"result): keep a copy of values that must survive a "
                                      f"node, e.g. ray.get them")
                continue
            task, pinned = kept
            if not pinned:
                self._fail(object_id, f"its only copy was on {node}, which left the cluster, "
                                      f"and task {task.spec.name} that made it has no retries "
                                      f"left (max_retries={task.spec.max_retries}); pass "
                                      f"max_retries to have it rebuilt")
                continue
            again.update(task.spec.return_ids)
            self.remake(task)
        return again, repull

    def remake(self, task):
        """Run a finished forwarded task again (one retry used) for a lost result."""
        if task.retries_left > 0:
            task.retries_left -= 1
        # The run holds its arguments again until it ends (``finished``).
        for object_id in task.spec.return_ids:
            self.lineage.pop(object_id, None)
        task.worker = None
        task.to(S.WAITING)
        self.state.counts["submitted"] += 1
        self.wait_anywhere(task)

    def _fail(self, object_id, why):
        error = ObjectLostError(f"object {object_id.hex()} is lost: {why}")
        self.state.store_objects([(object_id, P.INLINE, 1, None, (), True)],
                                 [serialize(error).meta])

    def statistics(self):
        return {"located_elsewhere": len(self.where), "lineage_kept": len(self.lineage)}

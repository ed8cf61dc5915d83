"""Work that skips the node, as its clients report it (part of NodeState).

Direct actor calls (core/direct.py) and tasks pushed to leased workers
(core/lease.py) never pass through the node, so its own tables show such a
worker as busy with a lease, or an actor with nothing in flight. Each
client reports that work (WORK, core/work_report.py) at most every tick and
only when it changed: what runs and waits in a worker, what it finished, and
what waits in a lessee for a worker. Tools read it here (``zray status``,
the dashboard); nothing here takes part in a decision.
"""


class WorkReport:
    __slots__ = ("running", "queued", "finished_tasks", "finished_calls", "waiting")

    def __init__(self, running=(), queued=0, finished_tasks=0, finished_calls=0, waiting=0):
        self.running = list(running)
        self.queued = queued
        self.finished_tasks = finished_tasks
        self.finished_calls = finished_calls
        self.waiting = waiting


class DirectWork:
    def __init__(self):
        self.reports = {}        # client identity -> its latest WorkReport
        # Finished so far on this node, kept after the workers that did it exit.
        self.finished_tasks = 0
        self.finished_calls = 0

    def reported(self, client, running, queued, finished_tasks, finished_calls, waiting):
        last = self.reports.get(client)
        if last is not None:
            # Counts only grow in one process: a smaller one is a bad report; not counted.
            self.finished_tasks += max(0, finished_tasks - last.finished_tasks)
            self.finished_calls += max(0, finished_calls - last.finished_calls)
        else:
            self.finished_tasks += max(0, finished_tasks)
            self.finished_calls += max(0, finished_calls)
        self.reports[client] = WorkReport(running, max(0, queued), finished_tasks,
                                          finished_calls, max(0, waiting))

    def forget(self, client):
        """The client left: what it ran or held is no longer running or waiting."""
        self.reports.pop(client, None)

    def of(self, client):
        return self.reports.get(client)

    def statistics(self):
        reports = self.reports.values()
        return {"running": sum(len(r.running) for r in reports),
                "queued": sum(r.queued for r in reports),
                "waiting_for_lease": sum(r.waiting for r in reports),
                "finished_tasks": self.finished_tasks,
                "finished_calls": self.finished_calls}

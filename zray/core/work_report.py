"""What this process tells its node about work the node does not see.

Direct actor calls (core/direct.py) and tasks pushed to a leased worker
(core/lease.py) skip the node, so without this ``zray status`` and the
dashboard would show a worker running them as idle. A worker counts them
as they come, start and finish; a lessee says how many of its tasks wait
for a leased worker. The I/O thread's tick sends it all (WORK) only when
it changed, so this costs the call path a few counter updates and the node
at most one message per process per tick (sched/state/direct_work.py).
"""
from ..transport import protocol as P

RUNNING_NAMES_MAX = 1000     # an async actor may run thousands of calls at once


class WorkReport:
    def __init__(self, runtime):
        self.runtime = runtime
        self.running = {}         # task id -> name of a direct call or pushed task running here
        # Only one thread updates each (endpoints: the I/O thread; the rest:
        # the threads running tasks, under the GIL; a display, not a ledger).
        self.received = 0         # direct calls and pushed tasks that came in
        self.bounced = 0          # pushed tasks sent back unrun (Worker.bounce_stuck)
        self.started = 0
        self.finished_tasks = 0
        self.finished_calls = 0
        self.last_sent = ([], 0, 0, 0, 0)     # what an idle process has: nothing to send

    def came_in(self):
        self.received += 1

    def began(self, spec):
        self.started += 1
        self.running[spec.task_id] = spec.name

    def ended(self, spec):
        self.running.pop(spec.task_id, None)
        if spec.kind == P.TASK:
            self.finished_tasks += 1
        else:
            self.finished_calls += 1

    def current(self):
        """([(task id, name)] running, queued, finished tasks, finished calls,
        waiting for a lease)."""
        running = list(self.running.items())[:RUNNING_NAMES_MAX]
        queued = max(0, self.received - self.bounced - self.started)
        return (running, queued, self.finished_tasks, self.finished_calls,
                self.runtime.leases.waiting())

    def tick(self):
        """I/O thread: tell the node if anything changed since it last heard."""
        if self.runtime.connection.node_lost:
            return      # nobody to tell (and a send would raise in the I/O thread)
        report = self.current()
        if report != self.last_sent:
            self.last_sent = report
            self.runtime.send_message(P.WORK, *report)

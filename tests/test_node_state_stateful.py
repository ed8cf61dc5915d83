"""Random event sequences against NodeState, with its invariants checked after each.

Invariants: free resources equal the totals minus what running, non-blocked
tasks hold (so never above the total, and never negative but for a CPU a
returning blocked task took back); reference counts never negative; no
object freed while a client holds it or a task that has not ended needs it;
every submitted task's result reaches its owner exactly once (and, after the
machine drains, at least once); an actor's calls run in each caller's
submission order.
"""
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from state_util import Node, inline, new_id, spec
from zray.sched import task as task_module
from zray.sched.state import commands as C, events as E
from zray.sched.task import FINAL
from zray.transport import protocol as P

CALLERS = (b"A", b"B")


class NodeMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        task_module.STRICT = True
        self.node = Node(cpus=2, gpus=1, max_workers=4, max_starting=2)
        for caller in CALLERS:
            self.node.driver(caller)
        self.held = defaultdict(set)        # caller -> object ids it holds
        self.owner_of = {}                  # return id -> caller
        self.needs = {}                     # task id -> argument ids, until it ends
        self.task_of = {}                   # return id -> task id
        self.results = Counter()            # return id -> times pushed to its owner
        self.running = {}                   # task id -> Execute
        self.tasks = {}                     # task id -> the node's Task, once executed
        self.calls = defaultdict(list)      # caller -> actor call task ids in submission order
        self.calls_run = defaultdict(list)  # caller -> actor call task ids in execution order
        self.missing = []                   # argument ids nobody has put yet
        self.leaving = set()                # workers told to exit (or killed), not reaped yet
        self.leases = {}                    # lease id -> worker id, granted and not returned
        self.actor_id = new_id()
        creation = spec(P.ACTOR_CREATE, actor_id=self.actor_id, cpus=0, returns=0,
                        options={"max_restarts": float("inf")})
        self.apply(self.node.submit(creation, client=CALLERS[0]))

    # -- bookkeeping of what the node said -------------------------------------
    def apply(self, commands):
        for command in commands:
            if isinstance(command, C.Execute):
                spec_ = command.task.spec
                self.running[spec_.task_id] = command
                self.tasks[spec_.task_id] = command.task
                if spec_.kind == P.ACTOR_METHOD:
                    self.calls_run[spec_.owner].append(spec_.task_id)
            elif isinstance(command, (C.StopWorker, C.KillWorker)):
                self.leaving.add(command.worker_id)
            elif isinstance(command, C.TellClient) and command.msg_type == P.LEASED:
                lease_id, worker_id = command.fields
                if worker_id is not None:
                    self.leases[lease_id] = worker_id
            elif isinstance(command, C.TellClient) and command.msg_type == P.RECALL:
                lease_id, lost = command.fields
                if lost is not None:
                    self.leases.pop(lease_id, None)     # its worker died
            elif isinstance(command, C.PushObject):
                object_id = command.entry.object_id
                if self.owner_of.get(object_id) == command.identity:
                    self.results[object_id] += 1
                    self.needs.pop(self.task_of[object_id], None)
                    self.running.pop(self.task_of[object_id], None)

        for task_id in [t for t in self.needs if t in self.tasks]:
            if self.tasks[task_id].state in FINAL:      # ended, result wanted or not
                del self.needs[task_id]

    def do(self, event):
        self.apply(self.node.do(event))

    def submit(self, caller, spec_):
        for object_id in spec_.return_ids:
            self.owner_of[object_id] = caller
            self.task_of[object_id] = spec_.task_id
            self.held[caller].add(object_id)
        self.needs[spec_.task_id] = set(spec_.dep_ids)
        self.apply(self.node.submit(spec_, client=caller))

    def deps(self, data, caller):
        choices = sorted(self.held[caller]) + self.missing
        if not choices:
            return []
        return data.draw(st.lists(st.sampled_from(choices), max_size=2, unique=True))

    # -- rules ----------------------------------------------------------------
    @rule(data=st.data(), caller=st.sampled_from(CALLERS), cpus=st.sampled_from([0, 0.5, 1]),
          gpus=st.sampled_from([0, 0, 0.5]), retries=st.integers(0, 1), new_arg=st.booleans())
    def submit_task(self, data, caller, cpus, gpus, retries, new_arg):
        deps = self.deps(data, caller)
        if new_arg:
            self.missing.append(new_id())
            deps.append(self.missing[-1])
        self.submit(caller, spec(deps=deps, cpus=cpus, gpus=gpus, max_retries=retries))

    @rule(data=st.data(), caller=st.sampled_from(CALLERS))
    def call_actor(self, data, caller):
        s = spec(P.ACTOR_METHOD, actor_id=self.actor_id, cpus=0, deps=self.deps(data, caller))
        self.calls[caller].append(s.task_id)
        self.submit(caller, s)

    @precondition(lambda self: self.missing)
    @rule(data=st.data(), caller=st.sampled_from(CALLERS))
    def put_argument(self, data, caller):
        object_id = data.draw(st.sampled_from(self.missing))
        self.missing.remove(object_id)
        self.held[caller].add(object_id)
        self.do(E.ObjectsPut(caller, [inline(object_id)], [b"v"]))

    @rule(data=st.data(), caller=st.sampled_from(CALLERS))
    def drop_ref(self, data, caller):
        if self.held[caller]:
            object_id = data.draw(st.sampled_from(sorted(self.held[caller])))
            self.held[caller].discard(object_id)
            self.do(E.RefsRemoved(caller, [object_id]))

    @rule(caller=st.sampled_from(CALLERS), cpus=st.sampled_from([0.5, 1, 2]))
    def request_lease(self, caller, cpus):
        self.do(E.LeaseRequested(caller, new_id(), {"CPU": int(cpus * 10000)}))

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def return_lease(self, data):
        lease_id = data.draw(st.sampled_from(sorted(self.leases)))
        self.do(E.LeaseReturned(self.leases.pop(lease_id), lease_id))

    @rule()
    def workers_say_hello(self):
        self.apply(self.node.start_workers())

    @precondition(lambda self: self.running)
    @rule(data=st.data(), exiting=st.booleans())
    def finish(self, data, exiting):
        execute = self.running.pop(data.draw(st.sampled_from(sorted(self.running))))
        if execute.worker_id in self.node.state.pool.workers:
            # Actors never leave on their own here (exit_actor has unit tests),
            # so every call that does not run yet will.
            exiting = exiting and execute.task.spec.kind == P.TASK
            self.apply(self.node.done(execute, exiting=exiting))
            if exiting:
                self.leaving.add(execute.worker_id)     # max_calls: it exits now

    @precondition(lambda self: self.leaving)
    @rule()
    def reap(self):
        for worker_id in sorted(self.leaving):
            self.leaving.discard(worker_id)
            for task_id, execute in list(self.running.items()):
                if execute.worker_id == worker_id:
                    del self.running[task_id]
            self.do(E.WorkerExited(worker_id, 1, 0))

    @precondition(lambda self: self.node.state.pool.workers)
    @rule(data=st.data())
    def crash_worker(self, data):
        worker_id = data.draw(st.sampled_from(sorted(self.node.state.pool.workers)))
        for task_id, execute in list(self.running.items()):
            if execute.worker_id == worker_id:
                del self.running[task_id]     # a retry comes back as a new Execute
        self.do(E.WorkerExited(worker_id, 1, -9))

    @precondition(lambda self: self.node.state.pool.workers)
    @rule(data=st.data(), block=st.booleans())
    def block_or_unblock(self, data, block):
        worker_id = data.draw(st.sampled_from(sorted(self.node.state.pool.workers)))
        self.do((E.WorkerBlocked if block else E.WorkerUnblocked)(worker_id))

    # -- invariants -----------------------------------------------------------
    @invariant()
    def resources_add_up(self):
        state = self.node.state
        resources = state.resources
        held = Counter()
        for task in state.scheduler.running.values():
            for name, amount in task.demand.items():
                if not (task.blocked and name == "CPU"):
                    held[name] += amount
        for worker in state.pool.workers.values():     # GPUs kept until a worker is gone
            if worker.held_task is not None:
                for name, amount in worker.held_task.demand.items():
                    if name == "GPU":
                        held[name] += amount
        for name, total in resources.totals.items():
            assert resources.available[name] == total - held[name]
            assert resources.available[name] <= total
            if name != "CPU":
                assert resources.available[name] >= 0

    @invariant()
    def objects_live_while_held_or_needed(self):
        objects = self.node.state.objects
        for entry in objects.entries.values():
            assert entry.refcount >= 0
        for caller, held in self.held.items():
            for object_id in held:
                assert objects.get(object_id) is not None, "freed while held"
        for task_id, needed in self.needs.items():
            for object_id in needed:
                task = self.tasks.get(task_id)
                assert objects.get(object_id) is not None, (
                    f"freed while a task needs it ({task.spec.kind if task else None}, "
                    f"{task.state if task else 'never ran'})")

    @invariant()
    def leased_workers_are_busy_with_their_lease(self):
        state = self.node.state
        for lease_id, task in state.leases.held.items():
            assert task.worker is not None and task.worker.task is task
            assert state.scheduler.running.get(lease_id) is task
        for lease_id, worker_id in self.leases.items():
            worker = state.pool.workers.get(worker_id)
            assert worker is None or worker.task is state.leases.held.get(lease_id)

    @invariant()
    def results_reach_their_owner_at_most_once(self):
        assert not [i for i, n in self.results.items() if n > 1]

    @invariant()
    def actor_calls_run_in_order_per_caller(self):
        for caller, ran in self.calls_run.items():
            order = {task_id: i for i, task_id in enumerate(self.calls[caller])}
            firsts = list(dict.fromkeys(ran))     # a retried call may run twice
            assert [order[t] for t in firsts] == sorted(order[t] for t in firsts)

    def return_all_leases(self):
        while self.leases:
            lease_id = min(self.leases)
            self.do(E.LeaseReturned(self.leases.pop(lease_id), lease_id))

    def teardown(self):
        # Drain: every argument arrives, every worker answers, every task ends.
        for _ in range(200):
            self.return_all_leases()
            if self.leaving:
                self.reap()
            for object_id in list(self.missing):
                self.missing.remove(object_id)
                self.held[CALLERS[0]].add(object_id)
                self.do(E.ObjectsPut(CALLERS[0], [inline(object_id)], [b"v"]))
            self.apply(self.node.start_workers())
            self.return_all_leases()        # (each return may grant a queued one)
            if not self.running:
                break
            for task_id in sorted(self.running):
                execute = self.running.pop(task_id)
                if execute.worker_id in self.node.state.pool.workers:
                    self.apply(self.node.done(execute))
        counts = self.node.state.counts
        assert counts["submitted"] == counts["ended"], counts
        assert not self.node.state.leases.queued and not self.node.state.leases.held
        wanted = [i for i, caller in self.owner_of.items() if i in self.held[caller]]
        unfinished = [i for i in wanted if self.results[i] != 1]
        assert not unfinished, f"{len(unfinished)} results never reached their owner"
        task_module.STRICT = task_module.strict()


NodeMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_node_state_machine = pytest.mark.filterwarnings("ignore")(NodeMachine.TestCase)

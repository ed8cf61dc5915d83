"""NodeState's lease table (sched/state/leases.py) driven by event sequences:
a lease is placed like a task, comes back through its worker, is recalled
when another client waits, and its worker's death reaches the lessee."""
import pytest

from state_util import Node, inline, new_id, of, pushed, spec, value_of
from zray.exceptions import WorkerCrashedError
from zray.sched import task as task_module
from zray.sched.state import commands as C, events as E
from zray.sched.task import TaskState
from zray.transport import protocol as P

CPU = {"CPU": 10000}


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setattr(task_module, "STRICT", True)


def told(commands, msg_type, identity=b"driver"):
    return [c.fields for c in of(C.TellClient, commands)
            if c.msg_type == msg_type and c.identity == identity]


def leased(node, client=b"driver", demand=CPU):
    """Ask for a lease, start the worker it needs; (lease id, worker id)."""
    lease_id = new_id()
    out = node.do(E.LeaseRequested(client, lease_id, demand))
    out += node.start_workers(out)
    ((granted_id, worker_id),) = told(out, P.LEASED, client)
    assert granted_id == lease_id and worker_id is not None
    return lease_id, worker_id


def test_a_lease_holds_its_demand_until_its_worker_returns_it():
    node = Node(cpus=2)
    node.driver()
    lease_id, worker_id = leased(node)
    assert node.state.resources.available["CPU"] == 10000      # one of two CPUs lent
    assert node.state.counts == {"submitted": 0, "ended": 0}    # not a task
    out = node.do(E.LeaseReturned(b"another", lease_id))       # only its worker returns it
    assert node.state.resources.available["CPU"] == 10000
    out = node.do(E.LeaseReturned(worker_id, lease_id))
    assert node.state.resources.available["CPU"] == 20000
    # Idle again: the next task goes to it, no new process.
    out = node.submit(spec())
    assert [e.worker_id for e in of(C.Execute, out)] == [worker_id]


def test_a_lease_waits_in_the_queue_like_a_task():
    node = Node(cpus=1)
    node.driver()
    first, worker_id = leased(node)
    second = new_id()
    out = node.do(E.LeaseRequested(b"driver", second, CPU))
    assert not told(out, P.LEASED)                  # one CPU, held by the first
    out = node.do(E.LeaseReturned(worker_id, first))
    assert told(out, P.LEASED) == [(second, worker_id)]


def test_results_of_pushed_tasks_are_held_for_the_lessee_and_errors_recorded():
    node = Node(cpus=1)
    node.driver()
    lease_id, worker_id = leased(node)
    result = new_id()
    out = node.do(E.TaskDone(worker_id, new_id(), [inline(result, True)], [b"x"], False,
                             "f: boom", b"driver"))
    assert of(C.RecordError, out)
    assert result in node.state.clients[b"driver"].held
    assert node.state.leases.held[lease_id].state is TaskState.RUNNING   # the lease goes on
    assert node.state.may_finish(worker_id, new_id())     # any task its lessee pushed


def test_a_client_without_a_lease_gets_one_back_from_the_holder():
    node = Node(cpus=1)
    node.driver()
    node.driver(b"other")
    lease_id, worker_id = leased(node)
    own_next = new_id()
    node.do(E.LeaseRequested(b"driver", own_next, CPU))     # the holder wants more
    out = node.submit(spec(), client=b"other")
    assert told(out, P.RECALL) == [(lease_id, None)]
    out = node.do(E.LeaseRequested(b"other", new_id(), CPU))
    assert not told(out, P.RECALL)                  # one recall at a time
    out = node.do(E.LeaseReturned(worker_id, lease_id))
    # The other client's task runs; the holder's own request went behind it.
    (execute,) = of(C.Execute, out)
    assert execute.task.spec.owner == b"other" and not told(out, P.LEASED)


def test_the_lessees_own_requests_do_not_recall_its_leases():
    node = Node(cpus=1)
    node.driver()
    leased(node)
    out = node.do(E.LeaseRequested(b"driver", new_id(), CPU))
    assert not told(out, P.RECALL)


def test_a_leased_worker_dies_its_lessee_hears_why_and_a_retry_is_counted():
    node = Node(cpus=1)
    node.driver()
    lease_id, worker_id = leased(node)
    out = node.do(E.WorkerExited(worker_id, 100, -9))
    ((recalled_id, why),) = told(out, P.RECALL)
    assert recalled_id == lease_id and "SIGKILL" in why
    assert node.state.resources.available["CPU"] == 10000
    # The lessee resubmits the task it was running, marked attempted.
    retried = spec(max_retries=1, options={"attempted": worker_id})
    out = node.submit(retried)
    out += node.start_workers(out)
    (execute,) = of(C.Execute, out)
    assert execute.task.retries_left == 0
    failed = spec(max_retries=0, options={"attempted": worker_id})
    out = node.submit(failed)
    assert pushed(out) == {failed.return_ids[0]: True}
    (push,) = of(C.PushObject, out)
    error = value_of(push)
    assert isinstance(error, WorkerCrashedError) and "SIGKILL" in str(error)


def test_the_lessee_leaves_a_lease_not_given_back_at_once_kills_its_worker():
    node = Node(cpus=2)
    node.driver()
    node.do(E.Tick(0.0, 1000.0))
    _lease, worker_id = leased(node)
    node.do(E.LeaseRequested(b"driver", new_id(), CPU))
    node.do(E.LeaseRequested(b"driver", new_id(), {"CPU": 20000}))   # waits for both CPUs
    out = node.do(E.ClientLeft(b"driver"))
    assert not of(C.KillWorker, out) and not node.state.leases.queued
    out = node.do(E.Tick(0.5, 1000.5))
    assert not of(C.KillWorker, out)            # it may still come back
    out = node.do(E.Tick(2.0, 1002.0))
    assert [k.worker_id for k in of(C.KillWorker, out)] == [worker_id]
    out = node.do(E.WorkerExited(worker_id, 100, -9))
    assert not node.state.leases.held and not node.state.leases.orphans
    assert node.state.resources.available["CPU"] == 20000


def test_the_lessee_leaves_a_lease_given_back_in_time_keeps_its_worker():
    node = Node(cpus=1)
    node.driver()
    node.do(E.Tick(0.0, 1000.0))
    lease_id, worker_id = leased(node)
    node.do(E.ClientLeft(b"driver"))
    node.do(E.LeaseReturned(worker_id, lease_id))      # its RELEASE, after its BYE
    out = node.do(E.Tick(2.0, 1002.0))
    assert not of(C.KillWorker, out)
    node.driver(b"next")
    out = node.submit(spec(), client=b"next")
    assert [e.worker_id for e in of(C.Execute, out)] == [worker_id]


def test_a_lease_nobody_can_fit_or_with_gpus_is_refused():
    node = Node(cpus=1)
    node.driver()
    for demand in ({"CPU": 20000}, {"GPU": 10000}, {"CPU": -1}):
        lease_id = new_id()
        out = node.do(E.LeaseRequested(b"driver", lease_id, demand))
        assert told(out, P.LEASED) == [(lease_id, None)]


def test_with_peers_a_lease_that_cannot_be_placed_at_once_is_refused():
    node = Node(cpus=1)
    node.driver()
    resources = {"CPU": 4}
    node.do(E.PeerSeen("peer-b", {"tcp_address": "tcp://b:1", "resources": resources,
                                  "available": resources, "queued": 0}))
    assert node.state.forwarding.peers
    lease_id = new_id()
    out = node.do(E.LeaseRequested(b"driver", lease_id, CPU))
    assert told(out, P.LEASED) == [(lease_id, None)]        # no worker yet: refused
    assert not node.state.leases.queued


def test_work_reported_past_the_node_is_counted_and_dropped_with_its_reporter():
    node = Node(cpus=1)
    node.driver()
    lease_id, worker_id = leased(node)
    work = node.state.direct_work
    node.do(E.WorkReported(worker_id, [(b"t1", "f")], 2, 5, 0, 0))
    node.do(E.WorkReported(b"driver", [], 0, 0, 0, 3))
    assert work.statistics() == {"running": 1, "queued": 2, "waiting_for_lease": 3,
                                 "finished_tasks": 5, "finished_calls": 0}
    node.do(E.WorkReported(worker_id, [], 0, 8, 1, 0))    # counts are totals so far
    node.do(E.WorkReported(worker_id, [], 0, 4, 0, 0))    # one that shrinks adds nothing
    node.do(E.WorkReported(b"stranger", [(b"t2", "g")], 9, 99, 99, 9))   # not a client
    assert work.statistics() == {"running": 0, "queued": 0, "waiting_for_lease": 3,
                                 "finished_tasks": 8, "finished_calls": 1}
    node.do(E.WorkerExited(worker_id, 123, -9))
    node.do(E.ClientLeft(b"driver"))
    # What ran and waited there is gone; what finished stays counted.
    assert work.statistics() == {"running": 0, "queued": 0, "waiting_for_lease": 0,
                                 "finished_tasks": 8, "finished_calls": 1}
    assert lease_id not in node.state.leases.held

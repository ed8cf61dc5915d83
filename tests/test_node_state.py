"""NodeState driven by event sequences: no sockets, no processes, no files."""
import pytest

from state_util import Node, inline, new_id, of, pushed, shm_header, spec, value_of
from zray.exceptions import (ObjectLostError, ObjectStoreFullError, RayActorError,
                             WorkerCrashedError)
from zray.plasma.store import IN_MEMORY, ON_DISK
from zray.sched import task as task_module
from zray.sched.state import commands as C, events as E, forwarding
from zray.sched.task import IllegalTransition, TaskState
from zray.transport import protocol as P


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setattr(task_module, "STRICT", True)


def test_illegal_transition_raises_in_strict_mode():
    node = Node()
    node.driver()
    node.submit(spec())
    task = next(iter(node.state.scheduler.queues.values()))[0]
    with pytest.raises(IllegalTransition, match="READY -> DONE"):
        task.to(TaskState.DONE)


def test_illegal_transition_is_only_logged_in_production(monkeypatch, caplog):
    monkeypatch.setattr(task_module, "STRICT", False)
    node = Node()
    node.driver()
    node.submit(spec())
    task = next(iter(node.state.scheduler.queues.values()))[0]
    task.to(TaskState.DONE)
    assert "illegal task transition READY -> DONE" in caplog.text


def test_task_lifecycle_submit_start_worker_execute_done_push():
    node = Node(cpus=2)
    node.driver()
    s = spec()
    out = node.submit(s)
    assert len(of(C.StartWorker, out)) == 1 and not of(C.Execute, out)
    out = node.start_workers(out)
    (execute,) = of(C.Execute, out)
    assert execute.task.spec.task_id == s.task_id and execute.task.state is TaskState.RUNNING
    assert node.state.resources.available["CPU"] == 10000
    out = node.done(execute)
    assert pushed(out) == {s.return_ids[0]: False}
    assert execute.task.state is TaskState.DONE
    assert node.state.resources.available == node.state.resources.totals
    assert node.state.counts == {"submitted": 1, "ended": 1}
    # The worker is idle again: the next task goes to it, no new process.
    out = node.submit(spec())
    assert len(of(C.Execute, out)) == 1 and not of(C.StartWorker, out)


def test_arguments_arrive_late():
    node = Node()
    node.driver()
    node.start_workers(node.do(E.WorkersWanted(1)))
    arg = new_id()
    out = node.submit(spec(deps=[arg]))
    assert not of(C.Execute, out)           # an idle worker, but the argument is missing
    out = node.do(E.ObjectsPut(b"driver", [inline(arg)], [b"v"]))
    (execute,) = of(C.Execute, out)
    assert [d.object_id for d in execute.deps] == [arg]


def test_worker_killed_mid_task_is_retried_then_fails_with_worker_crashed():
    node = Node()
    node.driver()
    s = spec(max_retries=1)
    out = node.start_workers(node.submit(s))
    (first,) = of(C.Execute, out)
    out = node.do(E.WorkerExited(first.worker_id, 100, -9))
    assert not pushed(out)                  # retried, not failed
    out = node.start_workers(out)
    (second,) = of(C.Execute, out)
    assert second.worker_id != first.worker_id and second.task is first.task
    out = node.do(E.WorkerExited(second.worker_id, 101, -9))
    assert pushed(out) == {s.return_ids[0]: True}
    error = value_of(of(C.PushObject, out)[0])
    assert isinstance(error, WorkerCrashedError)
    assert "SIGKILL" in str(error) and "after 1 retries" in str(error)
    assert of(C.ReportError, out)[0].text == str(error)
    assert second.task.state is TaskState.FAILED
    assert node.state.resources.available == node.state.resources.totals
    assert node.state.counts == {"submitted": 1, "ended": 1}


def test_max_calls_worker_leaves_and_gets_no_more_tasks():
    node = Node(cpus=1)
    node.driver()
    out = node.start_workers(node.submit(spec(max_calls=1)))
    (execute,) = of(C.Execute, out)
    out = node.submit(spec())               # waits: the only CPU is busy
    assert not of(C.Execute, out)
    out = node.done(execute, exiting=True)
    assert not [c for c in of(C.Execute, out) if c.worker_id == execute.worker_id]
    assert of(C.StartWorker, out)           # a fresh worker for the next task
    out = node.do(E.WorkerExited(execute.worker_id, 100, 0))
    assert node.state.pool.workers.keys().isdisjoint({execute.worker_id})


def test_blocked_worker_lends_its_cpu_and_the_cap_warns_drivers():
    node = Node(cpus=1, max_workers=1)
    node.driver()
    out = node.start_workers(node.submit(spec()))
    (parent,) = of(C.Execute, out)
    out = node.submit(spec(), client=parent.worker_id)   # a nested task
    assert not of(C.Execute, out) and not of(C.StartWorker, out)
    out = node.do(E.WorkerBlocked(parent.worker_id))
    assert node.state.resources.available["CPU"] == 10000   # lent back
    (warning,) = of(C.WarnDrivers, out)
    assert "max_workers" in warning.message and "deadlock" in warning.message
    out = node.do(E.WorkerUnblocked(parent.worker_id))
    assert node.state.resources.available["CPU"] == 0


def test_object_kept_while_held_or_needed_by_a_pending_task():
    node = Node()
    node.driver()
    arg = new_id()
    node.do(E.ObjectsPut(b"driver", [shm_header(arg, 100)], []))
    out = node.start_workers(node.submit(spec(deps=[arg])))
    (execute,) = of(C.Execute, out)
    node.do(E.RefsRemoved(b"driver", [arg]))
    assert node.state.objects.get(arg) is not None and not node.disk.unlinked
    node.done(execute)
    assert node.state.objects.get(arg) is None
    assert node.disk.unlinked == [f"/shm/{arg.hex()}"]


def test_dropped_driver_releases_what_it_held():
    node = Node()
    node.driver()
    held = new_id()
    node.do(E.ObjectsPut(b"driver", [inline(held)], [b"v"]))
    node.do(E.ClientLeft(b"driver"))
    assert node.state.objects.get(held) is None


def freed_then_asked_for(node):
    """Put an object, drop it, then bring a copy of its ref back (pickled
    outside zray) and ask for it; the commands of the ask."""
    node.driver()
    gone = new_id()
    node.do(E.ObjectsPut(b"driver", [inline(gone)], [b"v"]))
    node.do(E.RefsRemoved(b"driver", [gone]))
    assert node.state.objects.get(gone) is None
    node.do(E.RefsAdded(b"driver", [gone]))
    return gone, node.do(E.Subscribed(b"driver", [gone]))


def test_a_freed_object_asked_for_again_fails_at_once_on_a_node_alone():
    from zray.exceptions import ObjectLostError
    gone, out = freed_then_asked_for(Node())
    (push,) = of(C.PushObject, out)
    assert push.entry.object_id == gone and push.entry.is_error
    assert isinstance(value_of(push), ObjectLostError)


def test_a_freed_object_asked_for_again_waits_on_a_node_with_peers():
    # Another node may still have it: the ask waits (the peer protocol fetches).
    node = Node()
    node.do(E.ClientJoined(b"pnode-b-0000000000", "peer", 7))
    _, out = freed_then_asked_for(node)
    assert not of(C.PushObject, out)


def test_spilling_decisions_oldest_first_then_disk_then_full_store_error():
    node = Node(store_bytes=3000)
    node.driver()
    ids = [new_id() for _ in range(3)]
    for object_id in ids:
        node.do(E.ObjectsPut(b"driver", [shm_header(object_id, 1000)], []))
    out = node.do(E.ReserveRequested(b"driver", new_id(), 1500))
    assert of(C.Reserved, out)[0].where == IN_MEMORY
    # The two oldest are copied off the loop; readers keep their files meanwhile.
    assert [c[0] for c in node.disk.copies] == ids[:2] and not node.disk.unlinked
    node.finish_copies()
    assert node.disk.unlinked == [f"/shm/{ids[0].hex()}", f"/shm/{ids[1].hex()}"]
    assert node.state.objects.get(ids[0]).location[0] == f"/spill/{ids[0].hex()}"
    out = node.do(E.ReserveRequested(b"driver", new_id(), 4000))   # bigger than memory
    assert of(C.Reserved, out)[0].where == ON_DISK
    node.disk.free = 100
    with pytest.raises(ObjectStoreFullError, match="larger than the whole object store"):
        node.do(E.ReserveRequested(b"driver", new_id(), 4000))


# == actors ======================================================================
def make_actor(node, max_restarts=0, max_task_retries=0):
    actor_id = new_id()
    creation = spec(P.ACTOR_CREATE, actor_id=actor_id, cpus=0, returns=0,
                    options={"max_restarts": max_restarts, "max_task_retries": max_task_retries})
    owner = next(c for c in node.state.clients.values() if c.kind == "driver").identity
    out = node.start_workers(node.submit(creation, client=owner))
    (execute,) = of(C.Execute, out)
    out = node.done(execute)
    return actor_id, execute.worker_id


def call(actor_id, deps=()):
    return spec(P.ACTOR_METHOD, actor_id=actor_id, cpus=0, deps=deps)


def test_actor_calls_run_in_submission_order_per_caller_and_callers_do_not_wait():
    node = Node()
    node.driver(b"A")
    node.driver(b"B")
    actor_id, worker_id = make_actor(node)
    slow = new_id()
    a1, a2 = call(actor_id, deps=[slow]), call(actor_id)
    b1 = call(actor_id)
    sent = []
    for s, caller in ((a1, b"A"), (a2, b"A"), (b1, b"B")):
        sent += of(C.Execute, node.submit(s, client=caller))
    # B's call goes; A's second call waits behind A's first, whose argument is missing.
    assert [c.task.spec.task_id for c in sent] == [b1.task_id]
    out = node.do(E.ObjectsPut(b"B", [inline(slow)], [b"v"]))
    assert [c.task.spec.task_id for c in of(C.Execute, out)] == [a1.task_id, a2.task_id]
    assert all(c.worker_id == worker_id for c in of(C.Execute, out))


def test_cross_caller_dependency_does_not_deadlock():
    node = Node()
    node.driver(b"A")
    node.driver(b"B")
    actor_id, _ = make_actor(node)
    b1 = call(actor_id)
    a1 = call(actor_id, deps=[b1.return_ids[0]])   # A waits on B's result
    assert not of(C.Execute, node.submit(a1, client=b"A"))
    (b_exec,) = of(C.Execute, node.submit(b1, client=b"B"))
    out = node.done(b_exec)
    assert [c.task.spec.task_id for c in of(C.Execute, out)] == [a1.task_id]


def test_actor_restart_fails_the_call_in_flight_and_recreates():
    node = Node()
    node.driver()
    actor_id, worker_id = make_actor(node, max_restarts=1)
    c1 = call(actor_id)
    node.submit(c1)
    out = node.do(E.WorkerExited(worker_id, 100, -9))
    assert pushed(out) == {c1.return_ids[0]: True}
    assert "being restarted" in of(C.ReportError, out)[0].text
    out = node.start_workers(out)
    (creation,) = of(C.Execute, out)
    assert creation.task.spec.kind == P.ACTOR_CREATE
    c2 = call(actor_id)
    assert not of(C.Execute, node.submit(c2))   # queued until __init__ is done
    out = node.done(creation)
    assert [c.task.spec.task_id for c in of(C.Execute, out)] == [c2.task_id]


def test_actor_task_retries_run_the_call_again_first_in_line():
    node = Node()
    node.driver()
    actor_id, worker_id = make_actor(node, max_restarts=1, max_task_retries=1)
    c1, c2 = call(actor_id), call(actor_id)
    node.submit(c1)
    node.submit(c2)
    out = node.start_workers(node.do(E.WorkerExited(worker_id, 100, -9)))
    assert not pushed(out)
    (creation,) = of(C.Execute, out)
    out = node.done(creation)
    assert [c.task.spec.task_id for c in of(C.Execute, out)] == [c1.task_id, c2.task_id]


def attempted(actor_id, worker_id):
    """A direct call whose caller lost the actor's worker before the reply
    (core/direct.py), resubmitted through the node."""
    return spec(P.ACTOR_METHOD, actor_id=actor_id, cpus=0, options={"attempted": worker_id})


def test_direct_call_lost_before_the_node_saw_the_death_is_a_call_in_flight():
    for retries in (0, 1):
        node = Node()
        node.driver()
        actor_id, worker_id = make_actor(node, max_restarts=1, max_task_retries=retries)
        lost = attempted(actor_id, worker_id)
        assert not of(C.Execute, node.submit(lost))     # never sent to the dying worker
        out = node.do(E.WorkerExited(worker_id, 100, -9))
        if not retries:
            assert pushed(out) == {lost.return_ids[0]: True}
            assert "being restarted" in of(C.ReportError, out)[0].text
            continue
        assert not pushed(out)
        out = node.done(of(C.Execute, node.start_workers(out))[0])   # __init__, then the call
        assert [c.task.spec.task_id for c in of(C.Execute, out)] == [lost.task_id]


def test_direct_call_lost_after_the_actor_was_restarted():
    for retries in (0, 1):
        node = Node()
        node.driver()
        actor_id, old_worker = make_actor(node, max_restarts=1, max_task_retries=retries)
        out = node.start_workers(node.do(E.WorkerExited(old_worker, 100, -9)))
        new_worker = of(C.Execute, out)[0].worker_id
        assert new_worker != old_worker
        node.done(of(C.Execute, out)[0])                # alive again, on another worker
        lost = attempted(actor_id, old_worker)
        out = node.submit(lost)
        if retries:
            (execute,) = of(C.Execute, out)
            assert execute.worker_id == new_worker and execute.task.spec.task_id == lost.task_id
        else:
            assert pushed(out) == {lost.return_ids[0]: True}
            error = value_of(of(C.PushObject, out)[0])
            assert isinstance(error, RayActorError) and "SIGKILL" in str(error)


def test_direct_call_whose_results_reached_the_node_is_not_run_again():
    node = Node()
    node.driver()
    actor_id, worker_id = make_actor(node)
    lost = attempted(actor_id, worker_id)
    # The worker sent the results for the caller (DONE with a holder), then died.
    node.do(E.TaskDone(worker_id, lost.task_id, [inline(lost.return_ids[0])], [b"x"], False,
                       None, b"driver"))
    out = node.submit(lost)
    assert not of(C.Execute, out)
    assert pushed(out) == {lost.return_ids[0]: False}


def test_killed_actor_fails_later_calls():
    node = Node()
    node.driver()
    actor_id, worker_id = make_actor(node)
    out = node.do(E.KillActorRequested(actor_id, True))
    assert of(C.KillWorker, out) == [C.KillWorker(worker_id)]
    node.do(E.WorkerExited(worker_id, 100, -9))
    c = call(actor_id)
    out = node.submit(c)
    assert pushed(out) == {c.return_ids[0]: True}
    error = value_of(of(C.PushObject, out)[0])
    assert isinstance(error, RayActorError) and "killed by ray.kill()" in str(error)


def test_actor_exits_when_its_last_handle_goes():
    node = Node()
    node.driver()
    actor_id, worker_id = make_actor(node)
    node.do(E.RefsAdded(b"driver", [actor_id]))
    (execute,) = of(C.Execute, node.submit(call(actor_id)))
    assert not of(C.StopWorker, node.do(E.RefsRemoved(b"driver", [actor_id])))
    out = node.done(execute)                # the last call is in: now it may go
    assert of(C.StopWorker, out) == [C.StopWorker(worker_id)]


def test_actor_exits_when_the_object_holding_its_last_handle_goes():
    """The driver dropped its handle first; the handle inside a put object
    was the last one: freeing that object lets the actor go (it lived on)."""
    node = Node()
    node.driver()
    actor_id, worker_id = make_actor(node)
    node.do(E.RefsAdded(b"driver", [actor_id]))
    holder = new_id()
    node.do(E.ObjectsPut(b"driver", [(holder, P.INLINE, 1, None, (actor_id,), False)], [b"v"]))
    assert not of(C.StopWorker, node.do(E.RefsRemoved(b"driver", [actor_id])))
    out = node.do(E.RefsRemoved(b"driver", [holder]))
    assert of(C.StopWorker, out) == [C.StopWorker(worker_id)]


# == forwarding ==================================================================
def peer_info(cpus=2, gpus=1):
    resources = {"CPU": cpus, "GPU": gpus}
    return {"tcp_address": "tcp://peer:1", "resources": resources, "available": resources,
            "queued": 0}


def test_task_no_local_resources_fit_goes_to_a_peer_and_comes_back_on_its_death():
    node = Node(cpus=1)
    node.driver()
    s = spec(gpus=1, max_retries=1)
    out = node.submit(s)
    assert not of(C.Forward, out)           # infeasible here, no peer yet
    out = node.do(E.PeerSeen("peer1", peer_info()))
    (forward,) = of(C.Forward, out)
    assert forward.node_id == "peer1" and forward.spec.owner is None
    out = node.do(E.PeerGone("peer1"))      # one retry: back in the queue here
    assert of(C.DropPeerTransfers, out) == [C.DropPeerTransfers("peer1", set(s.return_ids))]
    assert not pushed(out)
    out = node.do(E.PeerSeen("peer2", peer_info()))
    assert of(C.Forward, out)[0].node_id == "peer2"
    out = node.do(E.PeerGone("peer2"))      # no retries left: failed
    assert pushed(out) == {s.return_ids[0]: True}
    assert "left the cluster" in of(C.ReportError, out)[0].text


def test_forwarded_task_is_done_when_its_results_are_back():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    s = spec(gpus=1)
    (forward,) = of(C.Forward, node.submit(s))
    out = node.do(E.ObjectsSealed([inline(s.return_ids[0])], [b"v"]))
    assert pushed(out) == {s.return_ids[0]: False}
    assert node.state.counts == {"submitted": 1, "ended": 1}
    assert not node.state.forwarding.forwarded


# == a driver that leaves ========================================================
def test_dead_driver_queued_tasks_are_dropped_and_nobody_is_told():
    node = Node(cpus=1)
    node.driver()
    waiting_on = new_id()
    specs = [spec() for _ in range(5)] + [spec(deps=[waiting_on]), spec(cpus=64)]
    out = []
    for s in specs:
        out += node.submit(s)
    node.start_workers(out)
    out = node.do(E.ClientLeft(b"driver"))
    assert not of(C.ReportError, out) and not of(C.RecordError, out)
    assert len(node.state.scheduler.running) == 1   # recycled when reaped, not dropped here
    assert node.state.scheduler.queued_count() == 0 and not node.state.scheduler.infeasible
    # The late argument wakes nothing: its task is gone.
    out = node.do(E.ObjectsPut(b"other", [inline(waiting_on)], [b"v"]))
    assert not of(C.Execute, out)


def test_dead_driver_running_tasks_workers_are_killed_then_cpus_come_back():
    node = Node(cpus=2)
    node.driver()
    out = []
    for _ in range(4):
        out += node.submit(spec(max_retries=3))
    executes = of(C.Execute, node.start_workers(out))
    assert len(executes) == 2 and node.state.resources.available["CPU"] == 0
    out = node.do(E.ClientLeft(b"driver"))
    assert sorted(c.worker_id for c in of(C.KillWorker, out)) == sorted(
        e.worker_id for e in executes)
    for pid, execute in enumerate(executes):
        out = node.do(E.WorkerExited(execute.worker_id, 200 + pid, -9))
        assert not of(C.Execute, out) and not of(C.StartWorker, out)   # not retried
        assert not of(C.RecordError, out)
        assert execute.task.state is TaskState.FAILED
    assert node.state.resources.available == node.state.resources.totals
    assert node.state.counts == {"submitted": 4, "ended": 4}
    # The node takes new work from another driver as usual.
    node.driver(b"next")
    out = node.start_workers(node.submit(spec(), client=b"next"))
    assert len(of(C.Execute, out)) == 1


def test_a_task_done_before_its_recycled_worker_dies_is_not_followed_by_another():
    node = Node(cpus=1)
    node.driver()
    node.driver(b"next")
    out = node.start_workers(node.submit(spec()))
    (execute,) = of(C.Execute, out)
    node.do(E.ClientLeft(b"driver"))
    out = node.done(execute)            # it finished as the kill was on its way
    assert not [c for c in of(C.Execute, node.submit(spec(), client=b"next"))
                if c.worker_id == execute.worker_id]
    node.do(E.WorkerExited(execute.worker_id, 300, -9))
    assert node.state.counts["ended"] == 1


def test_nested_tasks_of_a_dead_drivers_task_go_with_its_worker():
    node = Node(cpus=1)
    node.driver()
    out = node.start_workers(node.submit(spec()))
    (parent,) = of(C.Execute, out)
    node.do(E.WorkerBlocked(parent.worker_id))      # lends its CPU to its children
    out = node.submit(spec(), client=parent.worker_id)
    (child,) = of(C.Execute, node.start_workers(out))
    node.submit(spec(), client=parent.worker_id)    # queued behind the child
    out = node.do(E.ClientLeft(b"driver"))
    assert {c.worker_id for c in of(C.KillWorker, out)} == {parent.worker_id, child.worker_id}
    assert node.state.scheduler.queued_count() == 0
    # Submitted by the parent after the sweep, before it died: dropped when it is reaped.
    node.submit(spec(), client=parent.worker_id)
    node.do(E.WorkerExited(child.worker_id, 400, -9))
    node.do(E.WorkerExited(parent.worker_id, 401, -9))
    assert node.state.scheduler.queued_count() == 0 and not node.state.scheduler.running
    assert node.state.resources.available == node.state.resources.totals


def named_actor(node, name, detached=False, owner=b"driver"):
    actor_id = new_id()
    node.do(E.ActorNameReserved(name, actor_id))
    creation = spec(P.ACTOR_CREATE, actor_id=actor_id, cpus=1, returns=0,
                    options={"name": name, "detached": detached, "hold_resources": True})
    (execute,) = of(C.Execute, node.start_workers(node.submit(creation, client=owner)))
    node.done(execute)
    node.do(E.RefsAdded(owner, [actor_id]))
    return actor_id, execute.worker_id


def test_dead_driver_actors_exit_and_free_their_names_detached_ones_stay():
    node = Node(cpus=2)
    node.driver()
    node.driver(b"other")
    gone_id, gone_worker = named_actor(node, "gone")
    kept_id, kept_worker = named_actor(node, "kept", detached=True)
    node.do(E.RefsAdded(b"other", [gone_id]))       # another driver's handle keeps nothing alive
    queued = call(kept_id, deps=[new_id()])          # the dead driver's call on a detached actor
    node.submit(queued)
    out = node.do(E.ClientLeft(b"driver"))
    assert of(C.KillWorker, out) == [C.KillWorker(gone_worker)]
    with pytest.raises(ValueError, match="no live actor named 'gone'"):
        node.state.actors.get_by_name("gone")
    assert node.state.actors.get_by_name("kept")[0] == kept_id
    node.do(E.ActorNameReserved("gone", new_id()))   # the name is free again
    with pytest.raises(ValueError, match="already exists"):
        node.do(E.ActorNameReserved("kept", new_id()))
    assert queued.task_id not in {t.spec.task_id for a in node.state.actors.by_id.values()
                                  for t in a.queued()}
    node.do(E.WorkerExited(gone_worker, 500, -9))
    assert node.state.resources.available["CPU"] == 10000   # the detached one holds the other


def test_a_restarting_actor_goes_before_queued_tasks_of_its_shape():
    # Chaos test finding: a restart queued behind every task waiting for a
    # CPU left the actor's callers waiting for the whole queue.
    node = Node(cpus=1)
    node.driver()
    actor_id = new_id()
    creation = spec(P.ACTOR_CREATE, actor_id=actor_id, cpus=1, returns=0,
                    options={"max_restarts": 1, "max_task_retries": 1})
    out = node.start_workers(node.submit(creation))
    (execute,) = of(C.Execute, out)
    actor_worker = execute.worker_id
    node.done(execute)
    waiting = [spec(cpus=1) for _ in range(4)]
    out = []
    for task in waiting:
        out += node.submit(task)
    (running,) = of(C.Execute, node.start_workers(out))    # three wait for the CPU
    node.submit(call(actor_id))
    node.do(E.WorkerExited(actor_worker, 100, -9))
    out = node.done(running)
    out += node.start_workers(out)
    (next_up,) = of(C.Execute, out)
    assert next_up.task.spec.kind == P.ACTOR_CREATE


# == objects stay where they are made; lineage ===================================
def forwarded_and_located(node, s, peer="peer1", size=1000):
    """Forward ``s`` (it fits only a peer) and say its result stays on ``peer``."""
    out = node.submit(s)
    (forward,) = of(C.Forward, out)
    assert forward.node_id == peer
    return out + node.do(E.ObjectLocated(peer, shm_header(s.return_ids[0], size)))


def test_large_result_of_a_forwarded_task_stays_on_its_node_until_asked_for():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    s = spec(gpus=1)
    (result,) = s.return_ids
    out = forwarded_and_located(node, s)
    assert not of(C.WantObjects, out) and not pushed(out)   # nothing moves yet
    assert node.state.counts == {"submitted": 1, "ended": 1}
    assert not node.state.forwarding.forwarded
    out = node.do(E.Subscribed(b"driver", [result]))          # ray.get: now it moves
    assert of(C.WantObjects, out) == [C.WantObjects("peer1", [result], True)]
    out = node.do(E.ObjectsSealed([shm_header(result, 1000)], []))
    assert pushed(out) == {result: False}
    out = node.do(E.RefsRemoved(b"driver", [result]))
    assert of(C.ReleaseRemote, out) == [C.ReleaseRemote("peer1", [result])]
    assert not node.state.locations.where and not node.state.locations.lineage


def test_a_result_nobody_holds_any_more_is_let_go_where_it_is():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    s = spec(gpus=1)
    node.submit(s)
    node.do(E.RefsRemoved(b"driver", list(s.return_ids)))
    out = node.do(E.ObjectLocated("peer1", shm_header(s.return_ids[0], 1000)))
    assert of(C.ReleaseRemote, out) == [C.ReleaseRemote("peer1", list(s.return_ids))]
    assert node.state.counts == {"submitted": 1, "ended": 1}


def test_a_task_goes_to_the_node_holding_its_large_argument():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    first = spec(gpus=1)
    forwarded_and_located(node, first)
    second = spec(deps=[first.return_ids[0]])         # could run here, but its data is there
    node.start_workers(node.submit(second))
    forward = of(C.Forward, node.log)[-1]
    assert forward.spec.task_id == second.task_id and forward.node_id == "peer1"
    assert not of(C.WantObjects, node.log) and not of(C.Execute, node.log)


def test_a_task_that_must_run_here_pulls_its_remote_argument_first():
    node = Node(cpus=1)
    node.driver()
    busy = dict(peer_info(), available={"CPU": 0, "GPU": 0}, queued=3)
    node.do(E.PeerSeen("peer1", busy))                # no room there: it runs here
    first = spec(gpus=1)
    forwarded_and_located(node, first)
    (arg,) = first.return_ids
    out = node.submit(spec(deps=[arg]))
    assert of(C.WantObjects, node.log) == [C.WantObjects("peer1", [arg], True)]
    assert not of(C.StartWorker, out)
    out = node.start_workers(node.do(E.ObjectsSealed([shm_header(arg, 1000)], [])))
    (execute,) = of(C.Execute, out)
    assert [d.object_id for d in execute.deps] == [arg]


def test_a_task_sent_elsewhere_says_where_its_arguments_are():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    first = spec(gpus=1)
    forwarded_and_located(node, first)
    (arg,) = first.return_ids
    node.do(E.PeerSeen("peer2", dict(peer_info(), resources={"CPU": 2, "special": 1},
                                     available={"CPU": 2, "special": 1})))
    second = spec(deps=[arg], options=None)
    second = second._replace(resources={**second.resources, "special": 10000})
    (forward,) = of(C.Forward, node.submit(second))
    assert forward.node_id == "peer2"
    assert forward.spec.options[forwarding.LOCATIONS] == {arg: "peer1"}
    # The node running it pulls from where the argument is, not from us.
    there = Node(cpus=2)
    there.do(E.PeerSeen("peer1", peer_info()))
    there.do(E.ClientJoined(b"pfrom-origin", "peer", 9))
    out = there.do(E.TaskForwardedIn(b"pfrom-origin", "origin", forward.spec, None, [], [],
                                     []))
    assert of(C.WantObjects, out) == [C.WantObjects("peer1", [arg])]


def chain_on_peer(node, length, max_retries):
    """Tasks that only a peer fits, each taking the last one's result."""
    specs, deps = [], []
    for _ in range(length):
        s = spec(gpus=1, deps=deps, max_retries=max_retries)
        out = node.submit(s)
        assert of(C.Forward, out)[0].node_id == "peer1"
        node.do(E.ObjectLocated("peer1", shm_header(s.return_ids[0], 1000)))
        specs.append(s)
        deps = [s.return_ids[0]]
    return specs


def test_results_lost_with_their_node_are_remade_from_lineage_recursively():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    specs = chain_on_peer(node, 3, max_retries=1)
    results = [s.return_ids[0] for s in specs]
    assert set(node.state.locations.lineage) == set(results)
    node.do(E.Subscribed(b"driver", [results[-1]]))       # the driver waits for the last
    out = node.do(E.PeerGone("peer1"))
    assert of(C.DropPeerTransfers, out) == [C.DropPeerTransfers("peer1", set(results))]
    assert not pushed(out)                                 # no error: they will be remade
    out = node.do(E.PeerSeen("peer2", peer_info()))
    (forward,) = of(C.Forward, out)                        # the first of the chain only
    assert forward.spec.task_id == specs[0].task_id and forward.node_id == "peer2"
    for s in specs:
        out = node.do(E.ObjectLocated("peer2", shm_header(s.return_ids[0], 1000)))
        if s is not specs[-1]:
            (forward,) = of(C.Forward, out)                # the next, where its argument is
            assert forward.node_id == "peer2"
    assert of(C.WantObjects, out) == [C.WantObjects("peer2", [results[-1]], True)]
    assert node.state.counts == {"submitted": 6, "ended": 6}
    # Retries are spent: a second loss is final.
    out = node.do(E.PeerGone("peer2"))
    assert pushed(out) == {result: True for result in results}
    assert all("max_retries=1" in str(value_of(p)) for p in of(C.PushObject, out))


def test_a_lost_result_of_a_task_without_retries_fails_naming_its_node():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    (s,) = chain_on_peer(node, 1, max_retries=0)
    node.do(E.Subscribed(b"driver", list(s.return_ids)))
    out = node.do(E.PeerGone("peer1"))
    (push,) = of(C.PushObject, out)
    error = value_of(push)
    assert isinstance(error, ObjectLostError)
    assert s.return_ids[0].hex() in str(error) and "peer1" in str(error)


def test_a_put_whose_only_copy_was_on_a_dead_node_raises_object_lost_naming_both():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    put = new_id()                         # a ref found inside a value from peer1
    node.do(E.RefsAdded(b"driver", [put]))
    node.do(E.ObjectLocated("peer1", shm_header(put, 1000)))
    out = node.do(E.PeerGone("peer1"))
    assert of(C.DropPeerTransfers, out) == [C.DropPeerTransfers("peer1", set())]
    out = node.do(E.Subscribed(b"driver", [put]))
    error = value_of(of(C.PushObject, out)[0])
    assert isinstance(error, ObjectLostError)
    assert put.hex() in str(error) and "peer1" in str(error) and "lineage" in str(error)


def test_lineage_keeps_arguments_until_the_last_result_made_from_them_is_freed():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    first, second = chain_on_peer(node, 2, max_retries=1)
    (a,), (b,) = first.return_ids, second.return_ids
    out = node.do(E.RefsRemoved(b"driver", [a]))
    assert not of(C.ReleaseRemote, out)            # the second's lineage needs it
    out = node.do(E.RefsRemoved(b"driver", [b]))
    assert sorted(of(C.ReleaseRemote, out)) == sorted([C.ReleaseRemote("peer1", [b]),
                                                       C.ReleaseRemote("peer1", [a])])
    assert not node.state.locations.lineage and not node.state.objects.entries


def test_a_result_being_rerun_is_not_lost_and_another_copy_is_pulled_from():
    node = Node(cpus=1)
    node.driver()
    node.do(E.PeerSeen("peer1", peer_info()))
    node.do(E.PeerSeen("peer2", peer_info()))
    two = spec(gpus=1, returns=2, max_retries=1)
    (forward,) = of(C.Forward, node.submit(two))
    first, second = two.return_ids
    node.do(E.ObjectLocated(forward.node_id, shm_header(first, 1000)))   # one of two back
    other = "peer2" if forward.node_id == "peer1" else "peer1"
    copied = spec(gpus=1)
    (elsewhere,) = of(C.Forward, node.submit(copied))
    (made,) = copied.return_ids
    node.do(E.ObjectLocated(elsewhere.node_id, shm_header(made, 1000)))
    node.do(E.ObjectLocated(forward.node_id if elsewhere.node_id == other else other,
                            shm_header(made, 1000)))                  # a second copy
    node.do(E.Subscribed(b"driver", [made]))
    out = node.do(E.PeerGone(forward.node_id))
    assert not pushed(out)                   # the two-result task runs again; no error
    (drop,) = of(C.DropPeerTransfers, out)
    assert {first, second, made} <= drop.expected_again
    assert out.index(drop) < out.index(of(C.WantObjects, out)[-1])
    assert of(C.WantObjects, out)[-1] == C.WantObjects(other, [made], True)

"""The resource and scheduling state machines, driven without sockets or processes."""
import itertools

import pytest
from hypothesis import given, settings, strategies as st

from zray.sched import resources as R
from zray.sched.resources import UNIT, NodeResources, demand_from_options, to_fixed
from zray.sched.scheduler import (INFEASIBLE, RUNNING, Scheduler, infeasible_message,
                                  infeasible_report)
from zray.sched.task import Task
from zray.sched.worker_pool import IDLE, STARTING, WorkerPool
from zray.transport import protocol as P

_ids = itertools.count()


def make_task(num_cpus=1, num_gpus=None, resources=None, depth=0, name="f"):
    demand = demand_from_options(num_cpus, num_gpus, resources)
    task_id = next(_ids).to_bytes(16, "little")
    spec = P.TaskSpec(task_id, P.TASK, b"fn", name, (task_id + b"r",), (), (), demand,
                      0, 0, 1, None, None, {}, None)
    return Task(spec, [], depth)


def node(num_cpus=2, num_gpus=0, resources=None, gpu_ids=None):
    return NodeResources(R.totals_from_options(num_cpus, num_gpus, resources), gpu_ids)


def held(res, name):
    return res.totals.get(name, 0) - res.available.get(name, 0)


# == fixed point and option checking ==========================================
def test_fixed_point_has_no_drift():
    res = node(num_cpus=1)
    tenth = demand_from_options(0.1)
    for _ in range(10):
        res.acquire(tenth)
    assert res.available["CPU"] == 0
    assert not res.fits(tenth)
    for _ in range(10):
        res.release(tenth)
    assert res.available == res.totals
    assert to_fixed(0.1) + to_fixed(0.2) == to_fixed(0.3)


def test_describe_round_trips():
    assert R.describe(demand_from_options(0.5, 2, {"Custom": 1.25})) == \
        {"CPU": 0.5, "GPU": 2, "Custom": 1.25}


@pytest.mark.parametrize("kwargs, error, words", [
    ({"num_cpus": -1}, ValueError, "num_cpus"),
    ({"num_cpus": "2"}, TypeError, "num_cpus"),
    ({"num_cpus": True}, TypeError, "num_cpus"),
    ({"num_cpus": float("nan")}, ValueError, "finite"),
    ({"num_gpus": 1.5}, ValueError, "whole number"),
    ({"num_gpus": 0.00001}, ValueError, "precision"),
    ({"resources": {"CPU": 1}}, ValueError, "num_cpus"),
    ({"resources": {"GPU": 1}}, ValueError, "num_gpus"),
    ({"resources": {"Custom": -2}}, ValueError, "Custom"),
    ({"resources": {3: 1}}, TypeError, "names"),
    ({"resources": [("Custom", 1)]}, TypeError, "dict"),
])
def test_bad_demands_name_the_problem(kwargs, error, words):
    with pytest.raises(error, match=words):
        demand_from_options(**kwargs)


def test_node_totals_need_whole_gpus():
    with pytest.raises(ValueError, match="whole number"):
        R.totals_from_options(2, 0.5, {})
    assert R.totals_from_options(2, 0, {"Zero": 0}) == {"CPU": 2 * UNIT}


# == GPUs ======================================================================
def test_whole_gpus_get_distinct_ids():
    res = node(num_gpus=4, gpu_ids=[4, 5, 6, 7])
    a = res.acquire(demand_from_options(0, 2))
    b = res.acquire(demand_from_options(0, 2))
    ids = [g for g, _ in a["GPU"] + b["GPU"]]
    assert sorted(ids) == [4, 5, 6, 7]
    assert all(share == 1.0 for _, share in a["GPU"] + b["GPU"])
    assert not res.fits(demand_from_options(0, 0.1))


def test_fractional_gpus_pack_onto_one_device():
    res = node(num_gpus=2)
    half = demand_from_options(0, 0.5)
    first, second = res.acquire(half), res.acquire(half)
    assert first["GPU"][0][0] == second["GPU"][0][0]          # two tasks share one id
    assert first["GPU"] == [(first["GPU"][0][0], 0.5)]
    # The other GPU is still whole, so a whole-GPU task still fits.
    whole = res.acquire(demand_from_options(0, 1))
    assert whole["GPU"][0][0] != first["GPU"][0][0]
    res.release(half, first)
    res.release(half, second)
    res.release(demand_from_options(0, 1), whole)
    assert res.gpu_free == {0: UNIT, 1: UNIT} and res.available == res.totals


def test_fractions_that_do_not_fit_one_device_wait():
    res = node(num_gpus=2)
    big = demand_from_options(0, 0.6)
    res.acquire(big)
    res.acquire(big)                      # on the other GPU: 0.4 left on each
    assert res.available["GPU"] == to_fixed(0.8)
    assert not res.fits(big)              # 0.8 free in total, but no single GPU has 0.6
    assert res.feasible(big)


def test_missing_names_what_is_short():
    res = node(num_cpus=2, num_gpus=1, resources={"Custom": 1})
    assert res.missing(demand_from_options(1, None, {"Custom": 2})) == \
        {"Custom": (2 * UNIT, UNIT)}
    assert res.missing(demand_from_options(4, 2)) == \
        {"CPU": (4 * UNIT, 2 * UNIT), "GPU": (2 * UNIT, UNIT)}
    assert res.missing(demand_from_options(1, 1)) == {}


def test_gpu_ids_must_cover_the_count():
    with pytest.raises(ValueError, match="ids"):
        NodeResources({"GPU": 2 * UNIT}, gpu_ids=[0])


# == the scheduler ==============================================================
def run_all(sched, workers=100):
    pairs, want = sched.placements(list(range(workers)))
    return pairs


def test_tasks_queue_until_resources_free():
    sched = Scheduler(node(num_cpus=2))
    tasks = [make_task() for _ in range(5)]
    for task in tasks:
        sched.make_ready(task)
    placed = run_all(sched)
    assert placed == tasks[:2]
    assert all(t.state == RUNNING for t in placed)
    assert sched.queued_count() == 3
    sched.finish(placed[0].spec.task_id)
    assert run_all(sched) == [tasks[2]]


def test_want_counts_tasks_that_fit_without_a_worker():
    sched = Scheduler(node(num_cpus=4))
    for _ in range(10):
        sched.make_ready(make_task())
    for _ in range(3):
        sched.make_ready(make_task(num_cpus=0))
    pairs, want = sched.placements([])
    assert pairs == [] and want == 4 + 3     # 4 CPUs free, zero-CPU ones always fit
    pairs, want = sched.placements(["w1"])
    assert len(pairs) == 1 and want == 3 + 3
    # Shapes competing for the same CPUs are not double counted.
    sched2 = Scheduler(node(num_cpus=2))
    for n in (1, 2, 1, 2):
        sched2.make_ready(make_task(num_cpus=n))
    assert sched2.placements([])[1] == 2


def test_zero_cpu_tasks_run_beside_full_node():
    sched = Scheduler(node(num_cpus=2))
    sched.make_ready(make_task(num_cpus=2))
    sched.make_ready(make_task(num_cpus=1))
    free = make_task(num_cpus=0)
    sched.make_ready(free)
    placed = run_all(sched)
    assert free in placed and len(placed) == 2


def test_big_task_is_not_starved_by_small_ones():
    sched = Scheduler(node(num_cpus=2), skip_limit=3)
    first = make_task()
    sched.make_ready(first)
    run_all(sched)
    big = make_task(num_cpus=2)
    sched.make_ready(big)
    for _ in range(20):
        sched.make_ready(make_task())
    running = {first.spec.task_id}
    for _ in range(40):
        sched.make_ready(make_task())          # a steady stream of small tasks
        placed = run_all(sched)
        if big in placed:
            break
        running |= {t.spec.task_id for t in placed}
        sched.finish(sorted(running)[0])
        running.discard(sorted(running)[0])
    else:
        pytest.fail("the 2-CPU task never ran")
    assert list(sched.running) == [big.spec.task_id]      # and it runs alone


def test_reservation_keeps_only_what_the_starved_task_lacks():
    sched = Scheduler(node(num_cpus=2, num_gpus=1), skip_limit=2)
    holder = make_task(num_cpus=0, num_gpus=1)          # e.g. a GPU actor, for long
    sched.make_ready(holder)
    run_all(sched)
    waiting = make_task(num_cpus=1, num_gpus=1)
    sched.make_ready(waiting)
    for _ in range(10):                                 # CPU work flows past it
        small = make_task()
        sched.make_ready(small)
        assert run_all(sched) == [small]
        sched.finish(small.spec.task_id)
    assert waiting.skipped == 0                         # CPU tasks took nothing it lacks
    sched.finish(holder.spec.task_id)
    assert run_all(sched) == [waiting]


def test_nested_tasks_go_first():
    sched = Scheduler(node(num_cpus=1))
    parents = [make_task() for _ in range(3)]
    for task in parents:
        sched.make_ready(task)
    assert run_all(sched) == [parents[0]]
    child = make_task(depth=1)
    sched.make_ready(child)
    sched.block(parents[0])                    # parent waits on its child
    assert sched.resources.available["CPU"] == UNIT
    assert run_all(sched) == [child]           # not the next parent
    sched.finish(child.spec.task_id)
    sched.unblock(parents[0])
    assert run_all(sched) == []
    sched.finish(parents[0].spec.task_id)
    assert run_all(sched) == [parents[1]]


def test_blocked_task_that_finishes_gives_back_only_what_it_held():
    sched = Scheduler(node(num_cpus=2, num_gpus=1))
    task = make_task(num_cpus=1, num_gpus=1)
    sched.make_ready(task)
    run_all(sched)
    sched.block(task)
    sched.block(task)                          # twice is once
    other = make_task(num_cpus=2)
    sched.make_ready(other)
    assert run_all(sched) == [other]
    sched.finish(task.spec.task_id)            # still blocked: CPU already lent
    sched.finish(other.spec.task_id)
    assert sched.resources.available == sched.resources.totals
    assert sched.resources.gpu_free == {0: UNIT}


def test_unblock_may_overdraw_until_work_finishes():
    sched = Scheduler(node(num_cpus=1))
    parent, other = make_task(), make_task()
    sched.make_ready(parent)
    run_all(sched)
    sched.block(parent)
    sched.make_ready(other)
    run_all(sched)
    sched.unblock(parent)
    assert sched.resources.available["CPU"] == -UNIT
    sched.make_ready(make_task())
    assert run_all(sched) == []
    sched.finish(other.spec.task_id)
    sched.finish(parent.spec.task_id)
    assert sched.resources.available == sched.resources.totals


def test_keep_gpus_until_the_worker_is_gone():
    sched = Scheduler(node(num_cpus=2, num_gpus=1))
    task = make_task(num_gpus=1)
    sched.make_ready(task)
    run_all(sched)
    sched.finish(task.spec.task_id, keep_gpus=True)
    assert sched.resources.available == {"CPU": 2 * UNIT, "GPU": 0}
    nxt = make_task(num_gpus=1)
    sched.make_ready(nxt)
    assert run_all(sched) == []
    sched.release_gpus(task)
    assert run_all(sched) == [nxt]


def test_infeasible_tasks_are_parked_and_retried():
    res = node(num_cpus=2)
    sched = Scheduler(res)
    task = make_task(resources={"Custom": 1})
    sched.make_ready(task)
    assert task.state == INFEASIBLE and sched.infeasible == [task]
    assert sched.placements([1])[0] == []
    sched.retry_infeasible()
    assert sched.infeasible == [task]
    # A node with that resource "joins" (the cluster layer widens totals).
    res.totals["Custom"] = res.available["Custom"] = UNIT
    sched.retry_infeasible()
    assert sched.infeasible == [] and run_all(sched) == [task]


def test_discard_forgets_queued_waiting_and_infeasible_tasks():
    sched = Scheduler(node(num_cpus=1))
    queued, waiting, infeasible = make_task(), make_task(), make_task(num_cpus=5)
    sched.make_ready(queued)
    sched.make_ready(infeasible)
    for task in (queued, waiting, infeasible):
        sched.discard(task)
    sched.make_ready(waiting)                  # its arguments arrived after all
    assert sched.queues == {} and sched.infeasible == []
    assert run_all(sched) == []
    running = make_task()
    sched.make_ready(running)
    run_all(sched)
    sched.discard(running)                     # left to finish()
    assert sched.running == {running.spec.task_id: running}


def test_infeasible_report_and_message_name_what_is_missing():
    res = node(num_cpus=2)
    task = make_task(num_gpus=1, resources={"Custom": 2}, name="train")
    report = infeasible_report(task, res)
    assert report["name"] == "train" and report["kind"] == "task"
    assert report["missing"] == {"Custom": {"asked": 2, "total": 0},
                                 "GPU": {"asked": 1, "total": 0}}
    message = infeasible_message(task, res, {"CPU": 2})
    assert "train cannot be scheduled" in message
    assert "Custom 2" in message and "GPU 1" in message and "zray status" in message


def test_retried_task_goes_first():
    sched = Scheduler(node(num_cpus=1))
    a, b = make_task(), make_task()
    sched.make_ready(a)
    sched.make_ready(b)
    run_all(sched)
    sched.finish(a.spec.task_id)
    sched.requeue_front(a)
    assert run_all(sched) == [a]


# == the worker pool's policy (no processes started) ============================
class _FakeWorker:
    def __init__(self, state, blocked=False):
        self.state, self.blocked, self.exiting, self.idle_since = state, blocked, False, None


def pool_with(states, **kwargs):
    pool = WorkerPool(**kwargs)
    for i, state in enumerate(states):
        pool.workers[i] = _FakeWorker(state)
    return pool


def test_pool_starts_few_at_once_and_never_passes_the_cap():
    pool = pool_with([STARTING], max_workers=4, max_starting=2)
    assert pool.how_many_to_start(100) == 1          # one already starting
    assert pool.how_many_to_start(0) == 0
    pool = pool_with([IDLE] * 3, max_workers=4, max_starting=8)
    assert pool.how_many_to_start(100) == 1          # the cap


def test_pool_stops_only_surplus_idle_workers():
    pool = pool_with([IDLE] * 5, max_workers=10, soft_limit=2)
    assert pool.idle_to_stop(0.0, timeout_s=5) == []  # not idle long enough
    stop = pool.idle_to_stop(6.0, timeout_s=5)
    assert len(stop) == 3
    pool = pool_with([IDLE, "busy"], max_workers=10, soft_limit=2)
    assert pool.idle_to_stop(100.0, timeout_s=0) == []


def test_all_blocked():
    pool = pool_with([], max_workers=2)
    assert not pool.all_blocked()
    pool.workers = {1: _FakeWorker("busy", blocked=True), 2: _FakeWorker("busy", blocked=True)}
    assert pool.all_blocked()


# == property: random acquire/release never drift or overdraw ====================
_shapes = st.fixed_dictionaries({
    "num_cpus": st.sampled_from([0, 0.0001, 0.1, 0.25, 0.3333, 0.5, 1, 2]),
    "num_gpus": st.sampled_from([None, 0.1, 0.2, 0.25, 0.5, 0.7, 1, 2]),
    "resources": st.sampled_from([None, {"Custom": 0.3}, {"Custom": 1}, {"Other": 0.01}]),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _shapes, st.integers(0, 1000)), max_size=120))
def test_random_acquire_release_never_drifts_or_overdraws(ops):
    res = node(num_cpus=3, num_gpus=2, resources={"Custom": 1.5, "Other": 1})
    held_now = []
    for do_acquire, options, pick in ops:
        if do_acquire or not held_now:
            demand = demand_from_options(**options)
            if res.fits(demand):
                held_now.append((demand, res.acquire(demand)))
            else:
                with pytest.raises(ValueError):
                    res.acquire(demand)
        else:
            demand, ids = held_now.pop(pick % len(held_now))
            res.release(demand, ids)
        for name, total in res.totals.items():
            used = sum(d.get(name, 0) for d, _ in held_now)
            assert 0 <= res.available[name] == total - used
        for gpu, free in res.gpu_free.items():
            given_out = sum(to_fixed(share) for _, ids in held_now
                            for g, share in ids.get("GPU", ()) if g == gpu)
            assert 0 <= free == UNIT - given_out
    for demand, ids in held_now:
        res.release(demand, ids)
    assert res.available == res.totals
    assert set(res.gpu_free.values()) == {UNIT}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["submit", "dispatch", "finish", "block", "unblock"]),
                          _shapes, st.integers(0, 1000), st.integers(0, 3)), max_size=150))
def test_random_schedules_never_exceed_totals(ops):
    res = node(num_cpus=2, num_gpus=2, resources={"Custom": 1.5, "Other": 1})
    sched = Scheduler(res, skip_limit=2)
    for op, options, pick, workers in ops:
        running = list(sched.running.values())
        if op == "submit":
            task = make_task(**options, depth=pick % 3)
            sched.make_ready(task)
        elif op == "dispatch":
            before = dict(res.available)
            placed, _ = sched.placements(list(range(workers)))
            # A placement never overdraws; while a returning blocked task has
            # overdrawn the CPU, no CPU task is placed.
            for name, amount in res.available.items():
                assert amount >= min(0, before.get(name, 0))
            if before.get("CPU", 0) < 0:
                assert not any(t.demand.get("CPU") for t in placed)
        elif running and op == "finish":
            sched.finish(running[pick % len(running)].spec.task_id, keep_gpus=False)
        elif running and op == "block":
            sched.block(running[pick % len(running)])
        elif running and op == "unblock":
            sched.unblock(running[pick % len(running)])
        # Running tasks hold their demand, blocked ones all of it but their
        # CPU; nothing is handed out twice, and only CPU can be overdrawn.
        for name, total in res.totals.items():
            used = sum(t.demand.get(name, 0) for t in sched.running.values()
                       if not (t.blocked and name == "CPU"))
            assert res.available.get(name, 0) == total - used
            if name != "CPU":
                assert used <= total
    for task in list(sched.running.values()):
        sched.finish(task.spec.task_id)
    assert res.available == res.totals
    assert set(res.gpu_free.values()) == {UNIT}

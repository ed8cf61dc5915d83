"""Worker leases (core/lease.py, sched/state/leases.py): plain tasks go
straight to workers the driver leased from its node, with the results,
errors, retries and sharing they have through the node. Real processes; the
node's task counts show which way tasks went."""
import os
import sys
import threading
import time

import numpy as np
import psutil
import pytest

import zray as ray
from zray.core import lease as lease_module
from zray.exceptions import GetTimeoutError, RayTaskError, WorkerCrashedError

from cluster_util import wait_for
from conftest import run_script


@ray.remote
def add(x):
    return x + 1


@ray.remote
def wait_for_file(path, value):
    """Quick unless ``path`` is given; then runs until that file exists."""
    while path and not os.path.exists(path):
        time.sleep(0.01)
    return value


def runtime():
    return ray.api._runtime()


def node_tasks():
    return runtime().request("status")["tasks"]["submitted"]


def test_tasks_skip_the_node(ray_shared):
    assert ray.get(add.remote(0)) == 1
    before = node_tasks()
    assert ray.get([add.remote(i) for i in range(300)]) == list(range(1, 301))
    assert [ray.get(add.remote(i)) for i in range(20)] == list(range(1, 21))
    assert node_tasks() == before, "plain tasks went through the node"
    # ObjectRef arguments whose values are here, or come here, go along too.
    assert ray.get(add.remote(ray.put(1))) == 2
    assert ray.get([add.remote(add.remote(i)) for i in range(50)]) == list(range(2, 52))
    assert node_tasks() == before, "tasks with ObjectRef arguments went through the node"
    # Tasks that need the node still go through it: a ref nested in an argument.
    assert ray.get(first.remote([ray.put(1)])) == 1
    assert node_tasks() == before + 1


@ray.remote
def first(refs):
    return ray.get(refs[0])


def test_ref_arguments_of_every_kind_go_with_the_push(ray_shared):
    """Arguments that are results of leased tasks (small ones only in this
    process, big ones in shared memory), puts, errors, values holding refs."""
    @ray.remote
    def big(n):
        return np.full(400_000, n)       # past the inline limit: in shared memory

    @ray.remote
    def total(array, extra=0):
        return float(array.sum()) + extra

    @ray.remote
    def fails():
        raise ValueError("bad input")

    @ray.remote
    def holding():
        return [ray.put("inner")]

    @ray.remote
    def unwrap(refs):
        return refs[0]

    before = node_tasks()
    assert ray.get([total.remote(big.remote(i), extra=add.remote(i)) for i in range(6)]) == [
        400_000.0 * i + i + 1 for i in range(6)]
    shared = ray.put(np.ones(300_000))
    assert ray.get([total.remote(shared) for _ in range(10)]) == [300_000.0] * 10
    with pytest.raises(ValueError, match="bad input"):
        ray.get(add.remote(fails.remote()))
    # A value holding a ref: the worker borrows it and hands it back.
    inner = ray.get(unwrap.remote(holding.remote()))
    assert ray.get(inner) == "inner"
    assert node_tasks() == before, "tasks with ObjectRef arguments went through the node"


def test_a_task_waits_for_its_argument_without_holding_a_worker(ray_shared, tmp_path):
    """A task needing a long task's result waits in the driver, holding no
    worker (others run meanwhile), and is pushed once the result is here."""
    gate = str(tmp_path / "go")
    before = node_tasks()
    slow = wait_for_file.remote(gate, 7)
    after = add.remote(slow)
    assert ray.get([add.remote(i) for i in range(20)], timeout=60) == list(range(1, 21))
    ready, _ = ray.wait([after], timeout=0.2)
    assert not ready
    open(gate, "w").close()
    assert ray.get(after, timeout=60) == 8
    assert node_tasks() == before


def test_results_errors_and_refs_as_through_the_node(ray_shared):
    @ray.remote
    def big():
        return np.ones(400_000)          # past the inline limit: kept by the node for us

    @ray.remote
    def holding():
        return [ray.put("inner")]

    @ray.remote
    def fail():
        raise KeyError("leased boom")

    @ray.remote(num_returns=2)
    def pair():
        return 1, 2

    assert ray.get(big.remote()).sum() == 400_000
    assert ray.get(ray.get(holding.remote())[0]) == "inner"
    with pytest.raises(RayTaskError, match="leased boom"):
        ray.get(fail.remote())
    assert ray.get(pair.remote()) == [1, 2]
    # A leased task's result passed on, after it came and while on its way.
    first = add.remote(1)
    assert ray.get(add.remote(first)) == 3
    assert ray.get(add.remote(wait_for_file.remote(None, 41))) == 42
    assert ray.get(ray.get(ray.put([add.remote(5)]))[0]) == 6


def test_a_long_task_does_not_hold_up_the_tasks_queued_behind_it(ray_shared, tmp_path,
                                                                 monkeypatch):
    release = str(tmp_path / "release")
    # Every function counts as quick here, so tasks queue behind running ones
    # (on a busy machine a no-op's round trip may take longer than "quick").
    monkeypatch.setattr(lease_module, "QUICK_TASK_S", 60.0)
    monkeypatch.setattr(lease_module, "PIPELINE_AGE_S", 60.0)
    for i in range(3):
        ray.get(wait_for_file.remote(None, i))
    try:
        stuck = wait_for_file.remote(release, "long")
        brief = wait_for_file.remote(None, "brief")
        behind = [wait_for_file.remote(None, i) for i in range(4)]
        # Two CPUs: the second worker runs them, wherever they were queued first.
        assert ray.get([brief] + behind, timeout=60) == ["brief", 0, 1, 2, 3]
        with pytest.raises(GetTimeoutError):
            ray.get(stuck, timeout=0.2)
    finally:
        open(release, "w").close()
    assert ray.get(stuck) == "long"


def test_a_leased_worker_that_dies_is_retried_then_fails(ray_shared, tmp_path):
    marker = str(tmp_path / "died-once")

    @ray.remote(max_retries=1)
    def die_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "second try"

    @ray.remote(max_retries=0)
    def die():
        os._exit(3)

    ray.get(add.remote(0))
    assert ray.get(die_once.remote(marker), timeout=60) == "second try"
    with pytest.raises(WorkerCrashedError, match="exit code 3"):
        ray.get(die.remote(), timeout=60)
    assert ray.get(add.remote(1)) == 2         # leases go on with a new worker


def test_a_killed_actors_socket_does_not_hold_up_pushed_tasks(ray_shared):
    @ray.remote(num_cpus=2)
    class Greedy:
        def __init__(self):
            self.value = ray.get(add.remote(0))    # a lease from inside __init__

        def value_(self):
            return self.value

    greedy = Greedy.remote()
    assert ray.get(greedy.value_.remote()) == 1       # its direct socket is up
    ray.kill(greedy)        # what this process sends it now can never leave
    wait_for(lambda: ray.available_resources().get("CPU") == 2, 30,
             "the killed actor's CPUs to come back")

    @ray.remote
    class Counter:
        def increment(self):
            return 1

    counter = Counter.remote()
    assert ray.get(counter.increment.remote(), timeout=60) == 1

    @ray.remote
    def call(counter):
        return ray.get(counter.increment.remote())

    assert ray.get(call.remote(counter), timeout=60) == 1
    assert ray.get([add.remote(i) for i in range(5)], timeout=60) == [1, 2, 3, 4, 5]


def listens_on(pid, path):
    try:
        return any(c.laddr == path for c in psutil.Process(pid).net_connections(kind="unix"))
    except psutil.Error:
        return False


def test_malformed_pushes_leave_the_leased_worker_serving(ray_shared):
    import zmq

    from zray.transport import protocol as P

    # Actors of earlier tests exit once their last handle's release is sent
    # (batched): not while the pids below are taken.
    wait_for(lambda: not any(w.get("actor") for w in runtime().request("introspect")["workers"]),
             30, "the actors of earlier tests to exit")
    assert ray.get(add.remote(0)) == 1
    (lease,) = list(runtime().leases.leases.values())[:1] or [None]
    assert lease is not None, "no lease held after a task"
    path = P.worker_socket_path(runtime().node_info["session_dir"], lease.worker_id)
    # The worker the junk goes to (others may exit meanwhile by themselves,
    # idle above the soft limit): the one listening on that socket.
    pids = [w["pid"] for w in runtime().request("introspect")["workers"] if w.get("pid")]
    (pid,) = [p for p in pids if listens_on(p, path)]
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    try:
        socket.connect("ipc://" + path)
        actor_call = P.TaskSpec(b"t" * 16, P.ACTOR_METHOD, b"", "m", (b"r" * 20,), (), (), {},
                                0, 0, 1, b"a" * 20, "m", {}, None)
        plain_task = P.TaskSpec(b"u" * 16, P.TASK, b"", "f", (b"s" * 20,), (b"o" * 20,), (),
                                {}, 0, 0, 1, None, None, {}, None)
        for frames in ([b"junk"], [b"\x93\xc4\x04PUSH"], P.pack(P.RELEASE, 3),
                       P.pack(P.PUSH, actor_call, {}, [], []) + [b"x"],
                       # an argument's value that is not this node's object
                       P.pack(P.PUSH, plain_task, {}, [],
                              [(b"o" * 20, P.SHM, 0, ("/etc/passwd", 10), (), False)]),
                       # values that do not match its ObjectRef arguments
                       P.pack(P.PUSH, plain_task, {}, [], [])):
            socket.send_multipart(frames)
        assert ray.get([add.remote(i) for i in range(20)], timeout=60) == list(range(1, 21))
    finally:
        socket.close(0)
        context.term()
    os.kill(pid, 0)             # the leased worker still there


def test_the_cpu_comes_back_when_the_driver_stops_using_it(ray_shared):
    ray.get([add.remote(i) for i in range(10)])
    wait_for(lambda: ray.available_resources().get("CPU") == 2, 20,
             "the leased CPUs to come back after the linger")


def test_another_driver_gets_a_worker_while_this_one_keeps_them_busy(ray_shared):
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            ray.get([add.remote(i) for i in range(20)])

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(runtime().leases.leases) == 2, 30,
                 "this driver to hold both CPUs' workers")
        token = ray.api._session.daemons.token
        script = f"""
import zray as ray
ray.init(address={ray_shared['address']!r}, redis_password={token!r})

@ray.remote
def other(x):
    return x * 10

print("other driver:", ray.get(other.remote(4), timeout=60))
"""
        result = run_script(script, timeout=90)
        assert result.returncode == 0, result.stderr
        assert "other driver: 40" in result.stdout
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def test_leases_off_by_environment(tmp_path):
    script = """
import zray as ray
ray.init(num_cpus=1)

@ray.remote
def f(x):
    return x + 1

assert ray.get([f.remote(i) for i in range(50)]) == list(range(1, 51))
status = ray.api._runtime().request("status")
print("through the node:", status["tasks"]["submitted"])
ray.shutdown()
"""
    env = {"ZRAY_TEMP_DIR": str(tmp_path), "ZRAY_TASK_LEASES": "0"}
    result = run_script(script, env=env)
    assert result.returncode == 0, result.stderr
    assert "through the node: 50" in result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

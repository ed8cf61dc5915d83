"""Resources and scheduling with real processes: CPUs, GPUs (declared on a
GPU-less machine), custom and fractional resources, max_calls, workers on
demand, infeasible tasks.

Concurrency is measured by the tasks themselves: each appends ``enter`` and
``exit`` lines to a shared file under an fcntl lock, and the test replays the
file to find what ran at the same time. No assertion depends on timing; where
two tasks must overlap, they wait for each other with a generous deadline.
"""
import collections
import fcntl
import json
import os
import stat
import sys
import time

import psutil
import pytest

import zray as ray
from zray import session
from zray.exceptions import GetTimeoutError

from conftest import assert_no_leftovers, run_script

WAIT_S = 60.0      # how long a task waits for a partner before giving up


@pytest.fixture
def start_ray():
    """ray.init(**kwargs) for one test; shut down and checked for leftovers after."""
    infos = []

    def start(**kwargs):
        infos.append(ray.init(**kwargs))
        return infos[-1]
    yield start
    ray.shutdown()
    for info in infos:
        assert_no_leftovers(info)


# == the tasks' own record of what ran when =====================================
def record(path, event, name, **fields):
    with open(path, "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)
        log.write(json.dumps({"event": event, "name": name, "pid": os.getpid(), **fields}) + "\n")
        log.flush()
        fcntl.flock(log, fcntl.LOCK_UN)


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as log:
        return [json.loads(line) for line in log]


def wait_for(predicate, timeout_s=WAIT_S):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def peak_usage(events):
    """Replay enter/exit events: the most of each resource held at once."""
    inside, peak = {}, collections.Counter()
    per_gpu_peak = collections.Counter()
    for e in events:
        if e["event"] == "enter":
            inside[e["name"]] = e
        else:
            inside.pop(e["name"])
        usage, per_gpu = collections.Counter(), collections.Counter()
        for task in inside.values():
            usage.update(task["demand"])
            for gpu, share in task["gpus"]:
                per_gpu[gpu] += share
        for name, amount in usage.items():
            peak[name] = max(peak[name], round(amount, 6))
        for gpu, amount in per_gpu.items():
            per_gpu_peak[gpu] = max(per_gpu_peak[gpu], round(amount, 6))
    return peak, per_gpu_peak


def overlapping(events, name):
    """Names of tasks that were inside at some moment while ``name`` was."""
    inside, seen, active = set(), set(), False
    for e in events:
        if e["event"] == "enter":
            inside.add(e["name"])
            if e["name"] == name:
                active = True
                seen |= inside - {name}
            elif active:
                seen.add(e["name"])
        else:
            inside.discard(e["name"])
            if e["name"] == name:
                active = False
    return seen


# == init defaults and reporting ===============================================
def test_init_defaults_and_reports(start_ray):
    start_ray()
    total = ray.cluster_resources()
    assert total["CPU"] == psutil.cpu_count()
    assert total.get("GPU", 0) == len(session.detect_gpus())
    assert ray.available_resources()["CPU"] == total["CPU"]
    (node,) = ray.nodes()
    assert node["Alive"] and node["Resources"] == total
    assert ray.get_gpu_ids() == [] and ray.get_resource_ids() == {}


def test_detect_gpus_sources(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert session.detect_gpus() == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert session.detect_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n"
                    "echo 'GPU 0: Fake (UUID: GPU-a)'\necho 'GPU 1: Fake (UUID: GPU-b)'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert session.detect_gpus() == [0, 1]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert session.detect_gpus() == []          # no GPU is not an error


def test_init_uses_cuda_visible_devices():
    result = run_script("""
        import os, zray as ray
        ray.init(num_cpus=1)
        @ray.remote(num_gpus=1)
        def which():
            return ray.get_gpu_ids(), os.environ["CUDA_VISIBLE_DEVICES"]
        print(repr((ray.cluster_resources()["GPU"], ray.get(which.remote()))))
        ray.shutdown()
    """, env={"CUDA_VISIBLE_DEVICES": "3,5"})
    assert result.returncode == 0, result.stderr
    count, (ids, visible) = eval(result.stdout.strip().splitlines()[-1])
    assert count == 2 and ids in ([3], [5]) and visible == str(ids[0])


def test_custom_resources_reported_and_taken(start_ray):
    start_ray(num_cpus=2, num_gpus=1, resources={"Custom": 1.5, "Other": 3})
    total = ray.cluster_resources()
    assert total.pop("memory") >= 0 and total.pop("object_store_memory") > 0
    assert total == {"CPU": 2, "GPU": 1, "Custom": 1.5, "Other": 3}

    @ray.remote(num_cpus=0.5, num_gpus=0.3, resources={"Custom": 0.1})
    def look():
        return ray.available_resources()

    during = ray.get(look.remote())
    assert during["CPU"] == 1.5 and during["GPU"] == 0.7 and during["Custom"] == 1.4
    assert wait_for(lambda: ray.available_resources() == ray.cluster_resources())


# == concurrency bounds ===========================================================
def test_running_demands_never_exceed_totals(start_ray, tmp_path):
    start_ray(num_cpus=2, num_gpus=1, resources={"Custom": 2})
    path = str(tmp_path / "log")

    def make(num_cpus, num_gpus=None, resources=None):
        demand = {"CPU": num_cpus, "GPU": num_gpus or 0, **(resources or {})}

        @ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources)
        def work(name):
            gpus = [list(x) for x in ray.get_resource_ids().get("GPU", [])]
            record(path, "enter", name, demand=demand, gpus=gpus)
            time.sleep(0.05)
            record(path, "exit", name)
            return name
        return work

    shapes = [make(1), make(0.5), make(2), make(0, 0.5), make(1, 0.25), make(0.25, 0.75),
              make(0, None, {"Custom": 1}), make(0.5, None, {"Custom": 1.5})]
    refs = [shapes[i % len(shapes)].remote(f"t{i}") for i in range(48)]
    assert sorted(ray.get(refs)) == sorted(f"t{i}" for i in range(48))
    events = read_log(path)
    peak, per_gpu = peak_usage(events)
    assert peak["CPU"] <= 2 and peak["GPU"] <= 1 and peak["Custom"] <= 2
    assert all(share <= 1 for share in per_gpu.values())
    # A 2-CPU task on a 2-CPU node runs alone (zero-CPU ones may join it).
    cpu_users = {e["name"] for e in events if e["event"] == "enter" and e["demand"]["CPU"]}
    for e in events:
        if e["event"] == "enter" and e["demand"]["CPU"] == 2:
            assert not overlapping(events, e["name"]) & cpu_users


def test_zero_cpu_tasks_run_beside_a_full_node(start_ray, tmp_path):
    start_ray(num_cpus=2)
    path, flag = str(tmp_path / "log"), str(tmp_path / "zero-ran")

    @ray.remote
    def busy(name):
        record(path, "enter", name)
        # Holds its CPU until the zero-CPU task has run: it can only run now.
        ok = wait_for(lambda: os.path.exists(flag))
        record(path, "exit", name)
        return ok

    @ray.remote(num_cpus=0)
    def free():
        open(flag, "w").close()
        return True

    hogs = [busy.remote(f"b{i}") for i in range(3)]
    assert wait_for(lambda: len(read_log(path)) >= 2)
    assert ray.get(free.remote())
    assert ray.get(hogs) == [True, True, True]
    events = read_log(path)
    # The third 1-CPU task waited for a CPU: at most two inside at once.
    depth = max(sum(1 if e["event"] == "enter" else -1 for e in events[:i + 1])
                for i in range(len(events)))
    assert depth == 2


# == GPUs =========================================================================
def test_gpu_ids_and_cuda_visible_devices(start_ray, tmp_path):
    start_ray(num_cpus=2, num_gpus=2)
    assert ray.cluster_resources()["GPU"] == 2
    arrived = str(tmp_path / "arrived")

    @ray.remote(num_gpus=1)
    def one_gpu(name):
        record(arrived, "enter", name)
        together = wait_for(lambda: len(read_log(arrived)) >= 2)
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        return ray.get_gpu_ids(), visible, ray.get_resource_ids(), together

    a, b = ray.get([one_gpu.remote("a"), one_gpu.remote("b")])
    assert a[3] and b[3]                          # they ran at the same time
    assert sorted(a[0] + b[0]) == [0, 1]          # so they hold different GPUs
    for ids, visible, resource_ids, _ in (a, b):
        assert visible == str(ids[0])
        assert resource_ids == {"CPU": [(0, 1.0)], "GPU": [(ids[0], 1.0)]}

    @ray.remote(num_gpus=2)
    def two_gpus():
        return ray.get_gpu_ids(), os.environ["CUDA_VISIBLE_DEVICES"]

    ids, visible = ray.get(two_gpus.remote())
    assert sorted(ids) == [0, 1] and visible in ("0,1", "1,0")

    @ray.remote
    def no_gpu():
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"), ray.get_resource_ids()

    # Every worker has run a GPU task by now; none keeps those GPUs visible.
    for ids, visible, resource_ids in ray.get([no_gpu.remote() for _ in range(4)]):
        assert ids == [] and visible == "" and resource_ids == {"CPU": [(0, 1.0)]}
    assert ray.get_gpu_ids() == []                # the driver holds none


def test_fractional_gpus_share_one_id(start_ray, tmp_path):
    start_ray(num_cpus=2, num_gpus=1)
    arrived = str(tmp_path / "arrived")

    @ray.remote(num_gpus=0.5)
    def half(name):
        record(arrived, "enter", name)
        together = wait_for(lambda: len(read_log(arrived)) >= 2)
        return ray.get_resource_ids()["GPU"], os.environ["CUDA_VISIBLE_DEVICES"], together

    (ids_a, vis_a, ok_a), (ids_b, vis_b, ok_b) = ray.get([half.remote("a"), half.remote("b")])
    assert ok_a and ok_b                           # both held half of GPU 0 at once
    assert ids_a == ids_b == [(0, 0.5)] and vis_a == vis_b == "0"


def test_gpu_actor_holds_its_gpu(start_ray):
    start_ray(num_cpus=2, num_gpus=2)

    @ray.remote(num_gpus=1)
    class Model:
        def gpus(self):
            return ray.get_gpu_ids(), os.environ["CUDA_VISIBLE_DEVICES"]

    model = Model.remote()
    ids, visible = ray.get(model.gpus.remote())
    assert len(ids) == 1 and visible == str(ids[0])
    assert ray.available_resources()["GPU"] == 1
    ray.kill(model)
    assert wait_for(lambda: ray.available_resources().get("GPU") == 2)


def test_max_calls_recycles_workers(start_ray):
    start_ray(num_cpus=2, num_gpus=1)

    @ray.remote(max_calls=2)
    def pid():
        return os.getpid()

    pids = ray.get([pid.remote() for _ in range(8)])
    counts = collections.Counter(pids)
    assert len(counts) >= 4 and max(counts.values()) <= 2

    @ray.remote(num_gpus=1, max_calls=1)
    def gpu_task(previous_pid):
        # The previous holder of this GPU has exited before it was handed on.
        return os.getpid(), previous_pid is None or not psutil.pid_exists(previous_pid)

    previous = None
    seen = set()
    for _ in range(3):
        previous, freed = ray.get(gpu_task.remote(previous))
        assert freed and previous not in seen
        seen.add(previous)


# == workers on demand ===============================================================
def test_burst_of_zero_cpu_tasks(start_ray):
    start_ray(num_cpus=2)

    @ray.remote(num_cpus=0)
    def square(x):
        return x * x

    assert ray.get([square.remote(i) for i in range(1000)]) == [i * i for i in range(1000)]
    status = ray.api._runtime().request("status")
    assert status["workers"] <= status["max_workers"]


def test_nested_gets_do_not_deadlock(start_ray):
    start_ray(num_cpus=2)

    @ray.remote
    def leaf(x):
        return x

    @ray.remote
    def parent(x):
        return ray.get(leaf.remote(x)) + 1

    @ray.remote
    def tree(depth):
        if depth == 0:
            return 1
        return sum(ray.get([tree.remote(depth - 1), tree.remote(depth - 1)]))

    assert ray.get([parent.remote(i) for i in range(40)]) == [i + 1 for i in range(40)]
    assert ray.get(tree.remote(4)) == 16
    status = ray.api._runtime().request("status")
    assert status["workers"] <= status["max_workers"]
    assert wait_for(lambda: ray.available_resources().get("CPU") == 2)


# == infeasible ========================================================================
def test_infeasible_task_is_reported(start_ray, capfd):
    start_ray(num_cpus=2)

    @ray.remote(resources={"Missing": 1})
    def needs_missing():
        return 1

    @ray.remote(num_cpus=3)
    def too_big():
        return 1

    @ray.remote(num_gpus=1)
    class GpuActor:
        pass

    ref = needs_missing.remote()
    big = too_big.remote()
    actor = GpuActor.remote()       # kept alive while reported (to the end)

    def reported():
        return len(ray.api._runtime().request("status")["infeasible"]) == 3
    assert wait_for(reported)
    by_name = {t["name"]: t for t in ray.api._runtime().request("status")["infeasible"]}
    assert by_name["needs_missing"]["missing"] == {"Missing": {"asked": 1, "total": 0}}
    assert by_name["too_big"]["missing"] == {"CPU": {"asked": 3, "total": 2}}
    assert by_name["GpuActor"]["missing"] == {"GPU": {"asked": 1, "total": 0}}
    err = ""

    def warned():
        nonlocal err
        err += capfd.readouterr().err
        return all(f"{name} cannot be scheduled" in err
                   for name in ("needs_missing", "too_big", "GpuActor"))
    assert wait_for(warned), err
    assert "Missing 1" in err and "CPU 3" in err and "GPU 1" in err
    # Still queued, not failed; the rest of the cluster keeps working.
    ready, _ = ray.wait([ref, big], timeout=0.2)
    assert ready == []
    with pytest.raises(GetTimeoutError):
        ray.get(ref, timeout=0.1)

    @ray.remote
    def fine():
        return "ok"
    assert ray.get(fine.remote()) == "ok"
    del actor


# == bad input ==========================================================================
def test_bad_resource_options_name_the_fix(start_ray):
    start_ray(num_cpus=1)
    with pytest.raises(ValueError, match="num_gpus"):
        @ray.remote(num_gpus=1.5)
        def f():
            pass

    @ray.remote
    def g():
        return 1
    with pytest.raises(ValueError, match="num_cpus"):
        g.options(num_cpus=-1)
    with pytest.raises(ValueError, match="precision"):
        g.options(resources={"Custom": 1e-6})
    with pytest.raises(ValueError, match="num_gpus"):
        g.options(resources={"GPU": 1})
    assert ray.get(g.remote()) == 1


@pytest.mark.parametrize("kwargs, words", [
    ({"num_gpus": 0.5}, "whole number"),
    ({"num_cpus": -2}, "num_cpus"),
    ({"resources": {"Custom": 1e-7}}, "precision"),
    ({"resources": {"GPU": 2}}, "num_gpus"),
])
def test_init_rejects_bad_resources(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ray.init(**kwargs)
    assert not ray.is_initialized()


def test_default_actors_hold_no_cpu_while_alive(start_ray):
    start_ray(num_cpus=2)

    @ray.remote
    class Idle:
        def ping(self):
            return os.getpid()

    actors = [Idle.remote() for _ in range(3)]          # more actors than CPUs
    assert len(set(ray.get([a.ping.remote() for a in actors]))) == 3
    assert wait_for(lambda: ray.available_resources().get("CPU") == 2)


# == get_resource_ids covers every resource =====================================
def test_get_resource_ids_lists_cpus_and_custom_resources(start_ray):
    start_ray(num_cpus=3, resources={"Custom": 2})

    @ray.remote(num_cpus=2, resources={"Custom": 0.5})
    def held():
        return ray.get_resource_ids()

    @ray.remote(num_cpus=1.5)
    def fractional():
        return ray.get_resource_ids()

    @ray.remote(num_cpus=1)
    class Holder:
        def ids(self):
            return ray.get_resource_ids()

    @ray.remote
    class Default:
        def ids(self):
            return ray.get_resource_ids()

    assert ray.get(held.remote()) == {"CPU": [(0, 1.0), (1, 1.0)], "Custom": [(0, 0.5)]}
    assert ray.get(fractional.remote()) == {"CPU": [(0, 1.0), (1, 0.5)]}
    assert ray.get(Holder.remote().ids.remote()) == {"CPU": [(0, 1.0)]}
    # As Ray: a default actor holds no CPU while it lives.
    assert ray.get(Default.remote().ids.remote()) == {}
    assert ray.get_resource_ids() == {}          # the driver holds nothing


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

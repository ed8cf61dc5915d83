"""Warm workers: a local init starts one worker per CPU (at most one per
core) before the node says READY, and the first task runs on one of them."""
import os
import time

import psutil

import zray as ray
from conftest import assert_no_leftovers

DEADLINE_S = 60.0


def _ready_worker_pids(expected):
    """Poll the node until `expected` workers said hello and are idle."""
    runtime = ray.api._runtime()
    deadline = time.monotonic() + DEADLINE_S
    while True:
        workers = runtime.request("introspect")["workers"]
        idle = [w["pid"] for w in workers if w["state"] == "idle"]
        if len(idle) >= expected:
            return workers, idle
        assert time.monotonic() < deadline, f"warm workers never all ready: {workers}"
        time.sleep(0.05)


def test_init_starts_one_worker_per_cpu_and_the_first_task_uses_one():
    expected = min(2, os.cpu_count())
    info = ray.init(num_cpus=2)
    try:
        # Nothing submitted yet: the workers are the node's own doing.
        workers, idle = _ready_worker_pids(expected)
        assert len(workers) == expected, workers
        assert ray.api._runtime().request("status")["workers"] == expected

        @ray.remote
        def where():
            return os.getpid()

        assert ray.get(where.remote()) in idle            # a warm one, not a new spawn
        assert len(ray.api._runtime().request("introspect")["workers"]) == expected
    finally:
        ray.shutdown()
    assert_no_leftovers(info)


def test_shutdown_right_after_init_stops_workers_still_starting():
    info = ray.init(num_cpus=2)
    # Spawned before READY: they are the node's children once init returns,
    # most of them still importing.
    workers = psutil.Process(info["node_pid"]).children()
    assert len(workers) == min(2, os.cpu_count()), workers
    ray.shutdown()
    gone, alive = psutil.wait_procs(workers, timeout=DEADLINE_S)
    assert not alive, f"warm workers outlived shutdown: {alive}"
    assert_no_leftovers(info)

"""Work that skips the node is still seen: tasks pushed to leased workers and
direct actor calls show as running, queued and finished in the node's
status and introspection, `zray status` and the dashboard's JSON API
(workers and callers report it: core/work_report.py)."""
import json
import os
import time
import urllib.request

import pytest

import zray as ray

from cluster_util import Cluster, wait_for, zray
from conftest import assert_no_leftovers


def wait_for_file(path, timeout_s=60):
    """Run until the test makes ``path`` (a task the node does not see)."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return os.path.exists(path)


@ray.remote
def held_until_released(path):
    return wait_for_file(path)


@ray.remote
class Counter:
    def __init__(self):
        self.calls = 0

    def add(self):
        self.calls += 1
        return self.calls

    def ping(self):
        return "pong"

    def held(self, path):
        return wait_for_file(path)


@pytest.fixture
def one_node(tmp_path):
    info = ray.init(num_cpus=2, temp_dir=str(tmp_path / "t"))
    yield info
    ray.shutdown()
    assert_no_leftovers(info)


def node_request(op, *args):
    return ray.api._runtime().request(op, *args)


def dashboard_json(route):
    url = ray.get_webui_url()
    base = url.split("?", 1)[0].rstrip("/")
    request = urllib.request.Request(base + route, headers={
        "Authorization": "Bearer " + url.split("token=", 1)[1]})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except OSError:
        return None     # a 503 under load: asked again by wait_for


def test_a_long_leased_task_shows_running_on_its_worker(one_node, tmp_path):
    go = str(tmp_path / "go")
    ref = held_until_released.remote(go)

    def running_on_a_leased_worker():
        view = node_request("introspect")
        return [w for w in view["workers"]
                if w["leased"] and list(w["running"]) == ["held_until_released"]]
    (worker,) = wait_for(running_on_a_leased_worker, 30, "the leased task in introspect")
    assert any(t["name"] == "held_until_released" and t["pid"] == worker["pid"]
               for t in node_request("introspect")["running"])
    status = node_request("status")
    assert status["direct"]["running"] == 1 and status["running"] == 1, status

    def dashboard_shows_it():
        tasks, workers = dashboard_json("/api/tasks"), dashboard_json("/api/workers")
        return (tasks is not None and workers is not None
                and tasks["counts"]["running"] == 1 and tasks["counts"]["direct_running"] == 1
                and any(t["name"] == "held_until_released" and t["state"] == "running"
                        for t in tasks["latest"])
                and any(w["pid"] == worker["pid"] and list(w["running"]) == ["held_until_released"]
                        for w in workers["workers"]))
    wait_for(dashboard_shows_it, 30, "the leased task on the dashboard's tasks and workers")

    open(go, "w").close()
    assert ray.get(ref, timeout=30) is True
    wait_for(lambda: node_request("status")["direct"]["finished_tasks"] == 1
             and node_request("status")["running"] == 0, 30, "the task counted as finished")


def test_tasks_waiting_for_a_leased_worker_count_as_queued(tmp_path):
    info = ray.init(num_cpus=1, temp_dir=str(tmp_path / "t"))
    try:
        go = str(tmp_path / "go")
        refs = [held_until_released.remote(go) for _ in range(7)]
        # One runs on the one CPU's worker; six wait in this driver for a lease.
        wait_for(lambda: node_request("status")["direct"] == {
            "running": 1, "queued": 0, "waiting_for_lease": 6, "finished_tasks": 0,
            "finished_calls": 0}, 30, "one leased task running, six waiting")
        status = node_request("status")
        assert status["running"] == 1 and status["queued"] == 6, status
        open(go, "w").close()
        assert ray.get(refs, timeout=60) == [True] * 7
        wait_for(lambda: node_request("status")["direct"]["waiting_for_lease"] == 0
                 and node_request("status")["direct"]["finished_tasks"] == 7, 30,
                 "all seven counted as finished")
    finally:
        ray.shutdown()
    assert_no_leftovers(info)


def test_direct_actor_calls_are_counted_and_a_long_one_shows(one_node, tmp_path):
    counter = Counter.remote()

    def calls_go_direct():      # the first calls go through the node until then
        ray.get(counter.ping.remote())
        channel = ray.api._runtime().direct.channels.get(counter._actor_id)
        return channel is not None and channel.usable()
    wait_for(calls_go_direct, 20, "the direct socket to the actor")
    before = node_request("status")["direct"]["finished_calls"]
    assert ray.get([counter.add.remote() for _ in range(50)]) == list(range(1, 51))

    def actor_row():
        (row,) = node_request("introspect")["actors"]
        return row
    wait_for(lambda: node_request("status")["direct"]["finished_calls"] >= before + 50, 30,
             "50 more direct calls counted at the node")
    assert actor_row()["finished_calls"] >= 50

    go = str(tmp_path / "go")
    held = counter.held.remote(go)
    queued = [counter.add.remote() for _ in range(3)]

    def long_call_seen():
        row = actor_row()
        workers = [w for w in node_request("introspect")["workers"] if w["actor"] == "Counter"]
        return (row["running"] == 1 and row["queued"] == 3 and len(workers) == 1
                and any(name.endswith("held") for name in workers[0]["running"]))
    wait_for(long_call_seen, 30, "the long call running on the actor, three queued behind")
    status = node_request("status")
    assert status["running"] == 1 and status["queued"] == 3, status
    actors = wait_for(lambda: dashboard_json("/api/actors"), 30, "the dashboard's actors")
    assert actors["actors"][0]["running"] == 1

    open(go, "w").close()
    assert ray.get(held, timeout=30) is True and ray.get(queued, timeout=30) == [51, 52, 53]
    wait_for(lambda: node_request("status")["direct"]["running"] == 0
             and node_request("status")["direct"]["queued"] == 0, 30, "the calls done")


def test_zray_status_shows_a_leased_task(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_head("--num-cpus", 1)
        ray.init(address=cluster.address, redis_password=cluster.token)
        go = str(tmp_path / "go")
        ref = held_until_released.remote(go)

        def status_shows_it():
            out = zray("status", "--temp-dir", tmp_path).stdout
            return out if "Work: 1 running, 0 queued" in out else None
        out = wait_for(status_shows_it, 30, "zray status to count the leased task")
        assert "direct     1 running, 0 queued on workers" in out, out
        open(go, "w").close()
        assert ray.get(ref, timeout=30) is True
    finally:
        ray.shutdown()
        cluster.stop()

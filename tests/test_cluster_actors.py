"""Actors on a cluster of node daemons on loopback (`zray start`): placed on
any node that fits, reached from every node, re-created when their node is
killed.

The head has {"head_only": 1}, node B {"only_on_b": 1}, node C {"node_c": 1};
one CPU each. Tests that kill a node add their own under a temp root of
their own.
"""
import os
import signal

import pytest

import zray as ray
from zray.exceptions import RayActorError

from cluster_util import here, node_of, records, three_node_cluster, wait_for

STORE = str(100 * 1024 * 1024)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from three_node_cluster(tmp_path_factory.mktemp("actors"), '{"only_on_b": 1}',
                                  '{"node_c": 1}', STORE)


@pytest.fixture
def driver(cluster):
    info = ray.init(address=cluster.address, redis_password=cluster.token)
    try:
        yield info
    finally:
        ray.shutdown()


@ray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def add(self, n=1):
        self.count += n
        return self.count

    def where(self):
        return here()

    def stall_once(self, marker):
        """The first call (anywhere) waits until its node is killed."""
        import time
        if not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(300)
        return here()


def test_actor_with_a_resource_only_b_has_lives_there_and_answers_every_node(driver):
    counter = Counter.options(resources={"only_on_b": 1}).remote()
    assert ray.get(counter.where.remote(), timeout=60) == node_of("only_on_b")
    # One caller's calls run in its order.
    assert ray.get([counter.add.remote() for _ in range(20)], timeout=60) == list(range(1, 21))

    @ray.remote(resources={"node_c": 1})
    def call_from_c(handle, n):
        return here(), ray.get([handle.add.remote(10) for _ in range(n)])

    node, counts = ray.get(call_from_c.remote(counter, 3), timeout=60)
    assert node == node_of("node_c")
    assert counts == [30, 40, 50]
    assert ray.get(counter.add.remote(0), timeout=60) == 50


def test_actor_made_on_another_node_is_reached_from_the_driver(driver):
    @ray.remote(resources={"node_c": 1})
    def make():
        return Counter.options(resources={"only_on_b": 1}).remote()

    counter = ray.get(make.remote(), timeout=60)
    assert ray.get(counter.where.remote(), timeout=60) == node_of("only_on_b")
    assert ray.get([counter.add.remote(2) for _ in range(3)], timeout=60) == [2, 4, 6]


def start_movable_node(cluster, root, name):
    cluster.add_node("--num-cpus", 1, "--resources", f'{{"movable": 1, "{name}": 1}}',
                     "--object-store-memory", STORE, root=root)
    (record,) = [r for r in records(root) if r["role"] == "node"]
    return record["pid"]


def wait_gone(node_id):
    wait_for(lambda: not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()),
             20, f"node {node_id} to be noticed dead")


def test_actor_whose_node_is_killed_is_created_again_elsewhere(driver, cluster, tmp_path):
    roots = [tmp_path / "d", tmp_path / "e"]
    try:
        pids = {name: start_movable_node(cluster, root, name)
                for name, root in zip(("node_d", "node_e"), roots)}
        cluster.wait_nodes(5)
        nodes = {name: node_of(name) for name in pids}
        counter = Counter.options(resources={"movable": 1}, max_restarts=1,
                                  max_task_retries=1).remote()
        first = ray.get(counter.where.remote(), timeout=60)
        assert first in nodes.values()
        assert ray.get(counter.add.remote(5), timeout=60) == 5
        (victim,) = [name for name, node in nodes.items() if node == first]
        (other,) = [node for node in nodes.values() if node != first]
        marker = tmp_path / "stalled"
        in_flight = counter.stall_once.remote(str(marker))
        wait_for(marker.exists, 30, "the call to start")
        os.kill(pids[victim], signal.SIGKILL)
        wait_gone(first)
        # max_task_retries: the call in flight ran again on the new instance.
        assert ray.get(in_flight, timeout=60) == other
        # A fresh instance on the other node: its state starts again.
        assert ray.get(counter.where.remote(), timeout=60) == other
        assert ray.get(counter.add.remote(1), timeout=60) == 1
    finally:
        cluster.stop(*roots)


def test_actor_without_restarts_fails_calls_naming_its_dead_node(driver, cluster, tmp_path):
    try:
        pid = start_movable_node(cluster, tmp_path, "node_f")
        cluster.wait_nodes(4)
        node_f = node_of("node_f")
        counter = Counter.options(resources={"movable": 1}).remote()
        assert ray.get(counter.where.remote(), timeout=60) == node_f
        marker = tmp_path / "stalled"
        in_flight = counter.stall_once.remote(str(marker))
        wait_for(marker.exists, 30, "the call to start")
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RayActorError, match=f"while running.*node {node_f}.*left the cluster"):
            ray.get(in_flight, timeout=30)
        with pytest.raises(RayActorError, match=f"node {node_f}.*left the cluster"):
            ray.get(counter.add.remote(), timeout=30)
    finally:
        cluster.stop(tmp_path)


def test_named_actor_is_found_from_a_task_on_another_node(driver):
    keeper = Counter.options(name="keeper", resources={"only_on_b": 1}).remote()
    assert ray.get(keeper.add.remote(7), timeout=60) == 7

    @ray.remote(resources={"node_c": 1})
    def use_by_name():
        return ray.get(ray.get_actor("keeper").add.remote(1))

    assert ray.get(use_by_name.remote(), timeout=60) == 8
    assert ray.get(ray.get_actor("keeper").add.remote(1), timeout=60) == 9
    ray.kill(keeper)

    @ray.remote(resources={"node_c": 1})
    def lookup_after_kill():
        import time
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                ray.get_actor("keeper")
            except ValueError:
                return "gone"
            time.sleep(0.1)
        return "still there"

    assert ray.get(lookup_after_kill.remote(), timeout=60) == "gone"

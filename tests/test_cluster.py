"""A cluster of three node daemons on loopback, started with `zray start`:
scheduling across nodes, objects moving between them, nodes leaving.

The head has {"head_only": 1}, node B {"node_b": 1}, node C {"node_c": 1,
"spare": 1}; one CPU each, so "more tasks than one node has CPUs" and
"a resource only one node has" are both easy to ask for.
"""
import os
import signal

import numpy as np
import pytest

import zray as ray
from zray.cluster import NodeClient
from zray.core import context
from zray.exceptions import RayTaskError

from cluster_util import (Cluster, assert_all_gone, here, live_nodes, node_of, records,
                          three_node_cluster, wait_for)

STORE = str(400 * 1024 * 1024)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from three_node_cluster(tmp_path_factory.mktemp("cluster"), '{"node_b": 1}',
                                  '{"node_c": 1, "spare": 1}', STORE)


@pytest.fixture
def driver(cluster):
    info = ray.init(address=cluster.address, redis_password=cluster.token)
    try:
        yield info
    finally:
        ray.shutdown()


def test_driver_sees_every_node_and_their_resources(driver):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 3
    assert sum(1 for n in nodes if n["head"]) == 1
    resources = ray.cluster_resources()
    assert resources["CPU"] == 3
    assert resources["head_only"] == resources["node_b"] == resources["node_c"] == 1


def test_connecting_starts_and_stops_nothing(cluster):
    before = {r["pid"] for r in records(cluster.root)}
    ray.init(address=cluster.address, redis_password=cluster.token)
    ray.shutdown()
    assert {r["pid"] for r in records(cluster.root)} == before
    assert len(live_nodes(cluster.address, cluster.token)) == 3


def test_connecting_rejects_resource_options(cluster):
    with pytest.raises(ValueError, match="fixed when the cluster was started"):
        ray.init(address=cluster.address, redis_password=cluster.token, num_cpus=2)
    with pytest.raises(ValueError, match="fixed when the cluster was started"):
        ray.init(redis_address=cluster.address, resources={"x": 1})
    assert not ray.is_initialized()


def test_tasks_go_to_the_node_with_their_resource(driver):
    where = ray.remote(here)
    on_b = ray.get([where.options(resources={"node_b": 1}).remote() for _ in range(3)])
    on_c = ray.get(where.options(resources={"node_c": 1}).remote())
    on_head = ray.get(where.options(resources={"head_only": 1}).remote())
    assert set(on_b) == {node_of("node_b")}
    assert on_c == node_of("node_c")
    assert on_head == node_of("head_only")


def test_more_tasks_than_one_node_has_cpus_spread_out(driver):
    @ray.remote
    def slow(i):
        import time
        time.sleep(1.0)
        return i, here()

    results = ray.get([slow.remote(i) for i in range(6)])
    assert [i for i, _ in results] == list(range(6))
    assert len({node for _, node in results}) >= 2


def test_arguments_and_results_cross_nodes(driver):
    @ray.remote(resources={"node_b": 1})
    def add(a, b):
        return a + b

    @ray.remote(resources={"node_c": 1})
    def double(x):
        return 2 * x

    assert ray.get(double.remote(add.remote(1, 2))) == 6
    small = ray.put([1, 2, 3])
    assert ray.get(add.options(resources={"node_c": 1}).remote(small, [4])) == [1, 2, 3, 4]
    assert ray.get([double.remote(i) for i in range(20)]) == [2 * i for i in range(20)]


def test_100mb_array_made_on_one_node_consumed_on_another(driver):
    n = 100 * 1024 * 1024 // 8

    @ray.remote(resources={"node_b": 1})
    def make(count):
        return here(), np.arange(count, dtype=np.float64) * 0.5

    @ray.remote(resources={"node_c": 1})
    def consume(pair):
        origin, array = pair
        return here(), origin, array.shape, float(array.sum()), float(array[12345]), \
            float(array[-1])

    made = make.remote(n)
    consumer, origin, shape, total, sample, last = ray.get(consume.remote(made))
    assert origin == node_of("node_b") and consumer == node_of("node_c")
    assert shape == (n,)
    assert total == float((np.arange(n, dtype=np.float64) * 0.5).sum())
    assert sample == 12345 * 0.5 and last == (n - 1) * 0.5
    _, array = ray.get(made)                 # and in the driver, on the head
    assert array.nbytes == 100 * 1024 * 1024
    assert np.array_equal(array[:1000], np.arange(1000) * 0.5) and array[-1] == (n - 1) * 0.5


def test_driver_put_is_pulled_by_a_task_elsewhere(driver):
    data = np.random.default_rng(0).integers(0, 1 << 30, size=3_000_000, dtype=np.int64)
    ref = ray.put(data)

    @ray.remote(resources={"node_b": 1})
    def checksum(array):
        return int(array.sum()), array.dtype.str, here()

    total, dtype, node = ray.get(checksum.remote(ref))
    assert (total, dtype) == (int(data.sum()), data.dtype.str)
    assert node == node_of("node_b")


def test_compressible_objects_cross_nodes(driver):
    @ray.remote(resources={"node_c": 1})
    def zeros():
        return np.zeros(5_000_000)

    @ray.remote(resources={"node_b": 1})
    def count(array):
        return int(np.count_nonzero(array)), array.size

    ref = zeros.remote()
    assert ray.get(count.remote(ref)) == (0, 5_000_000)
    assert not ray.get(ref).any()


def test_refs_inside_objects_cross_nodes(driver):
    @ray.remote(resources={"node_b": 1})
    def make_inner():
        return [ray.put(np.full(200_000, 7.0)), ray.put("small")]

    @ray.remote(resources={"node_c": 1})
    def read(refs):
        return float(ray.get(refs[0]).sum()), ray.get(refs[1])

    refs = ray.get(make_inner.remote())
    assert ray.get(refs[1]) == "small"
    assert float(ray.get(refs[0]).sum()) == 1_400_000.0
    assert ray.get(read.remote(refs)) == (1_400_000.0, "small")


def test_errors_of_remote_tasks_reach_the_driver(driver):
    @ray.remote(resources={"node_c": 1})
    def fails():
        raise KeyError("on node c")

    with pytest.raises(RayTaskError) as info:
        ray.get(fails.remote())
    assert isinstance(info.value, KeyError)
    assert "on node c" in str(info.value)


class Thermometer:
    """Does not pickle, even with dill (a generator): only a custom
    serializer moves it."""

    def __init__(self, degrees):
        self.degrees = degrees
        self.readings = (degrees for _ in range(1))


def test_custom_serializers_reach_workers_on_every_node(driver):
    ray.register_custom_serializer(Thermometer, serializer=lambda t: t.degrees,
                                   deserializer=Thermometer)

    def made_on(resource):
        @ray.remote(resources={resource: 1})
        def make(degrees):
            return Thermometer(degrees), here()
        return make

    nodes = set()
    for degrees, resource in enumerate(["head_only", "node_b", "node_c"]):
        thermometer, node = ray.get(made_on(resource).remote(degrees), timeout=60)
        assert type(thermometer) is Thermometer and thermometer.degrees == degrees
        nodes.add(node)
    assert len(nodes) == 3


def test_task_needing_an_absent_resource_waits_and_status_shows_it(driver, cluster):
    from cluster_util import zray

    @ray.remote(resources={"nowhere": 1})
    def never():
        return 1

    ref = never.remote()
    ready, _ = ray.wait([ref], timeout=0.5)
    assert not ready
    out = zray("status", "--address", cluster.address, "--temp-dir", cluster.root).stdout
    assert "3 nodes" in out and "1 infeasible" in out and "never" in out


def test_node_killed_is_noticed_and_its_work_placed_elsewhere(driver, cluster, tmp_path):
    # Node D lives under its own temp root, so stopping it spares the others.
    try:
        cluster.add_node("--num-cpus", 1, "--resources", '{"spare": 1, "node_d": 1}',
                         "--object-store-memory", STORE, root=tmp_path)
        cluster.wait_nodes(4)
        node_d = node_of("node_d")
        (record,) = [r for r in records(tmp_path) if r["role"] == "node"]

        @ray.remote(resources={"spare": 1}, max_retries=2)
        def stays_on_d(marker):
            import time
            if here() == node_d:
                open(marker, "w").close()
                time.sleep(300)           # until the node is killed
            return here()

        marker = str(tmp_path / "started-on-d")
        # Spread over C and D by their room. The head hears of D through the
        # kv feed a little after D is listed, so tasks sent before that all go
        # to C: keep sending (C's finish at once) until one starts on D.
        refs = []

        def one_started_on_d():
            if os.path.exists(marker):
                return True
            refs.append(stays_on_d.remote(marker))
            return False
        wait_for(one_started_on_d, 30, "a task to start on node D")
        os.kill(record["pid"], signal.SIGKILL)
        wait_for(lambda: not any(n["NodeID"] == node_d and n["Alive"] for n in ray.nodes()),
                 15, "the killed node to be noticed")
        assert set(ray.get(refs, timeout=60)) == {node_of("node_c")}
        assert len(live_nodes(cluster.address, cluster.token)) == 3
    finally:
        cluster.stop(tmp_path)


def test_node_stopped_with_zray_stop_leaves_the_cluster(driver, cluster, tmp_path):
    try:
        cluster.add_node("--num-cpus", 1, "--resources", '{"node_e": 1}', root=tmp_path)
        cluster.wait_nodes(4)
        node_e = node_of("node_e")
        assert ray.get(ray.remote(here).options(resources={"node_e": 1}).remote()) == node_e
    finally:
        cluster.stop(tmp_path)
    wait_for(lambda: not any(n["NodeID"] == node_e and n["Alive"] for n in ray.nodes()),
             10, "the stopped node to leave")
    assert "node_e" not in ray.cluster_resources()


def test_object_bigger_than_a_nodes_store_is_pulled_to_its_disk(driver, cluster, tmp_path):
    try:
        cluster.add_node("--num-cpus", 1, "--resources", '{"small_store": 1}',
                         "--object-store-memory", str(32 * 1024 * 1024), root=tmp_path)
        cluster.wait_nodes(4)
        data = np.arange(48 * 1024 * 1024 // 8, dtype=np.float64)
        ref = ray.put(data)

        @ray.remote(resources={"small_store": 1})
        def checksum(array):
            stats = context.current().request("store_stats")
            return float(array.sum()), stats["spilled_bytes"], stats["shm_bytes"]

        total, on_disk, in_memory = ray.get(checksum.remote(ref), timeout=120)
        assert total == float(data.sum())
        assert on_disk >= data.nbytes and in_memory < data.nbytes
    finally:
        cluster.stop(tmp_path)


def test_a_node_whose_head_is_gone_shuts_down(tmp_path):
    head_root, node_root = tmp_path / "head", tmp_path / "node"
    lonely = Cluster(head_root, env={"ZRAY_KV_LOST_S": "2"})
    try:
        lonely.start_head("--num-cpus", 0)
        lonely.add_node("--num-cpus", 0, root=node_root)
        lonely.wait_nodes(2)
        pids, sessions = lonely.snapshot(node_root)
        lonely.stop(head_root)                 # the head goes; the node is left alone
        assert_all_gone(pids, sessions, timeout_s=30)
    finally:
        lonely.stop(head_root, node_root)


def test_lz4_compressed_transfers_keep_contents(tmp_path):
    # Between nodes of one machine lz4 is not used unless asked for.
    lz4_cluster = Cluster(tmp_path, env={"ZRAY_TRANSFER_LZ4": "on"})
    try:
        lz4_cluster.start_head("--num-cpus", 1, "--object-store-memory", STORE)
        lz4_cluster.add_node("--num-cpus", 1, "--resources", '{"far": 1}',
                             "--object-store-memory", STORE)
        lz4_cluster.wait_nodes(2)
        ray.init(address=lz4_cluster.address, redis_password=lz4_cluster.token)
        try:
            @ray.remote(resources={"far": 1})
            def echo(array):
                return array

            rng = np.random.default_rng(1)
            mixed = np.zeros(3_000_000)
            mixed[::7] = rng.random(len(mixed[::7]))      # partly compressible
            noise = rng.random(2_000_000)                  # not compressible
            for array in (np.zeros(5_000_000), mixed, noise):
                assert np.array_equal(ray.get(echo.remote(array)), array)
        finally:
            ray.shutdown()
        sent = sent_wire = 0
        for node in live_nodes(lz4_cluster.address, lz4_cluster.token).values():
            client = NodeClient(node["tcp_address"], lz4_cluster.token)
            try:
                stats = client.request("status")["peers"]
            finally:
                client.close()
            sent += stats["sent_bytes"]
            sent_wire += stats["sent_wire_bytes"]
        assert sent >= 2 * (40_000_000 + 24_000_000 + 16_000_000)   # there and back
        assert sent_wire < sent - 30_000_000                          # the zeros shrank
    finally:
        lz4_cluster.stop()

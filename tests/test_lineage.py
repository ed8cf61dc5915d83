"""Objects stay on the node that made them, and are rebuilt from lineage
when that node dies (real daemons on loopback).

The head has one CPU and nothing else; the work needs {"worker_node": 1},
which only the second node (and later its replacement) has, so the head
owns every result but runs none of the tasks.
"""
import os
import signal

import numpy as np
import pytest

import zray as ray
from zray.core import context
from zray.exceptions import ObjectLostError

from cluster_util import Cluster, records, wait_for

STORE = str(256 * 1024 * 1024)
N = 1 << 20                       # int64s: 8 MB, a shared-memory object


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path / "head")
    roots = [tmp_path / "head", tmp_path / "b", tmp_path / "c"]
    try:
        cluster.start_head("--num-cpus", 1, "--object-store-memory", STORE)
        cluster.add_node("--num-cpus", 1, "--resources", '{"worker_node": 1}',
                         "--object-store-memory", STORE, root=roots[1])
        cluster.wait_nodes(2)
        ray.init(address=cluster.address, redis_password=cluster.token)
        yield cluster, roots
    finally:
        ray.shutdown()
        cluster.stop(*roots)


def head_peers():
    return context.current().request("status")["peers"]


def kill_node(cluster, root, node_count):
    (record,) = [r for r in records(root) if r["role"] == "node"]
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(lambda: sum(1 for n in ray.nodes() if n["Alive"]) == node_count, 30,
             "the killed node to be noticed")


@ray.remote(resources={"worker_node": 1})
def make(n):
    return np.arange(n, dtype=np.int64)


@ray.remote(resources={"worker_node": 1})
def add(array, k):
    return array + k


@ray.remote(resources={"worker_node": 1})
def count(*arrays):
    return len(arrays)


@ray.remote(resources={"worker_node": 1})
def pulled_here():
    return context.current().request("status")["peers"]["pulled_bytes"]


def test_pipeline_on_the_second_node_moves_nothing_to_the_head(cluster):
    assert ray.wait([make.remote(8)], fetch_local=False, timeout=60)[0]     # small: inline
    before = head_peers()["pulled_bytes"], ray.get(pulled_here.remote())
    first = make.remote(N)
    total = ray.get(count.remote(first, add.remote(first, 1)))
    assert total == 2
    after = head_peers()["pulled_bytes"], ray.get(pulled_here.remote())
    assert after == before            # neither node copied the 8 MB intermediates
    # Waiting without fetching says it is ready and copies nothing here either.
    assert ray.wait([first], fetch_local=False, timeout=60) == ([first], [])
    assert head_peers()["pulled_bytes"] == before[0]
    # The driver still reads it when it asks: then, and only then, it moves.
    assert ray.get(add.remote(first, 1))[-1] == N
    moved = head_peers()["pulled_bytes"] - before[0]
    assert N * 8 <= moved < N * 8 + 4096      # the array and its pickle header, once


def test_results_lost_with_their_node_are_rebuilt_from_lineage(cluster):
    cluster_, roots = cluster
    chain = [make.remote(N)]
    for k in range(3):
        chain.append(add.remote(chain[-1], k))
    assert ray.get(count.remote(*chain)) == 4     # all made, on the second node only
    peers = head_peers()
    assert peers["pulled_bytes"] == 0 and peers["located_elsewhere"] == 4
    kill_node(cluster_, roots[1], 1)
    cluster_.add_node("--num-cpus", 1, "--resources", '{"worker_node": 1}',
                      "--object-store-memory", STORE, root=roots[2])
    expected = np.arange(N, dtype=np.int64)
    values = ray.get(chain, timeout=120)
    for k, value in enumerate(values[1:]):
        expected = expected + k
        assert np.array_equal(value, expected)
    assert np.array_equal(values[0], np.arange(N, dtype=np.int64))


@ray.remote(resources={"worker_node": 1})
def put_inside():
    return [ray.put(np.ones(N, dtype=np.int64))]


def test_a_put_lost_with_its_node_raises_object_lost_naming_it(cluster):
    cluster_, roots = cluster
    (inner,) = ray.get(put_inside.remote())
    node_b = next(n["NodeID"] for n in ray.nodes() if "worker_node" in n["Resources"])
    wait_for(lambda: head_peers()["located_elsewhere"] == 1, 10, "the put to be located")
    kill_node(cluster_, roots[1], 1)
    with pytest.raises(ObjectLostError) as info:
        ray.get(inner, timeout=30)
    assert inner.hex() in str(info.value) and node_b in str(info.value)

"""Death is death, stalls are not: a node paused (``kill -STOP``) for 5 s
under load, then resumed, loses nothing and runs nothing twice; a node
killed is noticed by its peers in about a second, long before its
heartbeat's deadline.
"""
import collections
import contextlib
import os
import signal
import time

import pytest

import zray as ray
from zray.exceptions import ObjectLostError

from cluster_util import Cluster, live_nodes, records, wait_for

PAUSE_S = 5.0


@contextlib.contextmanager
def two_nodes(tmp_path, env=None):
    cluster = Cluster(tmp_path / "head", env=env)
    try:
        cluster.start_head("--num-cpus", 1)
        cluster.add_node("--num-cpus", 2, "--resources", '{"second": 2}',
                         root=tmp_path / "second")
        cluster.wait_nodes(2)
        (node,) = [r for r in records(tmp_path / "second") if r["role"] == "node"]
        ray.init(address=cluster.address, redis_password=cluster.token)
        yield cluster, node["pid"]
    finally:
        ray.shutdown()
        cluster.stop(tmp_path / "head", tmp_path / "second")


def test_a_paused_node_loses_nothing_and_runs_nothing_twice(tmp_path):
    with two_nodes(tmp_path) as (cluster, second_pid):
        _pause_under_load(cluster, second_pid, tmp_path)


def _pause_under_load(cluster, second_pid, tmp_path):
    ran = tmp_path / "ran.txt"

    @ray.remote(max_retries=3)
    def record(name, *inputs):
        import time
        with open(ran, "a") as f:        # one short O_APPEND write: a whole line
            f.write(f"{name}\n")
        time.sleep(0.02)
        return name, sum(len(i) for i in inputs)

    def only_second(i, *inputs):
        return record.options(resources={"second": 1}).remote(f"s{i}", *inputs)

    # Results made on the second node and consumed there, and by the head.
    firsts = [only_second(i) for i in range(100)]
    seconds = [only_second(100 + i, firsts[i]) for i in range(100)]
    anywhere = [record.remote(f"a{i}", seconds[i]) for i in range(100)]
    wait_for(lambda: ran.exists() and len(ran.read_text().split()) >= 20, 60,
             "the workload to be under way")
    os.kill(second_pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_S)              # the fault itself, not a wait for a condition
    finally:
        os.kill(second_pid, signal.SIGCONT)
    try:
        results = ray.get(firsts + seconds + anywhere, timeout=90)
    except ObjectLostError as exc:       # named, so a failure says what went wrong
        pytest.fail(f"a paused node's object was lost: {exc}")
    assert [name for name, _ in results] == ([f"s{i}" for i in range(200)]
                                             + [f"a{i}" for i in range(100)])
    counts = collections.Counter(ran.read_text().split())
    assert len(counts) == 300
    twice = {name: n for name, n in counts.items() if n != 1}
    assert not twice, f"tasks ran more than once across the pause: {twice}"
    assert len(live_nodes(cluster.address, cluster.token)) == 2


def test_a_killed_node_is_noticed_before_its_heartbeat_deadline(tmp_path):
    # A deadline longer than the wait below: only the closed connections
    # can make the test pass.
    with two_nodes(tmp_path, env={"ZRAY_NODE_TTL_S": "120"}) as (cluster, second_pid):
        _kill_and_notice(cluster, second_pid)


def _kill_and_notice(cluster, second_pid):
    @ray.remote(resources={"second": 1})
    def where():
        return os.getpid()

    ray.get(where.remote(), timeout=60)           # the head has a link to it
    os.kill(second_pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: len(live_nodes(cluster.address, cluster.token)) == 1, 30,
             "the killed node to leave the cluster")
    print(f"killed node noticed after {time.monotonic() - killed:.2f} s")
    wait_for(lambda: not any(n["Alive"] and "second" in n["Resources"] for n in ray.nodes()),
             30, "the driver's node to see it gone")

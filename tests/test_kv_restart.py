"""The kv service survives: its journal reloads the state, the head node
restarts it when it dies, and the cluster goes on without losing a node.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

import zray as ray
from zray.kv.client import KvClient

from cluster_util import Cluster, env_for, live_nodes, records, wait_for


def _start_kv(directory):
    address = f"ipc://{directory}/kv.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "zray.kv", "--address", address,
         "--pub-address", f"ipc://{directory}/kv-pub.sock", "--journal", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env_for())
    process.stdout.readline()             # its READY line
    return process, address


def test_kv_state_survives_a_kill(tmp_path):
    process, address = _start_kv(tmp_path)
    try:
        kv = KvClient(address)
        for i in range(50):
            kv.put(f"actor:{i}", {"n": i})
        kv.delete("actor:7")
        kv.call("put_ttl", "node:x", {"alive": True}, 30)   # a heartbeat: not kept
        kv.call("add_events", [{"name": "t"}])                # timeline: not kept
        kv.close()
        process.send_signal(signal.SIGKILL)
        process.wait()
        with open(tmp_path / "kv.journal", "ab") as journal:
            journal.write(b"\x40\x00\x00\x00torn")              # a write cut short by the kill
        process, address = _start_kv(tmp_path)
        kv = KvClient(address)
        restored = kv.scan("")
        kv.close()
        assert restored == {f"actor:{i}": {"n": i} for i in range(50) if i != 7}
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def two_nodes(tmp_path):
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start_head("--num-cpus", 1)
        cluster.add_node("--num-cpus", 1, "--resources", '{"second": 1}')
        cluster.wait_nodes(2)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()


def test_killed_kv_is_restarted_and_nothing_is_lost(two_nodes):
    cluster = two_nodes
    ray.init(address=cluster.address, redis_password=cluster.token)

    @ray.remote
    def square(i):
        return i * i

    @ray.remote(resources={"second": 1})
    def on_second(i):
        return -i

    kv = KvClient(_kv_address(cluster), cluster.token)
    kv.put("user:kept", "across the restart")
    (kv_record,) = [r for r in records(cluster.root) if r["role"] == "kv"]
    first = [square.remote(i) for i in range(50)] + [on_second.remote(i) for i in range(20)]
    os.kill(kv_record["pid"], signal.SIGKILL)
    second = [square.remote(i) for i in range(50)] + [on_second.remote(i) for i in range(20)]
    expected = [i * i for i in range(50)] + [-i for i in range(20)]
    assert ray.get(first, timeout=120) == expected
    assert ray.get(second, timeout=120) == expected
    # Restarted (by the head node), with its state, and both nodes still in it.
    assert wait_for(lambda: _kv_get(kv, "user:kept"), 30, "the kv service to come back") \
        == "across the restart"
    kv.close()
    wait_for(lambda: len(live_nodes(cluster.address, cluster.token)) == 2, 30,
             "both nodes to be listed again")
    ray.shutdown()
    # A new driver connects and sees every node.
    ray.init(address=cluster.address, redis_password=cluster.token)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert ray.get(on_second.remote(5), timeout=60) == -5


def _kv_address(cluster):
    from zray.cluster import find_cluster
    return find_cluster(cluster.address, cluster.token)[1]["kv_address"]


def _kv_get(kv, key):
    try:
        return kv.call("get", key, None, timeout_s=1.0)
    except Exception:            # still down: ask again
        return None


def test_a_paused_kv_expires_no_heartbeat_for_its_own_pause(tmp_path):
    # The kv is the judge of heartbeats: its own pause (kill -STOP, a starved
    # machine) is time in which no heartbeat could arrive, and counts against
    # no node; else every node would be declared dead when it resumes.
    process, address = _start_kv(tmp_path)
    try:
        kv = KvClient(address)
        kv.call("put_ttl", "node:x", {"alive": True}, 1.5)
        process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(3.0)                # the fault itself
        finally:
            process.send_signal(signal.SIGCONT)
        kv.call("ping")                    # a turn of its loop (and expiry) after the pause
        kv.call("ping")
        assert kv.get("node:x") == {"alive": True}
        wait_for(lambda: kv.get("node:x") is None, 10, "the heartbeat to expire later")
        kv.close()
    finally:
        process.kill()
        process.wait()

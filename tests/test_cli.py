"""The `zray` command line: start / status / timeline / stop round trips,
passwords, and the errors a user sees for bad input.

Each test has its own --temp-dir, and stops what it started in a finally.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

import zray as ray

from cluster_util import (Cluster, assert_all_gone, cluster_address, daemon_processes, env_for,
                          live_nodes, records, wait_for, zray)


def test_start_status_stop_round_trip_leaves_nothing(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        out = zray("start", "--head", "--port", 0, "--num-cpus", 2, "--num-gpus", 0,
                   "--resources", '{"Custom": 3}', "--object-store-memory", 200 * 1024 * 1024,
                   "--node-ip-address", "127.0.0.1", "--temp-dir", tmp_path).stdout
        address = cluster_address(tmp_path)
        cluster.address = address
        assert address.startswith("127.0.0.1:")
        token = json.loads((tmp_path / "cluster.json").read_text())["token"]
        cluster.token = token
        assert oct((tmp_path / "cluster.json").stat().st_mode & 0o777) == "0o600"
        # The commands for other nodes and drivers, with the token made for this cluster.
        assert f"zray start --address={address} --redis-password={token}" in out
        assert f'ray.init(address="{address}", redis_password={token!r})' in out
        roles = sorted(r["role"] for r in records(tmp_path))
        assert roles == ["dashboard", "kv", "node"]
        cluster.add_node("--num-cpus", 1)
        cluster.wait_nodes(2)

        status = zray("status", "--temp-dir", tmp_path).stdout
        assert f"zray cluster at {address}: 2 nodes" in status
        assert "CPU              3 / 3" in status and "Custom           3 / 3" in status
        assert "(head)" in status and "0 running, 0 queued, 0 infeasible" in status
        raw = json.loads(zray("status", "--address", address, "--json",
                              "--redis-password", token).stdout)
        assert len(raw["nodes"]) == 2 and all("status" in n for n in raw["nodes"])
    finally:
        pids, sessions = cluster.snapshot()
        out = zray("stop", "--temp-dir", tmp_path).stdout
    assert "Stopped 4 zray processes (2 node, 1 kv service, 1 dashboard)" in out
    assert_all_gone(pids, sessions)
    assert not records(tmp_path) and not os.path.exists(tmp_path / "cluster.json")
    assert "No zray processes" in zray("stop", "--temp-dir", tmp_path).stdout


def test_daemons_outlive_the_command_and_auto_finds_them(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_head("--num-cpus", 1)
        # `zray start` has exited; its daemons run on, in their own session.
        processes = daemon_processes(tmp_path)
        assert len(processes) >= 2
        assert all(p.ppid() != os.getpid() for p in processes)
        result = subprocess.run(
            [sys.executable, "-c",
             "import zray as ray\n"
             "info = ray.init(address='auto')\n"
             "print(ray.get(ray.remote(lambda: 41 + 1).remote()), info['address'])\n"
             "ray.shutdown()"],
            capture_output=True, text=True, timeout=60, env=env_for(tmp_path))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["42", cluster.address]
        assert len(daemon_processes(tmp_path)) >= 2        # the driver stopped nothing
    finally:
        cluster.stop()


def test_password_protects_the_cluster(tmp_path):
    cluster = Cluster(tmp_path, password="s3cret")
    try:
        cluster.start_head("--num-cpus", 1)
        # A driver without the password, or with a wrong one, is refused.
        for wrong, message in ((None, "needs its token"), ("guess", "wrong password")):
            with pytest.raises(ConnectionRefusedError, match=message):
                ray.init(address=cluster.address, redis_password=wrong)
            assert not ray.is_initialized()
        # So is a node.
        result = zray("start", "--address", cluster.address, "--temp-dir", tmp_path,
                      "--password", "guess", check=False)
        assert result.returncode == 1 and "wrong password" in result.stderr
        # And the node daemon itself checks, not only the kv service.
        from zray.cluster import NodeClient
        (node,) = live_nodes(cluster.address, "s3cret").values()
        with pytest.raises(ConnectionRefusedError, match="wrong password"):
            NodeClient(node["tcp_address"], "guess")
        # The right password works, for nodes and drivers alike.
        cluster.add_node("--num-cpus", 1, "--resources", '{"joined": 1}')
        cluster.wait_nodes(2)
        ray.init(address=cluster.address, redis_password="s3cret")
        try:
            where = ray.remote(lambda: 1).options(resources={"joined": 1})
            assert ray.get(where.remote()) == 1
        finally:
            ray.shutdown()
        assert "2 nodes" in zray("status", "--temp-dir", tmp_path, "--password", "s3cret").stdout
        refused = zray("status", "--address", cluster.address, "--password", "guess",
                       check=False)
        assert refused.returncode == 1 and "wrong password" in refused.stderr
    finally:
        cluster.stop()


def test_timeline_writes_chrome_tracing_json(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.start_head("--num-cpus", 1)
        ray.init(address=cluster.address, redis_password=cluster.token)
        try:
            @ray.remote
            def traced(i):
                return i

            assert ray.get([traced.remote(i) for i in range(5)]) == list(range(5))
        finally:
            ray.shutdown()
        output = tmp_path / "trace.json"
        result = zray("timeline", "--address", cluster.address, "--temp-dir", tmp_path,
                      "--output", output)
        assert result.stdout.strip() == str(output)
        events = json.loads(output.read_text())
        names = [e["name"] for e in events if e.get("ph") == "X"]
        assert names.count("traced") == 5
        assert all({"ts", "dur", "pid"} <= set(e) for e in events)
    finally:
        cluster.stop()


def test_block_stays_in_the_foreground_and_ctrl_c_stops(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "zray.cli", "start", "--head", "--port", "0", "--num-cpus", "1",
         "--temp-dir", str(tmp_path), "--block"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for())
    try:
        wait_for(lambda: len(records(tmp_path)) == 3, 30, "the daemons to be recorded")
        pids, sessions = Cluster(tmp_path).snapshot()
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert_all_gone(pids, sessions)
        assert not records(tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        zray("stop", "--temp-dir", tmp_path, check=False)


@pytest.mark.parametrize("args, message", [
    ([], "pass --head to start a cluster, or --address"),
    (["--head", "--address", "127.0.0.1:1"], "pass one"),
    (["--head", "--resources", "{oops"], "not valid JSON"),
    (["--head", "--resources", '{"CPU": 2}'], "--num-cpus"),
    (["--head", "--resources", '{"x": -1}'], "must be a number >= 0"),
    (["--head", "--num-cpus", "-1"], "-1"),
    (["--address", "nonsense"], "HOST:PORT"),
])
def test_bad_start_options_say_what_to_fix(tmp_path, args, message):
    result = zray("start", "--temp-dir", tmp_path, *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not records(tmp_path)


def test_start_on_a_port_in_use_and_join_to_nothing(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = zray("start", "--head", "--port", port, "--temp-dir", tmp_path, check=False)
        assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
        result = zray("start", "--address", f"127.0.0.1:{port}", "--temp-dir", tmp_path,
                      "--redis-password", "anything", check=False, timeout=60)
    assert result.returncode == 1 and "could not reach a zray cluster" in result.stderr
    assert not records(tmp_path)


def test_commands_without_a_cluster_explain(tmp_path, monkeypatch):
    for command in ("status", "timeline"):
        result = zray(command, "--temp-dir", tmp_path, check=False)
        assert result.returncode == 1 and "zray start --head" in result.stderr
    monkeypatch.setenv("ZRAY_TEMP_DIR", str(tmp_path))
    with pytest.raises(ConnectionError, match="zray start --head"):
        ray.init(address="auto")
    assert not ray.is_initialized()


def test_head_restarts_on_its_port_while_an_old_node_is_still_attached(tmp_path):
    """`zray stop` of a head, then `zray start --head` on the same port at
    once: the old head's connections linger on the port (TIME_WAIT, a node
    of the old cluster still reconnecting), which must not count as in use."""
    old = Cluster(tmp_path / "old")
    node_root = tmp_path / "node"
    new = Cluster(tmp_path / "new")
    try:
        old.start_head("--num-cpus", 1)
        port = int(old.address.rsplit(":", 1)[1])
        old.add_node("--num-cpus", 1, root=node_root)
        old.wait_nodes(2)
        old.stop()                                  # the node stays, attached to the port
        assert daemon_processes(node_root), "the old cluster's node should still run"
        new.start_head("--num-cpus", 1, port=port)
        assert new.address.endswith(f":{port}")
        new.wait_nodes(1)
    finally:
        new.stop()
        old.stop(node_root)

"""A session under a long temp root (a pytest tmp_path, a deep ZRAY_TEMP_DIR)
works as one under a short one: its unix sockets go to a short directory of
their own (transport/socket_dir.py), so init does not fail on the 107-byte
socket path cap and direct calls and leases still skip the node; that
directory goes with the session."""
import os

import pytest

from zray.transport.socket_dir import MAX_IPC_PATH, LONGEST_NAME, socket_dir

from conftest import run_script


def test_a_short_session_dir_keeps_its_sockets():
    assert socket_dir("/tmp/zray-0/s-01234567") == "/tmp/zray-0/s-01234567"


def test_a_long_session_dir_gets_a_short_socket_dir():
    long_dir = "/" + "x" * 90 + "/s-01234567"
    path = socket_dir(long_dir)
    assert path != long_dir and path.endswith("-s-01234567")
    assert str(os.getuid()) in os.path.basename(path)
    assert len(path) + LONGEST_NAME <= MAX_IPC_PATH


SCRIPT = """
import os
import time
import zray as ray
from zray.transport.socket_dir import socket_dir

ray.init(num_cpus=1)

@ray.remote
def f(x):
    return x + 1

@ray.remote
class Counter:
    def __init__(self):
        self.n = 0
    def add(self):
        self.n += 1
        return self.n

runtime = ray.api._runtime()
session_dir = runtime.node_info["session_dir"]
print("session:", session_dir)
print("sockets:", " ".join(sorted(os.listdir(socket_dir(session_dir)))))
counter = Counter.remote()
# The first calls go through the node until the socket to the actor's
# worker is up (it may still be starting): call until it is.
deadline = time.monotonic() + 20
while True:
    n = ray.get(counter.add.remote())
    channel = runtime.direct.channels.get(counter._actor_id)
    if channel is not None and channel.usable():
        break
    assert time.monotonic() < deadline, "no direct socket to the actor"
before = runtime.request("status")["tasks"]["submitted"]
assert ray.get([f.remote(i) for i in range(50)]) == list(range(1, 51))
assert [ray.get(counter.add.remote()) for _ in range(20)] == list(range(n + 1, n + 21))
print("through the node:", runtime.request("status")["tasks"]["submitted"] - before)
ray.shutdown()
"""


@pytest.mark.parametrize("root_length", [
    75,     # the node's socket fits under it, an actor's would not (direct calls were off)
    150,    # none fits (init failed)
])
def test_a_long_temp_root_runs_direct_and_leaves_nothing(tmp_path, root_length):
    root = tmp_path / ("d" * (root_length - len(str(tmp_path)) - 1))
    root.mkdir()
    result = run_script(SCRIPT, env={"ZRAY_TEMP_DIR": str(root)})
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    session_dir = lines["session"]
    assert len(os.path.join(session_dir, "a-0123456789abcdef.sock")) > 107
    # Leased tasks and direct actor calls: nothing went through the node.
    assert lines["through the node"] == "0", result.stdout
    sockets = socket_dir(session_dir)
    assert sockets != session_dir
    assert "node.sock" in lines["sockets"].split()
    assert not os.path.exists(sockets), os.listdir(sockets)
    assert not os.path.exists(session_dir)

"""Faults a driver meets: its node dies (``ray.get``, ``ray.wait`` and
``.remote()`` raise instead of waiting forever), Ctrl-C lands in the middle
of its calls (nothing it was receiving is lost).
"""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import zray as ray
from zray.exceptions import RaySystemError

from cluster_util import Cluster, env_for, records, tcp_driver_env, wait_for


@pytest.fixture
def head(tmp_path):
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start_head("--num-cpus", 1)
        cluster.wait_nodes(1)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()


def test_connected_driver_raises_when_its_node_is_killed(head, tmp_path):
    ray.init(address=head.address, redis_password=head.token)
    started, release = tmp_path / "started", tmp_path / "release"

    @ray.remote
    def wait_for_release():
        import time
        open(started, "w").close()
        while not os.path.exists(release):     # never created: the node dies first
            time.sleep(0.05)
        return "released"

    ref = wait_for_release.remote()
    wait_for(started.exists, 30, "the task to start")
    (node,) = [r for r in records(head.root) if r["role"] == "node"]
    os.kill(node["pid"], signal.SIGKILL)
    # Generous: a GetTimeoutError here means the death went unnoticed.
    with pytest.raises(RaySystemError, match="lost the connection to the zray node"):
        ray.get(ref, timeout=120)
    with pytest.raises(RaySystemError, match="node died"):
        ray.wait([ref], timeout=120)
    with pytest.raises(RaySystemError, match="node died"):
        wait_for_release.remote()
    ray.shutdown()


CTRL_C_DRIVER = """
import os, sys
import zray as ray

ray.init(num_cpus=2)
workdir, count = sys.argv[1], int(sys.argv[2])


@ray.remote
def square(i):
    import time
    time.sleep(0.002)
    return i * i


refs = [square.remote(i) for i in range(count)]
got, interrupts, ready = 0, 0, False


def get_each():
    global got, interrupts
    while got < count:
        try:
            assert ray.get(refs[got]) == got * got
            got += 1
        except KeyboardInterrupt:
            interrupts += 1


while True:          # a Ctrl-C may also land in the except clause itself
    try:
        if not ready:    # the test's Ctrl-Cs start once this exists: inside the try
            open(os.path.join(workdir, "ready"), "w").close()
            ready = True
        get_each()
        break
    except KeyboardInterrupt:
        interrupts += 1
import time
while True:          # Ctrl-Cs go on until the test sees got-all: all of this inside the try
    try:
        open(os.path.join(workdir, "got-all"), "w").close()
        while not os.path.exists(os.path.join(workdir, "quiet")):
            time.sleep(0.01)
        break
    except KeyboardInterrupt:
        interrupts += 1
assert ray.get(refs, timeout=60) == [i * i for i in range(count)]
print("interrupts", interrupts, flush=True)
"""


def test_ctrl_c_while_results_arrive_loses_none(tmp_path):
    # SIGINT again and again while results are pushed and read: each get
    # either returns or raises KeyboardInterrupt, and afterwards every
    # result is still there (a lost one would hang: timeout, then failure).
    driver = subprocess.Popen([sys.executable, "-c", CTRL_C_DRIVER, str(tmp_path), "1000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env_for(tmp_path / "temp"))
    try:
        wait_for(lambda: (tmp_path / "ready").exists() or driver.poll() is not None, 60,
                 "the driver to submit its tasks")
        deadline = time.monotonic() + 120
        while not (tmp_path / "got-all").exists() and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver never got all its results"
            driver.send_signal(signal.SIGINT)
            time.sleep(random.uniform(0.001, 0.01))
        (tmp_path / "quiet").touch()
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err[-3000:]
    assert int(out.split()[-1]) > 0, "no Ctrl-C reached the driver: the test proved nothing"


DYING_DRIVER = """
import os, signal, sys
import zray as ray

if sys.argv[3] == "tcp":
    from cluster_util import connect_over_tcp
    connect_over_tcp()

ray.init(address=sys.argv[1], redis_password=os.environ["ZRAY_TEST_TOKEN"])
never = sys.argv[2]


@ray.remote
def wait_forever(i):
    import os, time
    while not os.path.exists(never):       # never created
        time.sleep(0.05)


@ray.remote(num_cpus=1)
class Named:
    def ping(self):
        return "pong"


actor = Named.options(name="left-behind").remote()
assert ray.get(actor.ping.remote()) == "pong"
refs = [wait_forever.remote(i) for i in range(1000)]
ray.wait(refs, timeout=0.5)
from zray.core import context
assert context.current().node_address.startswith(sys.argv[3])
if sys.argv[3] == "tcp":
    os.kill(os.getpid(), signal.SIGKILL)     # no BYE, no atexit: its connection just closes
os._exit(0)
"""


@pytest.mark.parametrize("over", ["ipc", "tcp"])
def test_a_dead_drivers_tasks_and_actors_stop_and_its_cpus_come_back(tmp_path, over):
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start_head("--num-cpus", 3)
        cluster.wait_nodes(1)
        script = tmp_path / "driver.py"
        script.write_text(DYING_DRIVER)
        dead = subprocess.run(
            [sys.executable, str(script), cluster.address, str(tmp_path / "never"), over],
            env=tcp_driver_env({"ZRAY_TEST_TOKEN": cluster.token}), timeout=120,
            capture_output=True, text=True)
        assert dead.returncode == (-signal.SIGKILL if over == "tcp" else 0), dead.stderr[-3000:]
        ray.init(address=cluster.address, redis_password=cluster.token)
        # Generous: the node checks its local drivers' pids about once a second
        # and hears of a remote driver's closed connection at once.
        wait_for(lambda: ray.available_resources().get("CPU") == 3, 60,
                 "the dead driver's CPUs to be free again")

        @ray.remote(num_cpus=1)
        class Named:
            def ping(self):
                return "again"

        again = Named.options(name="left-behind").remote()
        assert ray.get(again.ping.remote(), timeout=60) == "again"
    finally:
        ray.shutdown()
        cluster.stop()

"""Direct actor calls across nodes (core/remote_endpoint.py, the caller's
side in core/direct*.py): a driver on one node calls an actor made on
another straight over the worker's authenticated tcp socket, and every
result, error and failure is what it would be through the nodes.

The driver is on the head; node A (its own temp root) has {"node_a": 10}.
An actor made from a task on A is homed and lives there. Proof that calls
went direct: the actor's worker counts the calls its tcp socket took, and
the driver's node counts no submitted task for them.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

import zray as ray
from zray.exceptions import RayActorError, RayTaskError
from zray.transport import auth

from cluster_util import head_and_node_a, here, records, tcp_driver_env, wait_for

STORE = str(100 * 1024 * 1024)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from head_and_node_a(tmp_path_factory.mktemp("xdirect"), STORE)


@pytest.fixture
def driver(cluster):
    info = ray.init(address=cluster.address, redis_password=cluster.token)
    try:
        yield info
    finally:
        ray.shutdown()


@ray.remote
class Box:
    def __init__(self):
        self.calls = []

    def add(self, x):
        self.calls.append(x)
        return len(self.calls)

    def calls_seen(self):
        return list(self.calls)

    def pid(self):
        return os.getpid()

    def node(self):
        return here()

    def tcp_calls(self):
        from zray.core import context
        endpoint = context.current_worker().remote_endpoint
        return endpoint.calls if endpoint is not None else -1

    def tcp_address(self):
        from zray.core import context
        return context.current_worker().remote_endpoint.address

    def endpoint_warned(self):
        from zray.core import context
        return context.current_worker().remote_endpoint.warned

    def shm_objects(self):
        from zray.core import context
        return context.current().request("store_stats")["shm_objects"]

    def slow(self, x, delay):
        time.sleep(delay)
        self.calls.append(x)
        return x

    def big(self):
        return np.arange(300_000)       # past the inline limit: stays on A

    def holding(self):
        return [ray.put("inner")]       # holds a ref: stays on A

    def fail(self):
        raise KeyError("remote boom")

    def total(self, array):
        return float(array.sum())


def make_on(resource, **options):
    """A Box created from a task on the node with ``resource``: homed there."""
    @ray.remote(num_cpus=0, resources={resource: 1})
    def make():
        return Box.options(num_cpus=0, resources={resource: 1}, **options).remote()
    return ray.get(make.remote(), timeout=60)


def submitted():
    return ray.api._runtime().request("status")["tasks"]["submitted"]


def wait_direct(actor):
    """Call until this process's tcp socket to the actor is up and usable."""
    def usable():
        ray.get(actor.pid.remote(), timeout=30)
        channel = ray.api._runtime().direct.channels.get(actor._actor_id)
        return channel is not None and channel.remote and channel.usable()
    wait_for(usable, 30, "the direct tcp socket to the actor")


def test_calls_from_another_node_go_straight_to_the_actor_in_order(driver):
    box = make_on("node_a")
    node_a = ray.get(box.node.remote(), timeout=60)
    assert node_a != ray.api._runtime().node_info["node_id"]
    wait_direct(box)
    before_node, before_tcp = submitted(), ray.get(box.tcp_calls.remote())
    assert before_tcp > 0
    counts = ray.get([box.add.remote(i) for i in range(200)], timeout=60)
    assert counts == list(range(1, 201))
    # Not one of them went through the driver's node; all came in on tcp.
    assert submitted() == before_node
    assert ray.get(box.tcp_calls.remote()) >= before_tcp + 200
    # Small ref arguments (inline values) go direct too; one in shared
    # memory goes through the nodes, and one caller's calls keep its order.
    small = ray.put(5)
    big = ray.put(np.ones(200_000))
    refs = [box.add.remote(small), box.total.remote(big), box.add.remote(small),
            box.add.remote(7)]
    assert ray.get(refs, timeout=60)[1] == 200_000.0
    seen = ray.get(box.calls_seen.remote(), timeout=60)
    assert seen[-3:] == [5, 5, 7] and len(seen) == 203


def test_an_actor_made_here_and_placed_on_another_node_is_called_over_tcp(driver):
    box = Box.options(num_cpus=0, resources={"node_a": 1}).remote()     # homed on the head
    assert ray.get(box.node.remote(), timeout=60) != ray.api._runtime().node_info["node_id"]
    wait_direct(box)
    before_node, before_tcp = submitted(), ray.get(box.tcp_calls.remote())
    assert ray.get([box.add.remote(i) for i in range(100)], timeout=60) == list(range(1, 101))
    assert submitted() == before_node
    assert ray.get(box.tcp_calls.remote()) >= before_tcp + 100
    assert ray.get(box.big.remote(), timeout=60)[-1] == 299_999

    # A task on the actor's node reaches it over ipc (its socket file is there).
    @ray.remote(num_cpus=0, resources={"node_a": 1})
    def call_from_its_node(handle):
        runtime = ray.api._runtime()
        wait_for(lambda: ray.get(handle.pid.remote()) and runtime.direct.channels[
            handle._actor_id].usable(), 30, "the ipc socket to the actor")
        channel = runtime.direct.channels[handle._actor_id]
        return channel.remote, ray.get([handle.add.remote(0) for _ in range(5)])

    remote, counts = ray.get(call_from_its_node.remote(box), timeout=60)
    assert remote is False and counts == [101, 102, 103, 104, 105]


def test_a_placed_actors_worker_killed_during_calls_retries_them(driver):
    box = Box.options(num_cpus=0, resources={"node_a": 1}, max_restarts=1,
                      max_task_retries=1).remote()
    wait_direct(box)
    pid = ray.get(box.pid.remote())
    in_flight = [box.slow.remote(i, 0.4) for i in range(4)]
    wait_for(lambda: len(ray.api._runtime().direct.pending) == 4, 10, "the calls to be out")
    os.kill(pid, signal.SIGKILL)
    assert ray.get(in_flight, timeout=60) == [0, 1, 2, 3]
    assert ray.get(box.pid.remote(), timeout=60) != pid
    # No retries: the call in flight fails, as through the nodes.
    box2 = Box.options(num_cpus=0, resources={"node_a": 1}, max_restarts=1).remote()
    wait_direct(box2)
    pid2 = ray.get(box2.pid.remote())
    call = box2.slow.remote(1, 30)
    wait_for(lambda: ray.api._runtime().direct.pending, 10, "the call to be out")
    os.kill(pid2, signal.SIGKILL)
    with pytest.raises(RayActorError):
        ray.get(call, timeout=60)
    assert ray.get(box2.add.remote(3), timeout=60) == 1


def test_a_stream_of_calls_from_creation_on_keeps_its_order(driver):
    """Calls sent from the start go through the nodes until the worker's
    address is known and it answers, then direct: never out of order."""
    box = make_on("node_a")
    refs = []
    for batch in range(40):
        refs += [box.add.remote(batch * 50 + i) for i in range(50)]
        if batch % 10 == 9:
            ray.get(refs[-1], timeout=60)
    assert ray.get(refs, timeout=60) == list(range(1, 2001))
    assert ray.get(box.calls_seen.remote(), timeout=60) == list(range(2000))
    assert ray.get(box.tcp_calls.remote(), timeout=60) > 0


def test_big_results_errors_and_refs_come_back_through_the_nodes(driver):
    box = make_on("node_a")
    wait_direct(box)
    before_tcp = ray.get(box.tcp_calls.remote())
    array = ray.get(box.big.remote(), timeout=60)
    assert array.shape == (300_000,) and array[-1] == 299_999
    with pytest.raises(RayTaskError, match="remote boom"):
        ray.get(box.fail.remote(), timeout=60)
    (inner,) = ray.get(box.holding.remote(), timeout=60)
    assert ray.get(inner, timeout=60) == "inner"
    # They were direct calls (held on A for the driver's node, then pulled).
    assert ray.get(box.tcp_calls.remote()) >= before_tcp + 3
    # A result passed on to a task after it came back.
    doubled = ray.remote(lambda a: int(a[-1]) * 2).remote(box.big.remote())
    assert ray.get(doubled, timeout=60) == 599_998
    assert ray.get(box.add.remote(1), timeout=60) == 1
    # What A held for the driver's node goes once the driver lets go.
    del array, inner, doubled
    on_a = lambda: ray.get(box.shm_objects.remote(), timeout=60)    # noqa: E731
    wait_for(lambda: on_a() == 0, 20, "node A to free the results it held for us")
    arrays = ray.get([box.big.remote() for _ in range(3)], timeout=60)
    assert all(a[-1] == 299_999 for a in arrays)
    del arrays
    wait_for(lambda: on_a() == 0, 20, "node A to free the results it held for us")


def test_actor_worker_killed_during_calls_retries_or_fails_as_through_the_node(driver):
    box = make_on("node_a", max_restarts=2, max_task_retries=1)
    wait_direct(box)
    pid = ray.get(box.pid.remote())
    in_flight = [box.slow.remote(i, 0.4) for i in range(4)]
    wait_for(lambda: len(ray.api._runtime().direct.pending) == 4, 10, "the calls to be out")
    os.kill(pid, signal.SIGKILL)
    # max_task_retries=1: every call in flight ran again, in order.
    assert ray.get(in_flight, timeout=60) == [0, 1, 2, 3]
    assert ray.get(box.pid.remote(), timeout=60) != pid
    # Without retries the call in flight fails; the actor serves again after.
    box2 = make_on("node_a", max_restarts=1)
    wait_direct(box2)
    pid2 = ray.get(box2.pid.remote())
    call = box2.slow.remote(1, 30)
    wait_for(lambda: ray.api._runtime().direct.pending, 10, "the call to be out")
    os.kill(pid2, signal.SIGKILL)
    with pytest.raises(RayActorError):
        ray.get(call, timeout=60)
    assert ray.get(box2.add.remote(3), timeout=60) == 1
    # The restarted worker published its own address: calls go direct again.
    wait_direct(box2)
    before = submitted()
    assert ray.get([box2.add.remote(i) for i in range(20)], timeout=60)[-1] == 21
    assert submitted() == before


def test_actor_node_killed_during_calls_fails_them_naming_the_node(driver, cluster, tmp_path):
    try:
        cluster.add_node("--num-cpus", 1, "--resources", '{"node_c": 10}',
                         "--object-store-memory", STORE, root=tmp_path)
        cluster.wait_nodes(3)
        (record,) = [r for r in records(tmp_path) if r["role"] == "node"]
        box = make_on("node_c")
        node_c = ray.get(box.node.remote(), timeout=60)
        wait_direct(box)
        call = box.slow.remote(1, 60)
        wait_for(lambda: ray.api._runtime().direct.pending, 10, "the call to be out")
        os.kill(record["pid"], signal.SIGKILL)
        with pytest.raises(RayActorError, match=f"{node_c}.*(left|not in the cluster)"):
            ray.get(call, timeout=60)
        with pytest.raises(RayActorError, match=f"{node_c}"):
            ray.get(box.add.remote(1), timeout=60)
    finally:
        cluster.stop(tmp_path)


REMOTE_DRIVER = """
import os, sys
import numpy as np
import zray as ray
from cluster_util import connect_over_tcp, wait_for

connect_over_tcp()
ray.init(address=sys.argv[1], redis_password=os.environ["ZRAY_TEST_TOKEN"])
runtime = ray.api._runtime()


@ray.remote(num_cpus=0)
class Echo:
    def echo(self, x):
        return x

    def big(self):
        return np.arange(300_000)


echo = Echo.remote()        # made on the driver's node (the head), reached over tcp


def usable():
    ray.get(echo.echo.remote(0))
    channel = runtime.direct.channels.get(echo._actor_id)
    return channel is not None and channel.remote and channel.usable()


wait_for(usable, 30, "the tcp socket to the actor")
before = runtime.request("status")["tasks"]["submitted"]
assert ray.get([echo.echo.remote(i) for i in range(100)]) == list(range(100))
assert runtime.request("status")["tasks"]["submitted"] == before, "went through the node"
assert ray.get(echo.big.remote())[-1] == 299_999       # held for this driver on its node
print("remote direct ok")
"""


def test_a_driver_over_tcp_calls_an_actor_of_its_node_over_tcp(cluster, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(REMOTE_DRIVER)
    driver = subprocess.run([sys.executable, str(script), cluster.address],
                            env=tcp_driver_env({"ZRAY_TEST_TOKEN": cluster.token}),
                            timeout=300, capture_output=True, text=True)
    assert driver.returncode == 0, driver.stdout[-2000:] + driver.stderr[-4000:]
    assert "remote direct ok" in driver.stdout


def _junk_at(address, frames_list):
    """Send each multipart message from a plain (unauthenticated) DEALER, one
    with a wrong token's keys, and raw bytes at ``address``."""
    context = zmq.Context()
    try:
        for frames in frames_list:
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(address)
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                pass
            sock.close(0)
        wrong = context.socket(zmq.DEALER)
        wrong.setsockopt(zmq.LINGER, 0)
        with pytest.raises(auth.NeedsToken, match="wrong password"):
            auth.connect(wrong, address, "not-the-token", check_s=10)
        wrong.close(0)
    finally:
        context.destroy(linger=0)
    host, port = address[len("tcp://"):].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(b"\xff" + b"\0" * 8 + b"\x7f\x03\x00NULL" + b"\0" * 48 + b"junk" * 64)
    except OSError:
        pass


@pytest.fixture(scope="module")
def target(cluster):
    ray.init(address=cluster.address, redis_password=cluster.token)
    box = make_on("node_a")
    yield box, ray.get(box.tcp_address.remote(), timeout=60)
    ray.shutdown()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_junk_at_the_actors_tcp_socket_reaches_no_decoder(target, frames):
    box, address = target
    _junk_at(address, [frames, [b"RCALL"] + frames])


def test_the_actor_serves_after_the_junk(target):
    box, _address = target
    assert ray.get(box.add.remote(1), timeout=60) == 1
    # Nothing from an unauthenticated peer reached the endpoint's decoder.
    assert ray.get(box.endpoint_warned.remote(), timeout=60) is False

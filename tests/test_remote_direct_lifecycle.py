"""Direct actor calls across nodes, over an actor's life: its tcp address in
the kv (``actor_direct:<actor id>``, core/remote_endpoint.py) goes when its
worker does (killed, exited, its node dead), and a restarted one publishes
its own, which callers use; the first calls go direct, and the calls show
in the actor's node's status (``zray status``).

The driver is on the head; node A (its own temp root) has {"node_a": 10}.
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import psutil
import pytest

import zray as ray
from zray.exceptions import RayActorError
from zray.kv.records import ACTOR_DIRECT_PREFIX

from cluster_util import head_and_node_a, here, records, tcp_driver_env, wait_for, zray
from test_remote_direct_calls import wait_direct

STORE = str(100 * 1024 * 1024)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from head_and_node_a(tmp_path_factory.mktemp("xlife"), STORE)


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
        self.count = 0
        self.bigs = 0

    def add(self, x):
        self.count += 1
        return self.count

    def pid(self):
        return os.getpid()

    def node(self):
        return here()

    def tcp_calls(self):
        from zray.core import context
        endpoint = context.current_worker().remote_endpoint
        return endpoint.calls if endpoint is not None else -1

    def total(self, array):
        self.count += 1
        return float(array.sum())

    def held(self, path):
        return wait_for(lambda: os.path.exists(path), 60, "the test's go")

    def big_after(self, mark, directory):
        open(mark, "w").close()
        wait_for(lambda: os.path.exists(os.path.join(directory, "go")), 60, "the test's go")
        self.bigs += 1
        return np.arange(300_000)       # past the inline limit: held on this node

    def big_calls(self):
        return self.bigs

    def shm_objects(self):
        from zray.core import context
        return context.current().request("store_stats")["shm_objects"]

    def leave(self):
        ray.exit_actor()


def make_on(resource, **options):
    """A Box created from a task on the node with ``resource``: homed there."""
    @ray.remote(num_cpus=0, resources={resource: 1})
    def make():
        return Box.options(num_cpus=0, resources={resource: 1}, **options).remote()
    return ray.get(make.remote(), timeout=60)


def address_record(actor):
    return ray.api._runtime().kv_client().call(
        "get", ACTOR_DIRECT_PREFIX + actor._actor_id.hex(), None)


def no_record(actor):
    wait_for(lambda: address_record(actor) is None, 20,
             "the actor's tcp address to leave the kv")


@pytest.mark.parametrize("made_on_a", [True, False])
def test_a_killed_actors_address_leaves_the_kv_and_calls_fail(driver, made_on_a):
    box = (make_on("node_a") if made_on_a
           else Box.options(num_cpus=0, resources={"node_a": 1}).remote())
    wait_direct(box)
    assert address_record(box) is not None
    ray.kill(box)
    with pytest.raises(RayActorError):
        ray.get(box.add.remote(1), timeout=60)
    no_record(box)
    with pytest.raises(RayActorError):      # and again, now that nothing is there
        ray.get(box.add.remote(1), timeout=60)


def test_a_worker_killed_under_a_caller_without_restarts(driver):
    box = make_on("node_a")
    wait_direct(box)
    os.kill(ray.get(box.pid.remote(), timeout=60), signal.SIGKILL)
    with pytest.raises(RayActorError):
        ray.get(box.add.remote(1), timeout=60)
    no_record(box)


def test_an_actor_that_exits_takes_its_address_along(driver):
    box = make_on("node_a")
    wait_direct(box)
    with pytest.raises(RayActorError):
        ray.get(box.leave.remote(), timeout=60)
    no_record(box)
    with pytest.raises(RayActorError):
        ray.get(box.add.remote(1), timeout=60)


def test_a_restarted_actor_publishes_a_fresh_address_that_callers_use(driver):
    box = make_on("node_a", max_restarts=1)
    wait_direct(box)
    first = address_record(box)
    os.kill(ray.get(box.pid.remote(), timeout=60), signal.SIGKILL)
    # Its successor's record, never the dead worker's, is what stays.
    wait_for(lambda: (address_record(box) or first)["worker_id"] != first["worker_id"], 30,
             "the restarted worker's address")
    wait_direct(box)
    before = ray.get(box.tcp_calls.remote(), timeout=60)
    assert ray.get([box.add.remote(i) for i in range(20)], timeout=60)[-1] >= 20
    assert ray.get(box.tcp_calls.remote(), timeout=60) >= before + 20


def test_a_dead_nodes_actor_addresses_leave_the_kv(driver, cluster, tmp_path):
    try:
        cluster.add_node("--num-cpus", 1, "--resources", '{"node_c": 10}',
                         "--object-store-memory", STORE, root=tmp_path)
        cluster.wait_nodes(3)
        (record,) = [r for r in records(tmp_path) if r["role"] == "node"]
        box = make_on("node_c")
        wait_direct(box)
        assert address_record(box)["node_id"] == ray.get(box.node.remote(), timeout=60)
        worker = psutil.Process(ray.get(box.pid.remote(), timeout=60))
        os.kill(record["pid"], signal.SIGKILL)
        # Its worker sees its node go and leaves (a call sent before that may
        # still be answered by it).
        wait_for(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE,
                 20, "the actor's worker to leave with its node")
        with pytest.raises(RayActorError):
            ray.get(box.add.remote(1), timeout=60)
        no_record(box)
    finally:
        cluster.stop(tmp_path)


def submitted():
    return ray.api._runtime().request("status")["tasks"]["submitted"]


def test_the_first_calls_to_a_started_actor_go_direct_in_order(driver):
    """They wait in the caller for the worker's socket to answer (not through
    the nodes, whose answers a stream would have to wait out)."""
    box = make_on("node_a")
    wait_for(lambda: address_record(box) is not None, 30, "the actor to start")
    before = submitted()
    assert ray.get([box.add.remote(i) for i in range(300)], timeout=60) == list(range(1, 301))
    assert submitted() == before
    assert ray.get(box.tcp_calls.remote(), timeout=60) == 301


def test_calls_held_for_starting_actors_survive_other_actors_answering(driver):
    """The first calls to actors on another node wait in the caller while one
    thread looks up each one's address; an actor that answers (its PONG ends
    its wait) while that thread is busy looking up the others must not stop
    it: the calls still waiting go on through the nodes after HOLD_FIRST_S,
    where ray.kill fails them (they waited in the caller for ever: about one
    run in two of this test)."""
    started = [make_on("node_a") for _ in range(5)]
    for box in started:
        wait_for(lambda box=box: address_record(box) is not None, 30, "the actor to start")

    @ray.remote(num_cpus=0, resources={"node_a": 1})
    def make_unplaceable(count):
        return [Box.options(num_cpus=0, resources={"nowhere": 1}).remote()
                for _ in range(count)]
    # Never placed: each of their channels is looked up, a kv round trip, at every turn.
    unplaced = ray.get(make_unplaceable.remote(30), timeout=60)
    held = [actor.add.remote(1) for actor in unplaced]
    # Each one's socket connects at once; its PONG comes while the others are looked up.
    assert [ray.get(box.add.remote(1), timeout=60) for box in started] == [1] * len(started)
    for actor in unplaced:
        ray.kill(actor)
    for ref in held:
        with pytest.raises(RayActorError, match="ray.kill"):
            ray.get(ref, timeout=60)


def test_calls_through_the_nodes_and_direct_ones_keep_one_callers_order(driver):
    """Later calls do not wait for a call through the nodes to be answered
    before they are sent (an async actor's method may wait for a later call
    of the same caller); they go through the nodes behind it until then."""
    box = make_on("node_a")
    wait_direct(box)
    big = ray.put(np.ones(200_000))         # in shared memory: through the nodes
    refs = [box.total.remote(big)] + [box.add.remote(i) for i in range(200)]
    assert ray.get(refs, timeout=60) == [200_000.0] + list(range(2, 202))


@ray.remote
class Broken:
    def __init__(self):
        raise ValueError("no start")

    def add(self, x):
        return x


def test_calls_to_an_actor_that_never_starts_fail_as_through_the_nodes(driver):
    @ray.remote(num_cpus=0, resources={"node_a": 1})
    def make():
        return Broken.options(num_cpus=0, resources={"node_a": 1}).remote()
    broken = ray.get(make.remote(), timeout=60)
    with pytest.raises(RayActorError, match="no start"):
        ray.get([broken.add.remote(i) for i in range(5)], timeout=60)


def node_status(cluster, node_id):
    rows = json.loads(zray("status", "--json", "--temp-dir", cluster.root).stdout)["nodes"]
    (row,) = [r for r in rows if r["node_id"] == node_id]
    return row["status"]["direct"]


def test_direct_calls_from_another_node_show_in_zray_status(driver, cluster, tmp_path):
    box = make_on("node_a")
    node_a = ray.get(box.node.remote(), timeout=60)
    wait_direct(box)
    before = node_status(cluster, node_a)["finished_calls"]
    assert ray.get([box.add.remote(i) for i in range(50)], timeout=60)[-1] == 50
    wait_for(lambda: node_status(cluster, node_a)["finished_calls"] >= before + 50, 30,
             "node A to count the 50 calls that came to its actor over tcp")
    go = str(tmp_path / "go")
    held = box.held.remote(go)
    queued = [box.add.remote(i) for i in range(3)]

    def shown():
        out = zray("status", "--temp-dir", cluster.root).stdout
        node_part = out[out.index(f"Node {node_a}"):]
        return "direct     1 running, 3 queued on workers" in node_part.split("\n\n")[0]
    wait_for(shown, 30, "zray status to show the long call on node A and three queued")
    open(go, "w").close()
    assert ray.get(held, timeout=60) is True and ray.get(queued, timeout=60)[-1] == 53
    wait_for(lambda: node_status(cluster, node_a)["running"] == 0
             and node_status(cluster, node_a)["queued"] == 0, 30, "the calls done")


DYING_CALLER = """
import os, sys
import zray as ray
from cluster_util import wait_for

ray.init(address=sys.argv[1], redis_password=os.environ["ZRAY_TEST_TOKEN"])
box = ray.get_actor(sys.argv[2])
runtime = ray.api._runtime()


def usable():
    ray.get(box.pid.remote())
    channel = runtime.direct.channels.get(box._actor_id)
    return channel is not None and channel.remote and channel.usable()


wait_for(usable, 30, "the tcp socket to the actor")
refs = [box.big_after.remote(os.path.join(sys.argv[3], str(i)), sys.argv[3]) for i in range(3)]
wait_for(lambda: all(os.path.exists(os.path.join(sys.argv[3], str(i))) for i in range(3)), 30,
         "the three calls to start")
os._exit(0)     # before their results (held on the actor's node for ours) are known here
"""


def test_results_held_for_a_caller_that_died_are_freed(driver, cluster, tmp_path):
    """The caller died between its calls and their HELD: its node never heard
    of the results the actor's node held for it; they are freed all the same."""
    box = make_on("node_a", name="held-for-the-dead", max_concurrency=3)
    assert ray.get(box.shm_objects.remote(), timeout=60) == 0
    script = tmp_path / "caller.py"
    script.write_text(DYING_CALLER)
    marks = tmp_path / "marks"
    marks.mkdir()
    caller = subprocess.run(
        [sys.executable, str(script), cluster.address, "held-for-the-dead", str(marks)],
        env=tcp_driver_env({"ZRAY_TEST_TOKEN": cluster.token}), timeout=120,
        capture_output=True, text=True)
    assert caller.returncode == 0, caller.stdout[-2000:] + caller.stderr[-4000:]
    (marks / "go").write_text("")
    # The three results were made, held for the driver's node, then let go.
    wait_for(lambda: ray.get(box.big_calls.remote(), timeout=60) == 3, 30,
             "the three big results to be made")
    wait_for(lambda: ray.get(box.shm_objects.remote(), timeout=60) == 0, 30,
             "node A to free the results held for a caller that died")

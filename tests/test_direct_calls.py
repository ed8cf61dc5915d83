"""Direct actor calls (core/direct.py): the caller and the actor's worker talk
without the node, and every result, error and failure is what it would be
through the node. Real processes throughout; the node's task counts show
which way calls went."""
import os
import signal
import time

import numpy as np
import pytest

import zray as ray
from zray.exceptions import RayActorError

from cluster_util import wait_for


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

    def add_slowly(self, x, delay):
        time.sleep(delay)
        return self.add(x)

    def slow(self, x, delay=0.3):
        time.sleep(delay)
        return x

    def big(self):
        return np.ones(300_000)         # past the inline limit: goes through the node

    def holding(self):
        return [ray.put("inner")]       # holds a ref: goes through the node

    def fail(self):
        raise KeyError("direct boom")

    def leave(self):
        ray.exit_actor()

    @ray.method(num_returns=0)
    def note(self, x):
        self.calls.append(x)

    def keep(self, items):
        self.kept = items               # a list holding a ref: borrowed by the actor
        return len(items)

    def read_kept(self):
        return ray.get(self.kept[0])

    def total(self, array):
        return float(array.sum())


def node_tasks():
    return ray.api._runtime().request("status")["tasks"]["submitted"]


def wait_direct(actor):
    """Call until this process's socket to the actor is up and usable."""
    def usable():
        ray.get(actor.pid.remote())
        channel = ray.api._runtime().direct.channels.get(actor._actor_id)
        return channel is not None and channel.usable()
    wait_for(usable, 20, "the direct socket to the actor")


def test_calls_skip_the_node_and_keep_their_order(ray_shared):
    box = Box.remote()
    wait_direct(box)
    before = node_tasks()
    refs = [box.add.remote(i) for i in range(200)]
    assert ray.get(refs) == list(range(1, 201))
    assert [ray.get(box.add.remote(i)) for i in range(20)] == list(range(201, 221))
    assert ray.get(box.calls_seen.remote())[:200] == list(range(200))
    assert node_tasks() == before, "direct calls went through the node"


def test_a_call_through_the_node_waits_for_direct_ones_in_flight(ray_shared):
    box = Box.remote()
    wait_direct(box)
    first = box.add_slowly.remote(0, 0.5)              # direct, still running
    by_ref = box.add.remote(ray.put(1))                # a ref argument: through the node
    after = box.add.remote(2)                          # behind it, also through the node
    assert ray.get([first, by_ref, after]) == [1, 2, 3]
    assert ray.get(box.calls_seen.remote()) == [0, 1, 2]


def test_results_that_must_outlive_the_call(ray_shared):
    box = Box.remote()
    wait_direct(box)
    assert ray.get(box.big.remote()).sum() == 300_000
    inner = ray.get(box.holding.remote())[0]
    assert ray.get(inner) == "inner"
    with pytest.raises(KeyError, match="direct boom"):
        ray.get(box.fail.remote())
    assert ray.get(box.add.remote(1)) == 1      # still working, still direct


def test_direct_results_passed_on(ray_shared):
    @ray.remote
    def double(x):
        return x * 2

    @ray.remote
    def read_inside(items):
        return ray.get(items[0])

    box = Box.remote()
    wait_direct(box)
    arrived = box.add.remote(1)
    assert ray.get(arrived) == 1
    assert ray.get(double.remote(arrived)) == 2                 # after it came
    assert ray.get(double.remote(box.slow.remote(21))) == 42    # while on its way
    assert ray.get(read_inside.remote([box.slow.remote("x")])) == "x"
    held = ray.put([box.add.remote(7)])
    assert ray.get(read_inside.remote(ray.get(held))) == 2
    other = Box.remote()
    assert ray.get(other.add.remote(box.slow.remote(5))) == 1    # to another actor


def test_dropped_results_and_handles(ray_shared):
    box = Box.remote()
    wait_direct(box)
    pid = ray.get(box.pid.remote())
    for i in range(50):
        box.add.remote(i)                       # results dropped at once
    last = box.slow.remote("last", 0.5)
    del box                                     # the last handle, calls in flight
    assert ray.get(last) == "last"
    wait_for(lambda: not _alive(pid), 20, "the actor to exit after its last call")


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_actor_killed_with_direct_calls_in_flight(ray_shared, tmp_path):
    box = Box.remote()
    wait_direct(box)
    pid = ray.get(box.pid.remote())
    pending = [box.slow.remote(i, 2.0) for i in range(3)]
    wait_for(lambda: ray.wait(pending, timeout=0)[1], 5, "calls in flight")
    os.kill(pid, signal.SIGKILL)
    for ref in pending:
        with pytest.raises(RayActorError, match=f"pid {pid}.*SIGKILL"):
            ray.get(ref, timeout=60)
    with pytest.raises(RayActorError, match="SIGKILL"):
        ray.get(box.add.remote(1), timeout=60)


def test_restart_retries_lost_direct_calls_in_order(ray_shared):
    box = Box.options(max_restarts=1, max_task_retries=1).remote()
    wait_direct(box)
    pid = ray.get(box.pid.remote())
    lost = [box.slow.remote("first", 1.0)] + [box.add.remote(i) for i in range(5)]
    os.kill(pid, signal.SIGKILL)
    assert ray.get(lost, timeout=60) == ["first", 1, 2, 3, 4, 5]
    assert ray.get(box.calls_seen.remote()) == [0, 1, 2, 3, 4]
    assert ray.get(box.pid.remote()) != pid
    wait_direct(box)                            # the restarted actor is reached directly
    before = node_tasks()
    assert ray.get(box.add.remote(9)) == 6
    assert node_tasks() == before


def test_exit_actor_through_a_direct_call(ray_shared):
    box = Box.options(max_restarts=2).remote()
    wait_direct(box)
    with pytest.raises(RayActorError, match="exit_actor"):
        ray.get(box.leave.remote())
    with pytest.raises(RayActorError, match="exit_actor"):
        ray.get(box.add.remote(1), timeout=60)


def test_async_and_threaded_actors_direct(ray_shared):
    @ray.remote
    class Waiter:
        async def pid(self):
            return os.getpid()

        async def echo(self, x):
            import asyncio
            await asyncio.sleep(0.01)
            return x

    @ray.remote(max_concurrency=4)
    class Pool:
        def pid(self):
            return os.getpid()

        def echo(self, x):
            time.sleep(0.01)
            return x

    for actor in (Waiter.remote(), Pool.remote()):
        wait_direct(actor)
        before = node_tasks()
        assert ray.get([actor.echo.remote(i) for i in range(40)]) == list(range(40))
        assert node_tasks() == before


def test_malformed_direct_messages_leave_the_actor_serving(ray_shared):
    """Junk at the actor's own socket is dropped; the actor goes on answering."""
    import zmq
    from zray.transport import protocol as P
    box = Box.remote()
    wait_direct(box)
    session_dir = ray.api._runtime().node_info["session_dir"]
    path = P.actor_socket_path(session_dir, box._actor_id)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect("ipc://" + path)
    try:
        for junk in ([b"\x80\x04junk"], [b"\x93\xa4CALL\x01\x02"], [b""], [b"\xc1" * 100]):
            sock.send_multipart(junk)
        sock.send_multipart([P.pack(P.PING, 1)[0]])   # answered only if the junk was survived
        assert sock.poll(20000), "the actor stopped answering after malformed messages"
        msg_type, _ = P.unpack(sock.recv_multipart()[0])
        assert msg_type == P.PONG
    finally:
        sock.close()
    assert ray.get(box.add.remote(1)) == 1


@ray.remote
def slow_value(x, delay=0.5):
    time.sleep(delay)
    return x


@ray.remote
def failing():
    raise ValueError("argument boom")


def test_calls_with_ref_arguments_go_direct_in_order(ray_shared):
    box = Box.remote()
    wait_direct(box)
    later = slow_value.remote("late", 1.0)          # not made yet when the call is sent
    big = ray.put(np.ones(300_000))                # in shared memory
    before = node_tasks()
    refs = [box.add.remote(later),                 # waits here for its argument...
            box.add.remote("plain"),               # ...and holds back this one, in order
            box.add.remote(ray.put("put")),        # the put's only ref dies at once
            box.add.remote(box.slow.remote("chained", 0.2)),   # a direct result in flight
            box.total.remote(big),
            box.total.remote(np.ones(200_000))]   # large by value: put once, passed by ref
    del later
    assert ray.get(refs, timeout=60) == [1, 2, 3, 4, 300_000.0, 200_000.0]
    assert ray.get(box.calls_seen.remote()) == ["late", "plain", "put", "chained"]
    assert node_tasks() == before, "calls with ref arguments went through the node"


def test_a_failed_argument_fails_the_direct_call(ray_shared):
    box = Box.remote()
    wait_direct(box)
    failed = failing.remote()
    before = node_tasks()
    with pytest.raises(ValueError, match="argument boom"):
        ray.get(box.add.remote(failed), timeout=60)
    assert ray.get(box.add.remote(1)) == 1
    assert node_tasks() == before


def test_refs_inside_arguments_outlive_the_caller_s(ray_shared):
    box = Box.remote()
    wait_direct(box)
    before = node_tasks()
    assert ray.get(box.keep.remote([ray.put("kept")])) == 1   # the caller's ref is gone now
    import gc
    gc.collect()
    time.sleep(0.1)     # let the caller's release reach the node (it must not free it)
    assert ray.get(box.read_kept.remote()) == "kept"
    assert node_tasks() == before


def test_calls_without_returns_go_direct(ray_shared):
    box = Box.remote()
    box.note.remote("first")        # before the socket is up: through the node
    wait_direct(box)                # ...which must not keep later calls off it
    before = node_tasks()
    for i in range(5):
        box.note.remote(i)
    assert ray.get(box.calls_seen.remote()) == ["first", 0, 1, 2, 3, 4]
    assert node_tasks() == before


def test_actor_killed_while_a_call_waits_for_its_argument(ray_shared):
    box = Box.remote()
    wait_direct(box)
    pid = ray.get(box.pid.remote())
    waiting = box.add.remote(slow_value.remote(1, 2.0))
    assert ray.api._runtime().direct.channels[box._actor_id].waiting   # held here, not sent
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RayActorError, match="SIGKILL"):
        ray.get(waiting, timeout=60)


def test_idle_sockets_close_to_make_room(ray_shared, monkeypatch):
    from zray.core import direct_sockets
    monkeypatch.setattr(direct_sockets, "MAX_CHANNELS", 2)
    monkeypatch.setattr(direct_sockets, "IDLE_CLOSE_S", 0.2)
    calls = ray.api._runtime().direct
    for channel in list(calls.channels.values()):   # earlier tests' sockets: idle by now
        channel.last_used = 0.0
    boxes = [Box.remote() for _ in range(3)]
    for box in boxes:
        wait_direct(box)            # each in turn: the least recently used one closes
        assert calls.sockets <= 2
    assert calls.channels.get(boxes[0]._actor_id) is None or not calls.channels[
        boxes[0]._actor_id].socket
    wait_direct(boxes[0])           # back again, in place of another
    assert [ray.get(box.add.remote(1)) for box in boxes] == [1, 1, 1]


def test_calls_after_killing_other_actors(ray_shared):
    """A message that cannot leave on one direct socket (its actor gone)
    never holds up the others."""
    box = Box.remote()
    victim = Box.remote()
    for actor in (box, victim):
        wait_direct(actor)
    calls = ray.api._runtime().direct
    channel = calls.channels[victim._actor_id]
    epoch = channel.epoch
    ray.kill(victim)
    wait_for(lambda: channel.epoch > epoch, 20, "the caller to see the actor's socket close")
    ray.kill(victim)                # again: its socket has no one at the other end now
    assert [ray.get(box.add.remote(i), timeout=30) for i in range(3)] == [1, 2, 3]
    with pytest.raises(RayActorError):
        ray.get(victim.add.remote(1), timeout=30)

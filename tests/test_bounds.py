"""Listening sockets are bounded (transport/sockets.py: MAXMSGSIZE, RCVHWM)
without ever dropping zray's own traffic: bursts past the queue bound and
large objects still arrive whole."""
import os

import numpy as np
import pytest
import zmq

import zray as ray
from zray.cluster import current_token
from zray.core import submit
from zray.transport import auth
from zray.transport import protocol as P
from zray.transport.sockets import MAX_FRAME_BYTES, MAX_QUEUED


def test_a_burst_past_the_receive_bound_loses_nothing(ray_start):
    @ray.remote
    def echo(i):
        return i

    count = MAX_QUEUED + 2_000       # more messages than the node queues per peer
    refs = [echo.remote(i) for i in range(count)]
    puts = [ray.put(i) for i in range(count)]
    assert ray.get(refs, timeout=300) == list(range(count))
    assert ray.get(puts, timeout=60) == list(range(count))


def test_big_objects_and_arguments_pass_the_frame_bound(ray_start):
    @ray.remote
    def total(array, inline):
        return float(array.sum()) + len(inline)

    array = np.ones(20 << 20, dtype=np.uint8)     # 20 MiB: shared memory
    inline = b"x" * 90_000                        # just under the inline size
    assert ray.get(total.remote(array, inline), timeout=60) == float(20 << 20) + 90_000
    assert ray.get(ray.put(array), timeout=60).sum() == 20 << 20


def test_a_function_too_big_for_the_wire_is_refused_at_the_call(ray_start, monkeypatch):
    monkeypatch.setattr(submit, "MAX_FRAME_BYTES", 1 << 20)
    captured = os.urandom(2 << 20)

    @ray.remote
    def uses_captured():
        return len(captured)

    with pytest.raises(ValueError, match="captures large data"):
        uses_captured.remote()


@pytest.mark.slow
def test_an_oversized_frame_closes_only_its_senders_connection(ray_start):
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        auth.connect(sock, ray_start["node_address"], current_token())
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.send_multipart(P.pack(P.PUT, []) + [b"\0" * (MAX_FRAME_BYTES + 1)])
        assert monitor.poll(60_000), "the node did not close the oversized sender"
        sock.disable_monitor()
    finally:
        context.destroy(linger=0)
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=60) == 7

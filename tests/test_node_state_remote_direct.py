"""NodeState: the results of a direct call from another node's client
(core/remote_endpoint.py) are held for that node, and that node holds and
pulls them for its client (HELD_AT). No sockets: events in, commands out."""
from state_util import Node, inline, new_id, of, pushed, shm_header
from test_node_state import attempted, call, make_actor
from zray.sched.state import commands as C, events as E
from zray.transport import protocol as P

PEER_B = "b2" * 8
B_IDENTITY = b"p" + PEER_B.encode() + b"\x01\x02\x03\x04"    # its link here: id + nonce


def peer_info():
    return {"tcp_address": "tcp://peer:1", "resources": {"CPU": 1}, "available": {"CPU": 1},
            "queued": 0}


def actor_node_with_peer():
    node = Node(node_id="a1" * 8)
    node.driver()
    node.do(E.PeerSeen(PEER_B, peer_info()))
    node.do(E.ClientJoined(B_IDENTITY, "peer", 0))
    actor_id, worker_id = make_actor(node)
    return node, actor_id, worker_id


def test_results_held_for_the_callers_node_are_pushed_to_it_and_freed_when_it_lets_go():
    node, actor_id, worker_id = actor_node_with_peer()
    direct = call(actor_id)
    result = direct.return_ids[0]
    node.do(E.TaskDone(worker_id, direct.task_id, [inline(result)], [b"x"], False, None,
                       b"p" + PEER_B.encode()))
    assert node.state.objects.get(result).refcount == 1       # held for node B
    out = node.do(E.Subscribed(B_IDENTITY, [result]))
    assert pushed(out, B_IDENTITY) == {result: False}
    node.do(E.RefsRemoved(B_IDENTITY, [result]))
    assert node.state.objects.get(result) is None


def test_node_b_asking_before_the_workers_done_arrives_waits_for_it():
    """The caller heard HELD (and its node asked) before the worker's DONE
    reached this node: the result is coming, not lost."""
    node, actor_id, worker_id = actor_node_with_peer()
    direct = call(actor_id)
    result = direct.return_ids[0]
    out = node.do(E.Subscribed(B_IDENTITY, [result]))
    assert not of(C.PushObject, out)
    out = node.do(E.TaskDone(worker_id, direct.task_id, [inline(result)], [b"x"], False, None,
                             b"p" + PEER_B.encode()))
    assert pushed(out, B_IDENTITY) == {result: False}      # the value, not an ObjectLostError


def test_the_callers_node_holds_results_left_on_a_peer_and_pulls_them_when_asked():
    node = Node(node_id="c3" * 8)
    node.driver()
    node.do(E.PeerSeen(PEER_B, peer_info()))
    result = new_id()
    node.do(E.HeldElsewhere(b"driver", PEER_B, [shm_header(result, 300_000)]))
    assert node.state.objects.get(result).refcount == 1       # held for the driver
    out = node.do(E.Subscribed(b"driver", [result]))
    (want,) = of(C.WantObjects, out)
    assert want.node_id == PEER_B and want.object_ids == [result]
    # The driver lets go: so does this node, and its hold on the peer with it.
    out = node.do(E.RefsRemoved(b"driver", [result]))
    assert node.state.objects.get(result) is None
    assert any(c.node_id == PEER_B and result in c.object_ids for c in of(C.ReleaseRemote, out))


def test_results_on_a_node_that_left_are_lost_with_it():
    node = Node(node_id="c3" * 8)
    node.driver()
    result = new_id()
    node.do(E.HeldElsewhere(b"driver", PEER_B, [shm_header(result, 300_000)]))
    (push,) = of(C.PushObject, node.do(E.Subscribed(b"driver", [result])))
    assert push.entry.is_error


def test_a_direct_call_that_ended_its_actor_keeps_its_result_when_resubmitted():
    """exit_actor() in a direct call: the worker's DONE (exiting, results
    held for the caller) came, then its socket closed before the caller read
    the reply, so the caller resubmits it. The result stands; it is not
    failed as a call to a dead actor (its caller waited forever for it)."""
    node, actor_id, worker_id = actor_node_with_peer()
    lost = attempted(actor_id, worker_id)
    result = lost.return_ids[0]
    node.do(E.TaskDone(worker_id, lost.task_id, [inline(result, True)], [b"x"], True,
                       "exit_actor", b"driver"))
    node.do(E.WorkerExited(worker_id, 0, 0))
    out = node.submit(lost)
    assert pushed(out) == {result: True}
    assert node.state.objects.get(result).frames == [b"x"]      # the worker's, not a new error


def test_an_actors_worker_publishes_its_tcp_address_and_it_is_forgotten_when_it_dies():
    """Killed or crashed, restarting or not: the kv record naming that worker
    goes (the edge deletes it only if it still names that worker, so a
    restarted worker's own record stays)."""
    for restarts in (0, 1):
        node = Node(node_id="a1" * 8)
        node.driver()
        actor_id, worker_id = make_actor(node, max_restarts=restarts)
        out = node.do(E.ActorAddressPublished(worker_id, actor_id, "tcp://h:1"))
        assert [(c.actor_id, c.worker_id, c.address) for c in of(C.PublishActorAddress, out)] == [
            (actor_id, worker_id, "tcp://h:1")]
        out = node.do(E.WorkerExited(worker_id, -9, 0))
        assert [(c.actor_id, c.worker_id) for c in of(C.ForgetActorAddress, out)] == [
            (actor_id, worker_id)]


def test_only_an_actors_own_worker_publishes_its_address():
    node = Node(node_id="a1" * 8)
    node.driver()
    actor_id, worker_id = make_actor(node)
    other, _ = make_actor(node)
    assert not of(C.PublishActorAddress, node.do(E.ActorAddressPublished(worker_id, other,
                                                                          "tcp://h:1")))
    assert not of(C.PublishActorAddress, node.do(E.ActorAddressPublished(b"nobody", actor_id,
                                                                          "tcp://h:1")))
    out = node.do(E.WorkerExited(worker_id, 0, 0))
    assert not of(C.ForgetActorAddress, out)        # it published none


def test_results_held_for_a_peers_client_are_told_to_that_peer():
    node, actor_id, worker_id = actor_node_with_peer()
    direct = call(actor_id)
    result = direct.return_ids[0]
    out = node.do(E.TaskDone(worker_id, direct.task_id, [inline(result)], [b"x"], False, None,
                             b"p" + PEER_B.encode() + b"caller"))
    assert node.state.objects.get(result).refcount == 1       # held for node B
    (told,) = of(C.TellPeer, out)
    assert told.node_id == PEER_B and told.msg_type == P.HELD_FOR
    assert told.fields[0] == b"caller" and [h[0] for h in told.fields[1]] == [result]


def caller_node():
    node = Node(node_id="c3" * 8)
    node.driver()
    node.do(E.PeerSeen(PEER_B, peer_info()))
    return node


def test_results_held_on_a_peer_for_a_caller_that_left_are_released_there():
    node = caller_node()
    result = new_id()
    out = node.do(E.HeldFor(PEER_B, b"gone-caller", [shm_header(result, 300_000)]))
    assert [(c.node_id, c.object_ids) for c in of(C.ReleaseRemote, out)] == [(PEER_B, [result])]
    assert node.state.objects.get(result) is None


def test_the_caller_and_the_peer_saying_it_in_either_order_hold_once():
    for peer_first in (True, False):
        node = caller_node()
        result = new_id()
        said = [E.HeldFor(PEER_B, b"driver", [shm_header(result, 300_000)]),
                E.HeldElsewhere(b"driver", PEER_B, [shm_header(result, 300_000)])]
        for event in (said if peer_first else said[::-1]):
            node.do(event)
        assert node.state.objects.get(result).refcount == 1
        out = node.do(E.RefsRemoved(b"driver", [result]))
        assert node.state.objects.get(result) is None
        assert any(result in c.object_ids for c in of(C.ReleaseRemote, out))


def test_the_peer_saying_it_after_the_caller_let_go_holds_nothing_again():
    node = caller_node()
    result = new_id()
    node.do(E.HeldElsewhere(b"driver", PEER_B, [shm_header(result, 300_000)]))
    node.do(E.RefsRemoved(b"driver", [result]))
    out = node.do(E.HeldFor(PEER_B, b"driver", [shm_header(result, 300_000)]))
    assert node.state.objects.get(result) is None and not of(C.ReleaseRemote, out)

"""NodeState: actors placed on other nodes, calls routed to them, and what a
node's death does to them (sched/state/actor_routing.py). Two NodeStates
stand for two nodes; the Forward commands of one are fed to the other by hand."""
import os

import pytest

from state_util import Node, inline, new_id, of, pushed, spec, value_of
from zray.exceptions import RayActorError
from zray.sched import task as task_module
from zray.sched.state import commands as C, events as E
from zray.sched.state.forwarding import CALLER, ORIGIN
from zray.sched.task import TaskState
from zray.transport import protocol as P

HOME = "a1" * 8          # node ids: 16 hex digits; an actor id begins with its home's


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setattr(task_module, "STRICT", True)


def peer_info(resources):
    resources = dict(resources)
    return {"tcp_address": "tcp://peer:1", "resources": resources, "available": resources,
            "queued": 0}


def home_node():
    node = Node(cpus=1, node_id=HOME)
    node.driver()
    return node


def actor_id_homed(node_id=HOME):
    return bytes.fromhex(node_id) + os.urandom(12)


def creation(actor_id, resources=None, max_restarts=0, max_task_retries=0):
    s = spec(P.ACTOR_CREATE, actor_id=actor_id, cpus=0,
             options={"max_restarts": max_restarts, "max_task_retries": max_task_retries,
                      "hold_resources": True})
    demand = {name: 10000 * amount for name, amount in (resources or {}).items()}
    return s._replace(return_ids=(actor_id,), resources=demand)


def call(actor_id, deps=()):
    return spec(P.ACTOR_METHOD, actor_id=actor_id, cpus=0, deps=deps, name="Counter.add")


def ids(forwards):
    return [f.spec.task_id for f in forwards]


def away_from_home():
    """A node with a driver, its peer ``home`` and the id of an actor homed there."""
    home = "b2" * 8
    node = Node(cpus=1, node_id="c3" * 8)
    node.driver()
    node.do(E.PeerSeen(home, peer_info({"CPU": 1})))
    return node, home, actor_id_homed(home)


def remote_actor(node, peer="peer_b", **options):
    """An actor that needs {"only_b": 1}, which only ``peer`` has: placed there."""
    node.do(E.PeerSeen(peer, peer_info({"CPU": 1, "only_b": 1})))
    actor_id = actor_id_homed()
    create = creation(actor_id, {"only_b": 1}, **options)
    (forward,) = of(C.Forward, node.submit(create))
    assert forward.node_id == peer and forward.spec.kind == P.ACTOR_CREATE
    return actor_id, create


def test_actor_no_local_resource_fits_is_created_on_a_peer_and_calls_follow_in_order():
    node = home_node()
    node.do(E.PeerSeen("peer_b", peer_info({"CPU": 1, "only_b": 1})))
    actor_id = actor_id_homed()
    create = creation(actor_id, {"only_b": 1})
    early = call(actor_id)
    out = node.submit(create) + node.submit(early)
    forwards = of(C.Forward, out)
    assert ids(forwards) == [create.task_id, early.task_id]      # the creation first
    assert all(f.node_id == "peer_b" for f in forwards)
    assert forwards[1].spec.options[CALLER] == (HOME, b"driver")
    assert forwards[1].spec.options[ORIGIN] == HOME
    late = [call(actor_id) for _ in range(3)]
    out = []
    for s in late:
        out += node.submit(s)
    assert ids(of(C.Forward, out)) == [s.task_id for s in late]
    # The creation's result comes back: our hold on the actor there stays.
    routing = node.state.actors.routing
    assert routing.keeps_hold(actor_id, "peer_b") and not routing.keeps_hold(actor_id, "x")
    node.do(E.ObjectsSealed([inline(actor_id)], [b"a"]))
    assert routing.location(actor_id) == ("peer_b", None)
    # A call's result comes back: it is done here.
    out = node.do(E.ObjectsSealed([inline(early.return_ids[0])], [b"r"]))
    assert pushed(out) == {early.return_ids[0]: False}
    actor = node.state.actors.by_id[actor_id]
    assert early.task_id not in actor.inflight and len(actor.inflight) == 3
    assert not node.state.forwarding.forwarded.get(early.task_id)


def test_host_node_gone_with_restarts_left_recreates_elsewhere_and_calls_follow():
    node = home_node()
    actor_id, create = remote_actor(node, max_restarts=1)
    node.do(E.ObjectsSealed([inline(actor_id)], [b"a"]))        # created there
    inflight = call(actor_id)
    node.submit(inflight)
    out = node.do(E.PeerGone("peer_b"))
    assert pushed(out) == {inflight.return_ids[0]: True}
    error = value_of(of(C.PushObject, out)[0])
    assert isinstance(error, RayActorError)
    assert "node peer_b" in str(error) and "left the cluster" in str(error)
    assert "being restarted" in str(error)
    (drop,) = of(C.DropPeerTransfers, out)
    assert actor_id in drop.expected_again
    assert not of(C.Forward, out)      # no node fits yet: it waits (infeasible here)
    queued = call(actor_id)
    assert not of(C.Forward, node.submit(queued))
    out = node.do(E.PeerSeen("peer_c", peer_info({"CPU": 1, "only_b": 1})))
    forwards = of(C.Forward, out)
    assert ids(forwards) == [create.task_id, queued.task_id]
    assert {f.node_id for f in forwards} == {"peer_c"}
    assert forwards[0].spec.options["max_restarts"] == 0     # the one restart is used
    assert node.state.actors.by_id[actor_id].restarts_left == 0


def test_host_node_gone_with_task_retries_runs_calls_again_first_in_line():
    node = home_node()
    actor_id, create = remote_actor(node, max_restarts=1, max_task_retries=1)
    node.do(E.PeerSeen("peer_c", peer_info({"CPU": 1, "only_b": 1})))
    c1, c2 = call(actor_id), call(actor_id)
    node.submit(c1)
    node.submit(c2)
    out = node.do(E.PeerGone("peer_b"))
    assert not pushed(out)
    assert ids(of(C.Forward, out)) == [create.task_id, c1.task_id, c2.task_id]
    assert {f.node_id for f in of(C.Forward, out)} == {"peer_c"}
    assert set(c1.return_ids + c2.return_ids) <= of(C.DropPeerTransfers, out)[0].expected_again


def test_host_node_gone_without_restarts_fails_calls_naming_the_node_and_later_ones_fast():
    node = home_node()
    actor_id, create = remote_actor(node)
    c1 = call(actor_id)
    node.submit(c1)                     # in flight while the creation is too
    out = node.do(E.PeerGone("peer_b"))
    assert pushed(out) == {c1.return_ids[0]: True}
    text = of(C.ReportError, out)[0].text
    assert "node peer_b (tcp://peer:1) left the cluster" in text and "max_restarts" in text
    c2 = call(actor_id)
    out = node.submit(c2)
    assert pushed(out) == {c2.return_ids[0]: True}
    assert "left the cluster" in str(value_of(of(C.PushObject, out)[0]))
    assert node.state.actors.routing.location(actor_id) is None


def test_kill_is_sent_to_the_host_and_the_actor_ends_here_too():
    node = home_node()
    actor_id, _ = remote_actor(node, max_restarts=2)
    node.do(E.ObjectsSealed([inline(actor_id)], [b"a"]))
    out = node.do(E.KillActorRequested(actor_id, True))
    assert of(C.TellPeer, out)[:1] == [C.TellPeer("peer_b", P.REQUEST,
                                                  (0, "kill_actor", (actor_id, True)))]
    assert of(C.TellPeer, out)[1:] == [C.TellPeer("peer_b", P.REMOVE_REF, ([actor_id],))]
    c = call(actor_id)
    out = node.submit(c)                    # fails here, not sent
    assert not of(C.Forward, out) and "killed by ray.kill()" in of(C.ReportError, out)[0].text
    assert not node.state.actors.routing.keeps_hold(actor_id, "peer_b")
    node.do(E.RefsRemoved(b"driver", [actor_id]))       # the driver's last handle
    assert actor_id not in node.state.actors.by_id


def test_last_handle_gone_lets_the_host_go_once_its_calls_are_back():
    node = home_node()
    actor_id, _ = remote_actor(node, max_restarts=2)
    node.do(E.ObjectsSealed([inline(actor_id)], [b"a"]))
    c = call(actor_id)
    node.submit(c)
    assert not of(C.TellPeer, node.do(E.RefsRemoved(b"driver", [actor_id])))
    out = node.do(E.ObjectsSealed([inline(c.return_ids[0])], [b"r"]))
    assert of(C.TellPeer, out) == [C.TellPeer("peer_b", P.REMOVE_REF, ([actor_id],))]
    assert actor_id not in node.state.actors.by_id


def test_a_handle_from_the_actors_home_is_held_there_until_ours_go():
    node, home, actor_id = away_from_home()
    routing = node.state.actors.routing
    assert routing.keeps_hold(actor_id, home) and not routing.keeps_hold(actor_id, "other")
    node.do(E.ObjectsPut(b"driver", [inline(actor_id)], [b"a"]))   # our copy, held
    out = node.do(E.RefsRemoved(b"driver", [actor_id]))
    assert of(C.TellPeer, out) == [C.TellPeer(home, P.REMOVE_REF, ([actor_id],))]


def test_a_named_actor_made_here_is_published_and_withdrawn():
    node = home_node()
    actor_id = actor_id_homed()
    s = creation(actor_id)
    s = s._replace(options={**s.options, "name": "keeper", "handle_meta": ("K", {}, {})})
    out = node.submit(s)
    assert of(C.PublishActorName, out) == [C.PublishActorName("keeper", (actor_id,
                                                                         ("K", {}, {})))]
    node.start_workers(out)
    out = node.do(E.KillActorRequested(actor_id, True))
    assert of(C.PublishActorName, out) == [C.PublishActorName("keeper", None)]


def test_call_for_an_actor_homed_on_a_peer_goes_there_and_fails_when_the_home_goes():
    node, home, actor_id = away_from_home()
    c1, c2 = call(actor_id), call(actor_id)
    forwards = of(C.Forward, node.submit(c1) + node.submit(c2))
    assert ids(forwards) == [c1.task_id, c2.task_id] and forwards[0].node_id == home
    node.do(E.ObjectsSealed([inline(c1.return_ids[0])], [b"r"]))
    out = node.do(E.PeerGone(home))
    assert pushed(out) == {c2.return_ids[0]: True}
    assert f"home node {home}" in of(C.ReportError, out)[0].text
    assert not node.state.actors.proxies
    c3 = call(actor_id)
    out = node.submit(c3)                  # no route now: fails at once
    assert pushed(out) == {c3.return_ids[0]: True}
    assert "not in the cluster" in of(C.ReportError, out)[0].text


def test_a_call_forwarded_in_for_an_unknown_actor_is_not_sent_back_out():
    node = Node(cpus=1, node_id="c3" * 8)
    node.do(E.ClientJoined(b"pb2", "peer", 1))
    node.do(E.PeerSeen("b2" * 8, peer_info({"CPU": 1})))
    s = call(actor_id_homed("b2" * 8))
    s = s._replace(options={ORIGIN: "b2" * 8, CALLER: ("b2" * 8, b"d")})
    out = node.do(E.TaskForwardedIn(b"pb2", "b2" * 8, s, None, [], [], []))
    assert not of(C.Forward, out) and pushed(out, b"pb2") == {s.return_ids[0]: True}


def test_forwarded_calls_queue_by_their_first_caller():
    """Two callers on one peer: one's missing argument does not hold the other back."""
    node = Node(cpus=1, node_id="c3" * 8)
    node.driver()
    actor_id = node_actor(node)
    node.do(E.ClientJoined(b"pb2", "peer", 1))
    slow = new_id()
    a1 = call(actor_id, deps=[slow])._replace(options={ORIGIN: "b2" * 8, CALLER: ("b2", b"x")})
    b1 = call(actor_id)._replace(options={ORIGIN: "b2" * 8, CALLER: ("b2", b"y")})
    out = node.submit(a1, client=b"pb2") + node.submit(b1, client=b"pb2")
    assert [c.task.spec.task_id for c in of(C.Execute, out)] == [b1.task_id]
    out = node.do(E.ObjectsSealed([inline(slow)], [b"v"]))
    assert [c.task.spec.task_id for c in of(C.Execute, out)] == [a1.task_id]


def node_actor(node):
    actor_id = new_id()
    s = creation(actor_id)
    (execute,) = of(C.Execute, node.start_workers(node.submit(s)))
    node.done(execute)
    return actor_id


def test_restart_of_a_creation_still_in_flight_is_placed_again():
    node = home_node()
    actor_id, create = remote_actor(node, max_restarts=1)
    node.do(E.PeerSeen("peer_c", peer_info({"CPU": 1, "only_b": 1})))
    out = node.do(E.PeerGone("peer_b"))     # before __init__ was done there
    (forward,) = of(C.Forward, out)
    assert forward.node_id == "peer_c" and forward.spec.task_id == create.task_id
    assert node.state.actors.by_id[actor_id].creation.state is TaskState.FORWARDED


# == the host's side: a creation a peer placed here ===============================
def hosted_actor(node, peer=b"pa1", origin="a1" * 8):
    """A creation forwarded in by ``peer``: created here; returns (actor_id, worker_id)."""
    node.do(E.ClientJoined(peer, "peer", 1))
    actor_id = actor_id_homed(origin)
    s = creation(actor_id)._replace(options={ORIGIN: origin, "max_restarts": 0})
    out = node.start_workers(node.do(E.TaskForwardedIn(peer, origin, s, None, [], [], [])))
    (execute,) = of(C.Execute, out)
    out = node.done(execute)
    assert pushed(out, peer) == {actor_id: False}        # the home hears it is made
    assert not of(C.PublishActorName, out)
    return actor_id, execute.worker_id


def forwarded_call(actor_id, caller, origin="a1" * 8):
    return call(actor_id)._replace(options={ORIGIN: origin, CALLER: (origin, caller)})


def test_hosted_actor_lives_while_its_home_holds_it_and_exits_after():
    node = Node(cpus=1, node_id="b2" * 8)
    actor_id, worker_id = hosted_actor(node)
    c = forwarded_call(actor_id, b"driver")
    out = node.do(E.TaskForwardedIn(b"pa1", "a1" * 8, c, None, [], [], []))
    (execute,) = of(C.Execute, out)
    assert execute.worker_id == worker_id
    out = node.done(execute)
    assert pushed(out, b"pa1") == {c.return_ids[0]: False}
    out = node.do(E.RefsRemoved(b"pa1", [c.return_ids[0]]))   # the result, let go
    assert not of(C.StopWorker, out)
    out = node.do(E.RefsRemoved(b"pa1", [actor_id]))          # the home's handles went
    assert of(C.StopWorker, out) == [C.StopWorker(worker_id)]


def test_hosted_actor_goes_when_its_home_node_leaves():
    node = Node(cpus=1, node_id="b2" * 8)
    actor_id, worker_id = hosted_actor(node)
    out = node.do(E.ClientLeft(b"pa1"))
    assert of(C.StopWorker, out) == [C.StopWorker(worker_id)]

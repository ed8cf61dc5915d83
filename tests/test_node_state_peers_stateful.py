"""Random event sequences against NodeState with peers: tasks only peers can
run, results that stay there or come back inline, pulls, drops and peer
deaths; the edge (transfers cut short by a death) is modelled as
``plasma/transfer.py`` behaves.

Invariants: a copy held for us on a peer is let go at most once, and never
while a client here holds the object without a local copy; a result reaches
its owner at most once, and is an error only if the task making it may
have run out of retries (each death costs a task at most one); after a drain with a live peer every result the
driver holds reaches it (its value or an ObjectLostError, never nothing);
every task submitted ends; once the driver drops everything, no entry,
location, lineage or hold on a peer is left.
"""
import itertools
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from state_util import Node, inline, shm_header, spec
from zray.plasma.store import READY
from zray.sched import task as task_module
from zray.sched.state import commands as C, events as E

DRIVER = b"driver"


def peer_info():
    resources = {"CPU": 2, "GPU": 1}
    return {"tcp_address": "tcp://peer:1", "resources": resources, "available": resources,
            "queued": 0}


class PeersMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        task_module.STRICT = True
        self.node = Node(cpus=1)           # no GPU: every task here goes to a peer
        self.node.driver(DRIVER)
        self.names = (f"peer{i}" for i in itertools.count())
        self.live = set()
        self.on_peer = {}                  # peer -> {task_id: spec} it runs for us
        self.located = Counter()           # (peer, object id) -> times told it is there
        self.released = Counter()          # (peer, object id) -> ReleaseRemote count
        self.pulls = set()                 # (peer, object id) asked for
        self.sent = set()                  # results a running task's peer already sent
        self.held = set()                  # object ids the driver holds
        self.results = Counter()           # object id -> pushes to the driver
        self.retries = {}                  # object id -> max_retries of the task making it
        self.deaths = 0                    # peers died so far (each costs a task one retry)
        self.join()

    # -- what the node said ------------------------------------------------------
    def apply(self, commands):
        for command in commands:
            if isinstance(command, C.Forward):
                assert command.node_id in self.live
                self.on_peer[command.node_id][command.spec.task_id] = command.spec
            elif isinstance(command, C.WantObjects):
                for object_id in command.object_ids:
                    self.pulls.add((command.node_id, object_id))
            elif isinstance(command, C.ReleaseRemote):
                for object_id in command.object_ids:
                    key = (command.node_id, object_id)
                    self.released[key] += 1
                    assert self.released[key] <= self.located[key], "let go of twice"
                    entry = self.node.state.objects.get(object_id)
                    assert object_id not in self.held or (
                        entry is not None and entry.state == READY), "let go while needed"
            elif isinstance(command, C.PushObject) and command.identity == DRIVER:
                object_id = command.entry.object_id
                self.results[object_id] += 1
                assert not command.entry.is_error or self.retries[object_id] < self.deaths, (
                    "an error although the task that makes it had retries left")

    def do(self, event):
        self.apply(self.node.do(event))

    # -- rules ---------------------------------------------------------------------
    def join(self):
        name = next(self.names)
        self.live.add(name)
        self.on_peer[name] = {}
        self.do(E.PeerSeen(name, peer_info()))

    @precondition(lambda self: len(self.live) < 3)
    @rule()
    def peer_joins(self):
        self.join()

    @rule(data=st.data(), retries=st.integers(0, 2), returns=st.integers(1, 2))
    def submit(self, data, retries, returns):
        deps = []
        if self.held:
            deps = data.draw(st.lists(st.sampled_from(sorted(self.held)), max_size=2,
                                      unique=True))
        s = spec(gpus=1, deps=deps, max_retries=retries, returns=returns)
        self.held.update(s.return_ids)
        self.retries.update((i, retries) for i in s.return_ids)
        self.apply(self.node.submit(s, client=DRIVER))

    @precondition(lambda self: any(self.on_peer[p] for p in self.live))
    @rule(data=st.data(), large=st.booleans())
    def peer_finishes_a_task(self, data, large):
        peer = data.draw(st.sampled_from(sorted(p for p in self.live if self.on_peer[p])))
        task_id = data.draw(st.sampled_from(sorted(self.on_peer[peer])))
        self.finish(peer, self.on_peer[peer].pop(task_id), large)

    @precondition(lambda self: self.two_results_running())
    @rule(data=st.data())
    def peer_sends_one_of_two_results(self, data):
        peer, task_id = data.draw(st.sampled_from(self.two_results_running()))
        object_id = self.on_peer[peer][task_id].return_ids[0]
        self.sent.add(object_id)
        self.located[(peer, object_id)] += 1
        self.do(E.ObjectLocated(peer, shm_header(object_id, 1000)))

    def two_results_running(self):
        return sorted((p, t) for p in self.live for t, s in self.on_peer[p].items()
                      if len(s.return_ids) == 2 and s.return_ids[0] not in self.sent)

    def finish(self, peer, spec_, large):
        for object_id in spec_.return_ids:
            if object_id in self.sent:        # already told (one of two results)
                self.sent.discard(object_id)
                continue
            if large:
                self.located[(peer, object_id)] += 1
                self.do(E.ObjectLocated(peer, shm_header(object_id, 1000)))
            else:                          # as peers.py: sealed, then arrived
                self.do(E.ObjectsSealed([inline(object_id)], [b"v"]))
                self.do(E.PeerObjectArrived(object_id))

    def not_here(self):
        """Held objects the driver has not been sent yet (ray.get asks for those)."""
        return sorted(i for i in self.held if not self.results[i])

    @precondition(lambda self: self.not_here())
    @rule(data=st.data())
    def driver_gets(self, data):
        self.do(E.Subscribed(DRIVER, [data.draw(st.sampled_from(self.not_here()))]))

    @precondition(lambda self: any(peer in self.live for peer, _ in self.pulls))
    @rule(data=st.data())
    def pull_completes(self, data):
        peer, object_id = data.draw(st.sampled_from(sorted(
            (p, o) for p, o in self.pulls if p in self.live)))
        self.complete(peer, object_id)

    def complete(self, peer, object_id):
        self.pulls.discard((peer, object_id))
        self.do(E.ObjectsSealed([shm_header(object_id, 1000)], []))
        self.do(E.PeerObjectArrived(object_id))

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def drop_ref(self, data):
        object_id = data.draw(st.sampled_from(sorted(self.held)))
        self.held.discard(object_id)
        self.do(E.RefsRemoved(DRIVER, [object_id]))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def peer_dies(self, data):
        peer = data.draw(st.sampled_from(sorted(self.live)))
        self.live.discard(peer)
        for spec_ in self.on_peer.pop(peer).values():   # placed again: sent anew
            self.sent.difference_update(spec_.return_ids)
        self.deaths += 1
        out = self.node.do(E.PeerGone(peer))
        self.apply(out)
        (drop,) = [c for c in out if isinstance(c, C.DropPeerTransfers)]
        # transfer.peer_gone: its transfers end; what will not come again is lost.
        for key in sorted(k for k in self.pulls if k[0] == peer):
            self.pulls.discard(key)
            if key[1] not in drop.expected_again:
                self.do(E.ObjectLost(key[1], f"node {peer} left mid-transfer"))

    # -- invariants ------------------------------------------------------------------
    @invariant()
    def results_reach_their_owner_at_most_once(self):
        assert not [i for i, n in self.results.items() if n > 1]

    @invariant()
    def held_objects_exist_here(self):
        for object_id in self.held:
            assert self.node.state.objects.get(object_id) is not None, "freed while held"

    def teardown(self):
        if not self.live:
            self.join()
        for _ in range(50):                # drain: run everything, get everything
            busy = [(p, s) for p in sorted(self.live) for s in self.on_peer[p].values()]
            for peer in self.live:
                self.on_peer[peer] = {}
            for peer, spec_ in busy:
                self.finish(peer, spec_, large=True)
            if self.not_here():
                self.do(E.Subscribed(DRIVER, self.not_here()))
            pulls = sorted(k for k in self.pulls if k[0] in self.live)
            for peer, object_id in pulls:
                self.complete(peer, object_id)
            if not busy and not pulls:
                break
        counts = self.node.state.counts
        assert counts["submitted"] == counts["ended"], counts
        unanswered = [i for i in self.held if self.results[i] != 1]
        assert not unanswered, f"{len(unanswered)} held results never reached the driver"
        dropped, self.held = sorted(self.held), set()
        self.do(E.RefsRemoved(DRIVER, dropped))
        self.do(E.Tick(0.0, 0.0))
        state = self.node.state
        assert not state.objects.entries and not state.locations.where
        assert not state.locations.lineage
        for key, times in self.located.items():
            if key[0] in self.live:
                assert self.released[key] == times, f"hold on {key} never let go"
        task_module.STRICT = task_module.strict()


PeersMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_node_state_with_peers = pytest.mark.filterwarnings("ignore")(PeersMachine.TestCase)

"""Safe by default: a `zray start --head` cluster seen from a hostile network.

Real daemons, real sockets. An attacker without the token completes no
handshake, so nothing it sends is decoded; a client with the token that
sends junk cannot stop a daemon; the temp root must be ours.
"""
import json
import os
import pickle
import random
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

import zray as ray
from zray.kv.client import KvClient, subscribe
from zray.transport import auth
from zray.transport import protocol as P
from zray.transport.wire_types import decode, encode

from cluster_util import Cluster, env_for, live_nodes, records, wait_for, zray


class _CreatesFile:
    """Unpickling this creates ``path``: proof that a decoder ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("secure")
    cluster = Cluster(root)
    # A file of the test's own that hostile messages name as an object's
    # location: it must survive (never a system file: the suite runs as root).
    cluster.canary = root / "canary"
    cluster.canary.write_text("keep me")
    cluster.start_head("--num-cpus", 1)
    cluster.wait_nodes(1)
    (node,) = live_nodes(cluster.address, cluster.token).values()
    cluster.ports = {"kv": "tcp://" + cluster.address, "kv feed": node["kv_pub_address"],
                     "node": node["tcp_address"]}
    cluster.pids = [r["pid"] for r in records(root)]
    yield cluster
    cluster.stop()


def _assert_daemons_serve(cluster):
    assert all(psutil.pid_exists(pid) for pid in cluster.pids)
    assert cluster.canary.read_text() == "keep me"
    kv = KvClient(cluster.ports["kv"], cluster.token)
    try:
        assert kv.call("ping") == "pong"
    finally:
        kv.close()
    ray.init(address=cluster.address, redis_password=cluster.token)
    try:
        assert ray.get(ray.remote(lambda x: x + 1).remote(41)) == 42
    finally:
        ray.shutdown()


def _hostile_messages(marker):
    evil = pickle.dumps(_CreatesFile(marker))
    head = pickle.dumps((P.KV_REQUEST, (1, "put", ("x", _CreatesFile(marker)), "")))
    hello = pickle.dumps((P.HELLO, ("driver", 1, _CreatesFile(marker), 1, [], None)))
    return [[evil], [head], [hello], [b"", evil], [evil, evil, evil], [P.HELLO, evil]]


def _raw_tcp(address, data):
    host, port = address[len("tcp://"):].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(data)
            raw.settimeout(0.5)
            try:
                raw.recv(4096)
            except OSError:
                pass
    except OSError:
        pass


def test_pickles_sent_without_the_token_are_never_decoded(cluster, tmp_path):
    marker = str(tmp_path / "pwned")
    context = zmq.Context()
    try:
        for name, address in cluster.ports.items():
            for kind in (zmq.DEALER, zmq.REQ, zmq.PUSH, zmq.PUB):
                for frames in _hostile_messages(marker):
                    sock = context.socket(kind)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.connect(address)
                    if kind == zmq.REQ:
                        frames = [b"".join(frames)]
                    try:
                        sock.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                    sock.close(0)
            # Same bytes, with a wrong token's CURVE keys: the handshake fails.
            wrong = context.socket(zmq.DEALER)
            wrong.setsockopt(zmq.LINGER, 0)
            with pytest.raises(auth.NeedsToken, match="wrong password"):
                auth.connect(wrong, address, "not-the-token", check_s=10)
            wrong.close(0)
            # And as raw bytes on the port, with and without a ZMTP greeting.
            greeting = b"\xff" + b"\0" * 8 + b"\x7f\x03\x00NULL" + b"\0" * 16 + b"\0" * 32
            for data in (pickle.dumps(_CreatesFile(marker)), greeting + b"\x00\x10"
                         + pickle.dumps(_CreatesFile(marker))[:16]):
                _raw_tcp(address, data)
    finally:
        context.destroy(linger=0)
    _assert_daemons_serve(cluster)     # runs after everything sent above was handled
    assert not os.path.exists(marker)


def test_a_subscriber_without_the_token_hears_nothing(cluster):
    context = zmq.Context()
    feed = cluster.ports["kv feed"]
    try:
        outsider = context.socket(zmq.SUB)
        outsider.setsockopt(zmq.SUBSCRIBE, b"")
        outsider.connect(feed)
        wrong = subscribe(feed, [""], "not-the-token", context)
        member = subscribe(feed, ["probe:"], cluster.token, context)
        kv = KvClient(cluster.ports["kv"], cluster.token)
        try:
            # PUB drops what is sent before a subscriber joined: publish until
            # the member hears it, then the others had every chance too.
            def heard():
                kv.call("put", "probe:x", "secret value")
                return member.poll(100)
            wait_for(heard, 20, "the token holder to hear the kv feed")
        finally:
            kv.close()
        assert not outsider.poll(200) and not wrong.poll(0)
    finally:
        context.destroy(linger=0)


def test_missing_or_wrong_token_fails_fast_with_the_fix(cluster):
    for token, message in ((None, "needs its token"), ("guess", "wrong password")):
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError, match=message) as info:
            ray.init(address=cluster.address, redis_password=token)
        # Bounded by the handshake check, not left to hang.
        assert time.monotonic() - started < auth.HANDSHAKE_TIMEOUT_S + 1
        assert "redis_password" in str(info.value) and not ray.is_initialized()
    result = zray("start", "--address", cluster.address, "--redis-password", "guess",
                  "--temp-dir", cluster.root, check=False)
    assert result.returncode == 1 and "wrong password" in result.stderr


def test_the_token_can_come_by_environment_instead_of_argv(cluster, tmp_path):
    elsewhere = tmp_path / "elsewhere"          # no cluster file there to find it in
    result = zray("status", "--address", cluster.address, "--temp-dir", elsewhere, check=False)
    assert result.returncode == 1 and "needs its token" in result.stderr
    env = env_for(extra={auth.TOKEN_ENV: cluster.token})
    result = zray("status", "--address", cluster.address, "--temp-dir", elsewhere, env=env)
    assert "1 node" in result.stdout


def test_the_token_stays_out_of_ps(cluster):
    for pid in cluster.pids:
        process = psutil.Process(pid)
        everyone = [process] + process.children(recursive=True)
        for each in everyone:
            assert cluster.token not in " ".join(each.cmdline())


# == authenticated junk: daemons stay up ========================================
def _member_socket(context, address, token):
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    auth.connect(sock, address, token, check_s=10)
    return sock


def _valid_heads(token, canary):
    spec = P.TaskSpec(b"t" * 16, P.ACTOR_CREATE, b"f" * 16, "f", (b"r" * 20,), (b"d" * 20,),
                      (), {"CPU": 10_000}, 0, 0, 1, b"a" * 20, None,
                      {"name": "fuzzed", "max_restarts": 1, "detached": True}, None)
    header = (b"o" * 20, P.SHM, 0, (str(canary), 7), (), False)
    return [
        P.pack(P.KV_REQUEST, 7, "put", ("fuzz:a", 1), token)[0],
        P.pack(P.KV_REQUEST, 8, "put_ttl", ("node:0123456789abcdef", {"tcp_address": 5}, 1),
               token)[0],
        P.pack(P.KV_REQUEST, 9, "put_many", [("fuzz:b", [1, {"x": b"y"}])], token)[0],
        P.pack(P.HELLO, "driver", 1, token, P.PROTOCOL_VERSION, [], None)[0],
        P.pack(P.SUBMIT, None)[0],
        P.pack(P.SUBMIT, spec)[0],
        P.pack(P.FORWARD, spec, ("f", b"blob", ["/"]), 1, [header])[0],
        P.pack(P.DONE, b"t", [header], False, "", [{"name": "x"}], None)[0],
        P.pack(P.PUT, [header, (b"p" * 20, P.INLINE, 1, None, (b"q" * 20,), True)])[0],
        P.pack(P.PULL, b"x", -5, 1 << 40, True)[0],
        P.pack(P.REQUEST, 1, "status", ())[0],
        P.pack(P.REQUEST, 2, "kill_actor", (b"a" * 20, True))[0],
        P.pack(P.REQUEST, 3, "log_tail", (1, 1 << 40))[0],
    ]


_WRONG_VALUES = [None, True, -1, 1 << 63, 1.5, "", "x" * 300, b"", b"\xff" * 64, (), ((),),
                 {}, {"": None}, {b"k": 1}, (None, None), (b"x", "y", 3)]


def _retyped(rng, head):
    """``head`` decoded, with one field (at any depth) given a value of another
    type, and encoded again: valid msgpack a type check must refuse."""
    def swap(value, depth):
        if isinstance(value, tuple) and value and depth < 4 and rng.random() < 0.6:
            index = rng.randrange(len(value))
            return value[:index] + (swap(value[index], depth + 1),) + value[index + 1:]
        if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.6:
            key = rng.choice(list(value))
            return {**value, key: swap(value[key], depth + 1)}
        return rng.choice(_WRONG_VALUES)
    msg_type, *fields = decode(head)
    if not fields:
        return encode((msg_type, rng.choice(_WRONG_VALUES)))
    index = rng.randrange(len(fields))
    fields[index] = swap(fields[index], 1)
    return encode((msg_type, *fields))


def _mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.7:
            del data[rng.randrange(len(data) + 1):]
        else:
            data[rng.randrange(len(data) + 1):0] = rng.randbytes(rng.randint(1, 8))
    return bytes(data)


class _Fuzzer:
    """Token holders' sockets on the kv and the node; on the node a logged-in
    driver, so junk reaches every message's decoder, not only HELLO's."""

    def __init__(self, cluster):
        self.context = zmq.Context()
        self.sockets = [_member_socket(self.context, cluster.ports[name], cluster.token)
                        for name in ("kv", "node")]
        self.heads = _valid_heads(cluster.token, cluster.canary)
        node = self.sockets[1]
        node.send_multipart(P.pack(P.HELLO, "driver", os.getpid(), cluster.token,
                                   P.PROTOCOL_VERSION, [], None))
        assert node.poll(10_000) and P.unpack(node.recv_multipart()[0])[0] == P.WELCOME

    def send(self, frames):
        for sock in self.sockets:
            sock.send_multipart(frames)
            while sock.poll(0):         # replies, if any: not piled up
                sock.recv_multipart()

    def close(self):
        # Leave as a driver does, so the node drops whatever work the junk made.
        self.sockets[1].send_multipart(P.pack(P.BYE))
        self.context.destroy(linger=1000)


def _fuzz(cluster, count, seed):
    fuzzer = _Fuzzer(cluster)
    rng = random.Random(seed)
    try:
        for _ in range(count):
            choice = rng.random()
            if choice < 0.35:
                frames = [_mutate(rng, rng.choice(fuzzer.heads))]
            elif choice < 0.7:
                frames = [_retyped(rng, rng.choice(fuzzer.heads))]
            else:
                frames = [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 5))]
            frames += [rng.randbytes(rng.randint(0, 32)) for _ in range(rng.randint(0, 3))]
            fuzzer.send(frames)
        for head in fuzzer.heads:       # the unmutated ones too, with junk payloads
            fuzzer.send([head, b"junk"])
    finally:
        fuzzer.close()
    _assert_daemons_serve(cluster)


def test_thousands_of_junk_and_mutated_messages_leave_daemons_serving(cluster):
    _fuzz(cluster, 2000, 1234)


def test_a_driver_that_dies_with_a_flood_queued_leaves_the_node_serving(cluster):
    """A driver killed with 100,000 requests on their way and answers unread
    (its connection resets): the node's reader had stopped at RCVHWM. libzmq
    4.3.5 aborted the node when its heartbeat timer fired next (see
    sched/remote_clients.py): in half of the runs, within four rounds."""
    (node,) = live_nodes(cluster.address, cluster.token).values()
    status = P.pack(P.REQUEST, 1, "status", ())
    for _ in range(4):
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        auth.connect(sock, cluster.ports["node"], cluster.token, check_s=10)
        stopped = False
        try:
            sock.send_multipart(P.pack(P.HELLO, "driver", os.getpid(), cluster.token,
                                       P.PROTOCOL_VERSION, [], None))
            assert sock.poll(10_000) and P.unpack(sock.recv_multipart()[0])[0] == P.WELCOME
            for _ in range(100_000):
                sock.send_multipart(status)
            assert sock.poll(10_000)        # answers coming: the node reads the flood
            # Not a wait for an outcome: time for its reader to reach RCVHWM,
            # then the hang-up lands while the node is stopped, so its reader
            # meets it with a backlog, as on a busy machine.
            time.sleep(0.3)
            os.kill(node["pid"], signal.SIGSTOP)
            stopped = True
        finally:
            sock.close(0)
            context.term()
            if stopped:
                time.sleep(1.2)             # past the node's 1 s heartbeat interval
                os.kill(node["pid"], signal.SIGCONT)
        _assert_daemons_serve(cluster)


@pytest.mark.slow
def test_a_long_fuzz_run_leaves_daemons_serving(cluster):
    for seed in range(10):
        _fuzz(cluster, 10_000, seed)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=8))
def test_hypothesis_multipart_messages_do_not_stop_daemons(cluster, frames):
    fuzzer = _Fuzzer(cluster)
    try:
        fuzzer.send(frames)
    finally:
        fuzzer.close()
    assert all(psutil.pid_exists(pid) for pid in cluster.pids)


def test_daemons_serve_after_the_hypothesis_run(cluster):
    _assert_daemons_serve(cluster)


def test_a_bad_node_record_in_the_kv_is_ignored(cluster):
    kv = KvClient(cluster.ports["kv"], cluster.token)
    try:
        kv.call("put", "node:x", 1)
        kv.call("put", "node:0123456789abcdef", {"tcp_address": "tcp://203.0.113.1:notaport"})
        kv.call("put", "node:fedcba9876543210", {"tcp_address": "ipc:///tmp/elsewhere"})
        kv.call("put", "node:00000000000000aa", {"node_id": "00000000000000aa",
                                                 "resources": "lots"})
        kv.call("put", "node:00000000000000bb", {"node_id": "00000000000000bb",
                                                 "tcp_address": 7})
    finally:
        kv.close()
    _assert_daemons_serve(cluster)
    kv = KvClient(cluster.ports["kv"], cluster.token)
    try:
        for key in ("node:x", "node:0123456789abcdef", "node:fedcba9876543210",
                    "node:00000000000000aa", "node:00000000000000bb"):
            kv.call("delete", key)
    finally:
        kv.close()


# == the temp root ===============================================================
def _start_in(root):
    return subprocess.run(
        [sys.executable, "-c", "import zray as ray; ray.init(num_cpus=1); ray.shutdown()"],
        capture_output=True, text=True, timeout=60, env=env_for(root))


def test_a_temp_root_others_can_write_or_own_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(foreign, 65534, 65534)
    else:
        foreign = "/"               # owned by root, not by us
    link = tmp_path / "link"
    (tmp_path / "mine").mkdir(mode=0o700)
    link.symlink_to(tmp_path / "mine")
    for root, why in ((shared, "writable by other users"), (foreign, "owned by another user"),
                      (link, "a symbolic link")):
        result = _start_in(root)
        assert result.returncode != 0
        assert f"temp root {root} is {why}" in result.stderr, result.stderr
        assert "chmod 700" in result.stderr
        for command in ("start --head --port 0", "stop", "status"):
            cli = zray(*command.split(), "--temp-dir", root, check=False)
            assert cli.returncode == 1 and f"temp root {root}" in cli.stderr, (command, cli)
    assert not os.listdir(shared) and not os.listdir(tmp_path / "mine")


def test_stop_deletes_only_session_directories_it_verified(tmp_path):
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    os.makedirs(root / "procs", mode=0o700)
    os.chmod(root, 0o700)
    planted = {"pid": os.getpid(), "role": "node", "create_time": 0, "session_dir": str(victim),
               "session_name": "deadbeef", "plasma_dir": str(tmp_path)}
    (root / "procs" / "1.json").write_text(json.dumps(planted))
    zray("stop", "--temp-dir", root)
    assert (victim / "precious").read_text() == "keep me"


# == clients are who they say they are ===========================================
class _RawClient:
    """A bare DEALER on the node's socket speaking the protocol by hand."""

    def __init__(self, address, token, kind="driver", identity=None, secret=None):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.socket.setsockopt(zmq.IDENTITY, identity)
        auth.connect(self.socket, address, token)
        self.send(P.HELLO, kind, os.getpid(), token, P.PROTOCOL_VERSION, [], secret)
        self.greeting = self.receive(lambda t: t in (P.WELCOME, P.REFUSED))

    def send(self, msg_type, *fields, frames=()):
        self.socket.send_multipart(P.pack(msg_type, *fields) + list(frames))

    def receive(self, wanted, timeout_s=30):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.socket.poll(100):
                frames = self.socket.recv_multipart()
                msg_type, fields = P.unpack(frames[0])
                if wanted(msg_type):
                    return msg_type, fields, frames[1:]
        raise AssertionError("the node did not answer")

    def close(self):
        self.context.destroy(linger=0)


def test_a_client_cannot_pose_as_a_worker_finish_others_tasks_or_name_files(ray_start,
                                                                            tmp_path):
    from zray.cluster import current_token
    from zray.serialization import serialize
    token, address = current_token(), ray_start["node_address"]
    impostor = _RawClient(address, token, kind="worker", identity=b"w1-999999")
    assert impostor.greeting[0] == P.REFUSED
    assert "not a worker this node started" in impostor.greeting[1][0]
    impostor.close()

    release = tmp_path / "release"

    @ray.remote
    def slow():
        while not os.path.exists(release):
            time.sleep(0.02)
        return "real"

    ref = slow.remote()
    client = _RawClient(address, token)
    try:
        assert client.greeting[0] == P.WELCOME
        fake = serialize("forged")
        task_id = ref.binary()[:-4]
        client.send(P.DONE, task_id, [(ref.binary(), P.INLINE, 1, None, (), False)], False,
                    "", [], None, frames=[fake.meta])
        # A PUT naming a file that is not its own object file is refused; a
        # valid one next to it is stored.
        planted, good = os.urandom(20), os.urandom(20)
        canary = tmp_path / "canary"
        canary.write_text("keep me")
        client.send(P.PUT, [(planted, P.SHM, 0, (str(canary), 7), (), False)])
        client.send(P.PUT, [(good, P.INLINE, 1, None, (), False)], frames=[serialize(1).meta])
        client.send(P.SUBSCRIBE, [planted, good])
        _, (entries,), _ = client.receive(lambda t: t == P.OBJECTS)
        kinds = {header[0]: (header[1], header[3]) for header in entries}
        assert kinds[good] == (P.INLINE, None)
        assert kinds.get(planted, (P.INLINE, None))[1] is None      # never the canary
        assert canary.read_text() == "keep me"
    finally:
        client.close()
    release.touch()
    assert ray.get(ref, timeout=60) == "real"


def test_admission_rules():
    from zray.sched import admission

    class Worker:
        secret = "s3"

    assert admission.hello_refusal(None, False, "driver", None) is None
    assert admission.hello_refusal(Worker, False, "worker", "s3") is None
    assert "did not prove" in admission.hello_refusal(Worker, False, "worker", "nope")
    assert "did not prove" in admission.hello_refusal(Worker, False, "driver", None)
    assert "over tcp" in admission.hello_refusal(None, True, "worker", None)
    assert "cannot connect" in admission.hello_refusal(None, False, "peer", None)
    blob = b"code"
    assert admission.function_refusal(P.function_id_of(blob), blob) is None
    assert admission.function_refusal(P.function_id_of(b"other"), blob) is not None
    oid = b"x" * 20
    own = os.path.join("/dev/shm", f"zray-abcd1234-{oid.hex()}")
    check = lambda entries, n=0: admission.object_entries_refusal(  # noqa: E731
        entries, n, "abcd1234", ("/dev/shm", "/spill"))
    assert check([(oid, P.SHM, 0, (own, 5), (), False)]) is None
    assert check([(oid, P.INLINE, 2, None, (), False)], 2) is None
    assert "not its file" in check([(oid, P.SHM, 0, ("/dev/shm/zray-abcd1234-" + "00" * 20, 5),
                                     (), False)])
    assert "payload frames" in check([(oid, P.INLINE, 3, None, (), False)], 2)
    assert check([(oid, 7, 0, None, (), False)]) is not None
    assert check("junk") is not None and check([("a",)]) is not None
    # An arena block must be the one reserved for this object and this client.
    block = ("/dev/shm/zray-abcd1234-arena-0", 5000, 8192)
    reserved = {oid: block}
    arena_check = lambda entries: admission.object_entries_refusal(  # noqa: E731
        entries, 0, "abcd1234", ("/dev/shm", "/spill"), reserved.get)
    assert arena_check([(oid, P.SHM, 0, block, (), False)]) is None
    for forged in [(block[0], 5000, 0), (block[0], 9000, 8192), ("/etc/passwd", 5000, 8192)]:
        assert "did not reserve" in arena_check([(oid, P.SHM, 0, forged, (), False)])
    assert "did not reserve" in arena_check([(b"y" * 20, P.SHM, 0, block, (), False)])

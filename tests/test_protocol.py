"""The typed wire (zray/transport/protocol.py): every declared message
round-trips, and anything malformed raises ProtocolError (never runs code)."""
import pickle

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from zray.kv.server import KvServer
from zray.sched.node import NodeDaemon
from zray.transport import protocol as P
from zray.transport.wire_types import ProtocolError, decode, encode

_LEAVES = {
    "bytes": st.binary(max_size=24), "str": st.text(max_size=12),
    "int": st.integers(-2**63, 2**64 - 1), "bool": st.booleans(),
    "number": st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False)),
}
_DATA = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
              st.floats(allow_nan=False), st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)


def values_of(check):
    """A hypothesis strategy for the values a declared field type accepts."""
    kind, parts = check.kind, check.parts
    if kind in _LEAVES:
        return _LEAVES[kind]
    if kind == "data":
        return _DATA
    if kind == "opt":
        return st.one_of(st.none(), values_of(parts[0]))
    if kind == "seq":
        return st.lists(values_of(parts[0]), max_size=3).map(tuple)
    if kind == "mapping":
        return st.dictionaries(values_of(parts[0]), values_of(parts[1]), max_size=3)
    if kind == "fixed":
        required, optional = parts
        return st.integers(0, len(optional)).flatmap(lambda extra: st.tuples(
            *[values_of(c) for c in required + optional[:extra]]))
    if kind == "keyed":
        return st.fixed_dictionaries({}, optional={key: values_of(c) for key, c in parts.items()})
    if kind == "record":
        return st.builds(parts, *[values_of(c) for c in parts.field_types.values()])
    raise AssertionError(f"no strategy for field kind {kind!r}")


def messages():
    return st.sampled_from(sorted(P.MESSAGES)).flatmap(
        lambda msg_type: st.tuples(st.just(msg_type), *[
            values_of(check) for check in P.MESSAGES[msg_type].field_types.values()]))


@settings(max_examples=400, deadline=None)
@given(message=messages())
def test_every_declared_message_round_trips(message):
    msg_type, *fields = message
    (head,) = P.pack(msg_type, *fields)
    got_type, record = P.unpack(head)
    assert got_type == msg_type
    assert type(record) is P.MESSAGES[msg_type]
    assert tuple(record) == tuple(fields)


def test_records_destructure_like_tuples_and_name_their_fields():
    spec = P.TaskSpec(b"t" * 16, P.TASK, b"f" * 16, "f", (b"r" * 20,), (), (), {"CPU": 10000},
                      3, 0, 1, None, None, {"name": "a", "max_restarts": float("inf")}, None)
    msg_type, (got,) = P.unpack(P.pack(P.SUBMIT, spec)[0])
    assert got == spec and got.options["max_restarts"] == float("inf")
    header = (b"o" * 20, P.SHM, 0, ("/dev/shm/x", 7), (b"i" * 20,), False)
    _, (entries,) = P.unpack(P.pack(P.OBJECTS, [header])[0])
    assert entries[0] == header and entries[0].location == ("/dev/shm/x", 7)
    object_id, kind, *_ = entries[0]
    assert (object_id, kind) == (b"o" * 20, P.SHM)


def _head(*items):
    return msgpack.packb(items, use_bin_type=True)


@pytest.mark.parametrize("frame, problem", [
    (b"", "not msgpack"),
    (b"\xc1", "not msgpack"),                      # a byte msgpack never uses
    (b"\xdd\xff\xff\xff\xff", "not msgpack"),      # an array claiming 4G items
    (b"\x91" * 100_000 + b"\xc0", "not msgpack"),  # nested too deep
    (_head(b"BYE") + b"x", "not msgpack"),         # trailing bytes
    (pickle.dumps((P.BYE, ())), "not msgpack"),
    (msgpack.packb(5), "a list"),
    (_head(), "a list"),
    (_head("BYE"), "a list"),                      # the type is bytes, not str
    (_head(b"NOPE"), "unknown message type"),
    (_head(b"BYE", 1), "expected 0 fields"),
    (_head(b"LOG", 1), "expected 2 fields"),
    (_head(b"LOG", "1", "text"), "Log.pid: expected int, got str"),
    (_head(b"LOG", True, "text"), "Log.pid: expected int, got bool"),
    (_head(b"ADDREF", [b"a", "b"]), "list of bytes"),
    (_head(b"ADDREF", {b"a": 1}), "list of bytes"),
    (_head(b"OBJS", [[b"o", 0, 1, None, [], False, 7]]), "ObjectHeader: expected 6"),
    (_head(b"OBJS", [[b"o", 1, 0, ["/x"], [], False]]), r"expected \(str, int\[, int\]\)"),
    (_head(b"OBJS", [[b"o", 1, 0, ["/x", 1, 2, 3], [], False]]), "expected"),
    (_head(b"SUBMIT", None), "TaskSpec: expected 15"),
    (_head(b"RESP", 1, 1, None), "Resp.ok: expected bool"),
    (_head(b"HELLO", "driver", 1, "t", 2, [], b"secret"), "worker_secret"),
])
def test_malformed_heads_raise_protocol_error(frame, problem):
    with pytest.raises(ProtocolError, match=problem):
        P.unpack(frame)


def test_task_options_are_declared_keys_of_declared_types():
    spec = list(P.TaskSpec(b"t", 0, b"f", "f", (), (), (), {}, 0, 0, 1, None, None, {}, None))
    for options, problem in (({"runtime_env": {}}, "undeclared key 'runtime_env'"),
                             ({"name": 5}, "expected str"), ({1: 2}, "undeclared key 1"),
                             ({"detached": "yes"}, "expected bool")):
        spec[13] = options
        with pytest.raises(ProtocolError, match=problem):
            P.unpack(_head(b"SUBMIT", spec))


def test_msgpack_extension_types_are_refused():
    ext = msgpack.packb([b"EVENTS", [msgpack.ExtType(5, b"x")]], use_bin_type=True)
    with pytest.raises(ProtocolError):
        P.unpack(ext)


def test_pack_refuses_a_wrong_field_count_and_non_data_at_the_sender():
    with pytest.raises(ProtocolError, match="LOG has the fields"):
        P.pack(P.LOG, 1)
    with pytest.raises(TypeError):
        P.pack(P.LOG, 1, object())


def test_request_ops_are_declared_with_their_argument_types():
    assert P.check_op(P.NODE_OPS, "kill_actor", (b"a",)) == (b"a",)
    assert P.check_op(P.NODE_OPS, "kill_actor", (b"a", False)) == (b"a", False)
    for op, arguments, problem in (("__init__", (), "unknown operation"),
                                   ("kill_actor", (), "takes 1 to 2"),
                                   ("kill_actor", ("a",), "expected bytes"),
                                   ("log_tail", (1, 2, 3), "takes 1 to 2")):
        with pytest.raises(ProtocolError, match=problem):
            P.check_op(P.NODE_OPS, op, arguments)
    with pytest.raises(ProtocolError, match="unknown operation 'op_put'"):
        P.check_op(P.KV_OPS, "op_put", ())


def test_every_declared_op_has_its_handler_and_every_handler_is_declared():
    assert set(NodeDaemon._requests) == set(P.NODE_OPS)
    handlers = {name[len("request_"):] for name in dir(NodeDaemon) if name.startswith("request_")}
    assert handlers == set(P.NODE_OPS)
    assert set(KvServer._ops) == set(P.KV_OPS)
    ops = {name[len("op_"):] for name in dir(KvServer) if name.startswith("op_")}
    assert ops == set(P.KV_OPS)


def test_plain_data_round_trips_through_the_kv_encoding():
    value = {"node_id": "ab", "resources": {"CPU": 2.0}, "list": (1, b"x", None)}
    assert decode(encode(value)) == value

"""Serialization: round trips of nested values holding numpy arrays (a
hypothesis property, in-process and through the object store), and custom
serializers across processes."""
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import zray as ray
from conftest import run_script
from zray.serialization import OUT_OF_BAND_MIN_BYTES, SerializationError, deserialize, serialize


@dataclasses.dataclass
class Box:
    label: str
    content: object


# == values to round-trip =======================================================
dtypes = st.one_of(
    hnp.boolean_dtypes(), hnp.integer_dtypes(endianness="?"),
    hnp.unsigned_integer_dtypes(endianness="?"), hnp.floating_dtypes(endianness="?"),
    hnp.complex_number_dtypes(endianness="?"), hnp.datetime64_dtypes(),
    hnp.timedelta64_dtypes(), hnp.byte_string_dtypes(max_len=8),
    hnp.unicode_string_dtypes(max_len=4))


@st.composite
def arrays(draw):
    array = draw(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                     max_side=24)))
    layout = draw(st.sampled_from(["c", "fortran", "strided"]))
    if layout == "fortran":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        array = array[::2]
    return array


# Big enough to go out of band, and often past the inline limit into shared memory.
big_arrays = hnp.arrays(dtypes, st.integers(5_000, 40_000))

leaves = st.one_of(arrays(), big_arrays, st.integers(), st.floats(), st.text(max_size=20),
                   st.binary(max_size=6000), st.none(), st.booleans())
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.builds(Box, st.text(max_size=4), inner)),
    max_leaves=8)


def assert_same(got, expected):
    assert type(got) is type(expected), (type(got), type(expected))
    if isinstance(expected, np.ndarray):
        assert got.shape == expected.shape
        if not big_contiguous(expected):
            # numpy's own pickling of in-band arrays may hand back native byte
            # order (same values); out-of-band ones keep their exact dtype.
            got, expected = native_order(got), native_order(expected)
        assert got.dtype == expected.dtype
        assert got.tobytes() == expected.tobytes()          # bit for bit, NaNs included
    elif isinstance(expected, float):
        assert got == expected or (math.isnan(got) and math.isnan(expected))
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, Box):
        assert got.label == expected.label
        assert_same(got.content, expected.content)
    else:
        assert got == expected


def native_order(array):
    return array.astype(array.dtype.newbyteorder("="))


def arrays_of(value):
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from arrays_of(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from arrays_of(item)
    elif isinstance(value, Box):
        yield from arrays_of(value.content)


def big_contiguous(array):
    return array.nbytes >= OUT_OF_BAND_MIN_BYTES and (
        array.flags.c_contiguous or array.flags.f_contiguous)


# == round trips ================================================================
@settings(max_examples=300, deadline=None)
@given(values)
def test_serialize_round_trip(value):
    data = serialize(value)
    # Big contiguous arrays travel out of band, never inside the pickle stream.
    big = {id(a): a.nbytes for a in arrays_of(value) if big_contiguous(a)}
    assert len(data.buffers) >= len(big)
    assert sum(memoryview(b).nbytes for b in data.buffers) >= sum(big.values())
    assert_same(deserialize(data.meta, data.buffers), value)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values)
def test_put_get_round_trip(ray_shared, value):
    got = ray.get(ray.put(value))
    assert_same(got, value)
    for original, array in zip(arrays_of(value), arrays_of(got)):
        if big_contiguous(original):
            assert not array.flags.writeable        # a view of the store, not a copy


def test_round_trip_through_a_task(ray_shared):
    @ray.remote
    def echo(x):
        return x

    value = {"a": [np.arange(50_000, dtype=">i4"), (np.ones((300, 70), order="F"), "s")],
             "box": Box("b", np.array(["x", "yz"]))}
    assert_same(ray.get(echo.remote(value)), value)
    assert_same(ray.get(echo.remote(ray.put(value))), value)


# == custom serializers =========================================================
class NoPickle:
    """Refuses plain pickling (and dill): only a custom serializer moves it."""

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        raise TypeError("NoPickle objects refuse to be pickled")


def no_pickle_to_state(obj):
    return {"v": obj.value}


def no_pickle_from_state(state):
    return NoPickle(state["v"])


class DictOnly(NoPickle):
    pass


class Retagged:
    def __init__(self, value):
        self.value = value


class LocalOnly(NoPickle):
    pass


def test_custom_serializer_crosses_processes(ray_shared):
    with pytest.raises(SerializationError, match="register_custom_serializer"):
        ray.put(NoPickle(1))
    ray.register_custom_serializer(NoPickle, serializer=no_pickle_to_state,
                                   deserializer=no_pickle_from_state)
    got = ray.get(ray.put([NoPickle(1), {"k": NoPickle(2)}]))
    assert got[0].value == 1 and got[1]["k"].value == 2

    @ray.remote
    def bump(x):
        return NoPickle(x.value + 1)     # the worker must know the serializer too

    assert ray.get(bump.remote(NoPickle(5))).value == 6

    @ray.remote(max_calls=1)
    def fresh_worker(x):
        return NoPickle(x)

    # Each call runs in a worker started after the registration.
    assert [o.value for o in ray.get([fresh_worker.remote(i) for i in range(3)])] == [0, 1, 2]


def test_use_dict_crosses_processes(ray_shared):
    ray.register_custom_serializer(DictOnly, use_dict=True)

    @ray.remote
    def double(x):
        out = DictOnly(x.value * 2)
        out.extra = [x.value]
        return out

    got = ray.get(double.remote(DictOnly(21)))
    assert type(got) is DictOnly and got.value == 42 and got.extra == [21]


def test_use_pickle_undoes_a_custom_serializer(ray_shared):
    ray.register_custom_serializer(Retagged, serializer=lambda o: o.value * 10,
                                   deserializer=Retagged)

    @ray.remote
    def value_of(x):
        return x.value, Retagged(x.value)

    inner, back = ray.get(value_of.remote(Retagged(1)))
    assert inner == 10 and back.value == 100       # custom both ways
    ray.register_custom_serializer(Retagged, use_pickle=True)
    inner, back = ray.get(value_of.remote(Retagged(1)))
    assert inner == 1 and back.value == 1


def test_local_registration_stays_local(ray_shared):
    ray.register_custom_serializer(LocalOnly, serializer=no_pickle_to_state,
                                   deserializer=lambda s: LocalOnly(s["v"]), local=True)
    assert ray.get(ray.put(LocalOnly(3))).value == 3

    @ray.remote
    def make():
        return LocalOnly(4)

    with pytest.raises(SerializationError, match="LocalOnly"):
        ray.get(make.remote())


def test_register_custom_serializer_rejects_bad_input():
    with pytest.raises(TypeError, match="needs a class"):
        ray.register_custom_serializer(NoPickle(1), use_pickle=True)
    with pytest.raises(ValueError, match="exactly one"):
        ray.register_custom_serializer(Retagged)
    with pytest.raises(ValueError, match="exactly one"):
        ray.register_custom_serializer(Retagged, use_pickle=True, use_dict=True)
    with pytest.raises(ValueError, match="deserializer"):
        ray.register_custom_serializer(Retagged, serializer=lambda o: o)
    with pytest.raises(TypeError, match="callable"):
        ray.register_custom_serializer(Retagged, serializer="nope", deserializer=Retagged)


def test_registration_before_init_with_a_main_class():
    result = run_script("""
        import zray as ray

        class Point:                   # lives in __main__: sent by value
            def __init__(self, x):
                self.x = x
            def __reduce__(self):
                raise TypeError("no")

        ray.register_custom_serializer(Point, serializer=lambda p: p.x,
                                       deserializer=lambda x: Point(x))
        ray.init(num_cpus=1)

        @ray.remote
        def shift(p):
            return Point(p.x + 1)

        print("RESULT", ray.get(shift.remote(Point(1))).x)
        ray.shutdown()
    """)
    assert "RESULT 2" in result.stdout, result.stdout + result.stderr

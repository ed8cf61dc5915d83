"""Ray programs written for Ray's 0.8 line and current Ray: the API details
they rely on (issue 16): argument checks at ``.remote()``, 0.8 spellings,
resource and node reports, read-only arrays."""
import os

import numpy as np
import pytest

import zray as ray
from conftest import run_script
from zray.exceptions import GetTimeoutError, RayTimeoutError


# == arguments are checked at .remote(), against the signature =================
def test_remote_function_arguments_checked_at_call(ray_shared):
    @ray.remote
    def none():
        return 0

    @ray.remote
    def shaped(a, b=2, *args, c, d=4, **kwargs):
        return a, b, args, c, d, kwargs

    with pytest.raises(TypeError, match="too many positional arguments"):
        none.remote(3)
    with pytest.raises(TypeError, match="missing a required argument: 'c'"):
        shaped.remote(1)
    with pytest.raises(TypeError, match="multiple values for argument 'a'"):
        shaped.remote(1, a=1, c=3)
    with pytest.raises(TypeError, match="shaped"):
        shaped.options(num_cpus=1).remote()
    # Everything the signature allows still runs.
    assert ray.get(shaped.remote(1, 2, 3, c=5, e=6)) == (1, 2, (3,), 5, 4, {"e": 6})


def test_actor_constructor_and_method_arguments_checked_at_call(ray_shared):
    @ray.remote
    class Counter:
        def __init__(self, start, *, step=1):
            self.value, self.step = start, step

        def add(self, times):
            self.value += self.step * times
            return self.value

        @staticmethod
        def double(x):
            return 2 * x

        @classmethod
        def name(cls, suffix):
            return cls.__name__ + suffix

    with pytest.raises(TypeError, match="missing a required argument: 'start'"):
        Counter.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        Counter.options(num_cpus=0).remote(1, 2)
    counter = Counter.remote(10, step=2)
    with pytest.raises(TypeError, match=r"Counter\.add.*missing a required argument"):
        counter.add.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        counter.double.remote(1, 2)
    assert ray.get(counter.add.remote(3)) == 16
    assert ray.get(counter.double.remote(4)) == 8
    assert ray.get(counter.name.remote("!")) == "Counter!"


def test_handle_passed_to_a_task_still_checks_arguments(ray_shared):
    @ray.remote
    class Echo:
        def echo(self, x):
            return x

    @ray.remote
    def call_badly(handle):
        try:
            handle.echo.remote()
        except TypeError as exc:
            return str(exc)
        return "accepted"

    assert "missing a required argument: 'x'" in ray.get(call_badly.remote(Echo.remote()))


# == ray.wait([]) ===============================================================
def test_wait_on_no_refs_returns_two_empty_lists(ray_shared):
    assert ray.wait([]) == ([], [])
    assert ray.wait([], timeout=0) == ([], [])


# == small gaps =================================================================
def test_remote_with_empty_parentheses_on_a_class(ray_shared):
    @ray.remote()
    class Plain:
        def ping(self):
            return "pong"

    @ray.remote()
    def plain():
        return "done"

    assert ray.get(Plain.remote().ping.remote()) == "pong"
    assert ray.get(plain.remote()) == "done"


def test_nil_object_id(ray_shared):
    nil = ray.ObjectID.nil()
    assert nil.is_nil()
    assert nil == ray.ObjectID.nil()
    assert not ray.put(1).is_nil()
    assert len(nil.binary()) == len(ray.put(1).binary())


def test_underscore_remote_on_functions_actors_and_methods(ray_shared):
    @ray.remote
    def add(a, b=0):
        return a + b

    @ray.remote
    class Pair:
        def __init__(self, left):
            self.left = left

        def both(self, right):
            return self.left, right

    # 0.8 code spells every option out, None meaning "not set".
    assert ray.get(add._remote(args=[1], kwargs={"b": 2}, num_return_vals=None,
                               num_cpus=None, resources=None)) == 3
    pair = Pair._remote(args=["l"], kwargs={}, num_cpus=None, detached=None)
    assert ray.get(pair.both._remote(args=["r"], kwargs={})) == ("l", "r")
    first, second = pair.both._remote(args=["x"], num_return_vals=2)
    assert ray.get([first, second]) == ["l", "x"]
    with pytest.raises(TypeError, match="missing a required argument"):
        add._remote(args=[], kwargs={})


def test_0_8_names_of_the_timeout_error_and_the_error_table(ray_shared):
    assert RayTimeoutError is GetTimeoutError
    assert ray.exceptions.RayTimeoutError is GetTimeoutError

    @ray.remote
    def fails():
        raise ValueError("recorded")

    with pytest.raises(ValueError):
        ray.get(fails.remote())
    assert ray.errors() == ray.error_info()


def test_workers_get_one_omp_thread_unless_the_user_set_it(ray_shared):
    @ray.remote
    def omp():
        return os.environ.get("OMP_NUM_THREADS")

    expected = os.environ.get("OMP_NUM_THREADS", "1")
    assert ray.get(omp.remote()) == expected


def test_memory_resources_reported_in_bytes(ray_shared):
    total = ray.cluster_resources()
    assert total["object_store_memory"] > 0 and total["memory"] >= 0
    available = ray.available_resources()
    assert available["object_store_memory"] == total["object_store_memory"]
    assert ray.nodes()[0]["Resources"]["object_store_memory"] == total["object_store_memory"]


def test_nodes_name_an_ip_address_and_a_port(ray_shared):
    import ipaddress
    (node,) = ray.nodes()
    ipaddress.ip_address(node["NodeManagerAddress"])      # raises unless an IP
    assert isinstance(node["NodeManagerPort"], int)


def test_small_and_large_arrays_from_get_are_read_only(ray_shared):
    @ray.remote
    def make(n):
        return np.arange(n)

    @ray.remote
    def writable(array):
        return array.flags.writeable

    for n in (3, 100_000):
        for array in (ray.get(ray.put(np.arange(n))), ray.get(make.remote(n))):
            assert not array.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                array[0] = 1
        assert ray.get(writable.remote(np.arange(n))) is False
    # A strided view comes back equal, read-only too.
    strided = np.arange(12).reshape(3, 4)[:, ::2]
    got = ray.get(ray.put(strided))
    assert np.array_equal(got, strided) and not got.flags.writeable


# == classes from __main__ and function bodies keep their identity ==============
MAIN_CLASSES = """
import dataclasses
import zray as ray

class Point:
    def __init__(self, x):
        self.x = x

@dataclasses.dataclass
class Pair:
    a: int
    b: str

class MyError(Exception):
    pass

@ray.remote
def make(x):
    return Point(x), Pair(x, "b")

@ray.remote
def check(point, pair):
    return isinstance(point, Point) and pair == Pair(1, "b")

@ray.remote
def fail():
    raise MyError("from the task")

ray.init(num_cpus=1)
assert isinstance(ray.get(ray.put(Point(4))), Point)
assert ray.get(ray.put(Pair(1, "b"))) == Pair(1, "b")
point, pair = ray.get(make.remote(2))
assert type(point) is Point and pair == Pair(2, "b"), (type(point), pair)
assert ray.get(check.remote(Point(1), Pair(1, "b")))
assert ray.get(check.remote(ray.put(Point(1)), ray.put(Pair(1, "b"))))
try:
    ray.get(fail.remote())
except MyError as exc:
    assert isinstance(exc, ray.exceptions.RayTaskError) and "from the task" in str(exc)
    print("CAUGHT")
ray.shutdown()
"""


def test_main_classes_come_back_as_the_drivers_own():
    result = run_script(MAIN_CLASSES, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CAUGHT" in result.stdout


def test_function_local_classes_come_back_as_the_callers_own(ray_shared):
    class Local:
        def __init__(self, value):
            self.value = value

    class LocalError(ValueError):
        pass

    @ray.remote
    def roundtrip(obj):
        assert type(obj).__name__ == "Local"
        return Local(obj.value + 1)

    @ray.remote
    def fails():
        raise LocalError("local")

    assert type(ray.get(ray.put(Local(1)))) is Local
    assert type(ray.get(roundtrip.remote(Local(1)))) is Local
    with pytest.raises(LocalError, match="local"):
        ray.get(fails.remote())


def test_put_of_a_local_class_whose_method_closes_over_its_instance(ray_shared):
    class Foo:
        def __init__(self):
            self.val = ray.put(0)

        def method(self):
            return f          # the enclosing variable: the instance itself

    f = Foo()
    back = ray.get(ray.put(f))
    assert type(back) is Foo and ray.get(back.val) == 0


# == refs captured by code are counted ==========================================
CAPTURED_REF = """
import numpy as np
import zray as ray

ray.init(num_cpus=1)
ref = ray.put(np.arange(100_000))

@ray.remote
def total():
    return int(ray.get(ref).sum())

out = total.remote()
del ref                 # the task's code still holds it
print("TOTAL", ray.get(out, timeout=60))
print("AGAIN", ray.get(total.remote(), timeout=60))
ray.shutdown()
"""


def test_ref_captured_by_a_remote_function_outlives_the_callers_ref():
    result = run_script(CAPTURED_REF, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = sum(range(100_000))
    assert f"TOTAL {expected}" in result.stdout and f"AGAIN {expected}" in result.stdout


def test_refs_captured_by_code_the_caller_dropped_are_counted(ray_shared):
    import gc

    def make():
        table = ray.put({"k": "v"})

        @ray.remote
        class Reader:
            def read(self):
                return ray.get(table)["k"]

        @ray.remote
        def read():
            return ray.get(table)["k"]
        return Reader, read

    # The classes, functions and the only ObjectRef die with these lines:
    # what the tasks need is what their code holds.
    reader = make()[0].remote()
    out = make()[1].remote()
    gc.collect()
    assert ray.get(reader.read.remote(), timeout=60) == "v"
    assert ray.get(out, timeout=60) == "v"


def test_a_ref_whose_object_was_freed_raises_instead_of_hanging(ray_shared):
    import pickle
    import time
    from zray.exceptions import ObjectLostError

    refs = [ray.put("short-lived"), ray.put("short-lived too")]
    smuggled = [pickle.dumps(ref) for ref in refs]   # plain pickle: not counted
    ids = [ref.hex() for ref in refs]
    del refs

    def stored():
        rows = ray.api._runtime().request("memory")
        return any(row["object_id"] in ids for row in rows)
    deadline = time.monotonic() + 60
    while stored():
        assert time.monotonic() < deadline, "the objects were never freed"
        time.sleep(0.05)
    with pytest.raises(ObjectLostError, match=ids[0]):
        ray.get(pickle.loads(smuggled[0]), timeout=60)

    @ray.remote
    def read(value):
        return value

    # As an argument: the task fails with the loss instead of waiting for it.
    with pytest.raises(ObjectLostError, match=ids[1]):
        ray.get(read.remote(pickle.loads(smuggled[1])), timeout=60)


# == custom serializers =========================================================
class BadlySerialized:
    def __init__(self, value):
        self.value = value


def _broken_serializer(obj):
    raise RuntimeError("serializer broke")


def test_a_raising_custom_serializer_raises_naming_the_class(ray_shared):
    from zray.serialization import SerializationError
    ray.register_custom_serializer(BadlySerialized, serializer=_broken_serializer,
                                   deserializer=BadlySerialized)
    with pytest.raises(SerializationError, match="BadlySerialized.*serializer broke"):
        ray.put(BadlySerialized(1))

    @ray.remote
    def echo(x):
        return x

    with pytest.raises(SerializationError, match="BadlySerialized"):
        echo.remote([BadlySerialized(2)])


# == the actor class shows the user's class ====================================
@ray.remote
class WithClassAttributes:
    LIMIT = 3

    @staticmethod
    def clamp(x):
        return min(x, WithClassAttributes.LIMIT)

    @classmethod
    def label(cls, x):
        return f"{cls.__name__}:{x}"

    def use(self, x):
        # Class attributes and helpers reached through the actor class's name.
        return WithClassAttributes.clamp(x), WithClassAttributes.label(x)


def test_actor_class_shows_class_attributes_and_helpers(ray_shared):
    assert WithClassAttributes.LIMIT == 3
    assert WithClassAttributes.clamp(7) == 3
    assert WithClassAttributes.label(1) == "WithClassAttributes:1"
    assert ray.get(WithClassAttributes.remote().use.remote(9)) == (3, "WithClassAttributes:9")
    with pytest.raises(AttributeError):
        WithClassAttributes.missing


def test_actor_class_cannot_be_instantiated_or_inherited(ray_shared):
    with pytest.raises(TypeError, match="Actors cannot be instantiated directly"):
        WithClassAttributes()
    with pytest.raises(TypeError, match="Inheriting from actor classes is not currently "
                                        "supported"):
        class Derived(WithClassAttributes):
            pass

    class PlainBase:
        def base(self):
            return "base"

    @ray.remote
    class FromPlain(PlainBase):
        pass

    assert ray.get(FromPlain.remote().base.remote()) == "base"


# == ray.get raises as soon as one of its objects failed ========================
def test_get_of_a_list_raises_once_any_failed_without_waiting_for_the_rest(ray_shared,
                                                                           tmp_path):
    release = tmp_path / "release"

    @ray.remote
    def fails():
        raise ValueError("failed first")

    @ray.remote
    def blocked(path):
        import time
        while not os.path.exists(path):      # runs until the test lets it go
            time.sleep(0.05)
        return "released"

    slow = blocked.remote(str(release))
    try:
        # `blocked` cannot finish before the file exists, so ray.get can only
        # return by raising the failure.
        with pytest.raises(ValueError, match="failed first"):
            ray.get([slow, fails.remote()], timeout=120)
        with pytest.raises(ValueError, match="failed first"):
            ray.get([fails.remote(), slow], timeout=120)
    finally:
        release.touch()
    assert ray.get(slow, timeout=60) == "released"

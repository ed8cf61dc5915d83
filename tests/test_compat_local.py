"""The compatibility details of issue 16 in ``local_mode``: everything runs
in the driver, and must behave as it does on a cluster."""
import pytest

import zray as ray


@pytest.fixture(scope="module")
def local():
    ray.init(local_mode=True)
    yield
    ray.shutdown()


def test_arguments_checked_in_local_mode(local):
    @ray.remote
    def f(x):
        return x

    @ray.remote
    class A:
        def m(self, y):
            return y

    with pytest.raises(TypeError, match="missing a required argument"):
        f.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        A.remote(1)
    with pytest.raises(TypeError, match=r"A\.m.*missing a required argument"):
        A.remote().m.remote()


class Celsius:
    def __init__(self, degrees):
        self.degrees = degrees


def test_custom_serializer_honoured_in_local_mode(local):
    seen = []

    def to_state(obj):
        seen.append(obj.degrees)
        return obj.degrees

    ray.register_custom_serializer(Celsius, serializer=to_state,
                                   deserializer=lambda d: Celsius(d + 100), local=True)

    @ray.remote
    def read(c):
        return c.degrees

    assert ray.get(ray.put(Celsius(1))).degrees == 101
    assert ray.get(read.remote(Celsius(2))) == 102
    assert seen == [1, 2]


def test_local_mode_values_behave_as_on_a_cluster(local):
    import numpy as np

    @ray.remote
    class Box:
        def __init__(self):
            self.items = []

        def add(self, x):
            self.items.append(x)
            return len(self.items)

    @ray.remote
    def add_through(box, x):
        return ray.get(box.add.remote(x))

    box = Box.remote()
    assert ray.get(add_through.remote(box, 1)) == 1
    assert ray.get(box.add.remote(2)) == 2          # the same actor, not a copy
    array = ray.get(ray.put(np.arange(3)))
    assert not array.flags.writeable

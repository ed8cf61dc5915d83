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

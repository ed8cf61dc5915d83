"""One node under a large burst: every task submitted at once finishes.
(Its speed and memory per pending task are figures of benchmarks/burst.py.)"""
import pytest

import zray as ray


@pytest.mark.slow
@pytest.mark.timeout(3600)        # minutes on 2 shared cores
def test_200k_tiny_tasks_submitted_at_once_all_finish(ray_start):
    @ray.remote
    def noop(i):
        return i

    n = 200_000
    refs = [noop.remote(i) for i in range(n)]
    assert ray.get(refs, timeout=3000) == list(range(n))

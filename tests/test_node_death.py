"""A driver connected with ``ray.init(address=...)`` whose node dies:
``ray.get``, ``ray.wait`` and ``.remote()`` raise instead of waiting forever.
"""
import os
import signal

import pytest

import zray as ray
from zray.exceptions import RaySystemError

from cluster_util import Cluster, records, wait_for


@pytest.fixture
def head(tmp_path):
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start_head("--num-cpus", 1)
        cluster.wait_nodes(1)
        yield cluster
    finally:
        ray.shutdown()
        cluster.stop()


def test_connected_driver_raises_when_its_node_is_killed(head, tmp_path):
    ray.init(address=head.address)
    started, release = tmp_path / "started", tmp_path / "release"

    @ray.remote
    def wait_for_release():
        import time
        open(started, "w").close()
        while not os.path.exists(release):     # never created: the node dies first
            time.sleep(0.05)
        return "released"

    ref = wait_for_release.remote()
    wait_for(started.exists, 30, "the task to start")
    (node,) = [r for r in records(head.root) if r["role"] == "node"]
    os.kill(node["pid"], signal.SIGKILL)
    # Generous: a GetTimeoutError here means the death went unnoticed.
    with pytest.raises(RaySystemError, match="lost the connection to the zray node"):
        ray.get(ref, timeout=120)
    with pytest.raises(RaySystemError, match="node died"):
        ray.wait([ref], timeout=120)
    with pytest.raises(RaySystemError, match="node died"):
        wait_for_release.remote()
    ray.shutdown()

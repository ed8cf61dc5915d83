"""A driver that does not share its node's shared memory (another machine)
puts and gets large objects over its tcp connection.

"Another machine" is made two ways: the driver runs in its own mount
namespace with an empty /dev/shm of its own (``unshare``, where the kernel
lets an unprivileged process do it), or, everywhere, with every way of
touching shared memory replaced by one that fails.
"""
import shutil
import subprocess
import sys

import pytest

from cluster_util import Cluster, tcp_driver_env

MiB = 1 << 20

DRIVER = """
import os, sys
import numpy as np
import zray as ray
from cluster_util import connect_over_tcp

connect_over_tcp()
if sys.argv[2] == "patched":
    from zray.plasma import by_value, shm

    def out_of_reach(*args, **kwargs):
        raise FileNotFoundError("the node's shared memory is on another machine")

    by_value.shares_node_memory = lambda connection, node_info: False
    shm.map_file = shm.map_chunk = shm.map_block = shm.write_object = out_of_reach

ray.init(address=sys.argv[1], redis_password=os.environ["ZRAY_TEST_TOKEN"])
assert ray.api._runtime().objects.by_value is not None, "took the node's memory as shared"

MiB = 1 << 20
data = np.arange(40 * MiB // 8, dtype=np.float64)
ref = ray.put(data)                           # sent in chunks, written by the node
back = ray.get(ref)                           # pulled back in chunks
assert (back == data).all() and not back.flags.writeable


@ray.remote
def double(x):
    return x * 2


@ray.remote
def filled(n):
    return np.full(n, 7, dtype=np.uint8)


assert (ray.get(double.remote(ref)) == data * 2).all()           # a put as an argument
assert (ray.get(double.remote(data[: MiB])) == data[: MiB] * 2).all()   # a large argument
# Bigger than one message frame may be, both ways.
huge = ray.get(filled.remote(300 * MiB))
assert huge.shape == (300 * MiB,) and (huge[:: 4096] == 7).all()
again = ray.get(ray.put(huge))
assert again.shape == huge.shape and (again[:: 4096] == 7).all()
print("remote driver ok")
"""


def _namespace_prefix():
    """The command that runs a process with a private, empty /dev/shm; None if
    this kernel does not let us."""
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
              'mount -t tmpfs none /dev/shm && exec "$@"', "sh"]
    try:
        probe = subprocess.run(prefix + ["true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize("apart", ["namespace", "patched"])
def test_a_driver_without_the_nodes_shared_memory_puts_and_gets_over_tcp(tmp_path, apart):
    prefix = []
    if apart == "namespace":
        prefix = _namespace_prefix()
        if prefix is None:
            pytest.skip("no unprivileged mount namespaces here (the patched case still runs)")
    cluster = Cluster(tmp_path / "cluster")
    try:
        cluster.start_head("--num-cpus", 2, "--object-store-memory", 800 * MiB)
        cluster.wait_nodes(1)
        script = tmp_path / "driver.py"
        script.write_text(DRIVER)
        driver = subprocess.run(
            prefix + [sys.executable, str(script), cluster.address, apart],
            env=tcp_driver_env({"ZRAY_TEST_TOKEN": cluster.token}), timeout=300,
            capture_output=True, text=True)
        assert driver.returncode == 0, driver.stdout[-2000:] + driver.stderr[-4000:]
        assert "remote driver ok" in driver.stdout
    finally:
        cluster.stop()

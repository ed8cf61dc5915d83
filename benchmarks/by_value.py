"""Puts and gets of a driver that does not share its node's shared memory.

``python -m benchmarks.by_value [--mb 100] [--repeat 5]``

Starts a one-node cluster (``zray start --head`` in a temporary directory),
connects a driver to it over tcp that takes itself for one on another
machine (``by_value.shares_node_memory`` answers False), and times puts and
gets of a ``--mb`` array: the bytes go over the connection in chunks
(``plasma/by_value.py``). Prints GB/s (median of ``--repeat``), then
stops the cluster. Loopback tcp on one machine: the best case of a network.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MB = 1 << 20


def _zray(*args, env):
    subprocess.run([sys.executable, "-m", "zray.cli", *map(str, args)], check=True, env=env,
                   capture_output=True, text=True, timeout=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="zray-by-value-")
    env = dict(os.environ, ZRAY_TEMP_DIR=root)
    _zray("start", "--head", "--port", 0, "--temp-dir", root, "--num-cpus", 1,
          "--object-store-memory", 4 * args.mb * MB, env=env)
    try:
        with open(os.path.join(root, "cluster.json")) as f:
            cluster = json.load(f)
        _measure(cluster["address"], cluster["token"], args.mb * MB, args.repeat)
    finally:
        _zray("stop", "--temp-dir", root, env=env)


def _measure(address, token, size, repeat):
    import numpy as np
    import zray as ray
    import zray.cluster as cluster
    from zray.plasma import by_value

    find_cluster = cluster.find_cluster

    def over_tcp(address, password="", temp_dir=None):
        _, info = find_cluster(address, password, temp_dir)
        nodes = cluster.list_nodes(address, password, temp_dir)[2]
        return nodes[info["node_id"]]["tcp_address"], info
    cluster.find_cluster = over_tcp
    by_value.shares_node_memory = lambda connection, node_info: False
    ray.init(address=address, redis_password=token)
    try:
        data = np.ones(size // 8)
        puts, gets = [], []
        for _ in range(repeat):
            begin = time.perf_counter()
            ref = ray.put(data)
            puts.append(size / (time.perf_counter() - begin) / 1e9)
            ray.api._runtime().objects.mapped.pop(ref.id, None)    # read it afresh
            begin = time.perf_counter()
            value = ray.get(ref)
            gets.append(size / (time.perf_counter() - begin) / 1e9)
            del value, ref
        print(f"by value over loopback tcp, {size // MB} MB: put "
              f"{statistics.median(puts):.2f} GB/s, get {statistics.median(gets):.2f} GB/s "
              f"(median of {repeat})")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

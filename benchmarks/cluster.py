"""Two zray nodes on loopback: object transfer (GB/s) and cross-node tasks/s.

    python -m benchmarks.cluster [--size-mb 100] [--repeat 3] [--tasks 2000]
                                 [--lz4 auto|on|off] [--json FILE]

Starts a head (node A) and a second node (B) with `zray start` under a
fresh temp dir, connects a driver to A, measures, and stops both (also on
Ctrl-C). Rows:

- ``pull A->B``: a driver ``put`` on A read by a task on B (B pulls it in
  chunks); the time of the same task on a tiny argument is subtracted.
- ``round trip A->B->A``: the task on B returns the array, so it also comes
  back (A pulls the result); bytes moved = 2 x size.
- ``pull A->B, zeros``: as the first row on all-zero data. Nodes of one
  machine do not compress (``--lz4 on`` forces it, to see what it costs).
- ``tasks A->B``: tiny tasks that only B can run (forwarded by A, results
  back through A), against ``tasks on A`` for the same driver.
- ``pipeline on B``: two stages that only B can run (make an array, sum
  it); the driver gets only the sum. The value is the bytes the two nodes
  pulled from each other meanwhile (their transfer counters): the
  intermediate array need not leave B.

Standalone: it does not use the rest of benchmarks/ (the suite run by
``python -m benchmarks``).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _zray(*args, env):
    result = subprocess.run([sys.executable, "-m", "zray.cli", *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"zray {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result.stdout


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(size_mb, repeat, n_tasks, lz4="auto"):
    import numpy as np
    import zray as ray
    from zray.cluster import list_nodes

    root = tempfile.mkdtemp(prefix="zray-bench-cluster-")
    env = dict(os.environ, ZRAY_TRANSFER_LZ4=lz4, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    store = str(max(4 * size_mb, 512) * 1024 * 1024)
    rows = []
    try:
        _zray("start", "--head", "--port", 0, "--num-cpus", 1, "--resources", '{"node_a": 100}',
              "--object-store-memory", store, "--temp-dir", root, env=env)
        with open(os.path.join(root, "cluster.json")) as f:
            recorded = json.load(f)
        address, token = recorded["address"], recorded.get("token", "")
        _zray("start", "--address", address, "--num-cpus", 1,
              "--resources", '{"node_b": 100}', "--object-store-memory", store,
              "--temp-dir", root, env=env)
        deadline = time.monotonic() + 20
        while len(list_nodes(address, token)[2]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second node did not join within 20 s")
            time.sleep(0.1)
        ray.init(address=address, redis_password=token)

        @ray.remote(resources={"node_b": 1})
        def nbytes_on_b(array):
            return array.nbytes

        @ray.remote(resources={"node_b": 1})
        def echo_on_b(array):
            return array

        @ray.remote(resources={"node_b": 1})
        def tiny_on_b():
            return 0

        @ray.remote(resources={"node_a": 1})
        def tiny_on_a():
            return 0

        size = size_mb * 1024 * 1024
        data = np.random.default_rng(0).integers(0, 255, size=size, dtype=np.uint8)
        zeros = np.zeros(size, dtype=np.uint8)
        small = ray.put(np.zeros(16, dtype=np.uint8))
        ray.get([nbytes_on_b.remote(small) for _ in range(4)])      # warm workers
        base = _best(lambda: ray.get(nbytes_on_b.remote(small)), repeat * 3)

        def pull(array):
            def once():
                ref = ray.put(array)            # a new object each time: no cached copy
                start = time.perf_counter()
                assert ray.get(nbytes_on_b.remote(ref)) == size
                return time.perf_counter() - start
            return min(once() for _ in range(repeat))

        t = max(pull(data) - base, 1e-9)
        rows.append(("pull A->B (random bytes)", f"{size / t / 1e9:.2f} GB/s",
                     f"{size_mb} MB in {t * 1e3:.0f} ms"))

        def round_trip():
            ref = ray.put(data)
            start = time.perf_counter()
            out = ray.get(echo_on_b.remote(ref))
            elapsed = time.perf_counter() - start
            assert out.nbytes == size and out[-1] == data[-1]
            return elapsed
        t = max(min(round_trip() for _ in range(repeat)) - base, 1e-9)
        rows.append(("round trip A->B->A", f"{2 * size / t / 1e9:.2f} GB/s",
                     f"2 x {size_mb} MB in {t * 1e3:.0f} ms"))

        t = max(pull(zeros) - base, 1e-9)
        rows.append((f"pull A->B (zeros, lz4 {lz4})", f"{size / t / 1e9:.2f} GB/s",
                     f"{size_mb} MB in {t * 1e3:.0f} ms"))

        rows.append(_pipeline_row(ray, size_mb, repeat))

        ray.get([tiny_on_b.remote() for _ in range(200)])           # warm up
        t = _best(lambda: ray.get([tiny_on_b.remote() for _ in range(n_tasks)]), repeat)
        rows.append(("tasks A->B (forwarded)", f"{n_tasks / t:.0f} tasks/s",
                     f"{n_tasks} tasks in {t:.2f} s"))
        ray.get([tiny_on_a.remote() for _ in range(200)])
        t = _best(lambda: ray.get([tiny_on_a.remote() for _ in range(n_tasks)]), repeat)
        rows.append(("tasks on A (local, same driver)", f"{n_tasks / t:.0f} tasks/s",
                     f"{n_tasks} tasks in {t:.2f} s"))
    finally:
        try:
            import zray as ray
            ray.shutdown()
        finally:
            subprocess.run([sys.executable, "-m", "zray.cli", "stop", "--temp-dir", root],
                           capture_output=True, env=env, timeout=60)
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _pulled_bytes(ray):
    """Bytes nodes A and B have pulled from other nodes so far."""
    from zray.core import context

    @ray.remote(resources={"node_b": 1})
    def pulled_on_b():
        return context.current().request("status")["peers"]["pulled_bytes"]

    on_a = context.current().request("status")["peers"]["pulled_bytes"]
    return on_a + ray.get(pulled_on_b.remote())


def _pipeline_row(ray, size_mb, repeat):
    @ray.remote(resources={"node_b": 1})
    def make_on_b(size):
        import numpy as np
        return np.random.default_rng(1).integers(0, 255, size=size, dtype=np.uint8)

    @ray.remote(resources={"node_b": 1})
    def total_on_b(array):
        return int(array.sum(dtype=np.uint64))

    import numpy as np
    size = size_mb * 1024 * 1024
    moved, times = [], []
    for _ in range(repeat):
        before = _pulled_bytes(ray)
        start = time.perf_counter()
        ray.get(total_on_b.remote(make_on_b.remote(size)))
        times.append(time.perf_counter() - start)
        moved.append(_pulled_bytes(ray) - before)
    return ("pipeline on B (bytes moved)", f"{max(moved) / 1e6:.0f} MB",
            f"make {size_mb} MB on B, sum it on B: {max(moved) / size:.1f} x the "
            f"intermediate crossed the network; best {min(times) * 1e3:.0f} ms")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=100, help="object size (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per throughput run")
    parser.add_argument("--lz4", choices=("auto", "on", "off"), default="auto",
                        help="chunk compression between the nodes (default auto: only "
                             "between machines)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = run(args.size_mb, args.repeat, args.tasks, args.lz4)
    width = max(len(r[0]) for r in rows)
    print(f"zray, two nodes on loopback ({os.cpu_count()} cores)")
    for name, value, detail in rows:
        print(f"  {name:<{width}}  {value:>14}   {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"row": r[0], "value": r[1], "detail": r[2]} for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

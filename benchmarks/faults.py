"""Fault figures: how fast a dead node is noticed, what spilling costs the node.

    python -m benchmarks.faults detect [--repeat 3]
    python -m benchmarks.faults spill [--size-mb 400] [--repeat 3]
    python -m benchmarks.faults kv [--repeat 3]
    python -m benchmarks.faults driver [--repeat 3]
    python -m benchmarks.faults peer [--repeat 3]
    python -m benchmarks.faults stall [--repeat 3]
    python -m benchmarks.faults lineage [--size-mb 50] [--repeat 3]

- ``detect``: a `zray start --head` cluster under a fresh temp dir, a driver
  connected with ``ray.init(address=...)`` waiting in ``ray.get`` on a task
  that never ends; the node is killed with SIGKILL; the row is the time from
  the kill to ``ray.get`` raising.
- ``spill``: ``ray.init(object_store_memory=1.5 x size)``; one object of
  ``size`` is put, then a second, which makes the node spill the first. A
  thread of the driver meanwhile sends a request (``store_stats``) to the
  node every 5 ms: the slowest answer is how long the node's loop stalled
  (its heartbeats go out from the same loop). Also: how long the second put
  took, and the spill throughput (first byte asked to last byte on disk).
- ``kv``: ``ray.init()``, a key put, the kv service killed with SIGKILL; the
  row is the time until it answers again with that key (restarted by the
  node, state reloaded from its journal).
- ``driver``: a `zray start --head --num-cpus 3` cluster; a second driver
  (a subprocess) creates a 1-CPU actor and queues 1,000 tasks that never
  end, then ``os._exit(0)``; the row is the time from its exit to
  ``ray.available_resources()`` showing all 3 CPUs free again.
- ``peer``: a head and a second node (each its own `zray start`); the
  second is killed with SIGKILL; the row is the time until the kv lists
  one node (the head noticed the dropped connection and said so).
- ``stall``: the same two nodes; a driver on the head runs 300 tasks of
  20 ms that need a resource only the second node has (half of them take
  another's result), each appending its name to a file; once 20 ran, the
  second node gets SIGSTOP for 5 s, then SIGCONT. The row: the time from
  SIGCONT to the last result, the tasks that ran twice (lines beyond 300),
  and whether both nodes are still listed.

- ``lineage``: a head (1 CPU) and a node B with {"worker_node": 1}; a chain
  of 4 tasks that only B can run, each making an array of ``size`` from the
  last, all kept on B; B is killed with SIGKILL and a node C with the same
  resources started. Rows: kill to the head noticing (B gone from
  ``ray.nodes()``), C joining to every ``ray.get`` of the chain answered
  (the tasks run again on C, from lineage), and how many tasks ran again.

Standalone: it does not use the rest of benchmarks/. Run it on an older
checkout (copy this file there) to compare.
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time

from .cluster import REPO, _zray


@contextlib.contextmanager
def _head(num_cpus):
    """A `zray start --head` cluster under a fresh temp dir: (root, env, cluster.json)."""
    root = tempfile.mkdtemp(prefix="zray-bench-faults-")
    env = dict(os.environ, ZRAY_TEMP_DIR=root, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    try:
        _zray("start", "--head", "--port", 0, "--num-cpus", num_cpus, "--temp-dir", root,
              env=env)
        with open(os.path.join(root, "cluster.json")) as f:
            recorded = json.load(f)
        yield root, env, recorded
    finally:
        _zray("stop", "--temp-dir", root, env=env)
        shutil.rmtree(root, ignore_errors=True)


def detect_once():
    import zray as ray
    with _head(1) as (root, _env, recorded):
        (node_pid,) = [r["pid"] for r in _records(root) if r["role"] == "node"]
        ray.init(address=recorded["address"], redis_password=recorded.get("token", ""))

        @ray.remote
        def forever():
            time.sleep(600)

        ref = forever.remote()
        time.sleep(1.0)                  # the task is running
        os.kill(node_pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            ray.get(ref, timeout=120)
        except Exception as exc:         # the error we measure the arrival of
            noticed = time.monotonic() - killed
            kind = type(exc).__name__
        ray.shutdown()
        return noticed, kind


def _records(root):
    directory = os.path.join(root, "procs")
    out = []
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as f:
            out.append(json.load(f))
    return out


def spill_once(size_mb):
    import numpy as np
    import zray as ray
    size = size_mb * 1024 * 1024
    ray.init(num_cpus=1, object_store_memory=int(1.5 * size))
    runtime = ray.api._runtime()
    try:
        first = ray.put(np.ones(size // 8))
        latencies, stop = [], threading.Event()

        def ping():
            while not stop.is_set():
                start = time.perf_counter()
                runtime.request("store_stats")
                latencies.append(time.perf_counter() - start)
                time.sleep(0.005)

        pinger = threading.Thread(target=ping)
        pinger.start()
        time.sleep(0.2)
        start = time.perf_counter()
        second = ray.put(np.ones(size // 8))
        put_s = time.perf_counter() - start
        while runtime.request("store_stats").get("spilling_bytes", 0):
            time.sleep(0.005)
        spilled_s = time.perf_counter() - start
        time.sleep(0.2)
        stop.set()
        pinger.join()
        assert runtime.request("store_stats")["spilled_objects"] == 1
        del first, second
        return max(latencies), statistics.median(latencies), put_s, size / spilled_s / 1e9
    finally:
        ray.shutdown()


def kv_restart_once():
    import zray as ray
    from zray.kv.client import KvClient
    info = ray.init(num_cpus=1)
    try:
        kv = KvClient(info["kv_address"], ray.api._runtime().password)
        kv.put("bench:kept", 1)
        os.kill(info["kv_pid"], signal.SIGKILL)
        killed = time.monotonic()
        while True:
            try:
                if kv.call("get", "bench:kept", timeout_s=0.2) == 1:
                    break
            except Exception:            # still down
                pass
        back = time.monotonic() - killed
        kv.close()
        return back
    finally:
        ray.shutdown()


_DYING_DRIVER = '''
import os, sys
import zray as ray
ray.init(address=sys.argv[1], redis_password=os.environ["ZRAY_BENCH_TOKEN"])

@ray.remote
def forever():
    import time
    time.sleep(600)

@ray.remote(num_cpus=1)
class Holder:
    def ping(self):
        return 1

holder = Holder.remote()
ray.get(holder.ping.remote())
refs = [forever.remote() for _ in range(1000)]
ray.wait(refs, timeout=0.5)
os._exit(0)
'''


def driver_death_once():
    import subprocess
    import sys
    import zray as ray
    with _head(3) as (_root, env, recorded):
        address, token = recorded["address"], recorded.get("token", "")
        deadline = time.monotonic() + 60
        while True:                      # until the node's first heartbeat is in the kv
            try:
                ray.init(address=address, redis_password=token)
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        subprocess.run([sys.executable, "-c", _DYING_DRIVER, address],   # no token in ps
                       env=dict(env, ZRAY_BENCH_TOKEN=token), check=True, timeout=300)
        exited = time.monotonic()
        while ray.available_resources().get("CPU") != 3:
            time.sleep(0.01)
        freed = time.monotonic() - exited
        ray.shutdown()
        return freed


@contextlib.contextmanager
def _two_nodes():
    """A head (1 CPU) and a second node (2 CPUs, resource "second") each under
    its own temp dir: (env, cluster.json, the second node's pid)."""
    with _head(1) as (_root, env, recorded):
        root = tempfile.mkdtemp(prefix="zray-bench-faults-second-")
        second_env = dict(env, ZRAY_TEMP_DIR=root)
        try:
            _zray("start", "--address", recorded["address"], "--temp-dir", root,
                  "--redis-password", recorded.get("token", ""), "--num-cpus", 2,
                  "--resources", '{"second": 2}', env=second_env)
            (pid,) = [r["pid"] for r in _records(root) if r["role"] == "node"]
            _wait_nodes(recorded, 2)
            yield env, recorded, pid
        finally:
            _zray("stop", "--temp-dir", root, env=second_env)
            shutil.rmtree(root, ignore_errors=True)


def _live_nodes(recorded):
    from zray.cluster import list_nodes
    return len(list_nodes(recorded["address"], recorded.get("token", ""))[2])


def _wait_nodes(recorded, count, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while _live_nodes(recorded) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cluster never listed {count} nodes")
        time.sleep(0.01)


def peer_death_once():
    with _two_nodes() as (_env, recorded, pid):
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _wait_nodes(recorded, 1)
        return time.monotonic() - killed


def stall_once(pause_s=5.0, tasks=300):
    import zray as ray
    with _two_nodes() as (_env, recorded, pid):
        ray.init(address=recorded["address"], redis_password=recorded.get("token", ""))
        ran = os.path.join(tempfile.mkdtemp(prefix="zray-bench-stall-"), "ran.txt")
        open(ran, "w").close()
        try:
            @ray.remote(resources={"second": 1}, max_retries=3)
            def record(name, *inputs):
                with open(ran, "a") as f:
                    f.write(f"{name}\n")
                time.sleep(0.02)
                return name

            half = [record.remote(f"t{i}") for i in range(tasks // 2)]
            refs = half + [record.remote(f"u{i}", ref) for i, ref in enumerate(half)]
            while len(open(ran).read().split()) < 20:
                time.sleep(0.01)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(pause_s)
            os.kill(pid, signal.SIGCONT)
            resumed = time.monotonic()
            try:
                ray.get(refs, timeout=120)
                finished = f"{time.monotonic() - resumed:.2f} s"
            except Exception as exc:      # the outcome measured (an older checkout)
                finished = f"never ({type(exc).__name__} after {time.monotonic() - resumed:.0f} s)"
            again = len(open(ran).read().split()) - len(refs)
            listed = _live_nodes(recorded)
            return finished, again, listed
        finally:
            ray.shutdown()
            shutil.rmtree(os.path.dirname(ran), ignore_errors=True)


def _lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def lineage_once(size_mb):
    import numpy as np
    import zray as ray
    with _head(1) as (root, env, recorded):
        address, token = recorded["address"], recorded.get("token", "")
        node_b, node_c = os.path.join(root, "b"), os.path.join(root, "c")
        start = ["start", "--address", address, "--redis-password", token, "--num-cpus", 1,
                 "--resources", '{"worker_node": 1}',
                 "--object-store-memory", 8 * size_mb * 1024 * 1024]
        _zray(*start, "--temp-dir", node_b, env=env)
        try:
            ray.init(address=address, redis_password=token)
            while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                time.sleep(0.05)
            runs = os.path.join(root, "runs")

            @ray.remote(resources={"worker_node": 1})
            def step(previous, n, log):
                with open(log, "a") as f:
                    f.write("ran\n")
                return (previous if previous is not None else np.zeros(n, np.uint8)) + 1

            chain, last = [], None
            for _ in range(4):
                last = step.remote(last, size_mb * 1024 * 1024, runs)
                chain.append(last)
            while _lines(runs) < 4:            # all made on B, none fetched
                time.sleep(0.01)
            (pid,) = [r["pid"] for r in _records(node_b) if r["role"] == "node"]
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            while sum(1 for n in ray.nodes() if n["Alive"]) > 1:
                time.sleep(0.02)
            noticed = time.monotonic() - killed
            _zray(*start, "--temp-dir", node_c, env=env)
            while sum(1 for n in ray.nodes() if n["Alive"]) < 2:
                time.sleep(0.02)
            joined = time.monotonic()
            values = ray.get(chain, timeout=300)
            rebuilt = time.monotonic() - joined
            assert [int(v[0]) for v in values] == [1, 2, 3, 4]
            return noticed, rebuilt, _lines(runs) - 4
        finally:
            ray.shutdown()
            for extra in (node_b, node_c):
                if os.path.isdir(extra):
                    _zray("stop", "--temp-dir", extra, env=env)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults")
    parser.add_argument("what", choices=["detect", "spill", "kv", "driver", "peer", "stall",
                                         "lineage"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=400)
    args = parser.parse_args(argv)
    if args.what == "detect":
        for _ in range(args.repeat):
            noticed, kind = detect_once()
            print(f"dead node noticed by a connected driver after {noticed:.2f} s ({kind})",
                  flush=True)
    elif args.what == "kv":
        for _ in range(args.repeat):
            print(f"kv service killed: answering again, with its state, after "
                  f"{kv_restart_once():.2f} s", flush=True)
    elif args.what == "peer":
        for _ in range(args.repeat):
            print(f"second node killed: gone from the kv's list after "
                  f"{peer_death_once():.2f} s", flush=True)
    elif args.what == "stall":
        for _ in range(args.repeat):
            finished, again, listed = stall_once()
            print(f"second node paused 5 s under load: all results {finished} after "
                  f"it resumed; {again} tasks ran twice; {listed} nodes listed", flush=True)
    elif args.what == "lineage":
        for _ in range(args.repeat):
            noticed, rebuilt, again = lineage_once(min(args.size_mb, 200))
            print(f"node holding a 4-task chain of {min(args.size_mb, 200)} MiB results killed: "
                  f"noticed after {noticed:.2f} s; all 4 results rebuilt {rebuilt:.2f} s after "
                  f"a replacement node joined; {again} tasks ran again", flush=True)
    elif args.what == "driver":
        for _ in range(args.repeat):
            print(f"driver exited with 1,000 tasks queued: all CPUs free again after "
                  f"{driver_death_once():.2f} s", flush=True)
    else:
        for _ in range(args.repeat):
            worst, median, put_s, gbps = spill_once(args.size_mb)
            print(f"spill {args.size_mb} MiB: node answers in {median * 1e3:.1f} ms median, "
                  f"{worst * 1e3:.0f} ms worst; second put {put_s:.2f} s; "
                  f"spill throughput {gbps:.2f} GB/s", flush=True)


if __name__ == "__main__":
    main()

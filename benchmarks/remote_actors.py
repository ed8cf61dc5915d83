"""Actors on other nodes: call rates by route, and re-creation after a node's death.

    python -m benchmarks.remote_actors [--calls 1000] [--repeat 3] [--json FILE] [--no-kill]

Starts a head (A, {"node_a"}), a node B ({"node_b", "movable"}) and a node
C ({"node_c", "movable"}) with `zray start` under a fresh temp dir (each
non-head node under its own, so one can be killed), connects a driver to A.
Rows:

- ``calls, actor on A``: sync then pipelined calls of a driver on A to an
  actor on A (caller -> node -> worker), the baseline.
- ``calls, actor on B``: the same to an actor placed on B (driver -> A ->
  B -> A -> driver: the home forwards them).
- ``calls, actor made on B``: the same to an actor created from a task on
  B (homed there): the driver calls its worker straight over tcp
  (core/remote_endpoint.py; before that: driver -> A -> B -> worker).
- ``first calls sync/pipelined, actor made on B``: the first 100 sync
  calls (1,000 sent at once) to a fresh actor made on B, from the driver's
  first call on: how long, and how many went through A before the direct
  socket took over.
- ``actor created on B from B``: a task on B creates actors there one
  after another, each to its first answer (a worker on a node that listens
  on tcp also opens its tcp socket for callers on other nodes).
- ``calls from a task on C, actor on B``: a task on C calls the actor homed
  on A that lives on B (C -> A -> B and back).
- ``re-created after kill -9``: an actor with max_restarts=1 on B or C
  (``movable``); its node is killed; the time from the kill to the first
  answer from the new instance (the node's death is noticed by its missed
  heartbeats: NODE_TTL_S of them).

Standalone: it does not use the rest of benchmarks/.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .cluster import REPO, _zray


def _node_pid(root):
    directory = os.path.join(root, "procs")
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as f:
            record = json.load(f)
        if record.get("role") == "node":
            return record["pid"]
    raise RuntimeError(f"no node record under {root}")


def _rates(ray, handle, calls, repeat):
    """(sync calls/s, pipelined calls/s) of ``handle.ping``."""
    ray.get([handle.ping.remote() for _ in range(50)])
    sync = pipelined = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls // 10):
            ray.get(handle.ping.remote())
        sync = max(sync, (calls // 10) / (time.perf_counter() - start))
        start = time.perf_counter()
        ray.get([handle.ping.remote() for _ in range(calls)])
        pipelined = max(pipelined, calls / (time.perf_counter() - start))
    return sync, pipelined


def _first_calls(ray, handle, mode):
    """(calls, seconds, how many went through the driver's node) of the first
    calls to a fresh actor made on another node: 100 sync, or 1,000 sent at
    once. Direct calls pass no node (core/remote_endpoint.py)."""
    status = ray.api._runtime().request
    before = status("status")["tasks"]["submitted"]
    start = time.perf_counter()
    if mode == "sync":
        n = 100
        for _ in range(n):
            ray.get(handle.ping.remote())
    else:
        n = 1000
        ray.get([handle.ping.remote() for _ in range(n)])
    elapsed = time.perf_counter() - start
    return n, elapsed, status("status")["tasks"]["submitted"] - before


def run(calls, repeat, kill=True):
    import zray as ray
    from zray.cluster import list_nodes
    from zray.exceptions import RayActorError

    root = tempfile.mkdtemp(prefix="zray-bench-actors-")
    roots = {name: os.path.join(root, name) for name in ("b", "c")}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    rows = []
    try:
        _zray("start", "--head", "--port", 0, "--num-cpus", 1, "--resources", '{"node_a": 1}',
              "--temp-dir", root, env=env)
        with open(os.path.join(root, "cluster.json")) as f:
            recorded = json.load(f)
        address, token = recorded["address"], recorded.get("token", "")
        for name, node_root in roots.items():
            os.makedirs(node_root)
            _zray("start", "--address", address, "--num-cpus", 1, "--redis-password", token,
                  "--resources", json.dumps({f"node_{name}": 4, "movable": 1}),
                  "--temp-dir", node_root, env=env)
        deadline = time.monotonic() + 30
        while len(list_nodes(address, token)[2]) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not join within 30 s")
            time.sleep(0.1)
        ray.init(address=address, redis_password=token)

        @ray.remote
        class Pinger:
            def ping(self):
                return 0

            def where(self):
                from zray.core import context
                return context.current().node_info["node_id"]

        @ray.remote(resources={"node_c": 1})
        def calls_from_c(handle, n):
            start = time.perf_counter()
            ray.get([handle.ping.remote() for _ in range(n)])
            return n / (time.perf_counter() - start)

        on_a = Pinger.options(resources={"node_a": 1}).remote()
        sync, pipelined = _rates(ray, on_a, calls, repeat)
        rows.append(("calls, actor on A (driver on A)", f"{sync:.0f}/s sync",
                     f"{pipelined:.0f}/s pipelined"))
        on_b = Pinger.options(resources={"node_b": 1}).remote()
        sync_b, pipelined_b = _rates(ray, on_b, calls, repeat)
        rows.append(("calls, actor on B (driver on A)", f"{sync_b:.0f}/s sync",
                     f"{pipelined_b:.0f}/s pipelined ({pipelined_b / pipelined:.2f}x of on A)"))
        @ray.remote(num_cpus=0, resources={"node_b": 1})
        def make_on_b():
            return Pinger.options(num_cpus=0, resources={"node_b": 1}).remote()

        made_on_b = ray.get(make_on_b.remote())
        submitted = ray.api._runtime().request("status")["tasks"]["submitted"]
        sync_h, pipelined_h = _rates(ray, made_on_b, calls, repeat)
        via_node = ray.api._runtime().request("status")["tasks"]["submitted"] - submitted
        rows.append(("calls, actor made on B (driver on A)", f"{sync_h:.0f}/s sync",
                     f"{pipelined_h:.0f}/s pipelined ({pipelined_h / pipelined:.2f}x of on A; "
                     f"{via_node} calls through A)"))
        for mode in ("sync", "pipelined"):
            through, took = [], []
            for _ in range(repeat):
                n, elapsed, via = _first_calls(ray, ray.get(make_on_b.remote()), mode)
                through.append(via)
                took.append(elapsed)
            rows.append((f"first {n} calls {mode}, actor made on B", f"{min(took):.3f} s best",
                         "all: " + ", ".join(f"{t:.3f}" for t in took) + " s; through A: "
                         + ", ".join(map(str, through))))
        @ray.remote(num_cpus=0, resources={"node_b": 1})
        def creations_on_b(n):
            times = []
            for _ in range(n):
                start = time.perf_counter()
                actor = Pinger.options(num_cpus=0, resources={"node_b": 1}).remote()
                ray.get(actor.ping.remote())
                times.append(time.perf_counter() - start)
                ray.kill(actor)
            return sorted(times)

        made = ray.get(creations_on_b.remote(10 * repeat))
        rows.append(("actor created on B from B, to its first answer",
                     f"{made[len(made) // 2]:.3f} s median",
                     f"best {made[0]:.3f} s, worst {made[-1]:.3f} s, {len(made)} actors"))
        from_c = max(ray.get(calls_from_c.remote(on_b, calls)) for _ in range(repeat))
        rows.append(("calls from a task on C, actor on B", "", f"{from_c:.0f}/s pipelined"))
        if not kill:
            return rows

        recoveries = []
        for _ in range(repeat):
            actor = Pinger.options(resources={"movable": 1}, max_restarts=1).remote()
            host = ray.get(actor.where.remote())
            (victim,) = [name for name in roots if any(
                n["NodeID"] == host and f"node_{name}" in n["Resources"] for n in ray.nodes())]
            os.kill(_node_pid(roots[victim]), signal.SIGKILL)
            start = time.perf_counter()
            while True:
                try:
                    ray.get(actor.ping.remote(), timeout=60)
                    break
                except RayActorError:
                    pass            # a call in flight at the death, or sent before it was noticed
            recoveries.append(time.perf_counter() - start)
            # Start the victim again for the next round.
            _zray("stop", "--temp-dir", roots[victim], env=env)
            _zray("start", "--address", address, "--num-cpus", 1, "--redis-password", token,
                  "--resources", json.dumps({f"node_{victim}": 4, "movable": 1}),
                  "--temp-dir", roots[victim], env=env)
            deadline = time.monotonic() + 30
            while len(list_nodes(address, token)[2]) < 3:
                if time.monotonic() > deadline:
                    raise RuntimeError("the restarted node did not join within 30 s")
                time.sleep(0.1)
        rows.append(("re-created after kill -9 of its node", f"{min(recoveries):.2f} s best",
                     "all: " + ", ".join(f"{r:.2f}" for r in recoveries) + " s"))
    finally:
        try:
            import zray as ray
            ray.shutdown()
        finally:
            for node_root in list(roots.values()) + [root]:
                subprocess.run([sys.executable, "-m", "zray.cli", "stop", "--temp-dir",
                                node_root], capture_output=True, env=env, timeout=60)
            shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--no-kill", action="store_true", help="the call rows only")
    args = parser.parse_args(argv)
    rows = run(args.calls, args.repeat, kill=not args.no_kill)
    width = max(len(row[0]) for row in rows)
    for name, figure, detail in rows:
        print(f"{name:<{width}}  {figure:>16}  {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

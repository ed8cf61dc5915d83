"""Chaos: a workload mixing chains, fan-in and actor calls runs while a
thread kills random workers of this test's cluster (of those up for 2 s)
every few hundred milliseconds (and, in the slow variant, one whole node): every result is
correct. The test prints how many tasks ran again and how long the
workload took to finish after the last kill.

Every task and actor call appends its name to a file, so runs are counted
from outside the runtime: a line more than the workload's tasks is a task
that ran again (killed after it wrote, or its result lost with its node).
"""
import collections
import os
import random
import signal
import threading
import time

import psutil
import pytest

import zray as ray

from cluster_util import Cluster, records

RETRIES = 20            # far more kills than any one task should meet
# Only workers this old are killed: a replacement (an actor's, say) must get
# to run something, or on a loaded machine, where a worker takes seconds to
# start, the chaos kills every one before it is up and nothing recovers.
MIN_AGE_S = 2.0


def workers_of(root):
    """Pids of the zray workers, at least MIN_AGE_S old, of the node daemons
    recorded under root."""
    pids = []
    for record in records(root):
        if record["role"] != "node":
            continue
        try:
            children = psutil.Process(record["pid"]).children()
        except psutil.Error:
            continue
        for child in children:
            try:
                if ("zray.core" in child.cmdline()
                        and time.time() - child.create_time() >= MIN_AGE_S):
                    pids.append(child.pid)
            except psutil.Error:
                pass
    return pids


class Killer(threading.Thread):
    """Kills a random worker of the nodes under ``roots`` every 0.2-0.5 s."""

    def __init__(self, roots, seed):
        super().__init__(daemon=True, name="chaos-killer")
        self.roots = roots
        self.random = random.Random(seed)
        self.stopped = threading.Event()
        self.killed = {}            # pid -> when (time.time(), as the tasks write)

    def run(self):
        while not self.stopped.wait(self.random.uniform(0.2, 0.5)):
            pids = [p for root in self.roots for p in workers_of(root)]
            if not pids:
                continue
            pid = self.random.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.killed[pid] = time.time()

    def stop(self):
        self.stopped.set()
        self.join()


def define(ran):
    def note(name):
        import os
        import time
        with open(ran, "a") as f:           # one short O_APPEND write: a whole line
            f.write(f"{name} {os.getpid()} {time.time():.4f}\n")
        time.sleep(0.005)                   # so that kills land between this and the end

    @ray.remote(max_retries=RETRIES)
    def leaf(name, value):
        note(name)
        return value

    @ray.remote(max_retries=RETRIES)
    def inc(name, value):
        note(name)
        return value + 1

    @ray.remote(max_retries=RETRIES)
    def total(name, *values):
        note(name)
        return sum(values)

    @ray.remote(max_restarts=-1, max_task_retries=-1)
    class Squarer:
        def square(self, name, value):
            note(name)
            return value * value

    return leaf, inc, total, Squarer


def run_workload(ran, tasks):
    """About ``tasks`` tasks and calls: a third chains, a third fan-in, a
    third actor calls. Returns (names submitted, refs, expected values, the
    actors: kept by the caller, as an actor whose handles are gone is not
    restarted)."""
    leaf, inc, total, Squarer = define(ran)
    third = tasks // 3
    names, refs, expected = [], [], []

    def submit(name, ref, value):
        names.append(name)
        refs.append(ref)
        expected.append(value)

    chain_length = 10
    for c in range(third // chain_length):
        ref = leaf.remote(f"c{c}.0", c)
        names.append(f"c{c}.0")
        for step in range(1, chain_length):
            name = f"c{c}.{step}"
            ref = inc.remote(name, ref)
            names.append(name)
        refs.append(ref)
        expected.append(c + chain_length - 1)
    group = 10
    for g in range(third // (group + 1)):
        parts = []
        for k in range(group):
            name = f"f{g}.{k}"
            parts.append(leaf.remote(name, g * k))
            names.append(name)
        submit(f"f{g}.sum", total.remote(f"f{g}.sum", *parts), g * sum(range(group)))
    actors = [Squarer.remote() for _ in range(3)]
    for i in range(third):
        name = f"a{i}"
        submit(name, actors[i % len(actors)].square.remote(name, i), i * i)
    return names, refs, expected, actors


def chaos(tmp_path, tasks, kill_node=False):
    cluster = Cluster(tmp_path / "head")
    second = tmp_path / "second"
    try:
        cluster.start_head("--num-cpus", 2)
        cluster.add_node("--num-cpus", 2, root=second)
        cluster.wait_nodes(2)
        ray.init(address=cluster.address, redis_password=cluster.token)
        ran = tmp_path / "ran.txt"
        killer = Killer([cluster.root, second], seed=12)
        started = time.monotonic()
        killer.start()
        try:
            names, refs, expected, _actors = run_workload(ran, tasks)
            if kill_node:
                time.sleep(2.0)              # let work spread to it first
                (node,) = [r for r in records(second) if r["role"] == "node"]
                os.kill(node["pid"], signal.SIGKILL)
            results = ray.get(refs, timeout=600 if kill_node else 240)
        finally:
            killer.stop()
        finished = time.monotonic()
        assert results == expected
        runs = collections.defaultdict(list)     # name -> [(pid, when)]
        for line in ran.read_text().splitlines():
            name, pid, when = line.split()
            runs[name].append((int(pid), float(when)))
        missing = set(names) - set(runs)
        assert not missing, f"tasks that never ran: {sorted(missing)[:20]}"
        again = sum(len(r) for r in runs.values()) - len(names)
        recovery = _recovery_times(runs, killer.killed)
        print(f"\nchaos: {len(names)} tasks and calls in {finished - started:.1f} s, "
              f"{len(killer.killed)} workers killed{', one node killed' if kill_node else ''}"
              f", {again} ran again; from a kill to its task's rerun starting: "
              f"{_spread(recovery)}")
    finally:
        ray.shutdown()
        cluster.stop(tmp_path / "head", second)


def _recovery_times(runs, killed):
    """For each task that ran again after its worker was killed: seconds from
    the kill to the rerun's start."""
    times = []
    for name, attempts in runs.items():
        for (pid, _), (_, rerun) in zip(attempts, attempts[1:]):
            if pid in killed and killed[pid] <= rerun:
                times.append((rerun - killed[pid], name))
    return times


def _spread(times):
    if not times:
        return "none measured"
    times = sorted(times)
    return (f"median {times[len(times) // 2][0]:.2f} s, max {times[-1][0]:.2f} s "
            f"({len(times)} reruns; slowest: {', '.join(n for _, n in times[-3:])})")


@pytest.mark.timeout(300)      # ~25 s alone; several times that on a loaded machine
def test_chaos_killing_workers_loses_no_result(tmp_path):
    chaos(tmp_path, 600)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_5000_tasks_killing_workers_and_a_node(tmp_path):
    chaos(tmp_path, 5000, kill_node=True)

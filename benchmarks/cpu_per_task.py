"""CPU time each process spends per call: the driver, the node, the workers.

    python -m benchmarks.cpu_per_task                 # plain tasks (leased) and actor calls
    ZRAY_TASK_LEASES=0 python -m benchmarks.cpu_per_task   # every task through the node

One fresh cluster (``num_cpus=2``); psutil's CPU times of each process of the
driver's tree before and after 3,000 sync and 10,000 async no-op tasks and
3,000 sync actor calls. CPU time barely depends on what else the machine
runs, so this says where a call's cost is even on a busy machine.
"""
import time

import psutil

import zray as ray


def _processes(me):
    groups = {"driver": [me]}
    for child in me.children(recursive=True):
        line = " ".join(child.cmdline())
        group = "worker" if "zray.core" in line else "node" if "zray.sched" in line else "other"
        groups.setdefault(group, []).append(child)
    return groups


def _cpu(groups):
    totals = {}
    for group, processes in groups.items():
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        totals[group] = total
    return totals


def main():
    ray.init(num_cpus=2)

    @ray.remote
    def noop(x):
        return x

    @ray.remote
    class Echo:
        def echo(self, x):
            return x

    ray.get([noop.remote(i) for i in range(500)])
    echo = Echo.remote()
    ray.get(echo.echo.remote(0))
    me = psutil.Process()
    runs = (("tasks sync", lambda n: [ray.get(noop.remote(i)) for i in range(n)], 3000),
            ("tasks async", lambda n: ray.get([noop.remote(i) for i in range(n)]), 10000),
            ("actor calls sync", lambda n: [ray.get(echo.echo.remote(i)) for i in range(n)], 3000))
    for name, run, n in runs:
        groups = _processes(me)
        before, start = _cpu(groups), time.perf_counter()
        run(n)
        wall, after = time.perf_counter() - start, _cpu(groups)
        print(f"{name}: {n / wall:,.0f} /s; CPU us per call: " + ", ".join(
            f"{group} {(after[group] - before[group]) / n * 1e6:.0f}" for group in sorted(after)))
    ray.shutdown()


if __name__ == "__main__":
    main()

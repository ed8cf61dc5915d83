"""Scheduling throughput with mixed resource shapes.

``python -m benchmarks.scheduling [--tasks N] [--repeats R] [--quick] [--json]``

Two parts:

- **policy**: the node's scheduler state machine alone (``Scheduler`` +
  ``NodeResources``, no sockets, no processes): tasks of mixed shapes are made
  ready, placed on fake idle workers and finished. This is the ceiling the
  node's bookkeeping puts on dispatch.
- **end to end**: a real zray on this machine, started with a faked GPU count
  (``num_gpus=4`` on a GPU-less box: ids and ``CUDA_VISIBLE_DEVICES`` are
  assigned, nothing touches a GPU) and a custom resource. Each shape submits a
  burst of no-op tasks and gets them all; the figure is tasks per second from
  the first submit to the last result, median of the repeats.

Shapes: ``cpu`` (num_cpus=1), ``cpu_half`` (num_cpus=0.5), ``gpu_quarter``
(num_cpus=0, num_gpus=0.25: 16 fit on 4 GPUs), ``custom`` (num_cpus=0,
resources={"Custom": 0.5}), and ``mixed`` (all four interleaved).
"""
import argparse
import itertools
import json
import statistics
import sys
import time

SHAPES = {
    "cpu": {"num_cpus": 1},
    "cpu_half": {"num_cpus": 0.5},
    "gpu_quarter": {"num_cpus": 0, "num_gpus": 0.25},
    "custom": {"num_cpus": 0, "resources": {"Custom": 0.5}},
}
NODE = {"num_cpus": 2, "num_gpus": 4, "resources": {"Custom": 4}}


# == part 1: the policy alone =================================================
def policy_throughput(n_tasks, workers=8):
    """Tasks/s through make_ready → placements → finish, shapes interleaved."""
    from zray.sched import resources as R
    from zray.sched.scheduler import Scheduler, Task
    from zray.transport import protocol as P

    res = R.NodeResources(R.totals_from_options(NODE["num_cpus"], NODE["num_gpus"],
                                                NODE["resources"]))
    sched = Scheduler(res)
    demands = [R.demand_from_options(**options) for options in SHAPES.values()]
    tasks = []
    for i in range(n_tasks):
        task_id = i.to_bytes(16, "little")
        spec = P.TaskSpec(task_id, P.TASK, b"f", "f", (task_id,), (), (),
                          demands[i % len(demands)], 0, 0, 1, None, None, {}, None)
        tasks.append(Task(spec, []))
    start = time.perf_counter()
    for task in tasks:
        sched.make_ready(task)
    idle = list(range(workers))
    done = 0
    while done < n_tasks:
        placed, _ = sched.placements(idle)
        if not placed:
            raise RuntimeError("scheduler stalled with tasks queued")
        for task in placed:
            sched.finish(task.spec.task_id)
            idle.append(task.worker)
        done += len(placed)
    elapsed = time.perf_counter() - start
    assert res.available == res.totals, "resources drifted"
    return n_tasks / elapsed


# == part 2: end to end ========================================================
def _noop_factory(ray):
    @ray.remote
    def noop(i):
        return i
    return noop


def end_to_end(ray, n_tasks, repeats):
    """{shape: [tasks/s per repeat]} on a running ray-like module."""
    noop = _noop_factory(ray)
    variants = {name: noop.options(**options) for name, options in SHAPES.items()}

    def burst(name):
        if name == "mixed":
            cycle = itertools.cycle(list(variants.values()))
            refs = [next(cycle).remote(i) for i in range(n_tasks)]
        else:
            refs = [variants[name].remote(i) for i in range(n_tasks)]
        if ray.get(refs) != list(range(n_tasks)):
            raise RuntimeError(f"{name}: wrong results")

    results = {}
    for name in list(SHAPES) + ["mixed"]:
        burst(name)                                  # warm up: workers, code
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            burst(name)
            samples.append(n_tasks / (time.perf_counter() - start))
        results[name] = samples
    return results


def _system_run(n_tasks, repeats):
    import zray as ray
    ray.init(**NODE)
    try:
        samples = end_to_end(ray, n_tasks, repeats)
        status = ray.api._runtime().request("status")
        return samples, status["workers"]
    finally:
        ray.shutdown()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduling",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per burst (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="bursts per shape (default 5)")
    parser.add_argument("--quick", action="store_true", help="500 tasks, 2 repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeats < 1:
        parser.error("--tasks and --repeats must be at least 1")
    n_tasks, repeats = (500, 2) if args.quick else (args.tasks, args.repeats)

    policy = [policy_throughput(max(n_tasks, 10000)) for _ in range(repeats)]
    samples, workers = _system_run(n_tasks, repeats)
    report = {"node": NODE, "tasks_per_burst": n_tasks, "repeats": repeats,
              "policy_tasks_per_s": statistics.median(policy),
              "end_to_end_tasks_per_s": {k: statistics.median(v) for k, v in samples.items()},
              "end_to_end_samples": samples, "workers_at_end": workers}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"node: {NODE}; {n_tasks} no-op tasks per burst, median of {repeats}")
    print(f"{'shape':<14}{'tasks/s':>10}{'min':>10}{'max':>10}")
    print(f"{'policy only':<14}{report['policy_tasks_per_s']:>10.0f}"
          f"{min(policy):>10.0f}{max(policy):>10.0f}")
    for name, values in samples.items():
        print(f"{name:<14}{statistics.median(values):>10.0f}"
              f"{min(values):>10.0f}{max(values):>10.0f}")
    print(f"worker processes at the end: {workers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

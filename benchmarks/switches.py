"""Thread wake-ups per actor call, counted (not timed): each thread's
voluntary context switches (/proc/PID/task/TID/status, Linux) in the driver
and in the actor's worker over N sync calls, divided by N.

    python -m benchmarks.switches                  # a plain actor, 3,000 sync calls
    python -m benchmarks.switches --actor async    # an actor with async methods

A thread that blocks and is woken once per call counts 1: on a busy machine
each wake-up may wait for a time slice, so fewer threads touched per call
means a call less exposed to the load. The counts barely depend on the load.
"""
import argparse
import os

import zray as ray


def switches(pid):
    """{thread name: voluntary context switches} of a process's threads."""
    out = {}
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/comm") as file:
                # (Python threads keep the process's name: the main thread's id is the pid)
                name = "main" if tid == str(pid) else file.read().strip()
            with open(f"{task_dir}/{tid}/status") as file:
                for line in file:
                    if line.startswith("voluntary_ctxt_switches"):
                        out[f"{name} ({tid})"] = int(line.split()[1])
        except FileNotFoundError:
            continue        # the thread ended meanwhile
    return out


@ray.remote
class Echo:
    def small_value(self):
        return b"ok"

    def switches(self):
        return switches(os.getpid())


@ray.remote
class AsyncEcho:
    async def small_value(self):
        return b"ok"

    async def switches(self):
        return switches(os.getpid())


def per_call(before, after, calls):
    return {name: (after[name] - before.get(name, 0)) / calls for name in after
            if after[name] - before.get(name, 0) >= calls * 0.05}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--actor", choices=("sync", "async"), default="sync")
    args = parser.parse_args()
    if not os.path.isdir("/proc/self/task"):
        raise SystemExit("needs Linux's /proc/PID/task")
    ray.init(num_cpus=2)
    actor = (Echo if args.actor == "sync" else AsyncEcho).remote()
    for _ in range(200):
        ray.get(actor.small_value.remote())
    worker_before = ray.get(actor.switches.remote())
    driver_before = switches(os.getpid())
    for _ in range(args.calls):
        ray.get(actor.small_value.remote())
    driver_after = switches(os.getpid())
    worker_after = ray.get(actor.switches.remote())
    print(f"{args.calls} sync calls of a {args.actor} actor; voluntary context switches "
          f"per call of each thread with at least 0.05:")
    for side, before, after in (("driver", driver_before, driver_after),
                                ("worker", worker_before, worker_after)):
        counts = per_call(before, after, args.calls)
        total = sum(counts.values())
        detail = ", ".join(f"{name} {count:.2f}" for name, count in sorted(counts.items()))
        print(f"  {side}: {total:.2f} ({detail})")
    ray.shutdown()


if __name__ == "__main__":
    main()

"""Python calls per actor call, counted (not timed): the driver's main thread
and the actor worker's executing thread, under cProfile.

    python -m benchmarks.call_counts                    # 3,000 sync calls
    python -m benchmarks.call_counts --mode async       # 3,000 calls, one ray.get
    python -m benchmarks.call_counts --top 30           # and the 30 most called functions
    python -m benchmarks.call_counts --actor async      # an async actor's calls

A count barely depends on what else the machine runs, so it says whether a
change cut work even on a busy machine. A run where a process loops more in
its wait (a poll that returned early, a lock held by its I/O thread) counts
more: take the median of a few runs. System calls: run the same loop under
``strace -c -f -p PID`` (see benchmarks/RESULTS.md).
"""
import argparse
import cProfile
import io
import pstats

import zray as ray


@ray.remote
class Echo:
    def small_value(self):
        return b"ok"

    def profile_start(self):
        # Enabled here, it goes on profiling this thread (the one that runs
        # the calls) after the method returns, until profile_stop.
        self._profile = cProfile.Profile()
        self._profile.enable()

    def profile_stop(self, calls, top):
        self._profile.disable()
        return _summary(self._profile, calls, top)


@ray.remote
class AsyncEcho:
    """The same, its methods on the actor's event loop (core/actor_loop.py):
    profiled on the thread that runs the loop."""
    async def small_value(self):
        return b"ok"

    async def profile_start(self):
        self._profile = cProfile.Profile()
        self._profile.enable()

    async def profile_stop(self, calls, top):
        self._profile.disable()
        return _summary(self._profile, calls, top)


def _summary(profile, calls, top):
    stream = io.StringIO()
    stats = pstats.Stats(profile, stream=stream)
    if top:
        stats.sort_stats("ncalls").print_stats(top)
    return stats.total_calls / calls, stream.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--mode", choices=("sync", "async"), default="sync")
    parser.add_argument("--actor", choices=("sync", "async"), default="sync",
                        help="a plain actor or one with async methods")
    parser.add_argument("--top", type=int, default=0, help="list the N most called functions")
    args = parser.parse_args()
    ray.init(num_cpus=2)
    actor = (Echo if args.actor == "sync" else AsyncEcho).remote()
    for _ in range(200):
        ray.get(actor.small_value.remote())
    ray.get(actor.profile_start.remote())
    profile = cProfile.Profile()
    profile.enable()
    if args.mode == "sync":
        for _ in range(args.calls):
            ray.get(actor.small_value.remote())
    else:
        ray.get([actor.small_value.remote() for _ in range(args.calls)])
    profile.disable()
    worker_calls, worker_top = ray.get(actor.profile_stop.remote(args.calls, args.top))
    driver_calls, driver_top = _summary(profile, args.calls, args.top)
    print(f"{args.calls} {args.mode} calls of a {args.actor} actor; Python calls per call: "
          f"driver {driver_calls:.1f}, worker {worker_calls:.1f}")
    if args.top:
        print("driver:", driver_top, "worker:", worker_top, sep="\n")
    ray.shutdown()


if __name__ == "__main__":
    main()

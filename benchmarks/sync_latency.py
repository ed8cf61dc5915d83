"""Single sync actor calls timed one by one: a plain actor's and an async
actor's, interleaved in one driver, so both see the same load.

    python -m benchmarks.sync_latency                # 4 x 1,000 calls of each
    python -m benchmarks.sync_latency --calls 500

Prints the median, 10th and 90th/99th percentiles and the mean (us) of
each. On a shared machine the mean swings with other processes' time
slices (1% of calls taking milliseconds); the 10th percentile and the
median say more about the work per call.
"""
import argparse
import statistics
import time

import zray as ray


@ray.remote
class Plain:
    def f(self):
        return b"ok"


@ray.remote
class Async:
    async def f(self):
        return b"ok"


def timed_calls(actor, n):
    clock = time.perf_counter
    out = []
    for _ in range(n):
        start = clock()
        ray.get(actor.f.remote())
        out.append(clock() - start)
    return out


def summary(seconds):
    ordered = sorted(seconds)

    def at(fraction):
        return ordered[int(len(ordered) * fraction)] * 1e6
    return (f"median {statistics.median(ordered) * 1e6:.0f} us, p10 {at(0.1):.0f}, "
            f"p90 {at(0.9):.0f}, p99 {at(0.99):.0f}, mean {statistics.mean(ordered) * 1e6:.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="per block (4 blocks each)")
    args = parser.parse_args()
    ray.init(num_cpus=2)
    plain, in_loop = Plain.remote(), Async.remote()
    timed_calls(plain, 300)
    timed_calls(in_loop, 300)
    plain_times, async_times = [], []
    for _ in range(4):
        plain_times += timed_calls(plain, args.calls)
        async_times += timed_calls(in_loop, args.calls)
    print(f"plain actor: {summary(plain_times)}")
    print(f"async actor: {summary(async_times)}")
    ray.shutdown()


if __name__ == "__main__":
    main()

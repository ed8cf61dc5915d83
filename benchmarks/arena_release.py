"""Memory of the object store's arena before and after freeing big puts.

``python -m benchmarks.arena_release [--gigabytes 2] [--object-mb 100]``

Puts ``--gigabytes`` of arrays (``--object-mb`` each) and holds them, drops
them all, and reads how much of the arena chunk has pages (its file's
``st_blocks``) at the peak, right after the drop, and until the node has
given the pages back (the arena releases a range after it has stayed free
``arena.RELEASE_AFTER_S``). Then times one put of ``--object-mb`` right
after a free (pages kept: one memcpy) and one after the release (the
kernel allocates and zeroes pages again), as GB/s.
"""
import argparse
import os
import time

MB = 1 << 20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--object-mb", type=int, default=100)
    args = parser.parse_args()
    import numpy as np
    import zray as ray
    from zray.plasma.arena import RELEASE_AFTER_S

    total = int(args.gigabytes * 1024) * MB
    size = args.object_mb * MB
    info = ray.init(num_cpus=1, object_store_memory=total + 4 * size)
    try:
        chunk = os.path.join("/dev/shm", f"zray-{info['session_name']}-arena-0")
        data = np.ones(size // 8)

        def resident_mb():
            return os.stat(chunk).st_blocks * 512 / MB

        refs = [ray.put(data) for _ in range(total // size)]
        print(f"held {len(refs)} x {args.object_mb} MB: arena has {resident_mb():,.0f} MB of pages")
        del refs
        ray.api._runtime().request("store_stats")        # the frees have reached the node
        print(f"just after freeing them: {resident_mb():,.0f} MB")
        start = time.monotonic()
        while resident_mb() > 1 and time.monotonic() - start < 30:
            time.sleep(0.1)
        print(f"{time.monotonic() - start:.1f} s later: {resident_mb():,.0f} MB "
              f"(release after {RELEASE_AFTER_S} s free, checked on the node's 1 s tick)")

        def timed_put():
            begin = time.perf_counter()
            ref = ray.put(data)
            seconds = time.perf_counter() - begin
            del ref
            return size / seconds / 1e9
        timed_put()                                       # pages in again
        warm = [timed_put() for _ in range(5)]
        time.sleep(RELEASE_AFTER_S + 2)
        cold = timed_put()
        print(f"put of {args.object_mb} MB into kept pages: {sorted(warm)[2]:.2f} GB/s (median "
              f"of 5); after they were released: {cold:.2f} GB/s")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

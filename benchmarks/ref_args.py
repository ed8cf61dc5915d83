"""Tasks whose arguments are ObjectRefs: a chain ``g.remote(f.remote(i))``
and a task given one ``ray.put`` ref (1 MB) again and again.

    python -m benchmarks.ref_args --system zray
    /path/to/ray-venv/bin/python -m benchmarks.ref_args --system ray

One fresh cluster (``num_cpus=2``) per run; each row submits ``--tasks``
tasks in one loop and gets them all with one ``get``, ``--repeat`` times;
printed: tasks per second of each repetition (a chain counts one per pair).
With zray, ``ZRAY_TASK_LEASES=0`` sends every task through the node (the
path these tasks took before leased workers took ObjectRef arguments).
"""

from __future__ import annotations

import argparse
import json
import time


def run(system, tasks, repeat):
    ray = __import__(system)
    options = {"include_dashboard": False} if system == "ray" else {}
    ray.init(num_cpus=2, **options)
    try:
        @ray.remote
        def add_one(x):
            return x + 1

        @ray.remote
        def double(x):
            return x * 2

        @ray.remote
        def size(blob):
            return len(blob)

        big = ray.put(b"x" * 1_000_000)
        rows = {
            "chain f->g /s": lambda i: double.remote(add_one.remote(i)),
            "put ref arg /s": lambda i: size.remote(big),
        }
        ray.get([add_one.remote(i) for i in range(200)])      # workers up
        results = {}
        for label, make in rows.items():
            rates = []
            for _ in range(repeat):
                start = time.perf_counter()
                ray.get([make(i) for i in range(tasks)])
                rates.append(round(tasks / (time.perf_counter() - start)))
            results[label] = rates
            print(f"{system} {label}: {' / '.join(f'{r:,}' for r in rates)}", flush=True)
        return results
    finally:
        ray.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=["zray", "ray"], default="zray")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the rates here")
    args = parser.parse_args()
    results = run(args.system, args.tasks, args.repeat)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out)


if __name__ == "__main__":
    main()

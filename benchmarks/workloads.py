"""The rows of Ray's own `ray microbenchmark`, re-written against the public
API of whatever module is passed in as `ray`.

Workload shapes follow Ray's definitions (what is submitted, by whom, and
what one "operation" counts as) so figures can be compared with Ray's;
counts and sizes are scaled down so a full run of one system fits in a few
minutes on 2 cores.  Scaling vs. Ray's script (full mode):
  put gigabytes: 100 MB array (Ray: 800 MB); multi client put gigabytes:
  10 tasks x 10 x 8 MB (Ray: x 80 MB); multi client tasks async: 4 x 1000
  (Ray: 4 x 10000); 1:n / n:n actor calls: 1000 per server/task (Ray: 5000);
  "n" servers = max(2, cpus // 2) (Ray: cpus // 2, which is 1 on 2 cores).
"""

from __future__ import annotations

import os

from . import remote_defs as rd
from .measure import Budget, pick, rates
from .registry import ACTORS, NESTED_TASKS, WORKER_PUT, row

N_SERVERS = max(2, (os.cpu_count() or 2) // 2)
MB = 1024 * 1024


def _release(ray, actors):
    # Free actor processes now rather than whenever handles are collected,
    # so one row's actors do not slow the next row down on 2 cores.
    kill = getattr(ray, "kill", None)
    for a in actors:
        try:
            if kill is not None:
                kill(a)
        except Exception:
            pass


def _actor_cls(ray, cls, **options):
    return rd.remote_of(ray.__name__, cls, **options)


# --- object store: get / put ---------------------------------------------

@row("single client get calls", "/s", True)
def single_client_get_calls(ray, quick):
    ref = ray.put(0)
    return rates(lambda: ray.get(ref), 1, Budget.for_mode(quick))


@row("single client put calls", "/s", True)
def single_client_put_calls(ray, quick):
    return rates(lambda: ray.put(0), 1, Budget.for_mode(quick))


@row("multi client put calls", "/s", True, needs=[WORKER_PUT])
def multi_client_put_calls(ray, quick):
    # Several tasks each doing many small puts at once.
    tasks, puts = pick(quick, (10, 100), (2, 10))
    f = rd.remote_of(ray.__name__, rd.put_small_many)
    name = ray.__name__
    return rates(lambda: ray.get([f.remote(name, puts) for _ in range(tasks)]),
                 tasks * puts, Budget.for_mode(quick))


@row("single client put gigabytes", "GB/s", True)
def single_client_put_gigabytes(ray, quick):
    import numpy as np
    nbytes = pick(quick, 100 * MB, 1 * MB)
    arr = np.zeros(nbytes // 8, dtype=np.int64)
    return rates(lambda: ray.put(arr), nbytes / 1e9, Budget.for_mode(quick))


@row("multi client put gigabytes", "GB/s", True, needs=[WORKER_PUT])
def multi_client_put_gigabytes(ray, quick):
    tasks, puts, nbytes = pick(quick, (10, 10, 8 * MB), (2, 2, 1 * MB))
    f = rd.remote_of(ray.__name__, rd.put_arrays)
    name = ray.__name__
    return rates(
        lambda: ray.get([f.remote(name, puts, nbytes) for _ in range(tasks)]),
        tasks * puts * nbytes / 1e9, Budget.for_mode(quick))


@row("single client get object containing 10k refs", "/s", True,
     needs=[WORKER_PUT])
def get_object_containing_refs(ray, quick):
    # A task returns a list of 10k refs it put; time getting that list.
    f = rd.remote_of(ray.__name__, rd.make_refs)
    ref = f.remote(ray.__name__, pick(quick, 10000, 100))
    return rates(lambda: ray.get(ref), 1, Budget.for_mode(quick))


# --- tasks ---------------------------------------------------------------

@row("single client tasks and get batch", "/s", True)
def tasks_and_get_batch(ray, quick):
    # One op = a whole batch (Ray counts batches/s here, not tasks/s).
    n = pick(quick, 1000, 20)
    sv = rd.remote_of(ray.__name__, rd.small_value)
    return rates(lambda: ray.get([sv.remote() for _ in range(n)]), 1,
                 Budget.for_mode(quick))


@row("single client wait 1k refs", "/s", True)
def wait_1k_refs(ray, quick):
    # Submit n tasks, then peel them off one ray.wait at a time.
    n = pick(quick, 1000, 20)
    sv = rd.remote_of(ray.__name__, rd.small_value)

    def once():
        not_ready = [sv.remote() for _ in range(n)]
        for _ in range(n):
            _, not_ready = ray.wait(not_ready)
    return rates(once, 1, Budget.for_mode(quick))


@row("single client tasks sync", "/s", True)
def tasks_sync(ray, quick):
    sv = rd.remote_of(ray.__name__, rd.small_value)
    return rates(lambda: ray.get(sv.remote()), 1, Budget.for_mode(quick))


@row("single client tasks async", "/s", True)
def tasks_async(ray, quick):
    n = pick(quick, 1000, 20)
    sv = rd.remote_of(ray.__name__, rd.small_value)
    return rates(lambda: ray.get([sv.remote() for _ in range(n)]), n,
                 Budget.for_mode(quick))


@row("multi client tasks async", "/s", True, needs=[ACTORS, NESTED_TASKS])
def multi_client_tasks_async(ray, quick):
    # m actors each submit n tasks concurrently.
    m, n = pick(quick, (4, 1000), (4, 5))
    A = _actor_cls(ray, rd.Actor, num_cpus=0)
    actors = [A.remote(ray.__name__) for _ in range(m)]
    try:
        return rates(
            lambda: ray.get([a.small_value_batch.remote(n) for a in actors]),
            m * n, Budget.for_mode(quick))
    finally:
        _release(ray, actors)


# --- actors --------------------------------------------------------------

def _one_actor_rate(ray, quick, actor, method, batch):
    call = getattr(actor, method)
    if batch:
        n = pick(quick, 1000, 20)
        return rates(lambda: ray.get([call.remote() for _ in range(n)]), n,
                     Budget.for_mode(quick))
    return rates(lambda: ray.get(call.remote()), 1, Budget.for_mode(quick))


@row("1:1 actor calls sync", "/s", True, needs=[ACTORS])
def actor_calls_sync(ray, quick):
    a = _actor_cls(ray, rd.Actor, num_cpus=0).remote(ray.__name__)
    try:
        return _one_actor_rate(ray, quick, a, "small_value", batch=False)
    finally:
        _release(ray, [a])


@row("1:1 actor calls async", "/s", True, needs=[ACTORS])
def actor_calls_async(ray, quick):
    a = _actor_cls(ray, rd.Actor, num_cpus=0).remote(ray.__name__)
    try:
        return _one_actor_rate(ray, quick, a, "small_value", batch=True)
    finally:
        _release(ray, [a])


@row("1:1 actor calls concurrent", "/s", True, needs=[ACTORS])
def actor_calls_concurrent(ray, quick):
    # Threaded actor: up to 16 calls may run at once.
    A = _actor_cls(ray, rd.Actor, num_cpus=0)
    a = A.options(max_concurrency=16).remote(ray.__name__)
    try:
        return _one_actor_rate(ray, quick, a, "small_value", batch=True)
    finally:
        _release(ray, [a])


@row("1:n actor calls async", "/s", True, needs=[ACTORS, NESTED_TASKS])
def one_to_n_actor_calls(ray, quick):
    # One client actor fans n calls out to each of several server actors.
    n = pick(quick, 1000, 10)
    A = _actor_cls(ray, rd.Actor, num_cpus=0)
    C = _actor_cls(ray, rd.Client, num_cpus=0)
    servers = [A.remote(ray.__name__) for _ in range(N_SERVERS)]
    client = C.remote(ray.__name__, servers)
    try:
        return rates(lambda: ray.get(client.small_value_batch.remote(n)),
                     n * len(servers), Budget.for_mode(quick))
    finally:
        _release(ray, servers + [client])


@row("n:n actor calls async", "/s", True, needs=[ACTORS, NESTED_TASKS])
def n_to_n_actor_calls(ray, quick):
    # m plain tasks, each spreading n calls over the shared server actors.
    m, n = pick(quick, (4, 1000), (4, 10))
    A = _actor_cls(ray, rd.Actor, num_cpus=0)
    servers = [A.remote(ray.__name__) for _ in range(N_SERVERS)]
    work = rd.remote_of(ray.__name__, rd.call_actors_round_robin)
    name = ray.__name__
    try:
        return rates(
            lambda: ray.get([work.remote(name, servers, n) for _ in range(m)]),
            m * n, Budget.for_mode(quick))
    finally:
        _release(ray, servers)


@row("n:n actor calls with arg async", "/s", True,
     needs=[ACTORS, NESTED_TASKS, WORKER_PUT])
def n_to_n_actor_calls_with_arg(ray, quick):
    # One client actor per server; each passes a put object ref as argument.
    n = pick(quick, 1000, 10)
    A = _actor_cls(ray, rd.Actor, num_cpus=0)
    C = _actor_cls(ray, rd.Client, num_cpus=0)
    servers = [A.remote(ray.__name__) for _ in range(N_SERVERS)]
    clients = [C.remote(ray.__name__, s) for s in servers]
    try:
        return rates(
            lambda: ray.get([c.small_value_batch_arg.remote(n) for c in clients]),
            n * len(clients), Budget.for_mode(quick))
    finally:
        _release(ray, servers + clients)


@row("1:1 async-actor calls sync", "/s", True, needs=[ACTORS])
def async_actor_calls_sync(ray, quick):
    a = _actor_cls(ray, rd.AsyncActor).remote()
    try:
        return _one_actor_rate(ray, quick, a, "small_value", batch=False)
    finally:
        _release(ray, [a])


@row("1:1 async-actor calls async", "/s", True, needs=[ACTORS])
def async_actor_calls_async(ray, quick):
    a = _actor_cls(ray, rd.AsyncActor).remote()
    try:
        return _one_actor_rate(ray, quick, a, "small_value", batch=True)
    finally:
        _release(ray, [a])

"""Actors: the seed examples, ordering, handles, names, concurrency, failure.

Every test runs real worker processes. Concurrency is proven by what the
actors observe (overlapping intervals, peak concurrency), never by how long
something took.
"""
import asyncio
import os
import signal
import threading
import time

import psutil
import pytest

import zray as ray
from zray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from conftest import assert_no_leftovers


@ray.remote
class Counter(object):
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value

    def read(self):
        return self.value

    def pid(self):
        return os.getpid()


def wait_until(predicate, timeout_s=20.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pid_gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# == tests with a cluster of their own =======================================
# They come first: the module-wide cluster of ray_shared starts with the first
# test that asks for it and lives until the module ends.
def test_seed_actor_with_resources():
    info = ray.init(num_cpus=2, num_gpus=1)
    try:
        @ray.remote(num_cpus=2, num_gpus=0.5)
        class Actor(object):
            def gpus(self):
                return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

        actor = Actor.remote()
        ids, visible = ray.get(actor.gpus.remote())
        assert [int(i) for i in ids] == [0] and visible == "0"
        # Explicit resources are held for the actor's whole life.
        assert ray.available_resources().get("CPU", 0) == 0
        assert ray.available_resources().get("GPU") == 0.5
        del actor
        wait_until(lambda: ray.available_resources() == ray.cluster_resources(),
                   what="the actor's resources to come back")
    finally:
        ray.shutdown()
    assert_no_leftovers(info)


def test_actor_processes_are_cleaned_up_after_shutdown():
    info = ray.init(num_cpus=2)
    try:
        actors = [Counter.remote() for _ in range(3)]
        pids = ray.get([a.pid.remote() for a in actors])
        assert all(psutil.pid_exists(p) for p in pids)
    finally:
        ray.shutdown()
    assert_no_leftovers(info)
    assert all(pid_gone(p) for p in pids)


# == local mode ================================================================
def test_local_mode_actors():
    ray.init(local_mode=True)
    try:
        counters = [Counter.remote() for _ in range(3)]
        assert ray.get([c.increment.remote() for c in counters]) == [1, 1, 1]
        assert ray.get([counters[0].increment.remote() for _ in range(3)]) == [2, 3, 4]

        @ray.remote
        class Multi:
            @ray.method(num_returns=2)
            def pair(self, x):
                return x, x * 2

            def fail(self):
                raise KeyError("local")

            async def later(self, x):
                return x + 1

            def leave(self):
                ray.exit_actor()

        multi = Multi.options(name="m").remote()
        a, b = multi.pair.remote(ray.put(2))
        assert ray.get([a, b]) == [2, 4]
        assert ray.get(multi.later.remote(1)) == 2
        with pytest.raises(KeyError):
            ray.get(multi.fail.remote())
        assert ray.get_actor("m") is multi
        with pytest.raises(ValueError, match="already exists"):
            Multi.options(name="m").remote()

        @ray.remote
        def use(counter):
            return ray.get(counter.increment.remote())
        assert ray.get(use.remote(counters[1])) == 2

        with pytest.raises(TypeError, match="inside a method of an actor"):
            ray.exit_actor()
        ray.kill(counters[2])
        with pytest.raises(RayActorError):
            ray.get(counters[2].increment.remote())
        with pytest.raises(RayActorError):
            ray.get(multi.leave.remote())
        with pytest.raises(RayActorError):
            ray.get(multi.pair.remote(1)[0])
    finally:
        ray.shutdown()


# == the seed ==================================================================
def test_seed_counters(ray_shared):
    a1 = Counter.remote()
    a2 = Counter.remote()
    assert ray.get(a1.increment.remote()) == 1
    assert ray.get(a2.increment.remote()) == 1

    counters = [Counter.remote() for _ in range(10)]
    assert ray.get([c.increment.remote() for c in counters]) == [1] * 10
    assert ray.get([counters[0].increment.remote() for _ in range(5)]) == [2, 3, 4, 5, 6]


def test_options_remote(ray_shared):
    @ray.remote
    class Box:
        def __init__(self, value):
            self.value = value

        def get(self):
            return self.value

    box = Box.options(num_cpus=0, max_restarts=1, max_concurrency=1).remote(7)
    assert ray.get(box.get.remote()) == 7
    with pytest.raises(TypeError, match="unknown option 'num_cpu'"):
        Box.options(num_cpu=1)
    with pytest.raises(TypeError, match="Actors cannot be instantiated directly"):
        Box(1)
    with pytest.raises(TypeError, match=r"actor.get.remote"):
        box.get()
    with pytest.raises(AttributeError, match="no method 'nope'"):
        box.nope.remote()


def test_default_actor_holds_no_cpu_while_alive(ray_shared):
    actors = [Counter.remote() for _ in range(4)]    # more actors than CPUs
    assert ray.get([a.increment.remote() for a in actors]) == [1] * 4
    assert ray.available_resources().get("CPU") == 2


# == ordering and parallelism ====================================================
@ray.remote
class Log:
    def __init__(self):
        self.items = []

    def append(self, item):
        self.items.append(item)
        return len(self.items)

    def items_(self):
        return self.items


def test_order_of_one_caller_with_ref_arguments(ray_shared):
    @ray.remote
    def slow_value(x):
        time.sleep(0.3)
        return x

    log = Log.remote()
    # A call whose argument is not ready yet holds back the calls after it.
    log.append.remote(slow_value.remote(0))
    for i in range(1, 50):
        log.append.remote(i)
    assert ray.get(log.items_.remote()) == list(range(50))


def test_order_per_thread_with_many_threads(ray_shared):
    log = Log.remote()

    def caller(thread_index):
        for i in range(40):
            log.append.remote((thread_index, i))

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items = ray.get(log.items_.remote())
    assert len(items) == 6 * 40
    for t in range(6):
        assert [i for (ti, i) in items if ti == t] == list(range(40))


def test_order_of_many_task_callers(ray_shared):
    @ray.remote
    def caller(log, index):
        refs = [log.append.remote((index, i)) for i in range(20)]
        return ray.get(refs)

    log = Log.remote()
    ray.get([caller.remote(log, k) for k in range(4)])
    items = ray.get(log.items_.remote())
    assert len(items) == 80
    for k in range(4):
        assert [i for (ki, i) in items if ki == k] == list(range(20))


def test_one_callers_pending_argument_does_not_hold_up_another_caller(ray_shared, tmp_path):
    gate = tmp_path / "gate"

    @ray.remote
    def slow(path):
        while not os.path.exists(path):      # runs until the test opens the gate
            time.sleep(0.01)
        return "slow"

    @ray.remote
    def fast():
        return "fast"

    @ray.remote
    def other_caller(actor):
        return ray.get(actor.echo.remote(fast.remote()))

    @ray.remote
    class Echo:
        def echo(self, value):
            return value

    actor = Echo.remote()
    held_up = actor.echo.remote(slow.remote(str(gate)))     # caller A: this driver
    # Caller B, a task, gets its answer while A's argument cannot exist yet.
    assert ray.get(other_caller.remote(actor), timeout=60) == "fast"
    assert ray.wait([held_up], timeout=0) == ([], [held_up])
    gate.write_text("open")
    assert ray.get(held_up, timeout=60) == "slow"


def test_different_actors_run_in_parallel(ray_shared):
    @ray.remote
    class Sleeper:
        def ready(self):
            return True

        def interval(self):
            start = time.time()
            time.sleep(1.0)
            return start, time.time()

    sleepers = [Sleeper.remote() for _ in range(2)]
    ray.get([s.ready.remote() for s in sleepers])
    (s1, e1), (s2, e2) = ray.get([s.interval.remote() for s in sleepers])
    assert max(s1, s2) < min(e1, e2), "the two actors' calls did not overlap"


# == ray.method =================================================================
def test_method_num_returns_and_alias(ray_shared):
    @ray.remote
    class Foo(object):
        @ray.method(num_return_vals=2)
        def bar(self):
            return 1, 2

        @ray.method(num_returns=3)
        def baz(self, x):
            return x, x + 1, x + 2

        @ray.method(num_returns=2)
        def wrong(self):
            return 1

    f = Foo.remote()
    a, b = f.bar.remote()
    assert ray.get([a, b]) == [1, 2]
    assert ray.get(f.baz.remote(5)) == [5, 6, 7]
    assert ray.get(f.bar.options(num_returns=1).remote()) == (1, 2)
    x, y = f.wrong.remote()
    with pytest.raises(ValueError, match="num_returns=2"):
        ray.get(x)
    with pytest.raises(TypeError, match="num_returns"):
        ray.method(nums=2)
    with pytest.raises(ValueError, match="num_returns must be"):
        ray.method(num_returns=-2)
    with pytest.raises(ValueError, match="num_returns must be"):
        f.bar.options(num_returns="2")


# == handles and refs ===========================================================
def test_refs_as_method_arguments(ray_shared):
    @ray.remote
    class Adder:
        def add(self, a, b=0, nested=None):
            return a + b + (ray.get(nested[0]) if nested else 0)

    @ray.remote
    def three():
        return 3

    adder = Adder.remote()
    assert ray.get(adder.add.remote(ray.put(1), b=three.remote())) == 4
    assert ray.get(adder.add.remote(1, nested=[ray.put(10)])) == 11
    # The result of one method is an argument of the next.
    assert ray.get(adder.add.remote(adder.add.remote(1, 2), 3)) == 6


def test_handle_passed_to_tasks(ray_shared):
    @ray.remote
    def bump(counter, times):
        return ray.get([counter.increment.remote() for _ in range(times)])[-1]

    counter = Counter.remote()
    ray.get([bump.remote(counter, 5) for _ in range(3)])
    assert ray.get(counter.read.remote()) == 15


def test_handle_passed_to_other_actors(ray_shared):
    @ray.remote
    class Client:
        def __init__(self, counter):
            self.counter = counter

        def bump(self):
            return ray.get(self.counter.increment.remote())

        def bump_other(self, other):
            return ray.get(other.increment.remote())

    counter = Counter.remote()
    clients = [Client.remote(counter) for _ in range(2)]
    results = ray.get([c.bump.remote() for c in clients for _ in range(3)])
    assert sorted(results) == list(range(1, 7))
    other = Counter.remote()
    assert ray.get(clients[0].bump_other.remote(other)) == 1
    # Handles travel inside containers too.
    assert ray.get(ray.put([counter]))[0] == counter


def test_actor_lives_while_a_task_holds_its_handle(ray_shared):
    @ray.remote
    def use_later(handles):
        time.sleep(0.5)
        return ray.get(handles[0].increment.remote())

    counter = Counter.remote()
    pid = ray.get(counter.pid.remote())
    ref = use_later.remote([counter])
    del counter
    assert ray.get(ref) == 1
    wait_until(lambda: pid_gone(pid), what="the actor to exit after its last handle")


def test_actor_created_in_a_task_and_returned(ray_shared):
    @ray.remote
    def make():
        counter = Counter.remote()
        ray.get(counter.increment.remote())
        return counter

    @ray.remote
    class Factory:
        def make(self):
            return [Counter.remote()]

    counter = ray.get(make.remote())
    assert ray.get(counter.increment.remote()) == 2
    (made,) = ray.get(Factory.remote().make.remote())
    assert ray.get(made.increment.remote()) == 1


def test_init_may_wait_on_tasks_and_holds_its_cpus(ray_shared):
    @ray.remote
    def one():
        return 1

    @ray.remote(num_cpus=2)
    class Greedy:
        def __init__(self):
            # Needs a CPU while __init__ holds both: lent back while it waits.
            self.value = ray.get(one.remote())

        def value_(self):
            return self.value

    greedy = Greedy.remote()
    assert ray.get(greedy.value_.remote()) == 1
    assert ray.available_resources().get("CPU", 0) == 0
    ray.kill(greedy)
    wait_until(lambda: ray.available_resources().get("CPU") == 2,
               what="the killed actor's CPUs to return")


# == named actors ===============================================================
def test_named_actors(ray_shared):
    counter = Counter.options(name="the-counter").remote()
    ray.get(counter.increment.remote())
    same = ray.get_actor("the-counter")
    assert same == counter
    assert ray.get(same.increment.remote()) == 2
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(name="the-counter").remote()
    assert ray.get(Counter.options(name="the-counter", get_if_exists=True).remote()
                   .increment.remote()) == 3
    with pytest.raises(ValueError, match="no live actor named 'nobody'"):
        ray.get_actor("nobody")
    with pytest.raises(TypeError, match="name"):
        ray.get_actor(3)

    @ray.remote
    def from_task():
        return ray.get(ray.get_actor("the-counter").increment.remote())
    assert ray.get(from_task.remote()) == 4

    # Once killed, the name is free again.
    ray.kill(counter)
    with pytest.raises(RayActorError):
        ray.get(same.increment.remote())
    wait_until(lambda: _named_gone("the-counter"), what="the name to be released")
    fresh = Counter.options(name="the-counter").remote()
    assert ray.get(fresh.increment.remote()) == 1


def _named_gone(name):
    try:
        ray.get_actor(name)
        return False
    except ValueError:
        return True


def test_named_actor_lifetime(ray_shared):
    # As in Ray, a name alone does not keep an actor alive...
    pid = ray.get(Counter.options(name="temporary").remote().pid.remote())
    wait_until(lambda: pid_gone(pid), what="the unreferenced named actor to exit")
    with pytest.raises(ValueError, match="no live actor named 'temporary'"):
        ray.get_actor("temporary")
    # ...lifetime="detached" does, until ray.kill.
    Counter.options(name="detached", lifetime="detached").remote()
    handle = ray.get_actor("detached")
    assert ray.get(handle.increment.remote()) == 1
    del handle
    assert ray.get(ray.get_actor("detached").increment.remote()) == 2
    ray.kill(ray.get_actor("detached"))
    wait_until(lambda: _named_gone("detached"), what="the killed actor's name to be free")
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")


# == concurrency inside one actor ==============================================
@ray.remote
class AsyncPeak:
    def __init__(self, goal):
        self.running = 0
        self.peak = 0
        self.goal = goal
        self.reached = None

    async def work(self):
        if self.reached is None:
            self.reached = asyncio.Event()
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running >= self.goal:
            self.reached.set()
        try:
            # Wait for the others: proves they run at once (bounded, no hang).
            await asyncio.wait_for(self.reached.wait(), 2.0)
        except asyncio.TimeoutError:
            pass
        self.running -= 1
        return self.peak

    def peak_(self):
        return self.peak

    async def await_ref(self, ref_list):
        return await ref_list[0] + 1


def test_async_actor_runs_methods_concurrently(ray_shared):
    actor = AsyncPeak.remote(5)
    ray.get([actor.work.remote() for _ in range(5)])
    assert ray.get(actor.peak_.remote()) == 5


def test_async_actor_bounded_by_max_concurrency(ray_shared):
    actor = AsyncPeak.options(max_concurrency=2).remote(3)
    ray.get([actor.work.remote() for _ in range(4)])
    assert ray.get(actor.peak_.remote()) == 2


def test_async_actor_awaits_refs(ray_shared):
    @ray.remote
    def seven():
        return 7

    actor = AsyncPeak.remote(1)
    assert ray.get(actor.await_ref.remote([seven.remote()])) == 8


def test_threaded_actor(ray_shared):
    @ray.remote
    class ThreadPeak:
        def __init__(self, goal):
            self.lock = threading.Lock()
            self.running = 0
            self.peak = 0
            self.reached = threading.Event()
            self.goal = goal

        def work(self):
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
                if self.running >= self.goal:
                    self.reached.set()
            self.reached.wait(2.0)
            with self.lock:
                self.running -= 1
            return threading.get_ident()

        def peak_(self):
            return self.peak

    actor = ThreadPeak.options(max_concurrency=3).remote(3)
    ray.get([actor.work.remote() for _ in range(3)])
    assert ray.get(actor.peak_.remote()) == 3
    bounded = ThreadPeak.options(max_concurrency=2).remote(3)
    ray.get([bounded.work.remote() for _ in range(4)])
    assert ray.get(bounded.peak_.remote()) == 2


# == errors and death ===========================================================
@ray.remote
class Fragile:
    def __init__(self):
        self.calls = 0

    def ok(self):
        self.calls += 1
        return self.calls

    def fail(self):
        raise KeyError("broken")

    def pid(self):
        return os.getpid()

    def die(self):
        os._exit(3)

    def sleep_then(self, seconds):
        time.sleep(seconds)
        return "slept"

    def block(self, started):
        """Say it runs (``started`` appears), then never return."""
        open(started, "w").close()
        while True:
            time.sleep(0.05)

    def leave(self):
        ray.exit_actor()


def test_method_error_propagates_and_actor_keeps_working(ray_shared):
    actor = Fragile.remote()
    assert ray.get(actor.ok.remote()) == 1
    with pytest.raises(KeyError) as info:
        ray.get(actor.fail.remote())
    assert isinstance(info.value, RayTaskError)
    assert "broken" in str(info.value) and "Fragile.fail" in str(info.value)
    assert ray.get(actor.ok.remote()) == 2


def test_init_error_reaches_method_callers(ray_shared):
    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("bad config")

        def m(self):
            return 1

    actor = Broken.remote()
    with pytest.raises(RayActorError, match="bad config"):
        ray.get(actor.m.remote())


def test_kill(ray_shared):
    actor = Fragile.remote()
    pid = ray.get(actor.pid.remote())
    pending = actor.sleep_then.remote(30)
    ray.kill(actor)
    with pytest.raises(RayActorError, match="ray.kill"):
        ray.get(pending)
    with pytest.raises(RayActorError, match="ray.kill"):
        ray.get(actor.ok.remote())
    wait_until(lambda: pid_gone(pid), what="the killed actor's process to exit")
    with pytest.raises(TypeError, match="actor handle"):
        ray.kill("not an actor")


def test_process_death_from_inside(ray_shared):
    actor = Fragile.remote()
    with pytest.raises(RayActorError, match="exit code 3"):
        ray.get(actor.die.remote())
    with pytest.raises(RayActorError, match="died"):
        ray.get(actor.ok.remote())


def test_sigkill_from_outside_fails_pending_and_later_calls(ray_shared, tmp_path):
    actor = Fragile.remote()
    pid = ray.get(actor.pid.remote())
    started = str(tmp_path / "started")
    pending = [actor.block.remote(started), actor.ok.remote()]
    # Kill only once the first call runs (the second is queued behind it):
    # both are in flight when the kill lands.
    wait_until(lambda: os.path.exists(started), what="the first call to start")
    os.kill(pid, signal.SIGKILL)
    for ref in pending:
        with pytest.raises(RayActorError, match=f"pid {pid}.*SIGKILL"):
            ray.get(ref)
    with pytest.raises(RayActorError, match="SIGKILL"):
        ray.get(actor.ok.remote())


def pid_after_restart(actor, old_pid):
    """The new pid once the actor is back. Calls that reach the node before it
    has reaped the dead process still go to that process and fail, as in Ray."""
    seen = []

    def restarted():
        try:
            seen.append(ray.get(actor.pid.remote()))
        except RayActorError:
            return False
        return seen[-1] != old_pid
    wait_until(restarted, what="the actor to be restarted")
    return seen[-1]


def test_restart_runs_init_again(ray_shared):
    actor = Fragile.options(max_restarts=1).remote()
    assert ray.get([actor.ok.remote(), actor.ok.remote()]) == [1, 2]
    pid = ray.get(actor.pid.remote())
    os.kill(pid, signal.SIGKILL)
    new_pid = pid_after_restart(actor, pid)
    # Re-created by __init__: its state starts over and later calls succeed.
    assert ray.get(actor.ok.remote()) == 1
    # No restarts left: the next death is final.
    os.kill(new_pid, signal.SIGKILL)
    with pytest.raises(RayActorError, match="SIGKILL"):
        ray.get(actor.ok.remote())


def test_restart_alias_max_reconstructions(ray_shared):
    @ray.remote(max_reconstructions=2)
    class Phoenix:
        def pid(self):
            return os.getpid()

        def die(self):
            os._exit(1)

    actor = Phoenix.remote()
    pids = [ray.get(actor.pid.remote())]
    for _ in range(2):
        with pytest.raises(RayActorError, match="exit code 1"):
            ray.get(actor.die.remote())
        pids.append(pid_after_restart(actor, pids[-1]))
    assert len(set(pids)) == 3
    with pytest.raises(RayActorError):
        ray.get(actor.die.remote())
    with pytest.raises(RayActorError):
        ray.get(actor.pid.remote())


def test_max_task_retries_reruns_calls_lost_in_a_crash(ray_shared):
    actor = Fragile.options(max_restarts=1, max_task_retries=1).remote()
    pid = ray.get(actor.pid.remote())
    lost = [actor.sleep_then.remote(0.5), actor.ok.remote()]
    os.kill(pid, signal.SIGKILL)
    assert ray.get(lost) == ["slept", 1]
    assert ray.get(actor.pid.remote()) != pid


def test_kill_with_restart_allowed(ray_shared):
    actor = Fragile.options(max_restarts=1).remote()
    pid = ray.get(actor.pid.remote())
    ray.kill(actor, no_restart=False)
    assert ray.get(actor.ok.remote()) == 1
    assert ray.get(actor.pid.remote()) != pid


def test_exit_actor(ray_shared):
    actor = Fragile.options(max_restarts=3).remote()
    pid = ray.get(actor.pid.remote())
    with pytest.raises(RayActorError, match="exit_actor"):
        ray.get(actor.leave.remote())
    with pytest.raises(RayActorError, match="exit_actor"):
        ray.get(actor.ok.remote())
    wait_until(lambda: pid_gone(pid), what="the actor to exit")
    with pytest.raises(TypeError, match="exit_actor"):
        ray.exit_actor()


def test_exit_actor_in_async_and_threaded_actors(ray_shared):
    @ray.remote
    class AsyncLeaver:
        async def pid(self):
            return os.getpid()

        async def leave(self):
            ray.exit_actor()

    @ray.remote(max_concurrency=2)
    class ThreadLeaver:
        def pid(self):
            return os.getpid()

        def leave(self):
            ray.exit_actor()

    for cls in (AsyncLeaver, ThreadLeaver):
        actor = cls.remote()
        pid = ray.get(actor.pid.remote())
        with pytest.raises(RayActorError, match="exit_actor"):
            ray.get(actor.leave.remote())
        wait_until(lambda: pid_gone(pid), what=f"{cls.__name__} to exit")


def test_infeasible_actor_is_reported_not_hung(ray_shared, capfd):
    @ray.remote(resources={"Unobtainium": 1})
    class Impossible:
        def m(self):
            return 1

    actor = Impossible.remote()
    with pytest.raises(GetTimeoutError):
        ray.get(actor.m.remote(), timeout=1.0)
    seen = []
    wait_until(lambda: seen.append(capfd.readouterr().err) or "Unobtainium" in "".join(seen),
               what="the infeasible warning")
    assert "actor Impossible" in "".join(seen)
    del actor


# == lifetime ===================================================================
def test_last_handle_out_of_scope_exits_and_returns_resources(ray_shared):
    @ray.remote(num_cpus=1)
    class Holder:
        def pid(self):
            return os.getpid()

    holder = Holder.remote()
    pid = ray.get(holder.pid.remote())
    assert ray.available_resources().get("CPU") == 1
    del holder
    wait_until(lambda: pid_gone(pid), what="the actor process to exit")
    wait_until(lambda: ray.available_resources().get("CPU") == 2,
               what="the actor's CPU to return")


def test_calls_sent_before_the_last_handle_drops_still_run(ray_shared):
    # The handle is a temporary: dropped right after the call is submitted.
    assert ray.get(Counter.remote().increment.remote()) == 1
    log = Log.remote()
    refs = [log.append.remote(i) for i in range(10)]
    pid_ref = Counter.remote().pid.remote()
    del log
    assert ray.get(refs) == list(range(1, 11))
    pid = ray.get(pid_ref)
    wait_until(lambda: pid_gone(pid), what="the temporary actor to exit")


def test_actor_exits_when_the_object_holding_its_last_handle_goes(ray_shared):
    counter = Counter.remote()
    actor_id = counter._actor_id
    pid = ray.get(counter.pid.remote())
    box = ray.put([counter])
    del counter
    runtime = ray.api._runtime()

    def handle_released():      # this process's release of its handle has been sent
        refs = runtime.refs
        return actor_id not in refs.local_refs and not refs.drops and not refs.pending_release
    wait_until(handle_released, what="the handle's release to leave")
    runtime.request("status")   # ...and the node has handled it (same socket, in order)
    assert not pid_gone(pid)    # the handle in `box` keeps it
    del box                     # the last handle goes with the object holding it
    wait_until(lambda: pid_gone(pid), what="the actor to exit with the object holding its handle")


def test_no_actor_is_left_once_every_handle_is_gone(ray_shared):
    # Runs last: every actor of the tests above has lost its handles, so the
    # node must have forgotten them all (tombstones included).
    import gc
    gc.collect()
    status = lambda: ray.api._runtime().request("status")["actors"]
    try:
        wait_until(lambda: status()["actors"] == 0, what="actor entries to go")
    except AssertionError as timed_out:
        # Which ones stayed, as the node has them now (not as they were at the start).
        left = [(a["class"], a["state"], a["pid"], a["death_reason"])
                for a in ray.api._runtime().request("introspect")["actors"]]
        raise AssertionError(f"{timed_out}: {status()} {left}") from None
    assert status()["named"] == 0


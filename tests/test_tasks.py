"""Remote functions, get/put/wait: the task examples of the seeds and more."""
import os
import time

import numpy as np
import pytest

import zray as ray
from zray.exceptions import GetTimeoutError, RayTaskError


def test_seed_remote_function_and_chaining(ray_shared):
    @ray.remote
    def f(x):
        return x + 1

    x_id = f.remote(0)
    assert ray.get(x_id) == 1
    y_id = f.remote(x_id)
    assert ray.get(y_id) == 2


def test_seed_num_return_vals_and_num_returns(ray_shared):
    @ray.remote(num_return_vals=2)
    def f():
        return 1, 2

    x_id, y_id = f.remote()
    assert ray.get(x_id) == 1
    assert ray.get(y_id) == 2

    @ray.remote(num_returns=3)
    def return_multiple():
        return 1, 2, 3

    a_id, b_id, c_id = return_multiple.remote()
    assert ray.get([a_id, b_id, c_id]) == [1, 2, 3]


def test_seed_get_one_and_list(ray_shared):
    @ray.remote
    def f():
        return {"key1": ["value"]}

    assert ray.get(f.remote()) == {"key1": ["value"]}
    assert ray.get([f.remote() for _ in range(2)]) == [{"key1": ["value"]}] * 2


def test_seed_put(ray_shared):
    x_id = ray.put(1)
    assert ray.get(x_id) == 1
    obj_id = ray.put(1)
    assert ray.get(obj_id) == 1


def test_seed_walkthrough_regular_vs_remote(ray_shared):
    def regular_function():
        return 1

    @ray.remote
    def remote_function():
        return 1

    assert regular_function() == 1
    object_id = remote_function.remote()
    assert ray.get(object_id) == 1

    @ray.remote
    def remote_chain_function(value):
        return value + 1

    y1_id = remote_function.remote()
    assert ray.get(y1_id) == 1
    chained_id = remote_chain_function.remote(y1_id)
    assert ray.get(chained_id) == 2


@ray.remote
def held_until(path, value):
    """Returns ``value`` once ``path`` exists (at once for path None): a task
    whose end the test decides, not a clock."""
    while path is not None and not os.path.exists(path):
        time.sleep(0.02)
    return value


def test_seed_wait(ray_shared, tmp_path):
    release = str(tmp_path / "release")
    try:
        first = [held_until.remote(None, 0), held_until.remote(None, 1),
                 held_until.remote(release, 2)]
        ready_ids, remaining_ids = ray.wait(first, num_returns=2)
        # The third cannot finish before the release: the two ready are the others.
        assert ray.get(ready_ids) == [0, 1] and remaining_ids == first[2:]

        results = [held_until.remote(None, i) for i in range(3)]
        ray.get(results)
        results += [held_until.remote(release, 3), held_until.remote(release, 4)]
        # 4 cannot be ready before the release: wait returns at its timeout
        # with what is.
        ready_ids, remaining_ids = ray.wait(results, num_returns=4, timeout=1.5)
        assert ready_ids == results[:3] and remaining_ids == results[3:]
    finally:
        open(release, "w").close()
    assert ray.get(first + results) == [0, 1, 2, 0, 1, 2, 3, 4]   # nothing left running


def test_seed_wait_loop(ray_shared):
    @ray.remote
    def f():
        return 1

    remaining_ids = [f.remote() for _ in range(5)]
    total = 0
    for _ in range(30):
        ready_ids, remaining_ids = ray.wait(remaining_ids)
        total += sum(ray.get(ready_ids))
        remaining_ids.append(f.remote())
    assert total == 30


def test_wait_keeps_input_order(ray_shared):
    refs = [ray.put(i) for i in range(10)]
    ready, rest = ray.wait(refs, num_returns=10)
    assert ready == refs and rest == []
    ready, rest = ray.wait(refs, num_returns=3)
    assert ready == refs[:3] and rest == refs[3:]


def test_wait_bad_input(ray_shared):
    ref = ray.put(1)
    with pytest.raises(ValueError, match="more than once"):
        ray.wait([ref, ref])
    with pytest.raises(ValueError, match="num_returns"):
        ray.wait([ref], num_returns=2)
    with pytest.raises(TypeError):
        ray.wait(ref)


def test_get_timeout(ray_shared, tmp_path):
    release = str(tmp_path / "release")
    slow = held_until.remote(release, "done")
    try:
        with pytest.raises(GetTimeoutError):
            ray.get(slow, timeout=0.3)
    finally:
        open(release, "w").close()
    assert ray.get(slow) == "done"                 # and nothing is left running


def test_get_bad_input(ray_shared):
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get(3)
    with pytest.raises(TypeError, match="ObjectRef"):
        ray.get([ray.put(1), "x"])


def test_nested_refs_pass_through_as_refs(ray_shared):
    @ray.remote
    def inspect(container):
        inner = container["refs"][0]
        return isinstance(inner, ray.ObjectRef), ray.get(inner)

    ref = ray.put(41)
    assert ray.get(inspect.remote({"refs": [ref]})) == (True, 41)


def test_kwargs_and_ref_kwargs(ray_shared):
    @ray.remote
    def f(a, b=2, *, c):
        return a + b + c

    assert ray.get(f.remote(1, c=ray.put(10))) == 13
    assert ray.get(f.options(num_cpus=0.5).remote(1, b=ray.put(5), c=1)) == 7


def test_direct_call_is_an_error(ray_shared):
    @ray.remote
    def f():
        return 1

    with pytest.raises(TypeError, match=r"f\.remote"):
        f()


def test_task_error_is_both_classes(ray_shared):
    @ray.remote
    def fails():
        raise ValueError("This task failed!!")

    with pytest.raises(ValueError) as info:
        ray.get(fails.remote())
    assert isinstance(info.value, RayTaskError)
    assert "This task failed!!" in str(info.value)
    assert "Traceback" in str(info.value)


def test_error_propagates_through_dependency(ray_shared):
    @ray.remote
    def fails():
        raise KeyError("inner")

    @ray.remote
    def uses(x):
        return x

    with pytest.raises(KeyError):
        ray.get(uses.remote(fails.remote()))


def test_error_info_and_background_print(ray_shared, capfd):
    @ray.remote
    def f():
        raise Exception("This task failed!!")

    f.remote()
    deadline = time.monotonic() + 10
    errors = []
    while time.monotonic() < deadline:
        errors = ray.error_info()
        if any("This task failed!!" in e["message"] for e in errors):
            break
        time.sleep(0.1)
    assert any("This task failed!!" in e["message"] for e in errors)
    # The driver prints an error nobody has ray.get yet, a moment after it came.
    printed = ""
    while "This task failed!!" not in printed and time.monotonic() < deadline + 30:
        printed += capfd.readouterr().err
        time.sleep(0.1)
    assert "This task failed!!" in printed


def test_nested_tasks_depth_10(ray_shared):
    @ray.remote
    def depth(n):
        if n == 0:
            return 0
        return ray.get(depth.remote(n - 1)) + 1

    assert ray.get(depth.remote(10)) == 10


def test_many_nested_tasks_no_deadlock(ray_shared):
    @ray.remote
    def leaf(i):
        return i

    @ray.remote
    def parent(i):
        return sum(ray.get([leaf.remote(i), leaf.remote(i + 1)]))

    assert ray.get([parent.remote(i) for i in range(20)]) == [2 * i + 1 for i in range(20)]


def test_wait_inside_task(ray_shared):
    @ray.remote
    def leaf(i):
        return i

    @ray.remote
    def waiter():
        refs = [leaf.remote(i) for i in range(4)]
        ready, rest = ray.wait(refs, num_returns=4, timeout=20)
        return len(ready)

    assert ray.get(waiter.remote()) == 4


def test_unpicklable_argument_is_clear(ray_shared):
    @ray.remote
    def f(x):
        return 1

    with pytest.raises(TypeError, match="could not serialize"):
        f.remote(x for x in range(3))
    assert ray.get(f.remote(1)) == 1


def test_unpicklable_result_is_error_not_hang(ray_shared):
    @ray.remote
    def f():
        return (x for x in range(3))

    with pytest.raises(RayTaskError, match="could not be serialized"):
        ray.get(f.remote(), timeout=30)


def test_bad_options(ray_shared):
    with pytest.raises(TypeError, match="num_cpuz"):
        ray.remote(num_cpuz=1)(lambda: 1)
    with pytest.raises(ValueError, match="CPU"):
        @ray.remote(num_cpus=-1)
        def f():
            pass
    with pytest.raises(TypeError):
        ray.remote(3)

    @ray.remote
    def g():
        return 5
    with pytest.raises(TypeError, match="bogus"):
        g.options(bogus=1)
    assert ray.get(g.remote()) == 5


def test_numpy_roundtrip(ray_shared):
    @ray.remote
    def double(a):
        return a * 2

    a = np.arange(100000, dtype=np.int64)
    out = ray.get(double.remote(a))
    assert np.array_equal(out, a * 2)
    out2 = ray.get(double.remote(ray.put(a)))
    assert np.array_equal(out2, a * 2)


def test_timeline_and_profile(ray_shared, tmp_path):
    @ray.remote
    def traced():
        with ray.profile("inner span", extra_data={"k": "v"}):
            time.sleep(0.01)
        return 1

    ray.get([traced.remote() for _ in range(3)])
    with ray.profile("driver span"):
        pass
    events = ray.timeline()
    names = [e["name"] for e in events]
    assert names.count("traced") >= 3
    assert "inner span" in names and "driver span" in names
    for e in events:
        assert {"ph", "ts", "pid"} <= set(e)
    path = tmp_path / "trace.json"
    ray.timeline(filename=str(path))
    import json
    assert len(json.loads(path.read_text())) >= 5


def test_worker_output_reaches_driver(ray_shared, capfd):
    @ray.remote
    def talk():
        import os
        print("hello from a worker")
        return os.getpid()

    pid = ray.get(talk.remote())
    deadline = time.monotonic() + 10
    out = ""
    while time.monotonic() < deadline:
        out += capfd.readouterr().out
        if "hello from a worker" in out:
            break
        time.sleep(0.1)
    assert f"(pid={pid}) hello from a worker" in out

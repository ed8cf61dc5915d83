"""init/shutdown, local mode, and the no-orphans promise."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import zray as ray
from conftest import assert_no_leftovers, run_script


def test_init_shutdown_reinit():
    assert not ray.is_initialized()
    info = ray.init(num_cpus=1)
    assert ray.is_initialized()
    with pytest.raises(RuntimeError, match="ignore_reinit_error"):
        ray.init(num_cpus=1)
    assert ray.init(num_cpus=1, ignore_reinit_error=True)["session_dir"] == info["session_dir"]
    ray.shutdown()
    assert not ray.is_initialized()
    assert_no_leftovers(info)
    ray.shutdown()          # twice is fine
    info2 = ray.init(num_cpus=1)

    @ray.remote
    def f():
        return 7
    assert ray.get(f.remote()) == 7
    ray.shutdown()
    assert_no_leftovers(info2)


def test_unknown_init_keyword_is_clear():
    with pytest.raises(TypeError, match="num_cpu"):
        ray.init(num_cpu=2)
    with pytest.raises(ValueError, match="num_cpus"):
        ray.init(num_cpus=-1)
    assert not ray.is_initialized()


def test_legacy_init_keywords_accepted(ray_start_legacy=None):
    info = ray.init(num_cpus=1, redirect_output=True, include_webui=False, num_redis_shards=1,
                    object_id_seed=3, driver_id=None)
    ray.shutdown()
    assert_no_leftovers(info)


def test_connect_options_conflict():
    with pytest.raises(ValueError, match="num_cpus"):
        ray.init(address="127.0.0.1:1", num_cpus=2)
    assert not ray.is_initialized()


def test_local_mode():
    ray.init(local_mode=True)
    try:
        @ray.remote
        def f(x):
            return x + 1

        @ray.remote(num_returns=2)
        def two():
            return 1, 2

        @ray.remote
        def fails():
            raise ValueError("local boom")

        @ray.remote
        class Counter:
            def __init__(self):
                self.n = 0

            def inc(self):
                self.n += 1
                return self.n

        assert ray.get(f.remote(f.remote(0))) == 2
        a, b = two.remote()
        assert ray.get([a, b]) == [1, 2]
        with pytest.raises(ValueError, match="local boom"):
            ray.get(fails.remote())
        c = Counter.remote()
        assert ray.get([c.inc.remote() for _ in range(3)]) == [1, 2, 3]
        ready, rest = ray.wait([ray.put(1), ray.put(2)], num_returns=1)
        assert len(ready) == 1 and len(rest) == 1
        assert not psutil.Process().children()
    finally:
        ray.shutdown()


def test_auto_init_on_first_remote():
    @ray.remote
    def f():
        return 3
    try:
        assert ray.get(f.remote()) == 3
        assert ray.is_initialized()
    finally:
        ray.shutdown()


DRIVER = """
import json, sys, time
import numpy as np
import zray as ray
info = ray.init(num_cpus=2)
@ray.remote
def f(x):
    return x
refs = [f.remote(i) for i in range(4)]
big = ray.put(np.ones(10**6))
ray.get(refs)
print(json.dumps(info), flush=True)
{tail}
"""


def _start_driver(tail):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(tail=tail)],
                            stdout=subprocess.PIPE, text=True, env=env)
    info = json.loads(proc.stdout.readline())
    return proc, info


def _cluster_pids(info):
    return [p for p in (info["kv_pid"], info["node_pid"]) if p]


def _assert_gone(info, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in _cluster_pids(info) if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        shm = [f for f in os.listdir("/dev/shm") if f.startswith(f"zray-{info['session_name']}-")]
        if not alive and not shm and not os.path.exists(info["session_dir"]):
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind after {timeout_s}s: pids={alive} shm={shm} "
                         f"dir={os.path.exists(info['session_dir'])}")


def _worker_pids(info):
    try:
        return [c.pid for c in psutil.Process(info["node_pid"]).children()]
    except psutil.NoSuchProcess:
        return []


def test_no_orphans_after_normal_exit():
    proc, info = _start_driver("")
    workers = _worker_pids(info)
    proc.wait(30)
    assert proc.returncode == 0
    _assert_gone(info)
    assert not [p for p in workers if psutil.pid_exists(p)]


def test_no_orphans_after_driver_sigkill():
    proc, info = _start_driver("time.sleep(60)")
    workers = _worker_pids(info)
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    _assert_gone(info, timeout_s=10.0)
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if psutil.pid_exists(p)]


def test_quickstart_style_program_in_fresh_interpreter():
    result = run_script("""
        import zray as ray
        ray.init(num_cpus=2)
        @ray.remote
        def f(x):
            return x * 2
        print(sum(ray.get([f.remote(i) for i in range(10)])))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("90")


def test_dead_node_is_an_error_not_a_hang():
    import signal
    from zray.exceptions import RaySystemError
    info = ray.init(num_cpus=1)
    try:
        @ray.remote
        def slow():
            import time
            time.sleep(60)

        ref = slow.remote()
        os.kill(info["node_pid"], signal.SIGKILL)
        with pytest.raises(RaySystemError, match="node daemon"):
            ray.get(ref, timeout=30)
    finally:
        ray.shutdown()
    assert_no_leftovers(info)

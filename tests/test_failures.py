"""Worker crashes: noticed at once, retried, then reported by exit code or signal."""
import os

import pytest

import zray as ray
from zray.exceptions import WorkerCrashedError


def _attempts_file(tmp_path):
    return str(tmp_path / "attempts")


def _count(path):
    with open(path) as f:
        return len(f.read())


@pytest.mark.parametrize("how, expected", [
    ("exit", "exit code 7"),
    ("sigkill", "SIGKILL"),
    ("segfault", "SIGSEGV"),
])
def test_crash_is_retried_then_reported(ray_shared, tmp_path, how, expected):
    path = _attempts_file(tmp_path)

    @ray.remote(max_retries=2)
    def crash(path, how):
        with open(path, "a") as f:
            f.write("x")
        if how == "exit":
            os._exit(7)
        elif how == "sigkill":
            os.kill(os.getpid(), 9)
        else:
            import ctypes
            ctypes.string_at(0)

    with pytest.raises(WorkerCrashedError, match=expected) as info:
        ray.get(crash.remote(path, how), timeout=60)
    assert _count(path) == 3          # the first run and two retries
    assert "after 2 retries" in str(info.value)


def test_default_max_retries_is_three(ray_shared, tmp_path):
    path = _attempts_file(tmp_path)

    @ray.remote
    def crash(path):
        with open(path, "a") as f:
            f.write("x")
        os._exit(1)

    with pytest.raises(WorkerCrashedError):
        ray.get(crash.remote(path), timeout=60)
    assert _count(path) == 4


def test_retry_can_succeed(ray_shared, tmp_path):
    path = _attempts_file(tmp_path)

    @ray.remote(max_retries=3)
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        if _count(path) < 3:
            os._exit(1)
        return "made it"

    assert ray.get(flaky.remote(path), timeout=60) == "made it"
    assert _count(path) == 3


def test_runtime_keeps_working_after_crashes(ray_shared):
    @ray.remote(max_retries=0)
    def crash():
        os._exit(1)

    @ray.remote
    def fine(x):
        return x * 2

    refs = [crash.remote() for _ in range(4)]
    for ref in refs:
        with pytest.raises(WorkerCrashedError, match="exit code 1"):
            ray.get(ref, timeout=60)
    assert ray.get([fine.remote(i) for i in range(10)]) == [i * 2 for i in range(10)]


def test_worker_logs_are_written_to_session_dir(ray_shared):
    @ray.remote
    def talk():
        print("to the log file")
        return os.getpid()

    pid = ray.get(talk.remote())
    log_path = os.path.join(ray_shared["session_dir"], "logs", f"worker-{pid}.log")
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(log_path) and "to the log file" in open(log_path).read():
            return
        time.sleep(0.1)
    raise AssertionError(f"{log_path} does not hold the worker's output")


@pytest.mark.parametrize("count", [
    40, pytest.param(300, marks=[pytest.mark.slow, pytest.mark.timeout(900)])])
def test_max_calls_workers_never_rerun_or_crash(ray_shared, tmp_path, count):
    # Each worker sends DONE and leaves: its exit must never be taken for a
    # crash (a retry would append a second line, a failure would raise).
    path = str(tmp_path / "ran")

    @ray.remote(max_calls=1)
    def once(path, i):
        with open(path, "a") as f:
            f.write(f"{i}\n")
        return i

    assert ray.get([once.remote(path, i) for i in range(count)], timeout=300) == list(range(count))
    with open(path) as f:
        assert sorted(int(line) for line in f.read().split()) == list(range(count))

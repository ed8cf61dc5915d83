"""`zray stack`: the Python stacks of every zray process on this machine, a
worker's running task named at the top."""
import os

import zray as ray

from cluster_util import env_for, wait_for, zray
from conftest import assert_no_leftovers


def sleepy_function_for_the_stack_test(fifo_path):
    with open(fifo_path) as fifo:       # blocks (in C) until the test opens it to write
        return fifo.read()


SLEEP_LINE = sleepy_function_for_the_stack_test.__code__.co_firstlineno + 1


@ray.remote
class ActorThatWaitsForStack:
    def wait_for_flag(self, fifo_path):
        with open(fifo_path) as fifo:
            return fifo.read()


def wake(fifo_path):
    with open(fifo_path, "w") as fifo:
        fifo.write("woke")


def test_zray_stack_names_the_running_function_and_line(tmp_path):
    # A token the command can be given (ray.init's own is random and kept in the driver).
    info = ray.init(num_cpus=2, temp_dir=str(tmp_path / "root"), redis_password="stack-test")
    fifos = [str(tmp_path / "task.fifo"), str(tmp_path / "actor.fifo")]
    for fifo in fifos:
        os.mkfifo(fifo)
    try:
        ref = ray.remote(sleepy_function_for_the_stack_test).remote(fifos[0])
        actor = ActorThatWaitsForStack.remote()
        method_ref = actor.wait_for_flag.remote(fifos[1])

        def stacks():
            out = zray("stack", "--temp-dir", tmp_path / "root", "--redis-password", "stack-test",
                       env=env_for()).stdout
            # The node names a task as soon as it sent it; the worker's frames
            # show it once the function has started.
            wanted = ["task sleepy_function_for_the_stack_test",
                      f"line {SLEEP_LINE} in sleepy_function_for_the_stack_test",
                      "actor ActorThatWaitsForStack: ActorThatWaitsForStack.wait_for_flag",
                      "in wait_for_flag"]
            return out if all(w in out for w in wanted) else None

        out = wait_for(stacks, 60, "zray stack to show the sleeping task and actor method")
        for role, pid in (("kv", info["kv_pid"]), ("node", info["node_pid"]),
                          ("driver", os.getpid())):
            assert f"{role} pid {pid}" in out, f"no stack of the {role}"
        assert "dashboard pid" in out
        # The worker's header names its task above its frames.
        block = out.split("task sleepy_function_for_the_stack_test", 1)[1].split("=" * 78)[0]
        assert "sleepy_function_for_the_stack_test" in block
        for fifo in fifos:
            wake(fifo)
        assert ray.get([ref, method_ref]) == ["woke", "woke"]
    finally:
        ray.shutdown()
    assert_no_leftovers(info)


def test_zray_stack_without_a_cluster_says_so(tmp_path):
    out = zray("stack", "--temp-dir", tmp_path, env=env_for()).stdout
    assert "No zray processes found" in out


def test_running_function_is_read_from_the_frames_under_the_workers_call():
    from zray import stack_report
    worker_py = os.path.join(os.path.dirname(stack_report.__file__), "core", "worker.py")
    text = (f'Current thread 0x01 (most recent call first):\n'
            f'  File "/usr/lib/python3/json/decoder.py", line 9 in decode\n'
            f'  File "/home/me/job.py", line 42 in crunch\n'
            f'  File "{worker_py}", line 178 in _call\n'
            f'  File "{worker_py}", line 88 in execute\n')
    threads = stack_report.parse_threads(text)
    assert threads[0][0] == "Current thread 0x01" and len(threads[0][1]) == 4
    assert stack_report.running_function(threads) == "crunch (/home/me/job.py:42)"
    idle = text.replace("_call", "next_task").replace("execute", "run")
    assert stack_report.running_function(stack_report.parse_threads(idle)) is None

"""`zray start --owner-pid`: daemons that stop when their owner exits, so a
pytest killed mid-run (SIGTERM from CI, a timeout) leaves no cluster
behind. The test helpers pass the test process's pid (cluster_util.env_for)."""
import os
import signal
import subprocess
import sys
import textwrap

from cluster_util import ROOT, assert_all_gone, daemon_processes, records, wait_for, zray

INNER_TEST = '''
import os
import time

from cluster_util import Cluster


def test_holds_a_cluster_until_killed():
    root = os.environ["OUTER_CLUSTER_ROOT"]
    cluster = Cluster(root)
    cluster.start_head("--num-cpus", 1)
    cluster.add_node("--num-cpus", 1)
    cluster.wait_nodes(2)
    with open(os.environ["OUTER_READY_FILE"], "w") as f:
        json.dump(os.getpid(), f)
    time.sleep(300)
'''


def test_a_killed_pytest_leaves_no_cluster(tmp_path):
    root, ready = tmp_path / "clusters", tmp_path / "ready.json"
    root.mkdir()
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    env = dict(os.environ, OUTER_CLUSTER_ROOT=str(root), OUTER_READY_FILE=str(ready),
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    env.pop("ZRAY_OWNER_PID", None)       # the inner pytest is the owner, not us
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s",
         str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: ready.exists() or inner.poll() is not None, 120,
                 "the inner pytest to start its cluster")
        assert inner.poll() is None, inner.communicate()[0]
        sessions = records(root)
        pids = {record["pid"] for record in sessions}
        pids |= {process.pid for process in daemon_processes(root)}
        assert sorted(r["role"] for r in sessions) == ["dashboard", "kv", "node", "node"]
        inner.send_signal(signal.SIGTERM)
        inner.wait(timeout=30)
        # The nodes, kv service, dashboard and workers go; their files with them.
        assert_all_gone(pids, [r for r in sessions if r["role"] == "node"], timeout_s=30)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        zray("stop", "--temp-dir", root, check=False)     # what is left, by its records


def test_owner_pid_must_be_a_live_process(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    result = zray("start", "--head", "--port", 0, "--temp-dir", tmp_path,
                  "--owner-pid", dead.pid, check=False)
    assert result.returncode != 0 and "--owner-pid" in result.stderr
    assert f"no process {dead.pid} is running" in result.stderr
    assert not records(tmp_path)

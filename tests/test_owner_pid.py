"""`zray start --owner-pid`: daemons that stop when their owner exits, so a
pytest killed mid-run (SIGTERM from CI, a timeout) leaves no cluster
behind. The test helpers pass the test process's pid (cluster_util.env_for)."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from cluster_util import ROOT, assert_all_gone, daemon_processes, records, wait_for, zray

INNER_TEST = '''
import json
import os
import time

import psutil

import zray as ray
from cluster_util import Cluster


def test_holds_clusters_until_killed():
    cluster = Cluster(os.environ["OUTER_CLUSTER_ROOT"])
    cluster.start_head("--num-cpus", 1)
    cluster.add_node("--num-cpus", 1)
    cluster.wait_nodes(2)
    info = ray.init(num_cpus=1)         # and a cluster of its own, as the ray_start fixture
    own = [p.pid for p in psutil.Process().children(recursive=True)
           if "zray." in " ".join(p.cmdline())]
    ready = os.environ["OUTER_READY_FILE"]
    with open(ready + ".part", "w") as f:
        json.dump({"session_dir": info["session_dir"], "session_name": info["session_name"],
                   "pids": own}, f)
    os.rename(ready + ".part", ready)
    time.sleep(300)
'''


@pytest.mark.parametrize("how", [
    "SIGTERM", "group SIGTERM",
    pytest.param("SIGKILL", marks=pytest.mark.slow),
    pytest.param("group SIGINT", marks=pytest.mark.slow)])
def test_a_killed_pytest_leaves_no_cluster(tmp_path, how):
    """However a pytest run ends (killed, or its whole group signalled as
    `timeout` and CI runners do, or Ctrl-C), the clusters its tests started
    go: those of `zray start` (by --owner-pid) and its own ray.init()'s."""
    root, ready = tmp_path / "clusters", tmp_path / "ready.json"
    root.mkdir()
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    env = dict(os.environ, OUTER_CLUSTER_ROOT=str(root), OUTER_READY_FILE=str(ready),
               ZRAY_TEMP_DIR=str(tmp_path / "own"),
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    env.pop("ZRAY_OWNER_PID", None)       # the inner pytest is the owner, not us
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s",
         str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)     # its own group, as a shell runs a command
    own, own_processes = None, []
    try:
        wait_for(lambda: ready.exists() or inner.poll() is not None, 120,
                 "the inner pytest to start its clusters")
        assert inner.poll() is None, inner.communicate()[0]
        own = json.loads(ready.read_text())
        own_processes = [psutil.Process(pid) for pid in own["pids"]]
        sessions = records(root)
        pids = {record["pid"] for record in sessions}
        pids |= {process.pid for process in daemon_processes(root)}
        assert sorted(r["role"] for r in sessions) == ["dashboard", "kv", "node", "node"]
        assert own["pids"]
        signum = getattr(signal, how.split()[-1])
        if how.startswith("group"):
            os.killpg(inner.pid, signum)
        else:
            inner.send_signal(signum)
        inner.wait(timeout=60)
        # The nodes, kv services, dashboards and workers go; their files with them.
        assert_all_gone(pids | set(own["pids"]),
                        [r for r in sessions if r["role"] == "node"] + [own], timeout_s=30)
        assert not os.listdir(tmp_path / "own")
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        zray("stop", "--temp-dir", root, check=False)     # what is left, by its records
        for process in own_processes:       # only what the inner run started
            try:
                process.kill()              # psutil refuses a pid reused since
            except psutil.Error:
                pass


def test_owner_pid_must_be_a_live_process(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    result = zray("start", "--head", "--port", 0, "--temp-dir", tmp_path,
                  "--owner-pid", dead.pid, check=False)
    assert result.returncode != 0 and "--owner-pid" in result.stderr
    assert f"no process {dead.pid} is running" in result.stderr
    assert not records(tmp_path)

"""The cluster launcher over real SSH: `zray up / get_head_ip / exec / attach /
down` against two "hosts" (127.0.0.1 and 127.0.0.2, one real sshd; see
ssh_hosts.py), and the messages for bad configs.

The hosts are this machine, so the config's commands name this test's
interpreter and checkout (the remote shell inherits nothing from the test).
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest

from cluster_util import ROOT, env_for, wait_for, zray
from ssh_hosts import ADDRESSES, SSHHosts, find_sshd, zray_processes_under

from zray.launcher.config import (DEFAULT_HEAD_START, DEFAULT_WORKER_START, ConfigError,
                                  load_config)
from zray.launcher.ssh import SSHRunner

HEAD, WORKER = ADDRESSES


@pytest.fixture
def prepared_hosts(tmp_path):
    """The two hosts' sshd, configured but not started; stopped (with all zray
    and tmux processes on the hosts) at the end, pass or fail."""
    sshd = find_sshd()
    missing = [name for name, path in (("sshd", sshd), ("ssh", shutil.which("ssh")),
                                       ("ssh-keygen", shutil.which("ssh-keygen")),
                                       ("tmux", shutil.which("tmux"))) if not path]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs openssh-server "
                    f"and tmux)")
    hosts = SSHHosts(tmp_path / "ssh")
    os.makedirs(hosts.directory)
    try:
        hosts.prepare(sshd)
        yield hosts
    finally:
        _stop_zray_on(hosts)
        _kill_tmux(os.path.join(hosts.tmux_dir, f"tmux-{os.getuid()}", "default"))
        hosts.stop()


@pytest.fixture
def hosts(prepared_hosts):
    prepared_hosts.launch()
    return prepared_hosts


def _stop_zray_on(hosts):
    # Whatever the test left running on the "hosts" (same machine): stop it.
    for temp_dir in hosts.temp_dirs.values():
        zray("stop", "--temp-dir", temp_dir, check=False)


def _kill_tmux(socket_path):
    if os.path.exists(socket_path):
        subprocess.run(["tmux", "-S", socket_path, "kill-server"], capture_output=True)


def zray_cmd():
    """This checkout's `zray`, as a shell command for the remote side."""
    return (f"PYTHONPATH={shlex.quote(ROOT)} {shlex.quote(sys.executable)} -m zray.cli")


def _from_defaults(commands, kv_port, extra):
    z = zray_cmd()
    out = [c.replace("zray ", f"{z} ", 1).replace("6379", str(kv_port)) for c in commands]
    assert out[-1].startswith(f"{z} start") and str(kv_port) in out[-1]
    out[-1] += " " + extra
    return out


def write_config(path, hosts, kv_port, mount_dir, setup_log):
    z = zray_cmd()
    config = {
        "cluster_name": "launcher-test",
        "provider": {"type": "local", "head_ip": HEAD, "worker_ips": [WORKER]},
        "auth": {"ssh_user": hosts.user, "ssh_private_key": hosts.key, "ssh_port": hosts.port},
        "file_mounts": {os.path.join(hosts.directory, "mounted"): str(mount_dir)},
        "setup_commands": [f"echo \"$ZRAY_TEMP_DIR\" >> {shlex.quote(str(setup_log))}"],
        # The default start commands (the cluster's own token, $ZRAY_HEAD_IP),
        # run with this checkout's zray on a free port, plus resources that
        # tell the nodes apart.
        "head_start_ray_commands": _from_defaults(
            DEFAULT_HEAD_START, kv_port, "--num-cpus=1 --num-gpus=0 --resources='{\"head\": 1}'"),
        "worker_start_ray_commands": _from_defaults(
            DEFAULT_WORKER_START, kv_port,
            f"--node-ip-address={WORKER} --num-cpus=1 --num-gpus=0 "
            f"--resources='{{\"worker\": 1}}'"),
        "head_stop_ray_commands": [f"{z} stop"],
        "worker_stop_ray_commands": [f"{z} stop"],
    }
    import yaml
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return str(path)


def launcher(*args, check=True, timeout=120, env=None):
    return zray(*args, check=check, timeout=timeout, env=env)


DRIVER = textwrap.dedent("""
    import os, zray as ray
    ray.init(address="auto")     # the head's token, found on the head
    alive = [n for n in ray.nodes() if n["Alive"]]
    @ray.remote(num_cpus=0)
    def where():
        return os.environ["ZRAY_TEMP_DIR"]
    print("NODES", len(alive))
    for resource in ("head", "worker"):
        print("RAN", resource, ray.get(where.options(resources={resource: 1}).remote()))
    ray.shutdown()
""")


def test_up_exec_attach_down_over_ssh(hosts, tmp_path):
    from ssh_hosts import free_port
    home = tmp_path / "zray-home"
    env = env_for(extra={"ZRAY_HOME": str(home)})
    mount_dir = tmp_path / "to-mount"
    mount_dir.mkdir()
    (mount_dir / "data.txt").write_text("version 1\n")
    setup_log = tmp_path / "setup.log"
    config = write_config(tmp_path / "cluster.yaml", hosts, free_port((HEAD,)), mount_dir,
                          setup_log)
    mounted = os.path.join(hosts.directory, "mounted", "data.txt")
    head_dir, worker_dir = hosts.temp_dirs[HEAD], hosts.temp_dirs[WORKER]
    if True:       # the fixture stops zray on both hosts, tmux and sshd, pass or fail
        out = launcher("up", "-y", config, env=env).stdout
        # Each step names its host; both nodes set up and started.
        for tag in (f"[{HEAD} head]", f"[{WORKER} worker]"):
            assert f"{tag} setup: echo" in out and f"{tag} start zray:" in out, out
        assert "is up: head 127.0.0.1, 1 worker(s)" in out
        assert sorted(setup_log.read_text().split()) == sorted([head_dir, worker_dir])
        with open(mounted) as f:
            assert f.read() == "version 1\n"
        state_file = home / "clusters.json"
        assert oct(state_file.stat().st_mode & 0o777) == "0o600"
        token = json.loads(state_file.read_text())["clusters"]["launcher-test"]["token"]
        assert not [cmd for _pid, cmd in zray_processes_under(list(hosts.temp_dirs.values()))
                    if token in cmd]

        assert launcher("get_head_ip", config, env=env).stdout.strip() == HEAD

        driver = f"PYTHONPATH={shlex.quote(ROOT)} {shlex.quote(sys.executable)} -c " \
                 f"{shlex.quote(DRIVER)}"
        result = launcher("exec", config, driver, env=env)
        assert "NODES 2" in result.stdout, result.stdout + result.stderr
        assert f"RAN head {head_dir}" in result.stdout
        assert f"RAN worker {worker_dir}" in result.stdout
        assert launcher("exec", config, "exit 3", check=False, env=env).returncode == 3

        pids_before = sorted(p for p, _ in zray_processes_under(list(hosts.temp_dirs.values())))
        again = launcher("up", "-y", config, env=env).stdout
        assert "nothing changed" in again and "start zray" not in again, again
        assert f"[{HEAD} head] up to date" in again and f"[{WORKER} worker] up to date" in again
        assert len(setup_log.read_text().split()) == 2
        assert sorted(p for p, _ in zray_processes_under(list(hosts.temp_dirs.values()))) \
            == pids_before

        # A changed file mount is copied again and the setup after it re-runs;
        # --no-restart leaves zray running.
        (mount_dir / "data.txt").write_text("version 2\n")
        third = launcher("up", "-y", "--no-restart", config, env=env).stdout
        assert "file mounts:" in third and "--no-restart: zray left running" in third, third
        with open(mounted) as f:
            assert f.read() == "version 2\n"
        assert len(setup_log.read_text().split()) == 4

        # --restart-only restarts zray everywhere (workers rejoin the new head)
        # without running setup.
        fourth = launcher("up", "-y", "--restart-only", config, env=env).stdout
        assert f"[{WORKER} worker] start zray" in fourth and "setup:" not in fourth, fourth
        assert len(setup_log.read_text().split()) == 4
        result = launcher("exec", config, driver, env=env)
        assert "NODES 2" in result.stdout and "RAN worker" in result.stdout, result.stdout

        # Detached in tmux on the head, with the cluster's environment.
        # A tmux server already runs there, started without the cluster's
        # environment: the command gets it all the same.
        launcher("exec", config, "env -u RAY_HEAD_IP tmux new-session -d -s other 'sleep 600'",
                 env=env)
        marker = tmp_path / "from-tmux"
        launcher("exec", config, "--tmux", f"echo $RAY_HEAD_IP > {marker}", env=env)
        wait_for(lambda: marker.exists() and marker.read_text().strip() == HEAD, 30,
                 "the command run in tmux on the head")
        launcher("exec", config, "tmux kill-session -t other", env=env)

        _attach_and_type(config, env, tmp_path, hosts)
        # --tmux: into the head's tmux, where the detached command ran.
        _attach_and_type(config, env, tmp_path, hosts, "--tmux")

        gone = launcher("down", "-y", config, env=env).stdout
        assert f"[{HEAD} head] stop zray" in gone and f"[{WORKER} worker] stop zray" in gone
        wait_for(lambda: not zray_processes_under(list(hosts.temp_dirs.values())), 30,
                 "no zray process left on either host")
        missing = launcher("get_head_ip", config, check=False, env=env)
        assert missing.returncode != 0 and "is not up" in missing.stderr


def _attach_and_type(config, env, tmp_path, hosts, *options):
    """`zray attach` in a terminal (a local tmux): a shell on the head answers."""
    socket_path = str(tmp_path / "local-tmux.sock")
    command = " ".join(["env", f"PYTHONPATH={shlex.quote(env['PYTHONPATH'])}",
                        f"ZRAY_HOME={shlex.quote(env['ZRAY_HOME'])}",
                        shlex.quote(sys.executable), "-m", "zray.cli", "attach",
                        *options, shlex.quote(config)])
    tmux = ["tmux", "-S", socket_path]
    try:
        subprocess.run(tmux + ["new-session", "-d", "-x", "160", "-y", "40", command],
                       check=True)

        def screen():
            done = subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True,
                                  text=True)
            return done.stdout
        typed = 'echo "attach-$((6*7)) ${TMUX:+tmux}" $SSH_CONNECTION'
        subprocess.run(tmux + ["send-keys", typed, "Enter"], check=True)
        expected = f"attach-42 {'tmux' if options else ''} {HEAD} "
        wait_for(lambda: any(line.startswith(expected) and line.endswith(f" {hosts.port}")
                             for line in screen().splitlines()), 30,
                 f"the shell on the head to answer (screen: {screen()!r})")
        subprocess.run(tmux + ["send-keys", "exit", "Enter"], check=True)
        wait_for(lambda: subprocess.run(tmux + ["has-session"], capture_output=True)
                 .returncode != 0, 30, "attach to end when the remote shell exits")
    finally:
        _kill_tmux(socket_path)


# == bad configs =====================================================================
GOOD = """\
cluster_name: demo
provider:
  type: local
  head_ip: 10.0.0.1
  worker_ips: [10.0.0.2, 10.0.0.3]
auth:
  ssh_user: ubuntu
setup_commands:
  - pip install zray
"""


@pytest.mark.parametrize("change, message", [
    (("setup_commands:", "setup_comands:"), ":8: setup_comands: unknown key"),
    (("  ssh_user: ubuntu\n", "  ssh_private_key: ~/.ssh/id\n"),
     ":7: auth.ssh_user: required key is missing"),
    (("cluster_name: demo\n", ""), ":1: cluster_name: required key is missing"),
    (("worker_ips: [10.0.0.2, 10.0.0.3]", "worker_ips: 10.0.0.2"),
     ":5: provider.worker_ips: expected a list of strings, got '10.0.0.2'"),
    (("  - pip install zray", "  - [pip, install]"),
     ":9: setup_commands[0]: expected a list of shell commands (strings), got a list"),
    (("auth:\n", "min_workers: two\nauth:\n"),
     ":6: min_workers: expected an integer >= 0, got 'two'"),
    (("auth:\n", "max_workers: 5\nauth:\n"),
     ":6: max_workers: 5 is more than the 2 hosts in provider.worker_ips"),
    (("  type: local", "  type: nimbus"), ":3: provider.type: 'nimbus' is not a provider"),
    (("auth:\n", "docker:\n  image: x\nauth:\n"), ":6: docker: running nodes in docker"),
    (("auth:\n", "cluster_name: again\nauth:\n"),
     ":6: cluster_name: given twice (first on line 1)"),
])
def test_bad_config_names_key_and_line(tmp_path, change, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert f"cluster.yaml{message}" in str(caught.value)


def test_good_config_gets_ray_defaults(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(GOOD + "idle_timeout_minutes: 5\n")      # a Ray autoscaler key: ignored
    config = load_config(str(path))
    assert config["min_workers"] == config["max_workers"] == 2
    assert config["auth"]["ssh_port"] == 22 and config["file_mounts"] == {}
    assert any("--head" in c for c in config["head_start_ray_commands"])
    assert any("$ZRAY_HEAD_IP" in c for c in config["worker_start_ray_commands"])


def test_cli_refuses_bad_config_and_inapplicable_options(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("setup_commands:", "setup_comands:"))
    result = zray("up", "-y", bad, check=False, env=env_for(extra={"ZRAY_HOME": str(tmp_path)}))
    assert result.returncode != 0
    assert "bad.yaml:8: setup_comands: unknown key" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    env = env_for(extra={"ZRAY_HOME": str(tmp_path)})
    docker = zray("exec", "--docker", good, "ls", check=False, env=env)
    assert docker.returncode != 0 and "has none" in docker.stderr and "docker" in docker.stderr
    both = zray("up", "-y", "--no-restart", "--restart-only", good, check=False, env=env)
    assert both.returncode != 0 and "pass one of them" in both.stderr
    new = zray("attach", "-N", good, check=False, env=env)
    assert new.returncode != 0 and "--new" in new.stderr and "--tmux" in new.stderr
    not_up = zray("get_head_ip", good, check=False, env=env)
    assert not_up.returncode != 0 and "is not up" in not_up.stderr
    assert not os.path.exists(tmp_path / "clusters.json")       # nothing was recorded


def test_config_confirmation_refused_changes_nothing(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = subprocess.run([sys.executable, "-m", "zray.cli", "up", str(good)], input="n\n",
                            capture_output=True, text=True, timeout=60,
                            env=env_for(extra={"ZRAY_HOME": str(tmp_path)}))
    assert result.returncode != 0 and "Create cluster 'demo'" in result.stdout
    assert "cancelled" in result.stderr
    assert not os.path.exists(tmp_path / "clusters.json")


# == the SSH layer ===================================================================
def _runner(hosts, tmp_path, key=None):
    auth = {"ssh_user": hosts.user, "ssh_private_key": key or hosts.key,
            "ssh_port": hosts.port}
    return SSHRunner(HEAD, auth, known_hosts=str(tmp_path / "known_hosts"))


def test_ssh_waits_for_a_host_that_comes_up(prepared_hosts, tmp_path):
    runner = _runner(prepared_hosts, tmp_path)
    retries = []

    def on_retry(attempt, last_words):
        retries.append(last_words[0])
        if attempt == 1:
            prepared_hosts.launch()      # the machine finishes booting
    runner.wait_ready(60, on_retry)
    assert retries and "refused" in retries[0]
    status, output = runner.run('echo "[$GREETING]" "$ZRAY_TEMP_DIR"; exit 4',
                                env={"GREETING": "it's  here"})
    assert status == 4
    assert output.split("\n")[0] == f"[it's  here] {prepared_hosts.temp_dirs[HEAD]}"
    source = tmp_path / "one-file"
    source.write_text("copied")
    target = os.path.join(prepared_hosts.directory, "deep", "dir", "renamed")
    assert runner.copy(str(source), target)[0] == 0
    with open(target) as f:
        assert f.read() == "copied"


def test_ssh_refused_key_fails_at_once_with_ssh_words(hosts, tmp_path):
    stranger = str(tmp_path / "stranger_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True)
    retries = []
    with pytest.raises(ConnectionError, match="Permission denied.*authorized_keys"):
        _runner(hosts, tmp_path, key=stranger).wait_ready(60, lambda *a: retries.append(a))
    assert retries == []


def test_hosts_of_another_cluster_are_refused(tmp_path):
    (tmp_path / "clusters.json").write_text(json.dumps({"clusters": {"other": {
        "token": "x", "nodes": {"10.0.0.3": {"kind": "worker", "address": "10.0.0.3",
                                             "done": [], "start": "abc"}}}}}))
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = zray("up", "-y", good, check=False, env=env_for(extra={"ZRAY_HOME": str(tmp_path)}))
    assert result.returncode != 0
    assert "host 10.0.0.3 belongs to cluster 'other'" in result.stderr
    state = json.loads((tmp_path / "clusters.json").read_text())["clusters"]
    assert list(state) == ["other"]        # nothing ran: demo is not recorded

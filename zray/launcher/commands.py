"""``zray up / down / exec / attach / get_head_ip``: what each one does.

Each takes the checked config (``config.load_config``), prints through
``say`` and asks through ``confirm``; ``cli.py`` turns them into click
commands. ``up`` and ``down`` hold the state-file lock (``state.py``) for
their whole run; the others only while they read it.
"""
import secrets
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor

from .provider import make_provider
from .ssh import shell_exports
from .state import LauncherState
from .updater import NodeUpdater, StepFailed

SSH_WAIT_S = 120.0


class LauncherError(RuntimeError):
    """A launcher command cannot go on; the message says why and what to do."""


def apply_overrides(config, cluster_name=None, min_workers=None, max_workers=None):
    if cluster_name:
        config["cluster_name"] = cluster_name
    if min_workers is not None:
        config["min_workers"] = min_workers
    if max_workers is not None:
        config["max_workers"] = max_workers
    if config["provider"]["type"] == "local":
        hosts = len(config["provider"]["worker_ips"])
        if config["max_workers"] > hosts:
            raise LauncherError(f"--max-workers {config['max_workers']} is more than the "
                                f"{hosts} hosts in provider.worker_ips")
    if config["min_workers"] > config["max_workers"]:
        raise LauncherError(f"min_workers ({config['min_workers']}) is more than max_workers "
                            f"({config['max_workers']})")
    return config


def node_env(head_address):
    # Ray's name and ours, for the commands every node runs.
    return {"RAY_HEAD_IP": head_address, "ZRAY_HEAD_IP": head_address}


# == up ============================================================================
def up(config, say, confirm, no_restart=False, restart_only=False, state_dir=None):
    """Create or update the cluster; return True if anything ran."""
    if no_restart and restart_only:
        raise LauncherError("--restart-only skips setup and restarts zray; --no-restart "
                            "skips the restart: pass one of them")
    name = config["cluster_name"]
    with LauncherState(state_dir) as state:
        known = state.cluster(name) is not None
        record = state.ensure_cluster(name, secrets.token_hex(16))
        provider = make_provider(config, record, state)
        head_ids = provider.nodes("head")
        workers = provider.nodes("worker")
        want = config["min_workers"]
        plan = (f"{'Update' if known else 'Create'} cluster {name!r}: head "
                f"{config['provider'].get('head_ip') or '(new)'}, {want} worker(s)")
        say(plan + ".")
        if not confirm("Continue?"):
            if not known:
                state.forget(name)
            raise LauncherError("cancelled; nothing was changed")
        try:
            changed = _up_nodes(config, state, provider, say, head_ids, workers, want,
                                no_restart, restart_only)
        finally:
            if not known and not any(n["done"] or n["start"] for n in record["nodes"].values()):
                state.forget(name)        # failed before anything ran anywhere
            state.save()
    head = provider.nodes("head")[0]
    if changed:
        say(f"Cluster {name!r} is up: head {provider.address(head)}, "
            f"{len(provider.nodes('worker'))} worker(s).")
    else:
        say(f"Cluster {name!r}: nothing changed; every node is up to date and zray was "
            f"left running (--restart-only restarts it).")
    path = shlex.quote(config["config_path"])
    say(f"  Run a command on the head:  zray exec {path} 'zray status'")
    say(f"  Open a shell there:         zray attach {path}")
    say(f"  Tear it down:               zray down {path}")
    return changed


def _up_nodes(config, state, provider, say, head_ids, workers, want, no_restart,
              restart_only):
    """Head first, then the workers side by side; return True if anything ran."""
    token = provider.record["token"]
    for node_id in head_ids:
        if not provider.is_configured(node_id):
            raise LauncherError(
                f"the cluster's head is {provider.address(node_id)}, which the config no "
                f"longer names: bring the cluster down with the config it was brought up "
                f"with (`zray down`), then run `zray up` again")
    extra = [w for w in workers if not provider.is_configured(w)] + \
        [w for w in workers if provider.is_configured(w)][config["max_workers"]:]
    for node_id in extra:        # removed from the config, or beyond max_workers
        _updater(provider, node_id, config, say, state).stop(token)
        provider.terminate(node_id)
    if not head_ids:
        head_ids = provider.create("head", 1)
    have = len(provider.nodes("worker"))
    if have < want:
        provider.create("worker", want - have)
    options = dict(no_restart=no_restart, restart_only=restart_only)
    changed, head_restarted = _up_node(provider, head_ids[0], config, say, state, token,
                                       head_restarted=False, **options)
    workers = provider.nodes("worker")
    failures = []
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(workers)))) as pool:
        futures = [pool.submit(_up_node, provider, node_id, config, say, state, token,
                               head_restarted=head_restarted, **options)
                   for node_id in workers]
        for future in futures:
            try:
                changed = future.result()[0] or changed
            except (StepFailed, ConnectionError) as exc:
                failures.append(str(exc))
    if failures:
        raise StepFailed("; ".join(failures))
    return changed or bool(extra)


def _up_node(provider, node_id, config, say, state, token, head_restarted, no_restart,
             restart_only):
    """Set up and (re)start one node; return (anything ran, zray was restarted)."""
    updater = _updater(provider, node_id, config, say, state)
    updater.wait_ready(SSH_WAIT_S)
    ran = updater.setup(restart_only)
    is_new = updater.node.get("start") is None
    if not (restart_only or ran or is_new or updater.needs_start() or head_restarted):
        say(f"{updater.tag} up to date")
        return False, False
    if no_restart and not is_new:
        say(f"{updater.tag} --no-restart: zray left running")
        return bool(ran), False
    updater.start(token)
    return True, True


def _updater(provider, node_id, config, say, state):
    kind = provider.record["nodes"][node_id]["kind"]
    head = provider.nodes("head")
    env = node_env(provider.address(head[0])) if head else {}
    return NodeUpdater(provider, node_id, kind, config, env, say, state.save)


# == down ===========================================================================
def down(config, say, confirm, workers_only=False, state_dir=None):
    name = config["cluster_name"]
    with LauncherState(state_dir) as state:
        record = state.cluster(name)
        if record is None:
            say(f"Cluster {name!r} is not up (nothing recorded in {state.path}); nothing to do.")
            return
        provider = make_provider(config, record, state)
        targets = provider.nodes("worker") + ([] if workers_only else provider.nodes("head"))
        hosts = ", ".join(provider.address(n) for n in targets) or "no nodes"
        what = "its workers" if workers_only else "the whole cluster"
        if not confirm(f"Stop zray on {hosts} and forget {what} of {name!r}. Continue?"):
            raise LauncherError("cancelled; nothing was changed")
        try:
            for node_id in targets:
                _updater(provider, node_id, config, say, state).stop(record["token"])
                provider.terminate(node_id)
            if not workers_only:
                state.forget(name)
        finally:
            state.save()
    say(f"Cluster {name!r}: stopped zray on {len(targets)} node(s)"
        f"{'; the head keeps running' if workers_only else ' and forgot the cluster'}.")


# == exec, attach, get_head_ip ========================================================
def head_runner(config, say, confirm, start=False, state_dir=None):
    """The head's SSH runner and address; with ``start``, bring the cluster up first."""
    name = config["cluster_name"]
    with LauncherState(state_dir) as state:
        record = state.cluster(name)
        provider = make_provider(config, record, state) if record else None
        heads = provider.nodes("head") if provider else []
    if not heads:
        if not start:
            raise LauncherError(f"cluster {name!r} is not up: run `zray up "
                                f"{shlex.quote(config['config_path'])}` first, or pass --start")
        up(config, say, confirm=lambda _question: True, state_dir=state_dir)
        return head_runner(config, say, confirm, start=False, state_dir=state_dir)
    return provider.runner(heads[0]), provider.address(heads[0])


def get_head_ip(config, state_dir=None):
    _runner, address = head_runner(config, say=None, confirm=None, state_dir=state_dir)
    return address


def exec_on_head(config, command, say, start=False, stop=False, tmux=False, screen=False,
                 port_forward=(), state_dir=None):
    """Run ``command`` on the head; return its exit status."""
    if tmux and screen:
        raise LauncherError("--tmux and --screen both run the command detached: pass one")
    runner, address = head_runner(config, say, None, start=start, state_dir=state_dir)
    env = node_env(address)
    if tmux or screen:
        session = f"zray-exec-{secrets.token_hex(3)}"
        # The exports go inside: a tmux server already running would not pass
        # this shell's environment on to the new session.
        inner = "bash --login -c " + shlex.quote(shell_exports(env) + command + "; exec bash")
        detached = (f"tmux new-session -d -s {session} {shlex.quote(inner)}" if tmux
                    else f"screen -dmS {session} {inner}")
        status, output = runner.run(detached, env=env)
        if status != 0:
            raise LauncherError(f"could not start {'tmux' if tmux else 'screen'} on {address} "
                                f"(status {status}): {output.strip()}")
        how = (f"zray attach {shlex.quote(config['config_path'])} --tmux" if tmux
               else f"ssh there and run `screen -r {session}`")
        say(f"Running `{command}` detached on {address} in {'tmux' if tmux else 'screen'} "
            f"session {session}; see it with: {how}")
    else:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
        status = runner.run_interactive(command, env=env, tty=tty, port_forward=port_forward)
    if stop:
        down(config, say, confirm=lambda _question: True, state_dir=state_dir)
    return status


def attach(config, say, start=False, tmux=False, new=False, state_dir=None):
    if new and not tmux:
        raise LauncherError("--new opens a new tmux session: use it with --tmux")
    runner, _address = head_runner(config, say, None, start=start, state_dir=state_dir)
    command = None
    if tmux:
        command = "tmux new-session" if new else "tmux attach || tmux new-session"
    return runner.run_interactive(command, tty=True)


def failure_message(exc):
    if isinstance(exc, StepFailed):
        return f"{exc}. Fix it and run `zray up` again: it resumes from the failed step."
    return str(exc)

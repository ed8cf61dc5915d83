"""``zray start`` and ``zray stop``: the daemons of this machine (kv service,
node, dashboard), started detached and recorded under the temp root so that
``zray stop`` finds them; ``add_commands`` attaches them to the ``zray`` group."""
import json
import os
import shlex
import signal
import socket
import time

import click
import psutil

from .cli_options import TOKEN_ENV, temp_root

OWNER_PID_ENV = "ZRAY_OWNER_PID"     # `zray start --owner-pid`, for test harnesses


# Options of `ray start` in the seed that have no meaning here: accepted so
# that existing scripts run, and ignored.
_IGNORED_START_OPTIONS = [
    ("--num-redis-shards", False), ("--redis-max-clients", False),
    ("--redis-shard-ports", False), ("--object-manager-port", False),
    ("--node-manager-port", False), ("--redis-max-memory", False),
    ("--autoscaling-config", False), ("--plasma-store-socket-name", False),
    ("--raylet-socket-name", False), ("--java-worker-options", False),
    ("--internal-config", False), ("--include-webui", True),
    ("--no-redirect-worker-output", True), ("--include-java", True),
    ("--load-code-from-local", True),
]


def _ignored_options(command):
    for name, is_flag in _IGNORED_START_OPTIONS:
        command = click.option(name, is_flag=is_flag, hidden=True, expose_value=False)(command)
    return command


def _parse_resources(text):
    if not text:
        return {}
    try:
        resources = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}); write it like "
                                 f"--resources='{{\"CustomResource\": 2}}'") from None
    if not isinstance(resources, dict):
        raise click.BadParameter("must be a JSON object of name -> quantity, e.g. "
                                 "'{\"CustomResource\": 2}'")
    for name, value in resources.items():
        if name in ("CPU", "GPU"):
            raise click.BadParameter(f"pass {name} with --num-{name.lower()}s, not in --resources")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise click.BadParameter(f"resource {name!r} must be a number >= 0, got {value!r}")
    return resources


def _check_port_free(host, port):
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As the kv's own listener does: a port left in TIME_WAIT by the previous
    # head (`zray stop; zray start --head`) is free; one with a listener is not.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror}. Is a zray cluster already "
            f"running there (`zray status`, `zray stop`)? Or choose another --port") from None
    finally:
        probe.close()


@click.command()
@click.option("--head", is_flag=True, help="start a new cluster: the kv service and a node")
@click.option("--address", "--redis-address", "address", default=None, metavar="HOST:PORT",
              help="join the cluster whose head is at HOST:PORT")
@click.option("--port", "--redis-port", "port", type=click.IntRange(0, 65535), default=None,
              help="port of the head's kv service (default 6379; 0 = any free port)")
@click.option("--num-cpus", type=click.FloatRange(min=0), default=None,
              help="CPUs of this node (default: all cores)")
@click.option("--num-gpus", type=click.FloatRange(min=0), default=None,
              help="GPUs of this node (default: those detected)")
@click.option("--resources", default=None, metavar="JSON",
              help="custom resources of this node, e.g. '{\"CustomResource\": 2}'")
@click.option("--object-store-memory", type=click.IntRange(min=1), default=None,
              help="bytes of shared memory for objects (default: 30% of RAM, at most 20 GB)")
@click.option("--node-ip-address", default=None,
              help="address to listen on (head default 127.0.0.1: pass this machine's IP "
                   "to let other machines join)")
@click.option("--temp-dir", default=None,
              help="root directory for sessions, logs and process records")
@click.option("--redis-password", "--password", "password", default="", envvar=TOKEN_ENV,
              help="the cluster token drivers and nodes must hold to connect (default: "
                   "$ZRAY_CLUSTER_TOKEN; else for --head a random one, recorded 0600 on this "
                   "machine and printed; for --address the one recorded here)")
@click.option("--plasma-directory", default=None,
              help="directory for object files (default /dev/shm)")
@click.option("--huge-pages", is_flag=True, help="plasma-directory is a hugetlbfs mount")
@click.option("--max-workers", type=click.IntRange(min=1), default=None, hidden=True)
@click.option("--include-dashboard", type=click.BOOL, default=True, show_default=True,
              help="serve the web dashboard from the head (ray.get_webui_url() gives its URL)")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="address the dashboard listens on (0.0.0.0: every interface)")
@click.option("--dashboard-port", type=click.IntRange(0, 65535), default=0,
              help="port of the dashboard (default: any free port)")
@click.option("--block", is_flag=True,
              help="stay in the foreground; Ctrl-C stops what this command started")
@click.option("--owner-pid", type=click.IntRange(min=1), default=None, envvar=OWNER_PID_ENV,
              help="stop the daemons this command starts when process PID exits, however "
                   "it ends (a test harness, a job script); default: they run until "
                   f"`zray stop` (also ${OWNER_PID_ENV})")
@_ignored_options
def start(head, address, port, num_cpus, num_gpus, resources, object_store_memory,
          node_ip_address, temp_dir, password, plasma_directory, huge_pages, max_workers,
          include_dashboard, dashboard_host, dashboard_port, block, owner_pid):
    """Start a cluster's head node (--head), or join a node to one (--address)."""
    from . import session
    from .cluster import (current_token, kv_call, local_ip_towards, read_cluster_file,
                          resolve_address, write_cluster_file)
    if head and address:
        raise click.UsageError("--head starts a new cluster and --address joins one: pass one")
    if not head and not address:
        raise click.UsageError("pass --head to start a cluster, or --address HEAD_IP:PORT to "
                               "join one (the address `zray start --head` printed)")
    if port is not None and not head:
        raise click.UsageError("--port is the head's kv port; a joining node takes --address")
    if owner_pid is not None and not psutil.pid_exists(owner_pid):
        raise click.BadParameter(f"no process {owner_pid} is running: pass the pid of a "
                                 f"live process (the daemons stop when it exits)",
                                 param_hint="--owner-pid")
    resources = _parse_resources(resources)
    root = temp_root(temp_dir)
    try:
        session.check_temp_root(root)
        if not head:
            password = current_token(address, password, root)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    plasma_dir = plasma_directory or "/dev/shm"
    if not os.path.isdir(plasma_dir):
        raise click.BadParameter(f"{plasma_dir!r} is not a directory",
                                 param_hint="--plasma-directory")
    if huge_pages and not plasma_directory:
        raise click.UsageError("--huge-pages needs --plasma-directory on a hugetlbfs mount")
    gpu_ids = session.detect_gpus()
    if num_gpus is None:
        num_gpus = len(gpu_ids)
    elif len(gpu_ids) < num_gpus:
        gpu_ids = list(range(int(num_gpus)))
    if num_cpus is None:
        num_cpus = psutil.cpu_count()
    common = dict(num_cpus=num_cpus, num_gpus=num_gpus, gpu_ids=gpu_ids, resources=resources,
                  object_store_memory=object_store_memory or session.default_object_store_memory(),
                  plasma_dir=plasma_dir, temp_dir=root, password=password,
                  max_workers=max_workers, owner_pid=owner_pid)
    try:
        if head:
            ip = node_ip_address or "127.0.0.1"
            port = 6379 if port is None else port
            if port:
                _check_port_free(ip, port)
            daemons = session.start_daemons(head=True, node_ip_address=ip, kv_port=port,
                                            include_dashboard=include_dashboard,
                                            dashboard_host=dashboard_host,
                                            dashboard_port=dashboard_port, **common)
            kv_address = daemons.info["kv_address"]
            address = kv_address.split("://", 1)[1]
        else:
            address, kv_address = resolve_address(address)
            kv_info = kv_call(kv_address, password, "info", address=address)
            ip = node_ip_address or local_ip_towards(address.rpartition(":")[0])
            daemons = session.start_daemons(head=False, kv_address=kv_address,
                                            kv_pub_address=kv_info["pub_address"],
                                            node_ip_address=ip, **common)
    except (ConnectionError, RuntimeError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    session.record_daemons(root, daemons)
    if head or read_cluster_file(root) is None:
        write_cluster_file(root, {"address": address, "kv_address": kv_address,
                                  "temp_dir": root, "token": daemons.token})
    _print_started(head, address, daemons.info, root, temp_dir, daemons.token)
    if block:
        _block(daemons, root)


def _print_started(head, address, info, root, temp_dir, token):
    from .cluster import cluster_file
    from .session import default_temp_root
    pw_arg = f" --redis-password={shlex.quote(token)}"
    pw_kw = f", redis_password={token!r}"
    td_arg = f" --temp-dir={shlex.quote(root)}" if temp_dir and root != default_temp_root() else ""
    what = "head node (kv service + node daemon)" if head else "node"
    click.echo(f"Started a zray {what}: node {info['node_id']} at {info['node_tcp_address']}.")
    click.echo(f"  Cluster address:   {address}")
    click.echo(f"  Cluster token:     {token}   (the one secret: kept 0600 in "
               f"{cluster_file(root)}, where commands on this machine find it)")
    click.echo(f"  Connect a driver:  ray.init(address=\"{address}\"{pw_kw})"
               f"   (or address=\"auto\" on this machine)")
    click.echo(f"  Add a node:        zray start --address={address}{pw_arg}")
    click.echo(f"  Cluster status:    zray status --address={address}{pw_arg}")
    click.echo(f"  Stop this machine: zray stop{td_arg}")
    if info.get("webui_url"):
        click.echo(f"  Dashboard:         {info['webui_url']}")
    click.echo(f"  Logs:              {info['session_dir']}/logs")


def _block(daemons, root):
    from . import session
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    click.echo("--block: running in the foreground; Ctrl-C stops what this command started.")
    failed = None
    try:
        while failed is None:
            for name, process in (("kv service", daemons.kv_process),
                                  ("node daemon", daemons.node_process)):
                if process is not None and process.poll() is not None:
                    failed = f"the {name} (pid {process.pid}) exited with code {process.returncode}"
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        pids = {p.pid for p in (daemons.kv_process, daemons.node_process,
                                daemons.dashboard_process) if p is not None}
        daemons.stop()
        for record in session.recorded_daemons(root):
            if record["pid"] in pids:
                try:
                    os.unlink(record["file"])
                except OSError:
                    pass
    if failed:
        raise click.ClickException(f"{failed}; see the logs in {daemons.session_dir}/logs")


@click.command()
@click.option("--temp-dir", default=None, help="the --temp-dir the processes were started with")
def stop(temp_dir):
    """Stop every zray process `zray start` started on this machine."""
    from . import session
    from .cluster import cluster_file
    root = temp_root(temp_dir)
    try:
        stopped = session.stop_recorded(root)
    except OSError as exc:      # a temp root that is not ours: touch nothing in it
        raise click.ClickException(str(exc)) from None
    if not session.recorded_daemons(root):
        try:
            os.unlink(cluster_file(root))
        except OSError:
            pass
    if stopped:
        roles = [r["role"] for r in stopped]
        dashboards = f", {roles.count('dashboard')} dashboard" if "dashboard" in roles else ""
        click.echo(f"Stopped {len(stopped)} zray process{'es' if len(stopped) != 1 else ''} "
                   f"({roles.count('node')} node, {roles.count('kv')} kv service{dashboards}) "
                   f"and removed their sockets and shared memory.")
    else:
        click.echo(f"No zray processes started from {root} were running.")


def add_commands(group):
    group.add_command(start)
    group.add_command(stop)

"""The ``zray`` command line.

Each subcommand is one function; the cluster ones (start, stop, status,
timeline) only talk to the daemons through ``session``/``cluster``, so the
command line itself holds no state.
"""
import json
import os
import shlex
import signal
import socket
import tempfile
import time

import click
import psutil

from . import __version__
from .transport.auth import TOKEN_ENV as _TOKEN_ENV
from .launcher.cli import add_commands as _add_launcher_commands

OWNER_PID_ENV = "ZRAY_OWNER_PID"     # `zray start --owner-pid`, for test harnesses


@click.group()
@click.version_option(__version__, prog_name="zray")
def main():
    """zray: the Ray API on a broker-less ZeroMQ runtime."""


_add_launcher_commands(main)     # up, down, exec, attach, get_head_ip: zray/launcher/


@main.command()
@click.option("--address", default="auto", show_default=True,
              help="cluster address HOST:PORT (the head's kv service), or 'auto' for the "
                   "cluster started on this machine")
@click.option("--redis-password", "password", default="", envvar=_TOKEN_ENV,
              help="the cluster's token (default: $ZRAY_CLUSTER_TOKEN, or the one "
                   "recorded on this machine)")
def memory(address, password):
    """List the objects in the object store: id, size, where, who holds them."""
    from .cluster import current_token, find_cluster
    from .plasma.report import memory_summary
    from .exceptions import RayError
    try:
        password = current_token(address, password)
        node_address, _info = find_cluster(address, password)
        click.echo(memory_summary(node_address, password))
    except (ConnectionError, OSError, ValueError, RayError) as exc:
        raise click.ClickException(str(exc)) from None


# == cluster: start / stop / status / timeline ===================================
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


def _temp_root(temp_dir):
    from .session import default_temp_root
    return os.path.abspath(os.path.expanduser(temp_dir)) if temp_dir else default_temp_root()


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


@main.command()
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
@click.option("--redis-password", "--password", "password", default="", envvar=_TOKEN_ENV,
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
    root = _temp_root(temp_dir)
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
                  plasma_dir=plasma_dir, temp_dir=root, password=password, detach=True,
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


@main.command()
@click.option("--temp-dir", default=None, help="the --temp-dir the processes were started with")
def stop(temp_dir):
    """Stop every zray process `zray start` started on this machine."""
    from . import session
    from .cluster import cluster_file
    root = _temp_root(temp_dir)
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


def _cluster_options(command):
    command = click.option("--temp-dir", default=None,
                           help="the --temp-dir the cluster was started with "
                                "(to find it with 'auto')")(command)
    command = click.option("--redis-password", "--password", "password", default="",
                           envvar=_TOKEN_ENV,
                           help="the cluster's token (default: $ZRAY_CLUSTER_TOKEN, or the one "
                                "recorded on this machine by `zray start`)")(command)
    command = click.option("--address", "--redis-address", "address", default="auto",
                           show_default=True,
                           help="cluster address HOST:PORT, or 'auto' for the one started on "
                                "this machine")(command)
    return command


def _node_statuses(address, password, temp_dir):
    from .cluster import NodeClient, list_nodes
    address, kv_address, nodes = list_nodes(address, password, temp_dir)
    rows = []
    for node_id, info in sorted(nodes.items(), key=lambda item: not item[1].get("head")):
        row = {"node_id": node_id, "info": info}
        try:
            client = NodeClient(info.get("tcp_address") or info["address"], password)
            try:
                row["status"] = client.request("status")
            finally:
                client.close()
        except Exception as exc:     # one unreachable node must not hide the others
            row["error"] = str(exc)
        rows.append(row)
    return address, kv_address, rows


@main.command()
@_cluster_options
@click.option("--json", "as_json", is_flag=True, help="print the raw status as JSON")
def status(address, password, temp_dir, as_json):
    """Nodes, resources, work and object store of a running cluster."""
    from .cluster import current_token
    try:
        password = current_token(address, password, temp_dir)
        address, _kv, rows = _node_statuses(address, password, temp_dir)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"address": address, "nodes": rows}, indent=1, default=str))
        return
    click.echo(_format_status(address, rows))


def _format_status(address, rows):
    totals, free, store = {}, {}, {"shm_bytes": 0, "spilled_bytes": 0, "capacity_bytes": 0,
                                   "objects": 0}
    running = queued = 0
    infeasible = []
    for row in rows:
        for name, value in row["info"].get("resources", {}).items():
            totals[name] = totals.get(name, 0) + value
        status = row.get("status")
        if status is None:
            continue
        for name, value in status["available"].items():
            free[name] = free.get(name, 0) + value
        running += status["running"]
        queued += status["queued"]
        infeasible += [dict(t, node=row["node_id"]) for t in status["infeasible"]]
        for key in store:
            store[key] += status["store"].get(key, 0)
    lines = [f"zray cluster at {address}: {len(rows)} node{'s' if len(rows) != 1 else ''}",
             "Resources (free / total):"]
    lines += [f"  {name:<16} {_num(free.get(name, 0))} / {_num(total)}"
              for name, total in sorted(totals.items())]
    lines.append(f"Work: {running} running, {queued} queued, {len(infeasible)} infeasible")
    lines.append(f"Object store: {_size(store['shm_bytes'])} in memory, "
                 f"{_size(store['spilled_bytes'])} spilled, {store['objects']} objects; "
                 f"capacity {_size(store['capacity_bytes'])}")
    for row in rows:
        info = row["info"]
        lines.append("")
        lines.append(f"Node {row['node_id']}{' (head)' if info.get('head') else ''}  "
                     f"{info.get('hostname', '?')}  {info.get('tcp_address') or info['address']}")
        if "error" in row:
            lines.append(f"  unreachable: {row['error']}")
            continue
        status = row["status"]
        resources = ", ".join(f"{name} {_num(status['available'].get(name, 0))}/{_num(total)}"
                              for name, total in sorted(info.get("resources", {}).items()))
        lines.append(f"  resources  {resources or 'none'}  (free/total)")
        lines.append(f"  work       {status['running']} running, {status['queued']} queued, "
                     f"{len(status['infeasible'])} infeasible; {status['workers']} workers")
        direct = status.get("direct")
        if direct:      # counted in the work above; the node hears of it from its clients
            lines.append(f"  direct     {direct['running']} running, {direct['queued']} queued "
                         f"on workers, {direct['waiting_for_lease']} waiting for a leased "
                         f"worker; {direct['finished_tasks']} leased tasks and "
                         f"{direct['finished_calls']} actor calls finished")
        node_store = status["store"]
        lines.append(f"  store      {_size(node_store.get('shm_bytes', 0))} in memory, "
                     f"{_size(node_store.get('spilled_bytes', 0))} spilled, "
                     f"{node_store.get('objects', 0)} objects; capacity "
                     f"{_size(node_store.get('capacity_bytes', 0))}")
        peers = status.get("peers")
        if peers:
            lines.append(f"  transfers  {peers['pulled_objects']} objects "
                         f"({_size(peers['pulled_bytes'])}) pulled from other nodes, "
                         f"{_size(peers['sent_bytes'])} sent; {peers['forwarded_running']} "
                         f"forwarded tasks running elsewhere")
    if infeasible:
        lines.append("")
        lines.append("Infeasible (no node has the resources; they wait for one to join):")
        lines += [f"  {t['name']} needs {t['demand']} (queued on node {t['node']})"
                  for t in infeasible]
    return "\n".join(lines)


def _num(value):
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _size(nbytes):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


@main.command()
@_cluster_options
@click.option("--output", "-o", default=None, metavar="FILE",
              help="where to write the trace (default: a new file in the temp directory)")
def timeline(address, password, temp_dir, output):
    """Write the cluster's task timeline as chrome-tracing JSON; print its path."""
    from .cluster import current_token, kv_call
    try:
        password = current_token(address, password, temp_dir)
        address, kv_address, rows = _node_statuses(address, password, temp_dir)
        # Nodes batch events for a moment: have them send what they hold.
        for row in rows:
            if "error" not in row:
                held = _flush_node_events(row["info"], password)
                if held:
                    kv_call(kv_address, password, "add_events", held, address=address)
        stored = kv_call(kv_address, password, "scan", "event:", address=address)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    events = [stored[key] for key in sorted(stored)]
    if output is None:
        output = os.path.join(tempfile.gettempdir(),
                              f"zray-timeline-{time.strftime('%Y-%m-%d_%H-%M-%S')}.json")
    with open(output, "w") as out:
        json.dump(events, out)
    click.echo(f"Wrote {len(events)} events; open the file in chrome://tracing or "
               f"https://ui.perfetto.dev:", err=True)
    click.echo(output)


def _flush_node_events(info, password):
    from .cluster import NodeClient
    try:
        client = NodeClient(info.get("tcp_address") or info["address"], password)
        try:
            return client.request("flush_events")     # its batch: the caller stores it
        finally:
            client.close()
    except Exception:
        return None


@main.command()
@click.option("--temp-dir", default=None, help="the --temp-dir the cluster was started with")
@click.option("--redis-password", "--password", "password", default="",
              help="the cluster's token (to ask nodes what their workers run; default: the "
                   "one `zray start` recorded)")
def stack(temp_dir, password):
    """Print the Python stack of every thread of every zray process on this machine."""
    from .cluster import current_token
    from .stack_report import dump_all, format_report, registered_processes
    try:
        password = current_token("auto", password, temp_dir)
    except OSError:
        password = ""       # the stacks still print; workers' tasks come from their frames
    processes = registered_processes(_temp_root(temp_dir))
    tasks = _running_tasks_by_pid({os.path.dirname(os.path.dirname(path))
                                   for _pid, _role, path in processes}, password)
    click.echo(format_report(processes, dump_all(processes), tasks))


def _running_tasks_by_pid(session_dirs, password):
    """{worker pid: 'task f' / 'actor C: C.method'} from the nodes of these sessions."""
    from .cluster import NodeClient
    described = {}
    for session_dir in session_dirs:
        socket_path = os.path.join(session_dir, "node.sock")
        if not os.path.exists(socket_path):
            continue
        try:
            client = NodeClient(f"ipc://{socket_path}", password, timeout_s=2.0)
            try:
                view = client.request("introspect", 0)
            finally:
                client.close()
        except Exception:
            continue        # the stacks still print; the frames then name the function
        for worker in view["workers"]:
            running = ", ".join(worker["running"])
            if worker["actor"]:
                described[worker["pid"]] = f"actor {worker['actor']}" + (
                    f": {running}" if running else " (idle)")
            elif running:
                described[worker["pid"]] = f"task {running}"
    return described


if __name__ == "__main__":
    main()


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def microbenchmark(ctx):
    """Run the benchmark suite (same options as `python -m benchmarks`)."""
    try:
        from benchmarks.cli import main as run_benchmarks
    except ImportError:
        raise click.ClickException(
            "the benchmark suite ships with the zray source tree: run this from a checkout "
            "(the directory holding benchmarks/)")
    raise SystemExit(run_benchmarks(list(ctx.args)))

"""``zray status``, ``zray timeline`` and ``zray stack``: reading a running
cluster (its nodes' status, the kv's events, the stacks of this machine's
processes); ``add_commands`` attaches them to the ``zray`` group."""
import json
import os
import tempfile
import time

import click

from .cli_options import cluster_options, temp_root


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


@click.command()
@cluster_options
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


@click.command()
@cluster_options
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


@click.command()
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
    processes = registered_processes(temp_root(temp_dir))
    tasks = _running_tasks_by_pid({os.path.dirname(os.path.dirname(path))
                                   for _pid, _role, path in processes}, password)
    click.echo(format_report(processes, dump_all(processes), tasks))


def _running_tasks_by_pid(session_dirs, password):
    """{worker pid: 'task f' / 'actor C: C.method'} from the nodes of these sessions."""
    from .cluster import NodeClient
    from .transport.socket_dir import socket_dir
    described = {}
    for session_dir in session_dirs:
        socket_path = os.path.join(socket_dir(session_dir), "node.sock")
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


def add_commands(group):
    for command in (status, timeline, stack):
        group.add_command(command)

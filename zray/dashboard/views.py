"""The data of each dashboard page, from one cluster snapshot (``collect.py``).

Pure functions: snapshot in, JSON-ready dict out; no sockets, no clock
(the snapshot carries its time). The JSON API serves exactly these.
"""
LATEST_TASKS = 50
LATEST_ERRORS = 20
TIMELINE_WINDOW_S = 60.0


def _live_views(snapshot):
    for node in snapshot["nodes"]:
        if node.get("view") is not None:
            yield node["node_id"], node["view"], node.get("status") or {}


def cluster(snapshot):
    nodes, totals = [], {}
    for node in snapshot["nodes"]:
        info, status = node["info"], node.get("status")
        row = {"node_id": node["node_id"],
               "address": f"{node['ip']}:{node['port']}" if node["port"] else node["ip"],
               "endpoint": info.get("tcp_address") or info.get("address"),
               "hostname": info.get("hostname"),
               "head": bool(info.get("head")) or len(snapshot["nodes"]) == 1,
               "alive": node["alive"] and "error" not in node, "error": node.get("error"),
               "resources": [], "store": None, "workers": None}
        if status is not None:
            available = status.get("available", {})
            for name, total in sorted(info.get("resources", {}).items()):
                used = max(0.0, total - available.get(name, 0))
                row["resources"].append({"name": name, "used": used, "total": total})
                slot = totals.setdefault(name, {"name": name, "used": 0.0, "total": 0.0})
                slot["used"] += used
                slot["total"] += total
            store = status.get("store", {})
            row["store"] = {"used": store.get("shm_bytes", 0),
                            "capacity": store.get("capacity_bytes", 0),
                            "objects": store.get("objects", 0),
                            "spilled": store.get("spilled_bytes", 0)}
            workers = (node.get("view") or {}).get("workers", [])
            row["workers"] = {"total": len(workers),
                              "busy": sum(1 for w in workers if w["running"] and not w["actor"]),
                              "actors": sum(1 for w in workers if w["actor"]),
                              "idle": sum(1 for w in workers if w["state"] == "idle")}
            row["running"], row["queued"] = status.get("running", 0), status.get("queued", 0)
        nodes.append(row)
    return {"time": snapshot["time"], "nodes": nodes,
            "totals": [totals[name] for name in sorted(totals)]}


def _failed_index(errors):
    by_pid = {}
    for error in errors:
        by_pid.setdefault(error.get("pid"), []).append(error)
    return by_pid


def _span_failed(span, by_pid):
    start_s = span["ts"] / 1e6
    end_s = start_s + span.get("dur", 0) / 1e6
    return any(e.get("name") == span["name"] and start_s - 1 <= e.get("time", 0) <= end_s + 5
               for e in by_pid.get(span.get("pid"), ()))


def tasks(snapshot):
    now, worker_nodes = snapshot["time"], snapshot["worker_nodes"]
    counts = {"queued": 0, "running": 0, "blocked": 0, "infeasible": 0,
              "done": snapshot["tasks_done"],
              "failed": sum(1 for e in snapshot["errors"] if e.get("type") == "task"),
              # Of those, work that skipped the node (leased workers, direct actor calls).
              "direct_running": 0, "direct_queued": 0, "direct_finished": 0}
    running = []
    for node_id, view, status in _live_views(snapshot):
        counts["queued"] += status.get("queued", 0)
        direct = status.get("direct") or {}
        counts["direct_running"] += direct.get("running", 0)
        counts["direct_queued"] += direct.get("queued", 0) + direct.get("waiting_for_lease", 0)
        counts["direct_finished"] += (direct.get("finished_tasks", 0)
                                      + direct.get("finished_calls", 0))
        counts["infeasible"] += len(status.get("infeasible", ()))
        for task in view["running"]:
            counts["blocked" if task["blocked"] else "running"] += 1
            started = snapshot["first_seen"].get(task["task_id"], now)
            running.append({"name": task["name"], "node_id": node_id, "pid": task["pid"],
                            "state": "blocked" if task["blocked"] else "running",
                            "duration_s": max(0.0, now - started), "ended_ago_s": None})
    by_pid = _failed_index(snapshot["errors"])
    finished = []
    for span in reversed(snapshot["spans"]):
        if span.get("cat") != "task":
            continue
        end_s = (span["ts"] + span.get("dur", 0)) / 1e6
        finished.append({"name": span["name"], "node_id": worker_nodes.get(span.get("pid")),
                         "pid": span.get("pid"),
                         "state": "failed" if _span_failed(span, by_pid) else "finished",
                         "duration_s": span.get("dur", 0) / 1e6,
                         "ended_ago_s": max(0.0, now - end_s)})
        if len(finished) + len(running) >= LATEST_TASKS:
            break
    errors = [{"name": e.get("name"), "pid": e.get("pid"), "node_id": e.get("node_id"),
               "time": e.get("time"), "message": e.get("message", "")}
              for e in reversed(snapshot["errors"][-LATEST_ERRORS:])]
    return {"time": now, "counts": counts, "latest": running + finished, "errors": errors}


def actors(snapshot):
    rows = []
    for node_id, view, _status in _live_views(snapshot):
        rows += [dict(actor, node_id=node_id) for actor in view["actors"]]
    order = {"alive": 0, "pending": 1, "restarting": 2, "dead": 3}
    rows.sort(key=lambda a: (order.get(a["state"], 9), a["class"] or ""))
    return {"time": snapshot["time"], "actors": rows}


def objects(snapshot, top=10):
    totals = {"objects": 0, "bytes": 0, "spilled_bytes": 0, "spilled_objects": 0,
              "capacity": 0, "inline_bytes": 0}
    per_node, biggest = [], []
    for node_id, view, status in _live_views(snapshot):
        store = status.get("store", {})
        row = {"node_id": node_id, "objects": store.get("objects", 0),
               "bytes": store.get("shm_bytes", 0), "spilled_bytes": store.get("spilled_bytes", 0),
               "spilled_objects": store.get("spilled_objects", 0),
               "capacity": store.get("capacity_bytes", 0),
               "inline_bytes": store.get("inline_bytes", 0)}
        per_node.append(row)
        for key in totals:
            totals[key] += row[key]
        biggest += [dict(obj, node_id=node_id) for obj in view["biggest"]]
    biggest.sort(key=lambda o: o["size"], reverse=True)
    return {"time": snapshot["time"], "totals": totals, "nodes": per_node,
            "biggest": biggest[:top]}


def timeline(snapshot, window_s=TIMELINE_WINDOW_S):
    """Spans that ended within the window, and running tasks as open bars;
    times in seconds before the snapshot."""
    now, worker_nodes = snapshot["time"], snapshot["worker_nodes"]
    since = now - window_s
    by_pid = _failed_index(snapshot["errors"])
    spans = []
    for span in snapshot["spans"]:
        start_s = span["ts"] / 1e6
        end_s = start_s + span.get("dur", 0) / 1e6
        if end_s < since:
            continue
        spans.append({"name": span["name"], "cat": span.get("cat"), "pid": span.get("pid"),
                      "start_s": start_s - now, "end_s": end_s - now, "open": False,
                      "failed": span.get("cat") == "task" and _span_failed(span, by_pid)})
    for node_id, view, _status in _live_views(snapshot):
        for task in view["running"]:
            started = snapshot["first_seen"].get(task["task_id"], now)
            spans.append({"name": task["name"], "cat": "task", "pid": task["pid"],
                          "start_s": max(started, since) - now, "end_s": 0.0, "open": True,
                          "failed": False})
    pids = sorted({s["pid"] for s in spans if s["pid"] is not None})
    return {"time": now, "window_s": window_s, "spans": spans,
            "workers": [{"pid": pid, "node_id": worker_nodes.get(pid)} for pid in pids]}


def workers(snapshot):
    """Live workers, for the log page's list."""
    rows = []
    for node_id, view, _status in _live_views(snapshot):
        rows += [{"pid": w["pid"], "node_id": node_id, "state": w["state"],
                  "actor": w["actor"], "running": w["running"], "leased": w.get("leased", False),
                  "queued": w.get("queued", 0),
                  "finished": w.get("finished_tasks", 0) + w.get("finished_calls", 0)}
                 for w in view["workers"]]
    # A worker still starting has no pid yet: it sorts last on its node.
    rows.sort(key=lambda w: (w["node_id"], w["pid"] is None, w["pid"] or 0))
    return {"time": snapshot["time"], "workers": rows}

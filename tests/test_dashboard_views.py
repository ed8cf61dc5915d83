"""The dashboard's page data from a snapshot, without a cluster (views.py is pure)."""
from zray.dashboard import views

NOW = 1_000_000.0


def snapshot(spans=(), errors=(), running=()):
    view = {"workers": [{"pid": 7, "state": "busy", "blocked": False, "actor": None,
                         "running": ["slow"]}],
            "actors": [], "running": list(running), "biggest": []}
    status = {"available": {"CPU": 1.5}, "store": {"shm_bytes": 10, "capacity_bytes": 100},
              "running": len(running), "queued": 3, "infeasible": []}
    node = {"node_id": "n1", "info": {"resources": {"CPU": 2}, "address": "ipc:///x"},
            "alive": True, "ip": "10.0.0.1", "port": 0, "status": status, "view": view}
    return {"time": NOW, "nodes": [node], "errors": list(errors), "spans": list(spans),
            "tasks_done": len(spans), "worker_nodes": {7: "n1"},
            "first_seen": {"ab": NOW - 4}}


def span(name, start_s_ago, dur_s, pid=7):
    return {"name": name, "cat": "task", "ph": "X", "pid": pid,
            "ts": (NOW - start_s_ago) * 1e6, "dur": dur_s * 1e6}


def test_timeline_keeps_the_last_minute_and_marks_failures_and_running_tasks():
    old, recent, failed = span("old", 200, 1), span("recent", 10, 2), span("boom", 5, 1)
    error = {"type": "task", "name": "boom", "pid": 7, "time": NOW - 4, "message": "Traceback"}
    running = [{"task_id": "ab", "name": "slow", "pid": 7, "blocked": False}]
    data = views.timeline(snapshot([old, recent, failed], [error], running))
    names = {s["name"]: s for s in data["spans"]}
    assert "old" not in names and names["recent"]["start_s"] == -10
    assert names["boom"]["failed"] and not names["recent"]["failed"]
    assert names["slow"]["open"] and names["slow"]["start_s"] == -4
    assert data["workers"] == [{"pid": 7, "node_id": "n1"}]


def test_cluster_and_tasks_count_what_the_nodes_report():
    running = [{"task_id": "ab", "name": "slow", "pid": 7, "blocked": False}]
    error = {"type": "task", "name": "boom", "pid": 7, "time": NOW - 4, "message": "Traceback"}
    snap = snapshot([span("boom", 5, 1)], [error], running)
    node = views.cluster(snap)["nodes"][0]
    assert node["address"] == "10.0.0.1" and node["alive"] and node["head"]
    assert node["resources"] == [{"name": "CPU", "used": 0.5, "total": 2}]
    tasks = views.tasks(snap)
    assert tasks["counts"]["running"] == 1 and tasks["counts"]["queued"] == 3
    assert tasks["counts"]["failed"] == 1 and tasks["counts"]["done"] == 1
    assert [t["state"] for t in tasks["latest"]] == ["running", "failed"]
    assert tasks["errors"][0]["message"] == "Traceback"

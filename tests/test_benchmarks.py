"""The benchmark suite runs (quick mode, zray alone) so it never rots."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_benchmark_suite_runs_every_row(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--against", "none",
                             "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["zray"]["rows"]
    assert len(rows) >= 26
    failed = {row["name"]: row.get("detail") for row in rows if row["status"] != "ok"}
    assert not failed, failed
    assert all(row["median"] > 0 for row in rows)
    assert "single client tasks sync" in result.stdout
    # The floors: a process pool on the plain task rows, memcpy on the put rows.
    doc = json.loads(out.read_text())
    pool = {row["name"]: row for row in doc["pool"]["rows"]}
    assert set(pool) >= {"single client tasks sync", "single client tasks async"}
    assert all(row["status"] == "ok" for row in pool.values()), pool
    memcpy = {row["name"]: row for row in doc["memcpy"]["rows"]}
    assert memcpy["single client put gigabytes"]["median"] > 0
    assert "zray / pool" in result.stdout and "zray / memcpy" in result.stdout


def test_burst_reports_memory_per_task(tmp_path):
    out = tmp_path / "burst.json"
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "benchmarks.burst", "--tasks", "3000",
                             "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["tasks"] == 3000 and doc["tasks_per_s"] > 0
    assert doc["rss_peak_mb"]["driver"] > 0 and doc["rss_peak_mb"]["node"] > 0
    assert set(doc["bytes_per_task"]) == {"driver", "node", "workers"}
    assert "bytes per task" in result.stdout

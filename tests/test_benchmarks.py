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

"""The ordered list of benchmark rows and the decorator that fills it.

A row is `fn(ray, quick) -> Measurement`; `ray` is whichever
Ray-compatible module is being measured.  Metadata lives here so the runner
can skip rows before running them (a shim declares what it cannot do).
"""

from __future__ import annotations

import functools
import importlib
import re
import time
from dataclasses import dataclass, field
from typing import Callable, FrozenSet, List

from .measure import Measurement

# Capabilities a row may need beyond plain tasks and put/get; a shim lists
# the ones it lacks in its module attribute BENCH_UNSUPPORTED.
ACTORS = "actors"
NESTED_TASKS = "nested_tasks"   # a task/actor submits tasks or actor calls
WORKER_PUT = "worker_put"       # a task puts objects / returns refs


@dataclass(frozen=True)
class Row:
    name: str
    fn: Callable[..., Measurement]
    needs: FrozenSet[str] = field(default_factory=frozenset)
    # Fresh-process rows start their own cluster, so the runner calls them
    # before (and without) initialising its shared one.
    fresh_process: bool = False


_ROWS: List[Row] = []


def row(name: str, unit: str, higher_is_better: bool, needs=(),
        fresh_process: bool = False):
    """Registers `body(ray, quick) -> samples | Measurement` as a row."""
    def wrap(body):
        @functools.wraps(body)
        def run(ray, quick: bool) -> Measurement:
            start = time.perf_counter()
            out = body(ray, quick)
            if not isinstance(out, Measurement):
                out = Measurement(name, unit, higher_is_better, list(out))
            out.seconds = time.perf_counter() - start
            return out
        run.unit = unit
        run.higher_is_better = higher_is_better
        _ROWS.append(Row(name, run, frozenset(needs), fresh_process))
        return run
    return wrap


def all_rows() -> List[Row]:
    # Importing the row modules registers their rows, in file order.
    for module in ("workloads", "zray_rows"):
        importlib.import_module(f".{module}", __package__)
    return list(_ROWS)


def select(rows: List[Row], pattern: str | None) -> List[Row]:
    """Rows whose name contains `pattern` (case-insensitive regex)."""
    if not pattern:
        return rows
    rx = re.compile(pattern, re.IGNORECASE)
    return [r for r in rows if rx.search(r.name)]

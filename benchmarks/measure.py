"""Measurement record and the timing harness shared by every row.

Kept free of any Ray/zray import so it loads the same in every interpreter.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional

# Row outcome values; "skipped" means the system cannot do the row at all,
# "error"/"timeout" mean it tried and failed.
OK, SKIPPED, ERROR, TIMEOUT = "ok", "skipped", "error", "timeout"


@dataclass
class Measurement:
    name: str
    unit: str                      # "/s", "GB/s", "s", "MB", "us"
    higher_is_better: bool
    samples: List[float] = field(default_factory=list)
    status: str = OK
    note: str = ""
    seconds: float = 0.0           # wall time the row took, incl. warm-up
    detail: str = ""               # full traceback of a failed row

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.samples) if self.samples else None

    @property
    def lo(self) -> Optional[float]:
        return min(self.samples) if self.samples else None

    @property
    def hi(self) -> Optional[float]:
        return max(self.samples) if self.samples else None

    def quartiles(self):
        """(q1, q3), or None below 4 samples where quartiles mean little."""
        if len(self.samples) < 4:
            return None
        q = statistics.quantiles(self.samples, n=4)
        return q[0], q[2]

    def spread_pct(self) -> Optional[float]:
        """Half the IQR (4+ samples) or half the min..max range, as % of the
        median: one stray sample should not dominate the printed spread."""
        if len(self.samples) < 2 or not self.median:
            return None
        lo, hi = self.quartiles() or (self.lo, self.hi)
        return (hi - lo) / 2 / abs(self.median) * 100

    def to_json(self) -> dict:
        d = asdict(self)
        q = self.quartiles()
        d.update(median=self.median, min=self.lo, max=self.hi,
                 q1=q and q[0], q3=q and q[1])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Measurement":
        keys = ("name", "unit", "higher_is_better", "samples", "status",
                "note", "seconds", "detail")
        return cls(**{k: d[k] for k in keys if k in d})


@dataclass(frozen=True)
class Budget:
    """How long a rate row runs.  Quick mode: one warm-up call, then one
    50 ms repetition (a single call when calls are slow); full mode mimics `ray microbenchmark` (time-boxed warm-up, then
    several time-boxed repetitions) but with shorter boxes for 2 cores."""
    warmup_s: float
    rep_s: float
    reps: int
    quick: bool

    @classmethod
    def for_mode(cls, quick: bool) -> "Budget":
        if quick:
            return cls(warmup_s=0.0, rep_s=0.05, reps=1, quick=True)
        return cls(warmup_s=0.5, rep_s=1.0, reps=5, quick=False)


def rates(fn: Callable[[], object], per_call: float, budget: Budget) -> List[float]:
    """Throughput samples (per_call units per second) of repeated fn()."""
    # Warm-up also sizes the inner step so the clock is read rarely
    # relative to fast calls (as ray_perf does).
    start = time.perf_counter()
    calls = 0
    while True:
        fn()
        calls += 1
        if time.perf_counter() - start >= budget.warmup_s:
            break
    step = 1 if budget.quick else calls // 10 + 1
    samples = []
    for _ in range(budget.reps):
        count = 0
        start = time.perf_counter()
        while True:
            for _ in range(step):
                fn()
            count += step
            elapsed = time.perf_counter() - start
            if elapsed >= budget.rep_s:
                break
        samples.append(per_call * count / elapsed)
    return samples


def durations(fn: Callable[[], object], reps: int, warmup: int = 1) -> List[float]:
    """Wall seconds of each of `reps` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def pick(quick: bool, full, small):
    """Chooses the full-run or --quick parameter; keeps rows readable."""
    return small if quick else full

"""The floors zray is held against beside its peer: a stdlib process pool
for plain tasks, one memcpy for puts.

- ``pool``: the same rows run on ``shims/pool_api`` (a
  ``ProcessPoolExecutor``; no store, no actors), for the rows in
  ``POOL_ROWS`` only: what one Python process handing a no-op to another
  costs with no runtime at all.
- ``memcpy``: for each put row, one copy of the same bytes into a buffer
  already faulted in (``numpy.copyto``), timed like the row: the speed a
  put into shared memory can at best reach.

Each floor is a result document shaped like a system's, so the table
renders it as one more column (with zray's fraction of it).
"""

from __future__ import annotations

import datetime as _dt
import re

from .measure import Budget, Measurement, pick, rates

POOL_ROWS = r"^single client tasks (sync|async)$|^tiny tasks/s at"
MB = 1024 * 1024
# Row name -> bytes one put of that row writes (full, quick), as in workloads.py.
MEMCPY_ROWS = {
    "single client put gigabytes": (100 * MB, 1 * MB),
    "multi client put gigabytes": (8 * MB, 1 * MB),
}


def pool_filter(user_filter):
    """The pool's rows, narrowed further by the user's --filter if any."""
    if not user_filter:
        return POOL_ROWS
    return f"(?=.*(?:{user_filter}))(?:{POOL_ROWS})"


def memcpy_doc(quick: bool, pattern=None) -> dict:
    """The memcpy floor of every put row (that ``pattern`` selects)."""
    import numpy as np
    doc = {"system": "memcpy", "started": _dt.datetime.now().isoformat(timespec="seconds"),
           "rows": []}
    for name, (full, small) in MEMCPY_ROWS.items():
        if pattern and not re.search(pattern, name, re.IGNORECASE):
            continue
        nbytes = pick(quick, full, small)
        source = np.ones(nbytes, dtype=np.uint8)
        target = np.empty_like(source)
        np.copyto(target, source)                     # fault the target's pages in
        samples = rates(lambda: np.copyto(target, source), nbytes / 1e9,
                        Budget.for_mode(quick))
        doc["rows"].append(Measurement(name, "GB/s", True, samples).to_json())
    return doc

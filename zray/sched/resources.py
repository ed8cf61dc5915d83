"""Resource quantities in fixed point, and one node's pool of them.

Quantities are integers in units of 1/10000 (Ray's precision), so ``0.1 +
0.2`` of a GPU is exactly ``0.3`` and a million fractional grants and
releases never drift. GPUs are also individual devices: a task gets
concrete ids, whole GPUs for demands of 1 or more, a share of one GPU for a
fraction (packed onto the fullest GPU that still has room, so whole GPUs stay
free for whole-GPU tasks).

A *demand* and the *totals*/*available* of a node are plain dicts
``{name: fixed-point amount}``; zero amounts are left out.
"""
import logging
import math
import numbers

UNIT = 10000

log = logging.getLogger("zray.resources")


def to_fixed(quantity):
    return int(round(quantity * UNIT))


def from_fixed(amount):
    value = amount / UNIT
    return int(value) if value == int(value) else value


def _check_quantity(name, value, label=None):
    label = label or f"resource {name!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    if value and to_fixed(value) == 0:
        raise ValueError(f"{label} = {value!r} is below the precision of 0.0001; "
                         f"ask for at least 0.0001 (or 0 for none)")
    if value > 1 and name == "GPU" and value != int(value):
        raise ValueError(f"{label} above 1 must be a whole number, got {value!r}: a fraction "
                         f"shares one GPU, so ask for a whole number or a fraction below 1")


def demand_from_options(num_cpus=None, num_gpus=None, resources=None, default_cpus=1):
    """The fixed-point demand of a task or actor from its options."""
    demand = {}
    cpus = default_cpus if num_cpus is None else num_cpus
    _check_quantity("CPU", cpus, "num_cpus (CPUs)")
    if cpus:
        demand["CPU"] = to_fixed(cpus)
    if num_gpus is not None:
        _check_quantity("GPU", num_gpus, "num_gpus (GPUs)")
        if num_gpus:
            demand["GPU"] = to_fixed(num_gpus)
    if resources is not None and not isinstance(resources, dict):
        raise TypeError(f"resources must be a dict of name -> quantity, got {resources!r}")
    for name, value in (resources or {}).items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"resource names must be non-empty strings, got {name!r}")
        if name in ("CPU", "GPU"):
            raise ValueError(f"use num_{name.lower()}s=... instead of "
                             f"resources={{{name!r}: ...}}")
        _check_quantity(name, value, f"resources[{name!r}]")
        if value:
            demand[name] = to_fixed(value)
    return demand


def totals_from_options(num_cpus, num_gpus, resources):
    """A node's fixed-point totals; GPUs are devices, so a whole number."""
    _check_quantity("CPU", num_cpus, "num_cpus of a node")
    _check_quantity("GPU", num_gpus, "num_gpus of a node")
    if num_gpus != int(num_gpus):
        raise ValueError(f"a node's num_gpus must be a whole number of devices, got {num_gpus!r}")
    totals = {"CPU": to_fixed(num_cpus), "GPU": to_fixed(num_gpus)}
    for name, value in (resources or {}).items():
        _check_quantity(name, value, f"node resource {name!r}")
        totals[name] = to_fixed(value)
    return {k: v for k, v in totals.items() if v}


def memory_totals(object_store_memory, available_bytes):
    """Ray's ``memory`` and ``object_store_memory`` resources, in bytes: the
    object store's capacity, and the memory left for workers beside it
    (``available_bytes``: the machine's free memory, measured by the caller)."""
    workers = max(available_bytes - object_store_memory, 0)
    return {"memory": to_fixed(workers), "object_store_memory": to_fixed(object_store_memory)}


def describe(fixed):
    """{'CPU': 1, 'GPU': 0.5} from fixed-point amounts (for people and the API)."""
    return {name: from_fixed(amount) for name, amount in sorted(fixed.items())}


def subtract(budget, demand, times=1):
    """budget -= demand * times, in place (for planning, may go negative)."""
    for name, amount in demand.items():
        budget[name] = budget.get(name, 0) - amount * times


class NodeResources:
    """What a node has and what is free; hands out GPU ids.

    Invariant (checked by the property tests): ``available <= totals`` for
    every name, and the GPU shares handed out add up to ``totals - available``
    of GPU. ``available`` may dip below zero only through ``reclaim`` (a
    blocked task taking its CPU back); new work then waits until it is >= 0.
    """

    def __init__(self, totals, gpu_ids=None):
        self.totals = dict(totals)
        self.available = dict(totals)
        gpu_count = totals.get("GPU", 0) // UNIT
        ids = list(gpu_ids) if gpu_ids is not None else list(range(gpu_count))
        if len(ids) < gpu_count:
            raise ValueError(f"{gpu_count} GPUs declared but only ids {ids} given")
        self.gpu_ids = ids[:gpu_count]
        self.gpu_free = {gpu: UNIT for gpu in self.gpu_ids}   # id -> free share

    def feasible(self, demand):
        """Could this demand ever be met here (with nothing else running)?"""
        totals = self.totals
        for name, amount in demand.items():
            if totals.get(name, 0) < amount:
                return False
        return "GPU" not in demand or bool(self.missing(demand)) is False

    def missing(self, demand):
        """{name: (asked, total)} for what this node can never give."""
        short = {name: (amount, self.totals.get(name, 0)) for name, amount in demand.items()
                 if self.totals.get(name, 0) < amount}
        if "GPU" not in short and self._gpu_plan(demand.get("GPU", 0), whole_node=True) is None:
            short["GPU"] = (demand["GPU"], self.totals.get("GPU", 0))
        return short

    def fits(self, demand, reserved=None):
        """Does the demand fit in what is free now (less ``reserved``)?"""
        available = self.available
        for name, amount in demand.items():
            free = available.get(name, 0)
            if reserved:
                free -= reserved.get(name, 0)
            if free < amount:
                return False
        return "GPU" not in demand or self._gpu_plan(demand["GPU"]) is not None

    def short_of(self, demand):
        """Names of the resources that keep ``demand`` from fitting now."""
        short = {name for name, amount in demand.items()
                 if self.available.get(name, 0) < amount}
        if "GPU" in demand and "GPU" not in short and self._gpu_plan(demand["GPU"]) is None:
            short.add("GPU")
        return short

    def acquire(self, demand):
        """Take the demand; return the resource ids granted ({'GPU': [(id, share)]})."""
        if not self.fits(demand):
            raise ValueError(f"demand {describe(demand)} does not fit in "
                             f"{describe(self.available)}")
        gpu_plan = self._gpu_plan(demand.get("GPU", 0))
        for name, amount in demand.items():
            self.available[name] -= amount
        for gpu, share in gpu_plan:
            self.gpu_free[gpu] -= share
        return {"GPU": [(gpu, share / UNIT) for gpu, share in gpu_plan]} if gpu_plan else {}

    def release(self, demand, resource_ids=None):
        """Give back what ``acquire`` took (ids as it returned them)."""
        for name, amount in demand.items():
            value = self.available.get(name, 0) + amount
            total = self.totals.get(name, 0)
            if value > total:
                # A bookkeeping bug somewhere: never hand out more than exists.
                log.error("release of %s %s exceeds the total %s; clamped",
                          from_fixed(amount), name, from_fixed(total))
                value = total
            self.available[name] = value
        for gpu, share in (resource_ids or {}).get("GPU", ()):
            self.gpu_free[gpu] = min(UNIT, self.gpu_free[gpu] + to_fixed(share))

    def reclaim(self, demand):
        """Take back what a blocked task lent, even if that overdraws."""
        for name, amount in demand.items():
            self.available[name] = self.available.get(name, 0) - amount

    def _gpu_plan(self, amount, whole_node=False):
        """[(gpu_id, share)] that would meet ``amount`` of GPU, or None."""
        if not amount:
            return []
        free = dict.fromkeys(self.gpu_free, UNIT) if whole_node else self.gpu_free
        if amount >= UNIT:
            count = amount // UNIT
            whole = [g for g, left in free.items() if left == UNIT]
            return [(g, UNIT) for g in whole[:count]] if len(whole) >= count else None
        # A share: best fit, onto the fullest GPU that still has room.
        best = None
        for gpu, left in free.items():
            if left >= amount and (best is None or left < free[best]):
                best = gpu
        return None if best is None else [(best, amount)]

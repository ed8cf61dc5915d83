"""Resource quantities in fixed point, and one node's pool of them.

Quantities are integers in units of 1/10000, so ``0.1 + 0.2`` of a GPU is
exactly ``0.3`` and a thousand fractional grants and releases never drift.
GPUs are also individual devices: a task gets concrete ids, whole GPUs for
demands of 1 or more, a share of one GPU for a fraction.
"""
import math
import numbers

UNIT = 10000


def to_fixed(quantity):
    return int(round(quantity * UNIT))


def from_fixed(amount):
    value = amount / UNIT
    return int(value) if value == int(value) else value


def _check_quantity(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"resource {name!r} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"resource {name!r} must be a finite number >= 0, got {value!r}")
    if value > 1 and name == "GPU" and value != int(value):
        raise ValueError(f"num_gpus above 1 must be a whole number, got {value!r}")


def demand_from_options(num_cpus=None, num_gpus=None, resources=None, default_cpus=1):
    """The fixed-point demand of a task or actor from its options."""
    demand = {}
    cpus = default_cpus if num_cpus is None else num_cpus
    _check_quantity("CPU", cpus)
    if cpus:
        demand["CPU"] = to_fixed(cpus)
    if num_gpus is not None:
        _check_quantity("GPU", num_gpus)
        if num_gpus:
            demand["GPU"] = to_fixed(num_gpus)
    for name, value in (resources or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"resource names must be strings, got {name!r}")
        if name in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus instead of resources={{{name!r}: ...}}")
        _check_quantity(name, value)
        if value:
            demand[name] = to_fixed(value)
    return demand


def totals_from_options(num_cpus, num_gpus, resources):
    totals = {"CPU": to_fixed(num_cpus), "GPU": to_fixed(num_gpus)}
    for name, value in (resources or {}).items():
        _check_quantity(name, value)
        totals[name] = to_fixed(value)
    return {k: v for k, v in totals.items() if v}


def describe(fixed):
    return {name: from_fixed(amount) for name, amount in sorted(fixed.items())}


class NodeResources:
    """What a node has and what is free; hands out GPU ids."""

    def __init__(self, totals, gpu_ids=None):
        self.totals = dict(totals)
        self.available = dict(totals)
        gpu_count = totals.get("GPU", 0) // UNIT
        self.gpu_ids = list(gpu_ids) if gpu_ids is not None else list(range(gpu_count))
        self.gpu_free = {gpu: UNIT for gpu in self.gpu_ids[:gpu_count]}

    def feasible(self, demand):
        """Could this demand ever be met here?"""
        if not all(self.totals.get(name, 0) >= amount for name, amount in demand.items()):
            return False
        return self._gpu_plan(demand.get("GPU", 0), whole_node=True) is not None

    def fits(self, demand):
        if not all(self.available.get(name, 0) >= amount for name, amount in demand.items()):
            return False
        return self._gpu_plan(demand.get("GPU", 0)) is not None

    def acquire(self, demand):
        """Take the demand; return the resource ids granted ({'GPU': [(id, share)]})."""
        gpu_plan = self._gpu_plan(demand.get("GPU", 0))
        if gpu_plan is None or not self.fits(demand):
            raise ValueError(f"demand {describe(demand)} does not fit in {describe(self.available)}")
        for name, amount in demand.items():
            self.available[name] -= amount
        for gpu, share in gpu_plan:
            self.gpu_free[gpu] -= share
        return {"GPU": [(gpu, share / UNIT) for gpu, share in gpu_plan]} if gpu_plan else {}

    def release(self, demand, resource_ids=None):
        for name, amount in demand.items():
            self.available[name] = min(self.totals.get(name, 0), self.available.get(name, 0) + amount)
        for gpu, share in (resource_ids or {}).get("GPU", []):
            self.gpu_free[gpu] = min(UNIT, self.gpu_free[gpu] + to_fixed(share))

    def _gpu_plan(self, amount, whole_node=False):
        if not amount:
            return []
        free = {g: UNIT for g in self.gpu_free} if whole_node else self.gpu_free
        if amount >= UNIT:
            count = amount // UNIT
            whole = [g for g, left in free.items() if left == UNIT]
            return [(g, UNIT) for g in whole[:count]] if len(whole) >= count else None
        # A share: pack onto the fullest GPU that still has room.
        candidates = [(left, g) for g, left in free.items() if left >= amount]
        if not candidates:
            return None
        _, gpu = min(candidates)
        return [(gpu, amount)]

"""The object table's counters and per-object rows (``zray memory``,
``zray status``). Mixed into ``store.ObjectTable``."""
from ..transport.protocol import SHM

PENDING = 0         # an entry waiting for its value (store.READY once sealed)


class TableReport:
    def stats(self):
        return {"objects": len(self.entries), "shm_bytes": self.shm_bytes,
                "shm_objects": len(self.in_memory), "reserved_bytes": self.reserved_bytes,
                "spilled_bytes": self.spilled_bytes, "spilled_objects": self.spilled_objects,
                "spilling_bytes": self.spilling_bytes,
                "inline_bytes": self.inline_bytes, "capacity_bytes": self.capacity_bytes,
                "created_objects": self.created_objects, "created_bytes": self.created_bytes,
                "arena_bytes": self.arena.mapped_bytes, "arena_chunks": len(self.arena.chunks),
                "arena_resident_bytes": self.arena.resident_bytes(),
                "arena_used_bytes": self.arena.used_bytes(), "pinned_objects": len(self.pins),
                "reservations": self.reservations, "spares_granted": self.spares_granted,
                "idle_pinned_objects": sum(self.pins[i].keys() <= owners
                                           for i, owners in self.idle_pins.items()),
                "spill_dir": self.spill_dir, "spill_failure": self.spill_failure}

    def listing(self, holders=None, only=None):
        """One dict per object (or per entry in ``only``); ``holders`` maps
        id -> names of who holds it."""
        holders = holders or {}
        contained_in = {}
        for entry in self.entries.values():
            for inner in entry.contained:
                contained_in.setdefault(inner, []).append(entry.object_id)
        rows = []
        for entry in self.entries.values() if only is None else only:
            where = "pending" if entry.state == PENDING else (
                "spilled" if entry.spilled else "spilling" if entry.object_id in self.spilling
                else ("shm" if entry.kind == SHM else "inline"))
            named = list(holders.get(entry.object_id, ()))
            named += [f"object {outer.hex()[:16]}" for outer in contained_in.get(entry.object_id, ())]
            others = entry.refcount - len(named)
            if others > 0:
                named.append(f"{others} pending task argument{'s' if others > 1 else ''}")
            rows.append({"object_id": entry.object_id.hex(), "size": entry.size,
                         "where": where, "refcount": entry.refcount, "error": entry.is_error,
                         "holders": named, "created_at": entry.created_at,
                         "path": entry.location[0] if entry.kind == SHM and entry.location
                         else None,
                         "offset": entry.location[2] if entry.kind == SHM and entry.location
                         and len(entry.location) == 3 else 0})
        return rows


"""``zray memory``: what is in a node's object store, as a table.

Connects to a node as a ``tool`` client (``cluster.NodeClient``), asks for
``store_stats`` and ``memory``, and formats the answer:
one row per object with its size, where it lives (shm, spilling, spilled, inline,
pending) and who holds a reference to it.
"""
import time

from .store import format_bytes


def memory_summary(node_address, password=""):
    """The formatted listing of the node at ``node_address``."""
    from ..cluster import NodeClient, current_token
    client = NodeClient(node_address, current_token(password=password))
    try:
        stats = client.request("store_stats")
        rows = client.request("memory")
    finally:
        client.close()
    return format_memory(rows, stats, client.info)


def format_memory(rows, stats, node_info=None):
    node = (node_info or {}).get("node_id", "?")
    lines = [
        f"Object store of node {node} ({stats.get('plasma_dir', '?')}): "
        f"{format_bytes(stats['shm_bytes'])} of {format_bytes(stats['capacity_bytes'])} in "
        f"shared memory ({stats['shm_objects']} objects), "
        f"{format_bytes(stats['spilled_bytes'])} spilled to {stats['spill_dir']} "
        f"({stats['spilled_objects']} objects), {format_bytes(stats['inline_bytes'])} inline.",
    ]
    if stats.get("spill_failure"):
        lines.append(f"WARNING: over capacity and {stats['spill_failure']}")
    if not rows:
        lines.append("No objects.")
        return "\n".join(lines)
    now = time.time()
    table = [("OBJECT ID", "SIZE", "WHERE", "AGE", "REFS", "HELD BY")]
    for row in sorted(rows, key=lambda r: r["created_at"]):
        where = row["where"] + (" (error)" if row["error"] else "")
        table.append((row["object_id"], format_bytes(row["size"]), where,
                      f"{now - row['created_at']:.0f} s", str(row["refcount"]),
                      ", ".join(row["holders"]) or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(lines)

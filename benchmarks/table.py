"""Renders zray-vs-peer results as one pipe table (valid Markdown, so the
same text goes to the terminal and to RESULTS.md)."""

from __future__ import annotations

from typing import Dict, List, Optional

from .measure import OK, Measurement

_STATUS_CELL = {"skipped": "skip", "error": "ERROR", "timeout": "TIMEOUT"}


def fmt_num(v: float) -> str:
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def cell(m: Optional[Measurement], missing: str = "-") -> str:
    if m is None:
        return missing
    if m.status != OK:
        return _STATUS_CELL.get(m.status, m.status)
    text = f"{fmt_num(m.median)} {m.unit}"
    if len(m.samples) > 1 and m.median:
        # Half the min..max range, relative to the median.
        spread = (m.hi - m.lo) / 2 / abs(m.median) * 100
        text += f" ±{spread:.0f}%"
    return text


def ratio(z: Optional[Measurement], p: Optional[Measurement]) -> Optional[float]:
    """>1 means zray is better, whichever direction the unit goes."""
    if not z or not p or z.status != OK or p.status != OK:
        return None
    zm, pm = z.median, p.median
    if not zm or not pm:
        return None
    return zm / pm if z.higher_is_better else pm / zm


def by_name(doc: Optional[dict]) -> Dict[str, Measurement]:
    if not doc:
        return {}
    return {r["name"]: Measurement.from_json(r) for r in doc.get("rows", [])}


def render(order: List[str], zray_doc: dict, peer_doc: Optional[dict],
           peer_label: Optional[str]) -> str:
    z, p = by_name(zray_doc), by_name(peer_doc)
    z_missing = "n/a" if zray_doc and zray_doc.get("error") and not z else "-"
    p_missing = "n/a" if peer_doc and peer_doc.get("error") and not p else "-"
    names = [n for n in order if n in z or n in p]
    names += [n for n in list(z) + list(p) if n not in names]
    header = ["row", "zray"]
    if peer_label:
        header += [peer_label, f"ratio (zray vs {peer_label}, >1 = zray better)"]
    lines = [header]
    for n in names:
        line = [n, cell(z.get(n), z_missing)]
        if peer_label:
            r = ratio(z.get(n), p.get(n))
            line += [cell(p.get(n), p_missing), f"{r:.2f}x" if r else "-"]
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for k, row in enumerate(lines):
        cells = [c.ljust(w) if i == 0 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        out.append("| " + " | ".join(cells) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 1) + (":" if i else "-")
                                      for i, w in enumerate(widths)) + "|")
    return "\n".join(out)


def notes(label: str, doc: Optional[dict]) -> List[str]:
    """One line per system-level error and per failed row."""
    if not doc:
        return []
    out = []
    if doc.get("error"):
        out.append(f"{label}: {doc['error']}")
    for r in doc.get("rows", []):
        if r["status"] not in (OK, "skipped"):
            out.append(f"{label}: {r['name']}: {r['status']}: {r['note']}")
    return out

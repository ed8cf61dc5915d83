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
    spread = m.spread_pct()
    if spread is not None:
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


def render(order: List[str], zray_doc: Optional[dict], peer_doc: Optional[dict],
           peer_label: Optional[str], floors=()) -> str:
    """Columns for the systems that ran (a None doc means "not run"); the
    ratio column only when both zray and a peer ran. ``floors``: (label,
    doc) of references (a process pool, memcpy) measured on some rows only;
    each adds its column and zray's fraction of it (blank where it has no
    figure)."""
    cols = []   # (label, measurements by row name, text for a missing row)
    for label, doc in (("zray", zray_doc), (peer_label, peer_doc)):
        if label and doc is not None:
            got = by_name(doc)
            cols.append((label, got, "n/a" if doc.get("error") and not got else "-"))
    names = [n for n in order if any(n in c[1] for c in cols)]
    names += [n for c in cols for n in c[1] if n not in names]
    with_ratio = len(cols) == 2
    header = ["row"] + [c[0] for c in cols]
    if with_ratio:
        header.append(f"ratio (zray vs {peer_label}, >1 = zray better)")
    floor_cols = [(label, by_name(doc)) for label, doc in floors if doc is not None]
    zray_got = by_name(zray_doc)
    for label, _ in floor_cols:
        header += [label, f"zray / {label}"]
    lines = [header]
    for n in names:
        line = [n] + [cell(got.get(n), missing) for _, got, missing in cols]
        if with_ratio:
            r = ratio(cols[0][1].get(n), cols[1][1].get(n))
            line.append(f"{r:.2f}x" if r else "-")
        for _, got in floor_cols:
            r = ratio(zray_got.get(n), got.get(n))
            line += [cell(got.get(n), ""), f"{r:.2f}" if r else ""]
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

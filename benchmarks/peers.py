"""Chooses the interpreter each peer runs under.

Real Ray usually lives in its own venv (zray's tests must never import it),
so the peer side may run under a different python than zray's side.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import List, Optional, Tuple

ENV_VAR = "ZRAY_BENCH_PEER_PYTHON"

# Peer name -> module whose import proves the peer is installed.
PEER_MODULE = {"ray": "ray", "dask": "distributed", "pool": "concurrent.futures"}


def can_import(python: str, module: str) -> Tuple[bool, str]:
    if python == sys.executable:
        found = importlib.util.find_spec(module.split(".")[0]) is not None
        return found, "" if found else f"no module {module!r}"
    if not os.path.exists(python):
        return False, f"{python} does not exist"
    try:
        p = subprocess.run([python, "-c", f"import {module}"],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{python}: {e}"
    if p.returncode == 0:
        return True, ""
    last = (p.stderr.strip().splitlines() or ["import failed"])[-1]
    return False, f"{python}: {last}"


def candidates(peer: str, explicit: Optional[str]) -> List[str]:
    if explicit:
        return [explicit]
    out = [sys.executable]
    if peer != "pool" and os.environ.get(ENV_VAR):
        out.append(os.environ[ENV_VAR])
    return list(dict.fromkeys(out))   # drop duplicates, keep order


def resolve(peer: str, explicit: Optional[str] = None) -> Tuple[Optional[str], str]:
    """(python, "") for the first candidate that can import the peer, else
    (None, why) so the caller can skip the peer with a note."""
    module = PEER_MODULE[peer]
    why = []
    for python in candidates(peer, explicit):
        ok, reason = can_import(python, module)
        if ok:
            return python, ""
        why.append(reason)
    return None, (f"{peer} not installed ({'; '.join(why)}); make a venv for it "
                  f"(python -m venv VENV && VENV/bin/pip install {peer} numpy psutil) and "
                  f"pass --peer-python VENV/bin/python or set ${ENV_VAR}")

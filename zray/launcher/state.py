"""What the launcher remembers between commands, in one small local file.

``<zray home>/clusters.json`` (``$ZRAY_HOME``, default ``~/.zray``; mode 0600,
it holds each cluster's token) maps a cluster name to::

    {"token": "...",                        # the cluster password its nodes were started with
     "nodes": {"<node id>": {"kind": "head" | "worker",
                             "address": "10.0.0.5",
                             "done": ["<hash>", ...],   # setup steps that ran, in order
                             "start": "<hash>"}}}       # start commands that ran last

A command holds ``clusters.lock`` (flock) while it reads and changes the file,
so two ``zray up`` at once cannot hand the same host to two clusters.
"""
import fcntl
import json
import os
import sys
import threading


def zray_home():
    return os.environ.get("ZRAY_HOME") or os.path.join(os.path.expanduser("~"), ".zray")


class LauncherState:
    def __init__(self, directory=None):
        self.directory = directory or zray_home()
        self.path = os.path.join(self.directory, "clusters.json")
        self._lock_file = None
        self._clusters = {}
        self._save_lock = threading.Lock()      # workers are set up in threads

    # -- locking and persistence --------------------------------------------
    def __enter__(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_file = open(os.path.join(self.directory, "clusters.lock"), "a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another zray launcher command on this machine to finish "
                  f"(it holds {self._lock_file.name})...", file=sys.stderr)
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        self._clusters = self._read()
        return self

    def __exit__(self, *exc):
        self._lock_file.close()        # releases the lock
        self._lock_file = None

    def _read(self):
        try:
            with open(self.path) as f:
                return json.load(f).get("clusters", {})
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise RuntimeError(f"{self.path} is damaged ({exc}); move it away to start "
                               f"afresh (the clusters it lists are then forgotten)") from None

    def save(self):
        with self._save_lock:
            tmp = self.path + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"clusters": self._clusters}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)

    # -- queries and changes --------------------------------------------------
    def cluster(self, name):
        """The record of cluster ``name``, or None if it is not up."""
        return self._clusters.get(name)

    def ensure_cluster(self, name, token):
        return self._clusters.setdefault(name, {"token": token, "nodes": {}})

    def forget(self, name):
        self._clusters.pop(name, None)

    def owner_of(self, address):
        """The cluster whose node runs at ``address``, or None."""
        for name, record in self._clusters.items():
            if any(n["address"] == address for n in record["nodes"].values()):
                return name
        return None

"""Where a session's unix sockets live.

A unix socket's path is capped at about 107 bytes (``sun_path``; 104 on
macOS). A session under a long temp root (a pytest ``tmp_path``, a deep
``ZRAY_TEMP_DIR``) keeps its sockets in a short directory of its own
instead, ``<system temp dir>/zray-<uid>-s-<session name>``: made (0700, never
reused) with the session directory and removed with it. Every process of
the session derives the same path from the session directory, so nothing
else has to carry it.
"""
import os
import tempfile

MAX_IPC_PATH = 100      # the longest socket path zray binds (below sun_path's cap)
LONGEST_NAME = 24       # "/a-<16 hex>.sock", "/w-<16 hex>.sock", "/kv-pub.sock"
SHORT_BASE_MAX = 40     # a longer system temp dir (macOS' $TMPDIR) is not short: /tmp


def socket_dir(session_dir):
    """The directory of ``session_dir``'s sockets: itself when short enough."""
    if len(session_dir) + LONGEST_NAME <= MAX_IPC_PATH:
        return session_dir
    base = tempfile.gettempdir()
    if len(base) > SHORT_BASE_MAX:
        base = "/tmp"
    return os.path.join(base, f"zray-{os.getuid()}-{os.path.basename(session_dir)}")


def make_socket_dir(session_dir):
    """Create ``socket_dir(session_dir)`` if it is not the session directory.
    Raises FileExistsError if that path is taken (pick another session name:
    a directory somebody else made is never used)."""
    path = socket_dir(session_dir)
    if path != session_dir:
        os.mkdir(path, 0o700)
    return path


def remove_socket_dir(session_dir):
    """Remove the separate socket directory of ``session_dir``, if it has one."""
    import shutil
    path = socket_dir(session_dir)
    if path != session_dir:
        shutil.rmtree(path, ignore_errors=True)

"""The temp root is ours: checked before use, written to without following links.

The temp root (``$TMPDIR/zray-<uid>``, ``ZRAY_TEMP_DIR``, ``--temp-dir``)
holds the session directories with their unix sockets, the cluster file with
the token, and the process records ``zray stop`` acts on. A local user who
owned it, or could write to it, could plant any of those; so zray uses it
only when it is a real directory of this user that nobody else can write,
writes records mode 0600 without following links and renames them into
place whole, and deletes only session directories it verified are its own.
"""
import json
import os
import re
import stat


class UnsafeTempRoot(PermissionError):
    """The temp root is not a private directory of this user."""


def check_temp_root(root, create=True):
    """Make sure ``root`` is a directory of ours that only we can write
    (creating it 0700 if missing); raise UnsafeTempRoot naming the fix if not."""
    if create:
        try:
            os.makedirs(os.path.dirname(root) or ".", exist_ok=True)
            os.mkdir(root, 0o700)
        except FileExistsError:
            pass
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        return root
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "not a directory"
    elif info.st_uid != os.getuid():
        problem = f"owned by another user (uid {info.st_uid}, you are {os.getuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    if problem:
        raise UnsafeTempRoot(
            f"zray's temp root {root} is {problem}. zray keeps its sockets, the cluster "
            f"token and its process records there, so it must be a directory of yours that "
            f"nobody else can write. Fix: remove it if it is not yours, or `chmod 700 {root}` "
            f"if it is; or choose another with ZRAY_TEMP_DIR / --temp-dir / temp_dir=")
    return root


def write_private_json(path, record):
    """Write ``record`` to ``path`` mode 0600, whole or not at all, without
    following a link planted at either name."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_private_json(path):
    """The record at ``path``, or None (missing, a link, unreadable, or not JSON)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


SESSION_NAME = re.compile(r"[0-9a-f]{8}")


def is_own_session_dir(root, session_dir, session_name):
    """Is ``session_dir`` one that zray made under ``root``: named s-<8 hex> as
    its session, directly in root, a real directory of ours? (Anything else a
    record names is not deleted.)"""
    if not isinstance(session_name, str) or not SESSION_NAME.fullmatch(session_name):
        return False
    if not isinstance(session_dir, str) or os.path.basename(session_dir) != f"s-{session_name}":
        return False
    if os.path.realpath(os.path.dirname(session_dir)) != os.path.realpath(root):
        return False
    try:
        info = os.lstat(session_dir)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()

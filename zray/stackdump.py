"""Every zray process can print its Python stacks on demand (``zray stack``).

Each process (kv, node, dashboard, worker, driver) registers a ``faulthandler``
dump on ``STACK_SIGNAL`` into its own file ``<session>/stacks/<pid>.<role>``
(0600, opened for append). ``zray stack`` truncates the file, sends the
signal and reads what was written.

Why a Python signal handler with ``sys._current_frames()`` and not
``faulthandler.register``: faulthandler's all-threads dump walks the
interpreter's thread list from inside the C signal handler, with no lock,
and crashed a worker with SIGSEGV while it was starting threads (seen in
this suite, a `zray stack` polling loop against an actor's ``__init__``).
A Python handler runs between bytecodes of the main thread; a main thread
sleeping or blocked in a ZeroMQ poll is woken by the signal (PEP 475
retries the call afterwards), so it answers in practice; a process stuck in
one long C call answers when the call returns. It writes faulthandler's
format in one ``os.write``, so ``zray stack`` reads it unchanged. What a
stack cannot say (the task a worker runs) ``zray stack`` asks the node for.
No cost per task: the file is opened once per process.

The file existing means the handler is installed, so the command never sends
the signal to a process that would die of it.
"""
import os
import signal
import sys
import threading

STACK_SIGNAL = signal.SIGUSR2
SESSION_ENV = "ZRAY_SESSION_DIR"

_installed = None      # (file, path) of this process's dump file


def stacks_dir(session_dir):
    return os.path.join(session_dir, "stacks")


def install(role, session_dir=None):
    """Register the dump handler of this process; no-op if the signal is taken."""
    global _installed
    session_dir = session_dir or os.environ.get(SESSION_ENV)
    if _installed is not None or not session_dir or not os.path.isdir(session_dir):
        return False
    if signal.getsignal(STACK_SIGNAL) not in (signal.SIG_DFL, None, _dump):
        return False        # the program uses this signal itself: leave it alone
    # The handler first, then the file: the file existing means the signal is safe.
    try:
        signal.signal(STACK_SIGNAL, _dump)      # ValueError outside the main thread
    except (ValueError, OSError):
        return False
    directory = stacks_dir(session_dir)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{os.getpid()}.{role}")
        dump_file = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")
    except OSError:
        return False        # the handler stays, harmless: it writes nothing without a file
    _installed = (dump_file, path)
    return True


def uninstall():
    """Remove the file (a driver's ray.shutdown()); the handler stays, inert."""
    global _installed
    if _installed is None:
        return
    dump_file, path = _installed
    _installed = None
    # The handler stays (it does nothing without a file): resetting the signal
    # to its default would let a `zray stack` that saw the file kill us.
    try:
        os.unlink(path)
    except OSError:
        pass
    dump_file.close()

def remove_file_of(session_dir, pid, role):
    """Remove the file of a process that ended without ``uninstall`` (a worker
    leaves by ``os._exit``; a driver may be killed): its node does it."""
    try:
        os.unlink(os.path.join(stacks_dir(session_dir), f"{pid}.{role}"))
    except OSError:
        pass


def format_stacks():
    """Every thread's stack in faulthandler's format (innermost frame first)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    current = threading.get_ident()
    lines = []
    for ident, frame in sys._current_frames().items():
        title = "Current thread" if ident == current else "Thread"
        lines.append(f"{title} 0x{ident:016x} [{names.get(ident, '?')}] (most recent call first):")
        while frame is not None:
            code = frame.f_code
            lines.append(f'  File "{code.co_filename}", line {frame.f_lineno} in {code.co_name}')
            frame = frame.f_back
        lines.append("")
    return "\n".join(lines) + "\n"


def _dump(_signum, _frame):
    if _installed is None:
        return
    try:
        os.write(_installed[0].fileno(), format_stacks().encode("utf-8", "replace"))
    except (OSError, ValueError):
        pass        # the file went away (shutdown): nothing to report to

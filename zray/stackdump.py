"""Every zray process can print its Python stacks on demand (``zray stack``).

Each process (kv, node, dashboard, worker, driver) registers a ``faulthandler``
dump on ``STACK_SIGNAL`` into its own file ``<session>/stacks/<pid>.<role>``
(0600, opened for append). ``zray stack`` truncates the file, sends the
signal and reads what was written.

Why faulthandler and not a Python signal handler with
``sys._current_frames()``: a Python handler runs only between bytecodes of
the main thread, so a process stuck in a C call (a long numpy op, a blocking
recv) would never answer; faulthandler writes from the C signal handler,
async-signal-safe, whatever the threads are doing, and runs no Python code
in the target (it cannot deadlock on a lock the interrupted thread holds).
What it cannot print (the name of the task a worker runs) ``zray stack``
asks the node for. No cost per task: the file is opened once per process.

The file existing means the handler is installed, so the command never sends
the signal to a process that would die of it.
"""
import faulthandler
import os
import signal

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
    if signal.getsignal(STACK_SIGNAL) not in (signal.SIG_DFL, None):
        return False        # the program uses this signal itself: leave it alone
    directory = stacks_dir(session_dir)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{os.getpid()}.{role}")
        dump_file = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")
        faulthandler.register(STACK_SIGNAL, file=dump_file, all_threads=True)
    except (OSError, RuntimeError, ValueError):
        return False
    _installed = (dump_file, path)
    return True


def uninstall():
    """Unregister and remove the file (a driver's ray.shutdown())."""
    global _installed
    if _installed is None:
        return
    dump_file, path = _installed
    _installed = None
    faulthandler.unregister(STACK_SIGNAL)
    dump_file.close()
    try:
        os.unlink(path)
    except OSError:
        pass

"""A driver's Ctrl-C never lands halfway through moving a message between
its node socket and the tables (a result received but not recorded, a
request dequeued but not sent).

While the main thread is inside such a section (``Critical``), SIGINT is
held and delivered right after it, to whatever handler was there before
ours (``KeyboardInterrupt`` by default). Other threads never see SIGINT.
"""
import os
import signal
import threading


class CtrlC:
    """Mixed into ``Connection``: its Ctrl-C handler and critical sections."""

    def _init_ctrl_c(self, kind):
        self.main_ident = threading.main_thread().ident
        self.main_critical = 0      # depth of the main thread's critical sections
        self.sigint_held = None     # the frame of a SIGINT held until they end
        self.previous_sigint = None
        if kind == "driver" and threading.get_ident() == self.main_ident:
            self.previous_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        if self.main_critical:
            self.sigint_held = frame or True
        else:
            self._deliver_sigint(frame)

    def _deliver_sigint(self, frame):
        previous = self.previous_sigint
        if callable(previous):
            previous(signal.SIGINT, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    def critical(self):
        """``with connection.critical():`` a section SIGINT must not split."""
        return Critical(self)

    def _restore_sigint(self):
        if self.previous_sigint is None:
            return
        try:
            if signal.getsignal(signal.SIGINT) == self._on_sigint:   # nobody replaced ours
                signal.signal(signal.SIGINT, self.previous_sigint)
        except ValueError:
            pass                    # not the main thread: it goes with the process
        self.previous_sigint = None


class Critical:
    """Holds SIGINT while the main thread is inside; delivers it on the way out."""
    __slots__ = ("connection", "main")

    def __init__(self, connection):
        self.connection = connection
        self.main = threading.get_ident() == connection.main_ident

    def __enter__(self):
        if self.main:
            self.connection.main_critical += 1

    def __exit__(self, *_exc):
        if self.main:
            connection = self.connection
            connection.main_critical -= 1
            if not connection.main_critical and connection.sigint_held is not None:
                frame, connection.sigint_held = connection.sigint_held, None
                connection._deliver_sigint(None if frame is True else frame)

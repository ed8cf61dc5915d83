"""Exceptions a zray user can see.

A failed task reaches ``ray.get`` as an instance of both ``RayTaskError`` and
the original exception's class, so ``except ValueError`` and
``except RayTaskError`` both work, as in Ray.
"""


class RayError(Exception):
    """Base of every zray error."""


class RaySystemError(RayError):
    """The runtime itself failed (a daemon is gone, a socket is closed)."""


class GetTimeoutError(RayError, TimeoutError):
    """``ray.get`` ran past its ``timeout``."""


RayTimeoutError = GetTimeoutError       # the name in Ray 0.8


class WorkerCrashedError(RayError):
    """The worker process running a task died before the task finished."""


class ObjectStoreFullError(RayError, MemoryError):
    """Neither shared memory nor the spill directory can take an object."""


class ObjectLostError(RayError):
    """An object's value is gone and cannot be rebuilt."""


class RayActorError(RayError):
    """The actor a method was called on has died."""


class TaskCancelledError(RayError):
    """The task was cancelled before it finished."""


class RayTaskError(RayError):
    """A task raised; ``cause`` is the original exception, when it unpickled.

    ``ray.get`` raises ``as_instanceof_cause()``: an object of a class that
    derives from both this class and the cause's class.
    """

    def __init__(self, function_name, traceback_str, cause=None, pid=None):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        super().__init__(self._message())

    def _message(self):
        where = f" (pid={self.pid})" if self.pid else ""
        return (f"task {self.function_name}{where} raised "
                f"{type(self.cause).__name__ if self.cause is not None else 'an exception'}:"
                f"\n\n{self.traceback_str.rstrip()}")

    def __str__(self):
        return self._message()

    def __reduce__(self):
        return (RayTaskError, (self.function_name, self.traceback_str, self.cause, self.pid))

    def as_instanceof_cause(self):
        """An exception that is both a RayTaskError and a ``type(cause)``."""
        cause = self.cause
        if isinstance(cause, RayTaskError):
            return cause.as_instanceof_cause()
        if cause is None:
            return self
        cause_cls = type(cause)
        if not isinstance(cause, Exception):
            return self
        try:
            dual = _dual_class(cause_cls)
            try:
                err = dual.__new__(dual)
            except TypeError:
                # MemoryError (so ObjectStoreFullError) has its own __new__
                # that refuses subclasses reached through another base.
                err = Exception.__new__(dual)
            err.__dict__.update(getattr(cause, "__dict__", {}))
            err.args = cause.args
            err.function_name = self.function_name
            err.traceback_str = self.traceback_str
            err.cause = cause
            err.pid = self.pid
            return err
        except TypeError:
            # A cause class with an odd layout (C base, __slots__) cannot be
            # mixed in; the plain RayTaskError still carries everything.
            return self


_dual_classes = {}


def _dual_class(cause_cls):
    cls = _dual_classes.get(cause_cls)
    if cls is None:
        def __str__(self):
            return RayTaskError._message(self)

        def __reduce__(self):
            return (RayTaskError, (self.function_name, self.traceback_str, self.cause, self.pid))

        cls = type(f"RayTaskError({cause_cls.__name__})", (RayTaskError, cause_cls),
                   {"__str__": __str__, "__reduce__": __reduce__, "__init__": Exception.__init__,
                    "__module__": "zray.exceptions"})
        _dual_classes[cause_cls] = cls
    return cls

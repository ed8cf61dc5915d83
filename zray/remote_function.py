"""``@ray.remote`` on a function: ``f.remote(...)`` and ``f.options(...)``."""
import functools

from .core import context
from .core.submit import TASK_OPTIONS, FunctionBlob, check_options, legacy_options
from .signature import check_call, describe


class RemoteFunction:
    def __init__(self, function, options):
        check_options(options, TASK_OPTIONS, f"remote function {function.__qualname__}")
        self._function = function
        self._options = dict(options)
        self._code = FunctionBlob(function)
        self._signature = describe(function)
        functools.update_wrapper(self, function)

    def __reduce__(self):
        # Shipped inside other code (a task that calls f.remote): send only
        # the function and its options, never the cached blob.
        return RemoteFunction, (self._function, self._options)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self._function.__qualname__} cannot be called "
                        f"directly; use {self._function.__name__}.remote(...) to run it as a "
                        f"task, and ray.get() on the result")

    def remote(self, *args, **kwargs):
        return self._submit(args, kwargs, self._options)

    def options(self, **options):
        check_options(options, TASK_OPTIONS, f"remote function {self._function.__qualname__}")
        merged = {**self._options, **options}
        parent = self

        class _Bound:
            def remote(self, *args, **kwargs):
                return parent._submit(args, kwargs, merged)
        return _Bound()

    def _remote(self, args=None, kwargs=None, **options):
        """Ray 0.8's spelling of ``f.options(**options).remote(*args, **kwargs)``."""
        options = legacy_options(options)
        if not options:
            return self._submit(args or (), kwargs or {}, self._options)
        return self.options(**options).remote(*(args or ()), **(kwargs or {}))

    def _submit(self, args, kwargs, options):
        check_call(self._signature, self._code.name, args, kwargs)
        return context.for_submit().submit_task(self._code, args, kwargs, options)

"""``@ray.remote`` on a function: ``f.remote(...)`` and ``f.options(...)``."""
import functools

from .core.submit import (DEFAULT_MAX_RETRIES, TASK_OPTIONS, FunctionBlob, check_options,
                          encode_arguments, legacy_options, make_spec, new_task_id,
                          num_returns_of)
from .object_ref import ObjectRef
from .sched.resources import demand_from_options
from .signature import check_call, describe
from .transport import protocol as P


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
        from . import api
        check_call(self._signature, self._code.name, args, kwargs)
        runtime = api.runtime_for_submit()
        n_returns = num_returns_of(options)
        if api.is_local_mode():
            return api.local_call(self._function, args, kwargs, n_returns)
        function_id = self._code.ensure(runtime)
        frames, deps, contained, keepalive = encode_arguments(runtime, args, kwargs, api.put_serialized)
        demand = demand_from_options(options.get("num_cpus"), options.get("num_gpus"),
                                     options.get("resources"))
        max_retries = options.get("max_retries")
        task_id = new_task_id()
        spec = make_spec(P.TASK, task_id, function_id, self._code.name, n_returns, deps,
                         contained + self._code.contained, demand,
                         max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
                         max_calls=options.get("max_calls") or 0, n_arg_frames=len(frames))
        refs = [ObjectRef(object_id, _runtime=runtime) for object_id in spec.return_ids]
        runtime.expect_results(spec.return_ids)
        runtime.send_message(P.SUBMIT, spec, frames=frames)
        del keepalive
        if n_returns == 1:
            return refs[0]
        return refs if n_returns else None

"""``@ray.remote`` on a class: actor creation, handles and method calls.

A handle holds an ``ObjectRef`` to the actor's id, so handles are counted
like objects: when none is left in any process, the actor exits.
"""
import inspect

from .core import context
from .core.submit import ACTOR_OPTIONS, FunctionBlob, check_options, legacy_options, num_returns_of
from .object_ref import ObjectRef
from .signature import check_call, describe, describe_method


def method(*args, **kwargs):
    """``@ray.method(num_returns=2)`` on an actor method."""
    if args and callable(args[0]) and len(args) == 1 and not kwargs:
        return args[0]
    unknown = set(kwargs) - {"num_returns", "num_return_vals", "concurrency_group"}
    if args or unknown:
        raise TypeError(f"ray.method takes only num_returns=N (alias num_return_vals), got "
                        f"{sorted(unknown) or args}")
    n = _checked_num_returns(num_returns_of(kwargs))

    def decorate(function):
        function.__zray_num_returns__ = n
        return function
    return decorate


def _checked_num_returns(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"num_returns must be a non-negative integer, got {n!r}")
    return n


class ActorExit(SystemExit):
    """Raised by exit_actor(); the worker turns it into a clean exit."""


def exit_actor():
    """End the current actor: this call's caller gets RayActorError, the
    process exits, and the actor is not restarted."""
    runtime = context.current()
    if runtime is None or not runtime.in_actor():
        raise TypeError("ray.exit_actor() can only be called inside a method of an actor; "
                        "to stop an actor from outside use ray.kill(handle)")
    raise ActorExit(0)


def _check_actor_options(options):
    lifetime = options.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(f"lifetime must be None, 'detached' or 'non_detached', got {lifetime!r}")
    retries = options.get("max_task_retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or retries < -1):
        raise ValueError(f"max_task_retries must be an integer >= -1 (-1: retry forever), "
                         f"got {retries!r}")
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"an actor name must be a non-empty string, got {name!r}")


def _method_table(cls):
    """({name: num_returns}, {name: compact signature}) of the actor's methods."""
    table, signatures = {}, {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if inspect.isfunction(member) or inspect.ismethod(member):
            table[name] = getattr(member, "__zray_num_returns__", 1)
            signatures[name] = describe_method(cls, name, member)
    return table, signatures


class ActorClassInheritanceError(TypeError):
    """A class statement named an actor class as a base."""


class ActorClass:
    def __init__(self, cls, options):
        check_options(options, ACTOR_OPTIONS, f"actor class {cls.__qualname__}")
        _check_actor_options(options)
        self._cls = cls
        self._options = dict(options)
        self._code = FunctionBlob(cls)
        self._methods, self._signatures = _method_table(cls)
        self._init_signature = describe(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __reduce__(self):
        return ActorClass, (self._cls, self._options)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of "
                        f"'{self.__name__}()', use '{self.__name__}.remote()'.")

    def __getattr__(self, name):
        # The user's class shows through: class attributes, classmethods and
        # staticmethods (``MyActor.X``, ``MyActor.helper()``), as in Ray.
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls, name)

    def __mro_entries__(self, bases):
        raise ActorClassInheritanceError(
            f"Inheriting from actor classes is not currently supported: {self.__name__} is "
            f"an actor class. Inherit from the plain class instead and make the derived "
            f"class an actor class (with @ray.remote).")

    def remote(self, *args, **kwargs):
        return self._create(args, kwargs, self._options)

    def _remote(self, args=None, kwargs=None, **options):
        """Ray 0.8's spelling of ``A.options(**options).remote(*args, **kwargs)``."""
        options = legacy_options(options)
        if not options:
            return self._create(args or (), kwargs or {}, self._options)
        return self.options(**options).remote(*(args or ()), **(kwargs or {}))

    def options(self, **options):
        check_options(options, ACTOR_OPTIONS, f"actor class {self._cls.__qualname__}")
        _check_actor_options(options)
        merged = {**self._options, **options}
        parent = self

        class _Bound:
            def remote(self, *args, **kwargs):
                return parent._create(args, kwargs, merged)
        return _Bound()

    def _create(self, args, kwargs, options):
        check_call(self._init_signature, self.__name__, args, kwargs)
        return context.for_submit().create_actor(self._code, args, kwargs, options,
                                                 self._handle_meta(), ActorHandle)

    def _handle_meta(self):
        """What a handle needs, in every process: names, returns, signatures."""
        return (self._cls.__name__, self._methods, self._signatures)


class ActorHandle:
    def __init__(self, actor_id, handle_meta, ref):
        self._actor_id = actor_id
        self._class_name, self._methods, self._signatures = handle_meta
        self._ref = ref

    def __getattr__(self, name):
        methods = self.__dict__.get("_methods")
        if methods is None or name not in methods:
            known = ", ".join(sorted(methods or ())) or "none"
            raise AttributeError(f"actor {self.__dict__.get('_class_name', '?')} has no method "
                                 f"{name!r}; its methods are: {known}")
        return ActorMethod(self, name, methods[name])

    def __repr__(self):
        return f"Actor({self._class_name}, {self._actor_id.hex()[:12]})"

    def __hash__(self):
        return hash(self._actor_id)

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __reduce__(self):
        return _rebuild_handle, (self._actor_id,
                                 (self._class_name, self._methods, self._signatures))

    def __zray_reduce__(self, contained):
        contained.append(self._actor_id)
        return self.__reduce__()


def _rebuild_handle(actor_id, handle_meta):
    return ActorHandle(actor_id, handle_meta, ObjectRef(actor_id, borrowed=True))


class ActorMethod:
    def __init__(self, handle, name, num_returns):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor methods cannot be called directly; use "
                        f"actor.{self._name}.remote(...)")

    def options(self, **options):
        unknown = set(options) - {"num_returns", "num_return_vals", "name", "max_task_retries"}
        if unknown:
            raise TypeError(f"unknown actor method options {sorted(unknown)}")
        n = _checked_num_returns(num_returns_of(options, self._num_returns))
        return ActorMethod(self._handle, self._name, n)

    def _remote(self, args=None, kwargs=None, **options):
        """Ray 0.8's spelling of ``a.m.options(**options).remote(*args, **kwargs)``."""
        options = legacy_options(options)
        method = self.options(**options) if options else self
        return method.remote(*(args or ()), **(kwargs or {}))

    def remote(self, *args, **kwargs):
        handle = self._handle
        label = f"{handle._class_name}.{self._name}"
        check_call(handle._signatures.get(self._name), label, args, kwargs)
        return context.for_submit().submit_actor_method(handle._actor_id, label, self._name,
                                                        args, kwargs, self._num_returns)

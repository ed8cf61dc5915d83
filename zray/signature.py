"""Checking a call's arguments against the callee's signature at ``.remote()``.

As in Ray, ``f.remote(3)`` for ``def f()`` raises TypeError at the call, not
later, wrapped, at ``ray.get``. A signature travels with actor handles in a
small picklable form: ``((name, kind, has_default), ...)``; defaults are not
needed to check a call, so user values never have to pickle.
"""
import functools
import inspect

_NO_CHECK = None


def describe(callable_, drop_first=False):
    """The compact form of ``callable_``'s signature, or None when it has none
    Python can read (builtins): such calls are not checked."""
    try:
        parameters = list(inspect.signature(callable_).parameters.values())
    except (TypeError, ValueError):
        return _NO_CHECK
    if drop_first and parameters and parameters[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        parameters = parameters[1:]
    return tuple((p.name, int(p.kind), p.default is not inspect.Parameter.empty)
                 for p in parameters)


def describe_method(cls, name, member):
    """Like ``describe``, for a method as called on an instance of ``cls``."""
    static = isinstance(inspect.getattr_static(cls, name, None), staticmethod)
    # A classmethod found on the class is already bound (no cls parameter).
    return describe(member, drop_first=not static and not inspect.ismethod(member))


@functools.lru_cache(maxsize=1024)
def _rebuild(compact):
    return inspect.Signature([
        inspect.Parameter(name, inspect._ParameterKind(kind),
                          default=None if has_default else inspect.Parameter.empty)
        for name, kind, has_default in compact])


@functools.lru_cache(maxsize=1024)
def _plain_arity(compact):
    """How many arguments a signature of plain positional parameters without
    defaults takes (then a call of that many positionals fits); else -1."""
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if all(kind in plain and not has_default for _name, kind, has_default in compact):
        return len(compact)
    return -1


def check_call(compact, what, args, kwargs):
    """Raise TypeError naming ``what`` if args/kwargs do not fit ``compact``."""
    if compact is _NO_CHECK or (not kwargs and len(args) == _plain_arity(compact)):
        return      # (the common call, without building a bound signature)
    signature = _rebuild(compact)
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{what}.remote() got arguments that do not fit its signature "
                        f"{what}{_without_defaults(signature)}: {exc}") from None


def _without_defaults(signature):
    # Defaults were dropped on purpose; show them as "=..." rather than "=None".
    text = str(signature)
    return text.replace("=None", "=...")
